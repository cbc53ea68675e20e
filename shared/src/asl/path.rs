//! The JSONPath subset ASL definitions use: `$`, `$.a.b`, `$['a b']`, `$.a[0]`, and the same
//! rooted at the context object (`$$.Execution.Id`).
//!
//! Paths are parsed once, when the definition is parsed, so a typo is a definition error rather
//! than a failure halfway through a migration. Wildcards, filters, slices and recursive descent
//! select several values; reference paths cannot have them and pgferry's definitions have no use
//! for them in other paths, so they are refused.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

use super::context::Context;

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Segment {
    /// `.name` or `['name']`.
    Field(String),
    /// `[3]`.
    Index(usize),
}

/// What a path is evaluated against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Root {
    /// `$`: the state's (effective) input.
    Input,
    /// `$$`: the context object.
    Context,
}

/// A parsed path, remembering its text for error messages.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Path {
    root: Root,
    segments: Vec<Segment>,
    text: String,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Path {
    /// `$`, the whole input.
    pub(crate) fn root() -> Self {
        Self { root: Root::Input, segments: Vec::new(), text: "$".to_owned() }
    }

    /// Parses a path rooted at `$` or `$$`. The error is a reason to append to a field name.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let (root, mut rest) = if let Some(rest) = trimmed.strip_prefix("$$") {
            (Root::Context, rest)
        } else if let Some(rest) = trimmed.strip_prefix('$') {
            (Root::Input, rest)
        } else {
            return Err(format!("must be a path starting with `$`, got `{text}`"));
        };
        let unsupported = |what: &str| format!("uses {what} in `{text}`, which the local runner does not support");
        let mut segments = Vec::new();
        while !rest.is_empty() {
            if let Some(after_dot) = rest.strip_prefix('.') {
                if after_dot.starts_with('.') {
                    return Err(unsupported("recursive descent (`..`)"));
                }
                let end = after_dot.find(['.', '[']).unwrap_or(after_dot.len());
                let name = &after_dot[..end];
                if name.is_empty() {
                    return Err(format!("has an empty field name in `{text}`"));
                }
                if name == "*" {
                    return Err(unsupported("a wildcard"));
                }
                if name.chars().any(char::is_whitespace) {
                    return Err(format!("has a field name with a space in `{text}`; write it as `['{name}']`"));
                }
                segments.push(Segment::Field(name.to_owned()));
                rest = &after_dot[end..];
            } else if let Some(after_bracket) = rest.strip_prefix('[') {
                let (segment, after) = parse_bracket(after_bracket).map_err(|what| match what {
                    BracketError::Unsupported(what) => unsupported(what),
                    BracketError::Malformed => format!("has a malformed `[...]` in `{text}`"),
                })?;
                segments.push(segment);
                rest = after;
            } else {
                return Err(format!("is not a valid path: unexpected `{rest}` in `{text}`"));
            }
        }
        Ok(Self { root, segments, text: trimmed.to_owned() })
    }

    /// Parses a reference path, the only kind `ResultPath` accepts: rooted at `$`.
    pub(crate) fn parse_reference(text: &str) -> Result<Self, String> {
        let path = Self::parse(text)?;
        if path.root == Root::Context {
            return Err(format!("must be a reference path into the input (`$...`), not the context object: `{text}`"));
        }
        Ok(path)
    }

    /// Whether this path reads the context object.
    pub(crate) fn is_context(&self) -> bool {
        self.root == Root::Context
    }

    /// The value this path selects, or `None` when some step does not exist.
    pub(crate) fn resolve<'v>(&self, input: &'v Value, context: &'v Context<'_>) -> Option<Cow<'v, Value>> {
        match self.root {
            Root::Input => walk(input, &self.segments).map(Cow::Borrowed),
            Root::Context => context.resolve(&self.segments),
        }
    }

    /// Writes `value` at this path inside `target`, creating missing intermediate objects, and
    /// returns the result. `$` replaces `target` entirely. The error says why the path cannot be
    /// applied (a step goes through something that is not an object, an index is out of range).
    pub(crate) fn assign(&self, mut target: Value, value: Value) -> Result<Value, String> {
        let Some((last, parents)) = self.segments.split_last() else {
            return Ok(value);
        };
        let mut slot = &mut target;
        for segment in parents {
            slot = step_mut(slot, segment, &self.text)?;
        }
        match (last, slot) {
            (Segment::Field(name), Value::Object(map)) => {
                map.insert(name.clone(), value);
            }
            (Segment::Index(i), Value::Array(items)) if *i < items.len() => items[*i] = value,
            (segment, other) => return Err(cannot_step(segment, other, &self.text)),
        }
        Ok(target)
    }
}

/// Where a state puts its result: `ResultPath`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ResultPath {
    /// `"ResultPath": null`: the result is discarded and the input passes through.
    Discard,
    /// A reference path; `$` (the default) makes the result the output.
    At(Path),
}

impl ResultPath {
    /// Parses the field's value; absent means `$`.
    pub(crate) fn parse(value: Option<&Value>) -> Result<Self, String> {
        match value {
            None => Ok(Self::At(Path::root())),
            Some(Value::Null) => Ok(Self::Discard),
            Some(Value::String(text)) => Path::parse_reference(text).map(Self::At),
            Some(_) => Err("must be a reference path string or null".to_owned()),
        }
    }

    /// Combines the state's raw `input` with its `result`.
    pub(crate) fn apply(&self, input: Value, result: Value) -> Result<Value, String> {
        match self {
            Self::Discard => Ok(input),
            Self::At(path) => path.assign(input, result),
        }
    }
}

/// Follows `segments` from `value`.
pub(crate) fn walk<'v>(mut value: &'v Value, segments: &[Segment]) -> Option<&'v Value> {
    for segment in segments {
        value = match (segment, value) {
            (Segment::Field(name), Value::Object(map)) => map.get(name)?,
            (Segment::Index(i), Value::Array(items)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(value)
}

/// One step of [`Path::assign`]: descends into `slot`, creating an object for a missing field.
fn step_mut<'v>(slot: &'v mut Value, segment: &Segment, text: &str) -> Result<&'v mut Value, String> {
    let fits = match (segment, &*slot) {
        (Segment::Field(_), Value::Object(_)) => true,
        (Segment::Index(i), Value::Array(items)) => *i < items.len(),
        _ => false,
    };
    if !fits {
        return Err(cannot_step(segment, slot, text));
    }
    match (segment, slot) {
        (Segment::Field(name), Value::Object(map)) => {
            Ok(map.entry(name.clone()).or_insert_with(|| Value::Object(serde_json::Map::new())))
        }
        (Segment::Index(i), Value::Array(items)) => Ok(&mut items[*i]),
        (segment, other) => Err(cannot_step(segment, other, text)),
    }
}

fn cannot_step(segment: &Segment, value: &Value, text: &str) -> String {
    let kind = kind_of(value);
    match segment {
        Segment::Field(name) => format!("`{text}` cannot set field `{name}` inside {kind}"),
        Segment::Index(i) => format!("`{text}` cannot set index {i} inside {kind}"),
    }
}

/// A short description of a value's JSON type, for error messages.
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

enum BracketError {
    Unsupported(&'static str),
    Malformed,
}

/// Parses what follows `[`: a quoted field name or a non-negative index, up to `]`.
fn parse_bracket(text: &str) -> Result<(Segment, &str), BracketError> {
    let mut chars = text.char_indices();
    match chars.next() {
        Some((_, quote @ ('\'' | '"'))) => {
            let mut name = String::new();
            let mut escaped = false;
            for (i, c) in chars {
                if escaped {
                    name.push(c);
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == quote {
                    let after = text[i + 1..].strip_prefix(']').ok_or(BracketError::Malformed)?;
                    return Ok((Segment::Field(name), after));
                } else {
                    name.push(c);
                }
            }
            Err(BracketError::Malformed)
        }
        Some(_) => {
            let end = text.find(']').ok_or(BracketError::Malformed)?;
            let inner = text[..end].trim();
            let after = &text[end + 1..];
            if inner == "*" {
                return Err(BracketError::Unsupported("a wildcard"));
            }
            if inner.starts_with('?') {
                return Err(BracketError::Unsupported("a filter expression"));
            }
            if inner.contains(':') {
                return Err(BracketError::Unsupported("an array slice"));
            }
            if inner.contains(',') {
                return Err(BracketError::Unsupported("a union"));
            }
            if inner.starts_with('-') {
                return Err(BracketError::Unsupported("a negative index"));
            }
            let index = inner.parse::<usize>().map_err(|_| BracketError::Malformed)?;
            Ok((Segment::Index(index), after))
        }
        None => Err(BracketError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn get(path: &str, input: &Value) -> Option<Value> {
        let context = Context::empty();
        Path::parse(path).unwrap().resolve(input, &context).map(Cow::into_owned)
    }

    #[test]
    fn dotted_bracketed_and_indexed_steps_resolve() {
        let input = json!({"a": {"b": [10, {"c d": "x"}]}});
        assert_eq!(get("$", &input), Some(input.clone()));
        assert_eq!(get("$.a.b[0]", &input), Some(json!(10)));
        assert_eq!(get("$.a.b[1]['c d']", &input), Some(json!("x")));
        assert_eq!(get("$['a'][\"b\"][1]", &input), Some(json!({"c d": "x"})));
    }

    #[test]
    fn missing_steps_do_not_resolve() {
        let input = json!({"a": [1], "s": "text"});
        assert_eq!(get("$.b", &input), None);
        assert_eq!(get("$.a[1]", &input), None);
        assert_eq!(get("$.s.x", &input), None);
        assert_eq!(get("$.a.x", &input), None);
    }

    #[test]
    fn multi_value_syntax_is_refused() {
        for text in ["$.a[*]", "$..a", "$.a.*", "$.a[?(@.b)]", "$.a[0:2]", "$.a[-1]", "$.a[0,1]"] {
            let err = Path::parse(text).unwrap_err();
            assert!(err.contains("not support"), "{text}: {err}");
        }
    }

    #[test]
    fn malformed_paths_are_refused() {
        for text in ["a.b", "$.", "$.a[", "$.a[x]", "$['a'", "$.a b", "$a"] {
            assert!(Path::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn assign_creates_intermediate_objects() {
        let path = Path::parse_reference("$.a.b.c").unwrap();
        let out = path.assign(json!({"x": 1}), json!(true)).unwrap();
        assert_eq!(out, json!({"x": 1, "a": {"b": {"c": true}}}));
    }

    #[test]
    fn assign_at_root_replaces_the_input() {
        assert_eq!(Path::root().assign(json!({"x": 1}), json!([1])).unwrap(), json!([1]));
    }

    #[test]
    fn assign_through_a_scalar_is_refused() {
        let path = Path::parse_reference("$.a.b").unwrap();
        let err = path.assign(json!({"a": "text"}), json!(1)).unwrap_err();
        assert!(err.contains("inside a string"), "{err}");
        assert!(Path::parse_reference("$.a").unwrap().assign(json!(3), json!(1)).is_err());
    }

    #[test]
    fn assign_replaces_an_existing_array_element() {
        let path = Path::parse_reference("$.a[1]").unwrap();
        assert_eq!(path.assign(json!({"a": [0, 0]}), json!(5)).unwrap(), json!({"a": [0, 5]}));
        assert!(path.assign(json!({"a": [0]}), json!(5)).is_err());
    }

    #[test]
    fn reference_paths_refuse_the_context_object() {
        assert!(Path::parse_reference("$$.Execution.Id").is_err());
        assert!(Path::parse("$$.Execution.Id").unwrap().is_context());
    }
}
