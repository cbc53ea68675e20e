//! Payload templates: `Parameters`, `ItemSelector`, `ResultSelector` and `ItemReader.Parameters`.
//!
//! A template is JSON in which a key ending in `.$` takes its value from a path into the input
//! (`$.a`), the context object (`$$.Map.Item.Index`) or an intrinsic function call; the key loses
//! its `.$` in the output. Templates are compiled when the definition is parsed so that every
//! path and call in them is checked before anything runs.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::TaskFailure;
use super::context::Scope;
use super::intrinsic::Call;
use super::path::Path;

/// Something that computes a value: a path or an intrinsic function call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Path(Path),
    Call(Call),
}

impl Expr {
    /// Parses the value of a `.$` key (or of a field such as `ErrorPath` that takes either).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim_start();
        if trimmed.starts_with('$') {
            Path::parse(trimmed).map(Self::Path)
        } else if trimmed.starts_with("States.") {
            Call::parse(trimmed).map(Self::Call)
        } else {
            Err(format!("must be a path (`$...` or `$$...`) or an intrinsic function call, got `{text}`"))
        }
    }

    /// Evaluates the expression; `field` names it in failure causes.
    pub(crate) fn eval(&self, scope: &Scope<'_>, field: &str) -> Result<Value, TaskFailure> {
        match self {
            Self::Path(path) => scope.resolve(path, field).map(Cow::into_owned),
            Self::Call(call) => call.eval(scope, field),
        }
    }
}

/// A compiled payload template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Template {
    /// A value without any `.$` key below it, copied as is.
    Literal(Value),
    /// An object with at least one dynamic entry somewhere below it.
    Object(Vec<Entry>),
    /// An array with at least one dynamic element somewhere below it.
    Array(Vec<Template>),
}

/// One key of a template object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// The key as it appears in the output (without `.$`).
    key: String,
    value: EntryValue,
}

#[derive(Debug, Clone, PartialEq)]
enum EntryValue {
    Template(Template),
    /// From a `.$` key; the string is the key as written, for failure causes.
    Expr(Expr, String),
}

/// A compile error: the (nested) field it is about, and why.
pub(crate) type CompileError = (String, String);

impl Template {
    /// Compiles `value`, found in the field named `field` (e.g. `Parameters`).
    pub(crate) fn compile(value: &Value, field: &str) -> Result<Self, CompileError> {
        match value {
            Value::Object(map) => {
                let mut entries = Vec::with_capacity(map.len());
                let mut dynamic = false;
                for (key, inner) in map {
                    let inner_field = format!("{field}.{key}");
                    if let Some(plain) = key.strip_suffix(".$") {
                        if map.contains_key(plain) {
                            return Err((inner_field, format!("clashes with the key `{plain}` next to it")));
                        }
                        let Value::String(text) = inner else {
                            return Err((
                                inner_field,
                                "must be a string holding a path or an intrinsic function".into(),
                            ));
                        };
                        let expr = Expr::parse(text).map_err(|reason| (inner_field.clone(), reason))?;
                        entries.push(Entry { key: plain.to_owned(), value: EntryValue::Expr(expr, key.clone()) });
                        dynamic = true;
                    } else {
                        let template = Self::compile(inner, &inner_field)?;
                        dynamic |= !matches!(template, Self::Literal(_));
                        entries.push(Entry { key: key.clone(), value: EntryValue::Template(template) });
                    }
                }
                Ok(if dynamic { Self::Object(entries) } else { Self::Literal(value.clone()) })
            }
            Value::Array(items) => {
                let templates = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| Self::compile(item, &format!("{field}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                let dynamic = templates.iter().any(|t| !matches!(t, Self::Literal(_)));
                Ok(if dynamic { Self::Array(templates) } else { Self::Literal(value.clone()) })
            }
            other => Ok(Self::Literal(other.clone())),
        }
    }

    /// Produces the payload for `scope`.
    pub(crate) fn eval(&self, scope: &Scope<'_>) -> Result<Value, TaskFailure> {
        match self {
            Self::Literal(value) => Ok(value.clone()),
            Self::Array(items) => items.iter().map(|t| t.eval(scope)).collect::<Result<Vec<_>, _>>().map(Value::Array),
            Self::Object(entries) => {
                let mut out = Map::with_capacity(entries.len());
                for entry in entries {
                    let value = match &entry.value {
                        EntryValue::Template(template) => template.eval(scope)?,
                        EntryValue::Expr(expr, source_key) => expr.eval(scope, source_key)?,
                    };
                    out.insert(entry.key.clone(), value);
                }
                Ok(Value::Object(out))
            }
        }
    }

    /// Whether the template has no `.$` key anywhere, so evaluating it is a plain copy.
    #[cfg(test)]
    pub(crate) fn is_literal(&self) -> bool {
        matches!(self, Self::Literal(_))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::asl::STATES_RUNTIME;
    use crate::asl::context::Context;

    fn render(template: Value, input: Value) -> Result<Value, TaskFailure> {
        let compiled = Template::compile(&template, "Parameters").unwrap();
        let execution = json!({"Name": "exec-1"});
        let machine = json!({});
        let context = Context::new(&execution, &machine, "S", "t", 0);
        compiled.eval(&Scope { state: "S", input: &input, context: &context })
    }

    #[test]
    fn dollar_keys_take_paths_context_and_intrinsics_recursively() {
        let template = json!({
            "Bucket": "b",
            "Key.$": "States.Format('runs/{}/plan.json', $.run)",
            "Run.$": "$$.Execution.Name",
            "Nested": {"Tables.$": "$.tables", "List": [{"First.$": "$.tables[0]"}, 2]}
        });
        let out = render(template, json!({"run": 7, "tables": ["a", "b"]})).unwrap();
        assert_eq!(
            out,
            json!({
                "Bucket": "b",
                "Key": "runs/7/plan.json",
                "Run": "exec-1",
                "Nested": {"Tables": ["a", "b"], "List": [{"First": "a"}, 2]}
            })
        );
    }

    #[test]
    fn static_templates_compile_to_literals() {
        assert!(Template::compile(&json!({"a": [1, {"b": "$.not-a-path"}]}), "Parameters").unwrap().is_literal());
        assert!(!Template::compile(&json!({"a": [{"b.$": "$.x"}]}), "Parameters").unwrap().is_literal());
    }

    #[test]
    fn missing_path_fails_naming_the_key_and_path() {
        let err = render(json!({"Key.$": "$.missing"}), json!({})).unwrap_err();
        assert_eq!(err.error, STATES_RUNTIME);
        assert!(err.cause.contains("`$.missing`") && err.cause.contains("`Key.$`"), "{}", err.cause);
    }

    #[test]
    fn malformed_dollar_keys_are_refused_with_their_field() {
        let (field, reason) = Template::compile(&json!({"a": {"b.$": 3}}), "Parameters").unwrap_err();
        assert_eq!(field, "Parameters.a.b.$");
        assert!(reason.contains("must be a string"), "{reason}");
        let (field, reason) = Template::compile(&json!({"x.$": "plain"}), "ItemSelector").unwrap_err();
        assert_eq!(field, "ItemSelector.x.$");
        assert!(reason.contains("must be a path"), "{reason}");
        let (field, _) = Template::compile(&json!({"x": 1, "x.$": "$"}), "Parameters").unwrap_err();
        assert_eq!(field, "Parameters.x.$");
    }
}
