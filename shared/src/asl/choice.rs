//! Choice rules: `Variable` plus one comparison, combined with `And`, `Or` and `Not`.
//!
//! Semantics follow Step Functions: a comparison whose variable has another type than the
//! operator expects is simply false (so `NumericEquals` on a string does not match), but a
//! variable or `...Path` operand that does not resolve fails the state with `States.Runtime`,
//! except for `IsPresent`, whose whole point is to ask.
//!
//! Timestamp comparisons (`TimestampEquals`, `IsTimestamp`, ...) are refused; pgferry's machine
//! does not branch on time and an approximate implementation would be a trap.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Number, Value};

use super::AslError;
use super::TaskFailure;
use super::context::Scope;
use super::path::Path;

/// A top-level rule of a Choice state: if `condition` holds, go to `next`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChoiceRule {
    pub(crate) condition: Condition,
    pub(crate) next: String,
}

/// A boolean expression over the state's input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Condition {
    And(Vec<Condition>),
    Or(Vec<Condition>),
    Not(Box<Condition>),
    Compare {
        variable: Path,
        test: Test,
        /// The operator as written, e.g. `NumericEqualsPath`, for failure causes.
        operator: String,
    },
}

/// The right-hand side of a comparison: a literal or a path to read it from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand<T> {
    Literal(T),
    Path(Path),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Relation {
    Equals,
    LessThan,
    LessThanEquals,
    GreaterThan,
    GreaterThanEquals,
}

impl Relation {
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Self::Equals => ordering == Ordering::Equal,
            Self::LessThan => ordering == Ordering::Less,
            Self::LessThanEquals => ordering != Ordering::Greater,
            Self::GreaterThan => ordering == Ordering::Greater,
            Self::GreaterThanEquals => ordering != Ordering::Less,
        }
    }
}

/// One comparison operator with its operand.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Test {
    String(Relation, Operand<String>),
    StringMatches(Vec<Glob>),
    Numeric(Relation, Operand<Number>),
    Boolean(Operand<bool>),
    IsPresent(bool),
    IsNull(bool),
    IsString(bool),
    IsNumeric(bool),
    IsBoolean(bool),
}

/// One piece of a `StringMatches` pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Glob {
    Char(char),
    Star,
}

/// Keys a rule may have besides its operator.
const RULE_KEYS: &[&str] = &["Variable", "And", "Or", "Not", "Next", "Comment"];

/// Operators (and rule fields) ASL has that the runner refuses.
const UNSUPPORTED_KEYS: &[&str] = &[
    "TimestampEquals",
    "TimestampEqualsPath",
    "TimestampLessThan",
    "TimestampLessThanPath",
    "TimestampLessThanEquals",
    "TimestampLessThanEqualsPath",
    "TimestampGreaterThan",
    "TimestampGreaterThanPath",
    "TimestampGreaterThanEquals",
    "TimestampGreaterThanEqualsPath",
    "IsTimestamp",
    "Assign",
    "Condition",
    "Output",
];

impl ChoiceRule {
    /// Parses `Choices[i]` of state `state`.
    pub(crate) fn parse(state: &str, value: &Value, field: &str) -> Result<Self, AslError> {
        let condition = Condition::parse(state, value, field, true)?;
        let next = match value.get("Next") {
            Some(Value::String(next)) => next.clone(),
            Some(_) => return Err(AslError::invalid(state, format!("{field}.Next"), "must be a string")),
            None => {
                return Err(AslError::invalid(
                    state,
                    format!("{field}.Next"),
                    "is required on a top-level choice rule",
                ));
            }
        };
        Ok(Self { condition, next })
    }
}

impl Condition {
    fn parse(state: &str, value: &Value, field: &str, top_level: bool) -> Result<Self, AslError> {
        let Value::Object(map) = value else {
            return Err(AslError::invalid(state, field, "must be an object"));
        };
        if !top_level && map.contains_key("Next") {
            return Err(AslError::invalid(state, format!("{field}.Next"), "is only allowed on top-level choice rules"));
        }
        let mut operators = Vec::new();
        for key in map.keys() {
            if UNSUPPORTED_KEYS.contains(&key.as_str()) {
                return Err(AslError::unsupported(state, format!("{field}.{key}")));
            }
            if !RULE_KEYS.contains(&key.as_str()) {
                operators.push(key.as_str());
            }
        }
        let combinators: Vec<&str> = ["And", "Or", "Not"].into_iter().filter(|k| map.contains_key(*k)).collect();
        match (combinators.as_slice(), map.get("Variable"), operators.as_slice()) {
            ([combinator], None, []) => {
                let inner_field = format!("{field}.{combinator}");
                let inner = &map[*combinator];
                if *combinator == "Not" {
                    return Ok(Self::Not(Box::new(Self::parse(state, inner, &inner_field, false)?)));
                }
                let Value::Array(rules) = inner else {
                    return Err(AslError::invalid(state, inner_field, "must be an array of choice rules"));
                };
                if rules.is_empty() {
                    return Err(AslError::invalid(state, inner_field, "must not be empty"));
                }
                let rules = rules
                    .iter()
                    .enumerate()
                    .map(|(i, rule)| Self::parse(state, rule, &format!("{inner_field}[{i}]"), false))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if *combinator == "And" { Self::And(rules) } else { Self::Or(rules) })
            }
            ([], Some(variable), [operator]) => {
                let Value::String(variable) = variable else {
                    return Err(AslError::invalid(state, format!("{field}.Variable"), "must be a path string"));
                };
                let variable = Path::parse(variable)
                    .map_err(|reason| AslError::invalid(state, format!("{field}.Variable"), reason))?;
                let operator_field = format!("{field}.{operator}");
                let test = parse_test(operator, &map[*operator])
                    .map_err(|reason| AslError::invalid(state, &operator_field, reason))?
                    .ok_or_else(|| AslError::UnknownField {
                        state: state.to_owned(),
                        field: operator_field.clone(),
                        kind: "Choice".to_owned(),
                    })?;
                Ok(Self::Compare { variable, test, operator: (*operator).to_owned() })
            }
            ([], Some(_), []) => Err(AslError::invalid(state, field, "has a `Variable` but no comparison operator")),
            ([], Some(_), _) => Err(AslError::invalid(
                state,
                field,
                format!("has more than one comparison operator ({})", operators.join(", ")),
            )),
            ([], None, [operator, ..]) => {
                Err(AslError::invalid(state, format!("{field}.{operator}"), "needs a `Variable` next to it"))
            }
            ([], None, []) => {
                Err(AslError::invalid(state, field, "has no condition (`Variable` + operator, `And`, `Or` or `Not`)"))
            }
            _ => Err(AslError::invalid(
                state,
                field,
                "must be exactly one of: `Variable` with an operator, `And`, `Or`, `Not`",
            )),
        }
    }

    /// Evaluates the condition against `scope.input`.
    pub(crate) fn eval(&self, scope: &Scope<'_>) -> Result<bool, TaskFailure> {
        match self {
            Self::And(rules) => {
                for rule in rules {
                    if !rule.eval(scope)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Self::Or(rules) => {
                for rule in rules {
                    if rule.eval(scope)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Self::Not(rule) => Ok(!rule.eval(scope)?),
            Self::Compare { variable, test, operator } => {
                let value = variable.resolve(scope.input, scope.context);
                if let Test::IsPresent(expected) = test {
                    return Ok(value.is_some() == *expected);
                }
                let value = value.ok_or_else(|| scope.not_found(variable, "Variable"))?;
                test.eval(&value, scope, operator)
            }
        }
    }
}

impl Test {
    fn eval(&self, value: &Value, scope: &Scope<'_>, operator: &str) -> Result<bool, TaskFailure> {
        Ok(match self {
            Self::String(relation, operand) => {
                let right = resolve(operand, scope, operator, |v| v.as_str().map(str::to_owned))?;
                match (value.as_str(), right) {
                    (Some(left), Some(right)) => relation.holds(left.cmp(right.as_ref())),
                    _ => false,
                }
            }
            Self::StringMatches(pattern) => value.as_str().is_some_and(|s| glob_matches(pattern, s)),
            Self::Numeric(relation, operand) => {
                let right = resolve(operand, scope, operator, |v| v.as_number().cloned())?;
                match (value.as_number(), right) {
                    (Some(left), Some(right)) => compare_numbers(left, &right).is_some_and(|o| relation.holds(o)),
                    _ => false,
                }
            }
            Self::Boolean(operand) => {
                let right = resolve(operand, scope, operator, Value::as_bool)?;
                matches!((value.as_bool(), right), (Some(left), Some(right)) if left == *right)
            }
            Self::IsPresent(expected) => *expected,
            Self::IsNull(expected) => value.is_null() == *expected,
            Self::IsString(expected) => value.is_string() == *expected,
            Self::IsNumeric(expected) => value.is_number() == *expected,
            Self::IsBoolean(expected) => value.is_boolean() == *expected,
        })
    }
}

/// The operand's value, or `None` when a `...Path` operand selects a value of another type
/// (which makes the comparison false, not an error).
fn resolve<'o, T: Clone>(
    operand: &'o Operand<T>,
    scope: &Scope<'_>,
    operator: &str,
    convert: impl Fn(&Value) -> Option<T>,
) -> Result<Option<Cow<'o, T>>, TaskFailure> {
    match operand {
        Operand::Literal(value) => Ok(Some(Cow::Borrowed(value))),
        Operand::Path(path) => {
            let value = scope.resolve(path, operator)?;
            Ok(convert(value.as_ref()).map(Cow::Owned))
        }
    }
}

/// Orders two JSON numbers exactly when both are integers, by `f64` otherwise.
fn compare_numbers(left: &Number, right: &Number) -> Option<Ordering> {
    if let (Some(l), Some(r)) = (left.as_i64(), right.as_i64()) {
        return Some(l.cmp(&r));
    }
    if let (Some(l), Some(r)) = (left.as_u64(), right.as_u64()) {
        return Some(l.cmp(&r));
    }
    left.as_f64()?.partial_cmp(&right.as_f64()?)
}

/// Parses an operator and its value; `Ok(None)` when the operator is unknown.
fn parse_test(operator: &str, value: &Value) -> Result<Option<Test>, String> {
    let flag = || value.as_bool().ok_or_else(|| "must be true or false".to_owned());
    let test = match operator {
        "IsPresent" => Test::IsPresent(flag()?),
        "IsNull" => Test::IsNull(flag()?),
        "IsString" => Test::IsString(flag()?),
        "IsNumeric" => Test::IsNumeric(flag()?),
        "IsBoolean" => Test::IsBoolean(flag()?),
        "StringMatches" => {
            let pattern = value.as_str().ok_or_else(|| "must be a string".to_owned())?;
            Test::StringMatches(parse_glob(pattern))
        }
        _ => {
            let (base, is_path) = match operator.strip_suffix("Path") {
                Some(base) => (base, true),
                None => (operator, false),
            };
            let path_operand = |v: &Value| -> Result<Path, String> {
                let text = v.as_str().ok_or_else(|| "must be a path string".to_owned())?;
                Path::parse(text)
            };
            if let Some(relation) = base.strip_prefix("String").and_then(relation) {
                Test::String(
                    relation,
                    if is_path {
                        Operand::Path(path_operand(value)?)
                    } else {
                        Operand::Literal(value.as_str().ok_or_else(|| "must be a string".to_owned())?.to_owned())
                    },
                )
            } else if let Some(relation) = base.strip_prefix("Numeric").and_then(relation) {
                Test::Numeric(
                    relation,
                    if is_path {
                        Operand::Path(path_operand(value)?)
                    } else {
                        Operand::Literal(value.as_number().ok_or_else(|| "must be a number".to_owned())?.clone())
                    },
                )
            } else if base == "BooleanEquals" {
                Test::Boolean(if is_path { Operand::Path(path_operand(value)?) } else { Operand::Literal(flag()?) })
            } else {
                return Ok(None);
            }
        }
    };
    Ok(Some(test))
}

fn relation(suffix: &str) -> Option<Relation> {
    Some(match suffix {
        "Equals" => Relation::Equals,
        "LessThan" => Relation::LessThan,
        "LessThanEquals" => Relation::LessThanEquals,
        "GreaterThan" => Relation::GreaterThan,
        "GreaterThanEquals" => Relation::GreaterThanEquals,
        _ => return None,
    })
}

/// `*` matches any run of characters; `\*` is a literal star and `\\` a literal backslash.
fn parse_glob(pattern: &str) -> Vec<Glob> {
    let mut out = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(Glob::Char(chars.next().unwrap_or('\\'))),
            '*' => out.push(Glob::Star),
            other => out.push(Glob::Char(other)),
        }
    }
    out
}

/// Wildcard matching with single-star backtracking: linear in practice, never exponential.
fn glob_matches(pattern: &[Glob], text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Glob::Star) => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(Glob::Char(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    p = star + 1;
                    t = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|g| *g == Glob::Star)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::asl::STATES_RUNTIME;
    use crate::asl::context::Context;

    fn check(rule: Value, input: Value) -> Result<bool, TaskFailure> {
        let mut rule = rule;
        rule["Next"] = json!("X");
        let rule = ChoiceRule::parse("C", &rule, "Choices[0]").unwrap();
        let context = Context::empty();
        rule.condition.eval(&Scope { state: "C", input: &input, context: &context })
    }

    #[test]
    fn string_comparisons_use_code_point_order() {
        let input = json!({"s": "beta", "t": "beta"});
        assert!(check(json!({"Variable": "$.s", "StringEquals": "beta"}), input.clone()).unwrap());
        assert!(check(json!({"Variable": "$.s", "StringEqualsPath": "$.t"}), input.clone()).unwrap());
        assert!(check(json!({"Variable": "$.s", "StringLessThan": "gamma"}), input.clone()).unwrap());
        assert!(check(json!({"Variable": "$.s", "StringGreaterThan": "alpha"}), input.clone()).unwrap());
        assert!(check(json!({"Variable": "$.s", "StringLessThanEquals": "beta"}), input.clone()).unwrap());
        assert!(!check(json!({"Variable": "$.s", "StringGreaterThan": "beta"}), input).unwrap());
    }

    #[test]
    fn string_matches_supports_wildcards_and_escaped_stars() {
        let matches = |pattern: &str, text: &str| glob_matches(&parse_glob(pattern), text);
        assert!(matches("log-*.txt", "log-2024-01.txt"));
        assert!(matches("*", ""));
        assert!(matches("a*b*c", "aXbYbZc"));
        assert!(!matches("a*b", "aXbY"));
        assert!(matches(r"a\*", "a*"));
        assert!(!matches(r"a\*", "ab"));
        assert!(matches(r"a\\b", r"a\b"));
        assert!(check(json!({"Variable": "$.s", "StringMatches": "pg_*"}), json!({"s": "pg_dump"})).unwrap());
    }

    #[test]
    fn numeric_comparisons_compare_integers_and_floats() {
        let input = json!({"n": 5, "f": 5.0, "big": 9007199254740993_u64, "limit": 4});
        assert!(check(json!({"Variable": "$.n", "NumericEquals": 5.0}), input.clone()).unwrap());
        assert!(check(json!({"Variable": "$.f", "NumericEqualsPath": "$.n"}), input.clone()).unwrap());
        assert!(check(json!({"Variable": "$.n", "NumericGreaterThanPath": "$.limit"}), input.clone()).unwrap());
        assert!(check(json!({"Variable": "$.n", "NumericGreaterThanEquals": 5}), input.clone()).unwrap());
        assert!(check(json!({"Variable": "$.n", "NumericLessThanEquals": 5}), input.clone()).unwrap());
        assert!(!check(json!({"Variable": "$.n", "NumericLessThan": 5}), input.clone()).unwrap());
        assert!(check(json!({"Variable": "$.big", "NumericGreaterThan": 9007199254740992_u64}), input).unwrap());
    }

    #[test]
    fn type_mismatch_is_false_not_an_error() {
        let input = json!({"s": "5", "b": "true"});
        assert!(!check(json!({"Variable": "$.s", "NumericEquals": 5}), input.clone()).unwrap());
        assert!(!check(json!({"Variable": "$.b", "BooleanEquals": true}), input.clone()).unwrap());
        assert!(!check(json!({"Variable": "$.s", "NumericEqualsPath": "$.s"}), input).unwrap());
    }

    #[test]
    fn type_tests_and_presence() {
        let input = json!({"n": null, "s": "x", "i": 1, "b": false});
        assert!(check(json!({"Variable": "$.n", "IsNull": true}), input.clone()).unwrap());
        assert!(check(json!({"Variable": "$.s", "IsString": true}), input.clone()).unwrap());
        assert!(check(json!({"Variable": "$.i", "IsNumeric": true}), input.clone()).unwrap());
        assert!(check(json!({"Variable": "$.b", "IsBoolean": true}), input.clone()).unwrap());
        assert!(check(json!({"Variable": "$.b", "BooleanEquals": false}), input.clone()).unwrap());
        assert!(check(json!({"Variable": "$.missing", "IsPresent": false}), input.clone()).unwrap());
        assert!(!check(json!({"Variable": "$.missing", "IsPresent": true}), input).unwrap());
    }

    #[test]
    fn missing_variable_is_a_runtime_failure() {
        let err = check(json!({"Variable": "$.missing", "IsNull": true}), json!({})).unwrap_err();
        assert_eq!(err.error, STATES_RUNTIME);
        assert!(err.cause.contains("`$.missing`") && err.cause.contains("`Variable`"), "{}", err.cause);
        let err = check(json!({"Variable": "$.a", "NumericEqualsPath": "$.b"}), json!({"a": 1})).unwrap_err();
        assert!(err.cause.contains("`NumericEqualsPath`"), "{}", err.cause);
    }

    #[test]
    fn combinators_nest() {
        let rule = json!({"Or": [
            {"Not": {"Variable": "$.a", "IsPresent": true}},
            {"And": [{"Variable": "$.a", "NumericGreaterThan": 1}, {"Variable": "$.a", "NumericLessThan": 3}]}
        ]});
        assert!(check(rule.clone(), json!({})).unwrap());
        assert!(check(rule.clone(), json!({"a": 2})).unwrap());
        assert!(!check(rule, json!({"a": 3})).unwrap());
    }

    #[test]
    fn malformed_rules_are_refused_with_their_field() {
        let parse = |rule: Value| ChoiceRule::parse("C", &rule, "Choices[0]").unwrap_err().to_string();
        let err = parse(json!({"Variable": "$.a", "StringEquals": 1, "Next": "X"}));
        assert!(err.contains("`Choices[0].StringEquals` must be a string"), "{err}");
        let err = parse(json!({"Variable": "$.a", "StringEquals": "x"}));
        assert!(err.contains("`Choices[0].Next` is required"), "{err}");
        let err = parse(json!({"And": [{"Variable": "$.a", "IsNull": true, "Next": "X"}], "Next": "X"}));
        assert!(err.contains("`Choices[0].And[0].Next` is only allowed"), "{err}");
        let err = parse(json!({"Variable": "$.a", "TimestampEquals": "2024-01-01T00:00:00Z", "Next": "X"}));
        assert!(err.contains("`Choices[0].TimestampEquals` is not supported by the local runner"), "{err}");
        let err = parse(json!({"Variable": "$.a", "StringEqualz": "x", "Next": "X"}));
        assert!(err.contains("`Choices[0].StringEqualz` is not allowed"), "{err}");
        let err = parse(json!({"Variable": "$.a", "IsNull": true, "IsString": true, "Next": "X"}));
        assert!(err.contains("more than one comparison operator"), "{err}");
        let err = parse(json!({"Variable": "$.a", "And": [], "Next": "X"}));
        assert!(err.contains("exactly one of"), "{err}");
    }
}
