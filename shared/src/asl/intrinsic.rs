//! Intrinsic functions (`States.Format('run {}', $.id)` and friends) in payload templates.
//!
//! Calls are parsed with the definition, so an unknown function or a malformed argument list is a
//! definition error. Evaluation failures (a path that does not resolve, an argument of the wrong
//! type) are Step Functions failures, as they are in AWS.
//!
//! Supported: `States.Format`, `States.StringToJson`, `States.JsonToString`, `States.Array`,
//! `States.ArrayLength`, `States.ArrayGetItem`, `States.JsonMerge`, `States.MathAdd` and
//! `States.UUID`.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

use super::context::Scope;
use super::path::{Path, kind_of};
use super::{STATES_INTRINSIC_FAILURE, TaskFailure};

/// The intrinsic functions the runner implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Function {
    Format,
    StringToJson,
    JsonToString,
    Array,
    ArrayLength,
    ArrayGetItem,
    JsonMerge,
    MathAdd,
    Uuid,
}

/// Intrinsics AWS has that the runner refuses rather than guesses at.
const UNSUPPORTED: &[&str] = &[
    "States.ArrayPartition",
    "States.ArrayContains",
    "States.ArrayRange",
    "States.ArrayUnique",
    "States.Base64Encode",
    "States.Base64Decode",
    "States.Hash",
    "States.MathRandom",
    "States.StringSplit",
];

impl Function {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "States.Format" => Self::Format,
            "States.StringToJson" => Self::StringToJson,
            "States.JsonToString" => Self::JsonToString,
            "States.Array" => Self::Array,
            "States.ArrayLength" => Self::ArrayLength,
            "States.ArrayGetItem" => Self::ArrayGetItem,
            "States.JsonMerge" => Self::JsonMerge,
            "States.MathAdd" => Self::MathAdd,
            "States.UUID" => Self::Uuid,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Format => "States.Format",
            Self::StringToJson => "States.StringToJson",
            Self::JsonToString => "States.JsonToString",
            Self::Array => "States.Array",
            Self::ArrayLength => "States.ArrayLength",
            Self::ArrayGetItem => "States.ArrayGetItem",
            Self::JsonMerge => "States.JsonMerge",
            Self::MathAdd => "States.MathAdd",
            Self::Uuid => "States.UUID",
        }
    }

    /// Minimum and maximum number of arguments.
    fn arity(self) -> (usize, usize) {
        match self {
            Self::Format => (1, usize::MAX),
            Self::Array => (0, usize::MAX),
            Self::StringToJson | Self::JsonToString | Self::ArrayLength => (1, 1),
            Self::ArrayGetItem | Self::MathAdd => (2, 2),
            Self::JsonMerge => (3, 3),
            Self::Uuid => (0, 0),
        }
    }
}

/// A string literal, with the byte offsets of its unescaped `{}` placeholders (an escaped `\{`
/// is a literal brace, which only the raw text can tell apart).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Text {
    value: String,
    placeholders: Vec<usize>,
}

/// One argument of a call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    /// A number, `true`, `false` or `null`.
    Literal(Value),
    /// A `'...'` string.
    Text(Text),
    /// `$...` or `$$...`.
    Path(Path),
    /// A nested intrinsic call.
    Call(Call),
}

/// A parsed intrinsic function call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    function: Function,
    args: Vec<Arg>,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.function.name())
    }
}

impl Call {
    /// Parses `States.Name(arg, ...)`. The error is a reason to append to a field name.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut parser = Parser { text, pos: 0 };
        let call = parser.call()?;
        parser.skip_whitespace();
        if parser.pos != text.len() {
            return Err(format!("has unexpected text after the intrinsic function call: `{}`", &text[parser.pos..]));
        }
        Ok(call)
    }

    /// Evaluates the call; `field` names the template field in failure causes.
    pub(crate) fn eval(&self, scope: &Scope<'_>, field: &str) -> Result<Value, TaskFailure> {
        let fail = |detail: String| scope.failure(STATES_INTRINSIC_FAILURE, format!("field `{field}`: {detail}"));
        let name = self.function.name();
        if self.function == Function::Format {
            return self.format(scope, field);
        }
        let mut args = Vec::with_capacity(self.args.len());
        for arg in &self.args {
            args.push(eval_arg(arg, scope, field)?);
        }
        match (self.function, args.as_slice()) {
            (Function::StringToJson, [Value::String(s)]) => {
                serde_json::from_str(s).map_err(|e| fail(format!("{name} could not parse its argument: {e}")))
            }
            (Function::JsonToString, [value]) => Ok(Value::String(value.to_string())),
            (Function::Array, _) => Ok(Value::Array(args)),
            (Function::ArrayLength, [Value::Array(items)]) => Ok(Value::from(items.len())),
            (Function::ArrayGetItem, [Value::Array(items), Value::Number(n)]) => n
                .as_u64()
                .and_then(|i| items.get(usize::try_from(i).ok()?))
                .cloned()
                .ok_or_else(|| fail(format!("{name} index {n} is out of range for an array of {}", items.len()))),
            (Function::JsonMerge, [Value::Object(a), Value::Object(b), Value::Bool(deep)]) => {
                let mut merged = a.clone();
                merge(&mut merged, b, *deep);
                Ok(Value::Object(merged))
            }
            (Function::MathAdd, [Value::Number(a), Value::Number(b)]) => {
                let (Some(a), Some(b)) = (as_integer(a), as_integer(b)) else {
                    return Err(fail(format!("{name} expects two integers, got {a} and {b}")));
                };
                a.checked_add(b).map(Value::from).ok_or_else(|| fail(format!("{name} overflowed adding {a} and {b}")))
            }
            (Function::Uuid, []) => Ok(Value::String(uuid_v4())),
            (function, args) => {
                let kinds: Vec<&str> = args.iter().map(kind_of).collect();
                Err(fail(format!("{} cannot be applied to ({})", function.name(), kinds.join(", "))))
            }
        }
    }

    /// `States.Format(template, args...)`: each `{}` takes the next argument, rendered as its
    /// JSON text (strings without quotes).
    fn format(&self, scope: &Scope<'_>, field: &str) -> Result<Value, TaskFailure> {
        let fail = |detail: String| scope.failure(STATES_INTRINSIC_FAILURE, format!("field `{field}`: {detail}"));
        let Some((template, rest)) = self.args.split_first() else {
            return Err(fail("States.Format needs a template".to_owned()));
        };
        let text = match template {
            Arg::Text(text) => Cow::Borrowed(text),
            other => match eval_arg(other, scope, field)? {
                Value::String(value) => {
                    let placeholders = value.match_indices("{}").map(|(i, _)| i).collect();
                    Cow::Owned(Text { value, placeholders })
                }
                other => return Err(fail(format!("States.Format needs a string template, got {}", kind_of(&other)))),
            },
        };
        if text.placeholders.len() != rest.len() {
            return Err(fail(format!(
                "States.Format template has {} placeholder(s) but {} argument(s) were given",
                text.placeholders.len(),
                rest.len()
            )));
        }
        let mut out = String::with_capacity(text.value.len());
        let mut last = 0;
        for (&at, arg) in text.placeholders.iter().zip(rest) {
            out.push_str(&text.value[last..at]);
            match eval_arg(arg, scope, field)? {
                Value::String(s) => out.push_str(&s),
                value @ (Value::Number(_) | Value::Bool(_) | Value::Null) => out.push_str(&value.to_string()),
                other => {
                    return Err(fail(format!("States.Format cannot insert {} into a string", kind_of(&other))));
                }
            }
            last = at + 2;
        }
        out.push_str(&text.value[last..]);
        Ok(Value::String(out))
    }
}

fn eval_arg(arg: &Arg, scope: &Scope<'_>, field: &str) -> Result<Value, TaskFailure> {
    match arg {
        Arg::Literal(value) => Ok(value.clone()),
        Arg::Text(text) => Ok(Value::String(text.value.clone())),
        Arg::Path(path) => scope.resolve(path, field).map(Cow::into_owned),
        Arg::Call(call) => call.eval(scope, field),
    }
}

/// An integral JSON number as `i64` (`3.0` counts; `3.5` does not).
fn as_integer(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64))
}

/// Merges `from` into `into`; with `deep`, objects present on both sides are merged recursively,
/// otherwise the right-hand value wins.
fn merge(into: &mut serde_json::Map<String, Value>, from: &serde_json::Map<String, Value>, deep: bool) {
    for (key, value) in from {
        match (into.get_mut(key), value) {
            (Some(Value::Object(left)), Value::Object(right)) if deep => merge(left, right, true),
            _ => {
                into.insert(key.clone(), value.clone());
            }
        }
    }
}

/// A random version-4 UUID in its usual text form.
fn uuid_v4() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// A recursive-descent parser over the call text.
struct Parser<'t> {
    text: &'t str,
    pos: usize,
}

impl<'t> Parser<'t> {
    fn rest(&self) -> &'t str {
        &self.text[self.pos..]
    }

    fn skip_whitespace(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn call(&mut self) -> Result<Call, String> {
        self.skip_whitespace();
        let rest = self.rest();
        let name_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.')).unwrap_or(rest.len());
        let name = &rest[..name_len];
        let function = Function::from_name(name).ok_or_else(|| {
            if UNSUPPORTED.contains(&name) {
                format!("calls intrinsic function `{name}`, which is not supported by the local runner")
            } else {
                format!("calls unknown intrinsic function `{name}`")
            }
        })?;
        self.pos += name_len;
        self.skip_whitespace();
        if !self.rest().starts_with('(') {
            return Err(format!("has no `(` after `{name}`"));
        }
        self.pos += 1;
        let mut args = Vec::new();
        self.skip_whitespace();
        if self.rest().starts_with(')') {
            self.pos += 1;
        } else {
            loop {
                args.push(self.arg()?);
                self.skip_whitespace();
                match self.rest().chars().next() {
                    Some(',') => self.pos += 1,
                    Some(')') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(format!("has an unterminated argument list in `{name}(...)`")),
                }
            }
        }
        let (min, max) = function.arity();
        if args.len() < min || args.len() > max {
            let expected = match (min, max) {
                (min, usize::MAX) => format!("at least {min}"),
                (min, max) if min == max => format!("{min}"),
                (min, max) => format!("{min} to {max}"),
            };
            return Err(format!("calls `{name}` with {} argument(s); it takes {expected}", args.len()));
        }
        Ok(Call { function, args })
    }

    fn arg(&mut self) -> Result<Arg, String> {
        self.skip_whitespace();
        let rest = self.rest();
        if rest.starts_with('\'') {
            return self.text_literal().map(Arg::Text);
        }
        if rest.starts_with('$') {
            return self.path().map(Arg::Path);
        }
        if rest.starts_with("States.") {
            return self.call().map(Arg::Call);
        }
        let end = rest.find([',', ')']).unwrap_or(rest.len());
        let token = rest[..end].trim_end();
        let value = match token {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" => Value::Null,
            _ => match serde_json::from_str::<Value>(token) {
                Ok(number @ Value::Number(_)) => number,
                _ => return Err(format!("has an invalid intrinsic function argument `{token}`")),
            },
        };
        self.pos += token.len();
        Ok(Arg::Literal(value))
    }

    /// `'...'` with the escapes `\'`, `\{`, `\}` and `\\`.
    fn text_literal(&mut self) -> Result<Text, String> {
        let mut value = String::new();
        let mut placeholders = Vec::new();
        let mut chars = self.rest().char_indices().skip(1).peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, escaped @ ('\'' | '{' | '}' | '\\'))) => value.push(escaped),
                    Some((_, other)) => return Err(format!("has an invalid escape `\\{other}` in a string literal")),
                    None => break,
                },
                '{' if chars.peek().is_some_and(|&(_, next)| next == '}') => {
                    chars.next();
                    placeholders.push(value.len());
                    value.push_str("{}");
                }
                '\'' => {
                    self.pos += i + 1;
                    return Ok(Text { value, placeholders });
                }
                other => value.push(other),
            }
        }
        Err("has an unterminated string literal in an intrinsic function call".to_owned())
    }

    /// A path argument: up to the next `,` or `)` that is not inside brackets or quotes.
    fn path(&mut self) -> Result<Path, String> {
        let rest = self.rest();
        let mut depth = 0usize;
        let mut quote: Option<char> = None;
        let mut escaped = false;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            if let Some(q) = quote {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                continue;
            }
            match c {
                '[' => depth += 1,
                ']' => depth = depth.saturating_sub(1),
                '\'' | '"' if depth > 0 => quote = Some(c),
                ',' | ')' if depth == 0 => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let token = &rest[..end];
        let path = Path::parse(token.trim_end())?;
        self.pos += end;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::asl::STATES_RUNTIME;
    use crate::asl::context::Context;

    fn eval(text: &str, input: Value) -> Result<Value, TaskFailure> {
        let context = Context::empty();
        let scope = Scope { state: "S", input: &input, context: &context };
        Call::parse(text).unwrap().eval(&scope, "x.$")
    }

    #[test]
    fn format_fills_placeholders_with_paths_and_literals() {
        let out = eval("States.Format('run {} of {}: {}', $.id, 3, $.ok)", json!({"id": "r1", "ok": true}));
        assert_eq!(out.unwrap(), json!("run r1 of 3: true"));
    }

    #[test]
    fn format_keeps_escaped_braces_and_quotes_literal() {
        let out = eval(r"States.Format('\{\} it\'s {} \\', $.a)", json!({"a": 1}));
        assert_eq!(out.unwrap(), json!(r"{} it's 1 \"));
    }

    #[test]
    fn format_with_the_wrong_number_of_arguments_fails() {
        let err = eval("States.Format('{} {}', 1)", json!({})).unwrap_err();
        assert_eq!(err.error, STATES_INTRINSIC_FAILURE);
        assert!(err.cause.contains("2 placeholder(s) but 1 argument(s)"), "{}", err.cause);
    }

    #[test]
    fn nested_calls_and_bracketed_paths_parse() {
        let out = eval("States.ArrayLength(States.Array($['a, b'], 'x', null, -1.5))", json!({"a, b": 1}));
        assert_eq!(out.unwrap(), json!(4));
    }

    #[test]
    fn json_round_trip_functions_work() {
        assert_eq!(eval("States.StringToJson($.s)", json!({"s": "{\"a\":[1]}"})).unwrap(), json!({"a": [1]}));
        assert_eq!(eval("States.JsonToString($.o)", json!({"o": {"a": 1}})).unwrap(), json!("{\"a\":1}"));
        assert_eq!(eval("States.StringToJson('nope')", json!({})).unwrap_err().error, STATES_INTRINSIC_FAILURE);
    }

    #[test]
    fn json_merge_is_shallow_unless_asked_for_deep() {
        let input = json!({"a": {"x": 1, "n": {"p": 1}}, "b": {"y": 2, "n": {"q": 2}}});
        let shallow = eval("States.JsonMerge($.a, $.b, false)", input.clone()).unwrap();
        assert_eq!(shallow, json!({"x": 1, "y": 2, "n": {"q": 2}}));
        let deep = eval("States.JsonMerge($.a, $.b, true)", input).unwrap();
        assert_eq!(deep, json!({"x": 1, "y": 2, "n": {"p": 1, "q": 2}}));
    }

    #[test]
    fn math_add_adds_integers_and_refuses_fractions() {
        assert_eq!(eval("States.MathAdd($.n, -1)", json!({"n": 5})).unwrap(), json!(4));
        assert_eq!(eval("States.MathAdd(1.5, 1)", json!({})).unwrap_err().error, STATES_INTRINSIC_FAILURE);
    }

    #[test]
    fn array_get_item_selects_by_index() {
        assert_eq!(eval("States.ArrayGetItem($.a, 1)", json!({"a": [5, 6]})).unwrap(), json!(6));
        assert!(eval("States.ArrayGetItem($.a, 2)", json!({"a": [5, 6]})).is_err());
    }

    #[test]
    fn uuid_is_a_version_4_uuid() {
        let Value::String(id) = eval("States.UUID()", json!({})).unwrap() else { panic!("not a string") };
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert!(parts[2].starts_with('4'));
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(eval("States.UUID()", json!({})).unwrap(), json!(id));
    }

    #[test]
    fn missing_path_argument_is_a_runtime_failure() {
        let err = eval("States.Format('{}', $.nope)", json!({})).unwrap_err();
        assert_eq!(err.error, STATES_RUNTIME);
        assert!(err.cause.contains("`$.nope`"), "{}", err.cause);
    }

    #[test]
    fn unknown_and_unsupported_functions_are_refused_at_parse_time() {
        assert!(
            Call::parse("States.Frobnicate(1)").unwrap_err().contains("unknown intrinsic function `States.Frobnicate`")
        );
        assert!(Call::parse("States.Hash($.a, 'SHA-1')").unwrap_err().contains("not supported by the local runner"));
    }

    #[test]
    fn malformed_calls_are_refused_at_parse_time() {
        for text in
            ["States.Format('x'", "States.Format('x) ", "States.Array(1 2)", "States.UUID(1)", "States.Array(x)"]
        {
            assert!(Call::parse(text).is_err(), "{text}");
        }
        assert!(Call::parse("States.Array() extra").is_err());
        assert!(Call::parse(r"States.Format('\n')").is_err());
    }
}
