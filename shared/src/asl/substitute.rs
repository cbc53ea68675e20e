//! `DefinitionSubstitutions`: `${Name}` placeholders replaced in the definition text.
//!
//! CloudFormation substitutes textually, before the definition is parsed, so a placeholder may
//! stand for a number (`"MaxConcurrency": ${Parallelism}`) as well as part of a string
//! (`"Resource": "${CopyFunctionArn}"`). We do the same, with one safety net: a value inserted
//! inside a JSON string is JSON-escaped, so a quote or backslash in it cannot break the document.

use std::collections::BTreeMap;

use super::AslError;

/// Replaces every `${Name}` in `text` with its value from `substitutions`.
///
/// Names are made of ASCII letters, digits, `_` and `-`; anything else after `${` is left
/// untouched (it cannot be a placeholder). A placeholder without a value is an error naming it,
/// because silently keeping `${Name}` would only fail later, somewhere less obvious.
pub(crate) fn substitute(text: &str, substitutions: &BTreeMap<String, String>) -> Result<String, AslError> {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '$' {
            if let Some((name, after)) = placeholder(rest) {
                let value =
                    substitutions.get(name).ok_or_else(|| AslError::MissingSubstitution { name: name.to_owned() })?;
                if in_string {
                    out.push_str(&escape_json_string_body(value));
                } else {
                    out.push_str(value);
                }
                rest = after;
                continue;
            }
        }
        if in_string && c == '\\' {
            // Copy the escape and the escaped character together so an escaped quote does not
            // end the string.
            let mut chars = rest.chars();
            out.push(chars.next().unwrap_or('\\'));
            if let Some(next) = chars.next() {
                out.push(next);
            }
            rest = chars.as_str();
            continue;
        }
        if c == '"' {
            in_string = !in_string;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    Ok(out)
}

/// If `text` starts with `${Name}`, returns the name and the text after the closing brace.
fn placeholder(text: &str) -> Option<(&str, &str)> {
    let body = text.strip_prefix("${")?;
    let end = body.find('}')?;
    let name = &body[..end];
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    valid.then(|| (name, &body[end + 1..]))
}

/// The JSON encoding of `value` without its surrounding quotes.
fn escape_json_string_body(value: &str) -> String {
    let quoted = serde_json::Value::String(value.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn placeholder_inside_a_string_is_replaced_and_escaped() {
        let text = r#"{"Resource": "arn:${Fn}", "Comment": "${Quote}"}"#;
        let out = substitute(text, &subs(&[("Fn", "copy"), ("Quote", "say \"hi\"")])).unwrap();
        assert_eq!(out, r#"{"Resource": "arn:copy", "Comment": "say \"hi\""}"#);
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["Comment"], "say \"hi\"");
    }

    #[test]
    fn placeholder_outside_a_string_is_inserted_raw() {
        let out = substitute(r#"{"MaxConcurrency": ${N}}"#, &subs(&[("N", "4")])).unwrap();
        assert_eq!(out, r#"{"MaxConcurrency": 4}"#);
    }

    #[test]
    fn missing_substitution_is_refused_by_name() {
        let err = substitute(r#"{"Resource": "${CopyFn}"}"#, &subs(&[])).unwrap_err();
        assert!(matches!(&err, AslError::MissingSubstitution { name } if name == "CopyFn"));
        assert!(err.to_string().contains("`${CopyFn}`"), "{err}");
    }

    #[test]
    fn escaped_quote_does_not_end_the_string() {
        let out = substitute(r#"{"a": "x\"${V}"}"#, &subs(&[("V", "\\")])).unwrap();
        assert_eq!(out, r#"{"a": "x\"\\"}"#);
    }

    #[test]
    fn dollar_without_a_placeholder_is_left_alone() {
        let text = r#"{"InputPath": "$.a", "b.$": "$${x y}"}"#;
        assert_eq!(substitute(text, &subs(&[])).unwrap(), text);
    }
}
