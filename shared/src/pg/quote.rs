//! The one place that turns names and literals into SQL text.
//!
//! Values go to the server as bind parameters wherever the protocol allows it; utility
//! statements (`CREATE DATABASE`, `SET`, `COPY`) take no parameters, so their identifiers and the
//! few literals they need are quoted here and nowhere else.

use std::fmt;

/// Quotes an identifier with `quote_ident` semantics, always (even when quoting is optional), so
/// that keywords, mixed case, dots, quotes and semicolons survive (RDS-CASES T2, T16).
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Quotes a string literal for a session with `standard_conforming_strings = on` (pinned by
/// [`super::connect`]): single quotes are doubled, backslashes are ordinary characters.
pub fn quote_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// A schema-qualified relation name, kept as two fields end to end (never parsed from `a.b`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

impl QualifiedName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self { schema: schema.into(), name: name.into() }
    }
}

impl fmt::Display for QualifiedName {
    /// Formats as quoted SQL: `"schema"."name"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t2_identifiers_with_keywords_quotes_and_semicolons_are_quoted() {
        assert_eq!(quote_ident("asset_reader"), r#""asset_reader""#);
        assert_eq!(quote_ident("SuperUser Tool"), r#""SuperUser Tool""#);
        assert_eq!(quote_ident("we;ird"), r#""we;ird""#);
        assert_eq!(quote_ident(r#"weird"name"#), r#""weird""name""#);
    }

    #[test]
    fn t16_qualified_names_keep_dots_inside_names() {
        let n = QualifiedName::new("Tenant A", "Order.Items");
        assert_eq!(n.to_string(), r#""Tenant A"."Order.Items""#);
    }

    #[test]
    fn literals_double_quotes_and_keep_backslashes() {
        assert_eq!(quote_literal(r"it's a \ test"), r"'it''s a \ test'");
    }
}
