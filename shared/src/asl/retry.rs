//! `Retry` and `Catch`: which errors they match, how long to wait between attempts.
//!
//! Matching follows the ASL specification with the Step Functions refinement documented in
//! "Handling errors in Step Functions workflows": `States.ALL` matches any error and
//! `States.TaskFailed` any error but `States.Timeout`, yet neither matches `States.Runtime`,
//! which is never retried and ends the execution unless a catcher names it explicitly (AWS does
//! not catch it at all; naming it is a local-only escape hatch). Retriers are tried in order and
//! only the first one that matches applies, with its own attempt count.

use std::time::Duration;

use serde_json::Value;

use super::path::ResultPath;
use super::{AslError, STATES_ALL, STATES_DATA_LIMIT_EXCEEDED, STATES_RUNTIME, STATES_TASK_FAILED, STATES_TIMEOUT};

/// How a retrier spreads its delays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Jitter {
    /// Exactly the backoff delay.
    None,
    /// Uniformly random between zero and the backoff delay, so retries of many iterations do not
    /// arrive together.
    Full,
}

/// One element of a `Retry` array.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Retrier {
    pub(crate) error_equals: Vec<String>,
    /// `IntervalSeconds`, default 1.
    pub(crate) interval_seconds: u64,
    /// `MaxAttempts`, default 3; 0 means the matched error is never retried.
    pub(crate) max_attempts: u32,
    /// `BackoffRate`, default 2.0.
    pub(crate) backoff_rate: f64,
    /// `MaxDelaySeconds`: upper bound on any single delay.
    pub(crate) max_delay_seconds: Option<u64>,
    pub(crate) jitter: Jitter,
}

/// One element of a `Catch` array.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Catcher {
    pub(crate) error_equals: Vec<String>,
    pub(crate) next: String,
    /// Where the `{"Error", "Cause"}` object goes in the state's input; default `$`.
    pub(crate) result_path: ResultPath,
}

const RETRIER_FIELDS: &[&str] =
    &["ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate", "MaxDelaySeconds", "JitterStrategy", "Comment"];
const CATCHER_FIELDS: &[&str] = &["ErrorEquals", "Next", "ResultPath", "Comment"];
const CATCHER_UNSUPPORTED: &[&str] = &["Assign", "Output"];

/// Whether an `ErrorEquals` list matches `error`.
pub(crate) fn error_matches(error_equals: &[String], error: &str) -> bool {
    error_equals.iter().any(|name| {
        if error == STATES_RUNTIME || error == STATES_DATA_LIMIT_EXCEEDED {
            return name == error;
        }
        match name.as_str() {
            STATES_ALL => true,
            STATES_TASK_FAILED => error != STATES_TIMEOUT,
            other => other == error,
        }
    })
}

impl Retrier {
    /// The delay before retry number `retries_so_far + 1` of this retrier.
    pub(crate) fn delay(&self, retries_so_far: u32) -> Duration {
        let exponent = i32::try_from(retries_so_far).unwrap_or(i32::MAX);
        let mut seconds = self.interval_seconds as f64 * self.backoff_rate.powi(exponent);
        if let Some(max) = self.max_delay_seconds {
            seconds = seconds.min(max as f64);
        }
        if self.jitter == Jitter::Full {
            seconds *= rand::random::<f64>();
        }
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
    }
}

/// Parses a state's `Retry` array (`value` may be absent).
pub(crate) fn parse_retry(state: &str, value: Option<&Value>) -> Result<Vec<Retrier>, AslError> {
    let items = array(state, "Retry", value)?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("Retry[{i}]");
        let map = object(state, &field, item, RETRIER_FIELDS, &[])?;
        let error_equals = parse_error_equals(state, &field, map.get("ErrorEquals"), i + 1 == items.len())?;
        let interval_seconds = match map.get("IntervalSeconds") {
            None => 1,
            Some(v) => positive_integer(state, &format!("{field}.IntervalSeconds"), v)?,
        };
        let max_attempts = match map.get("MaxAttempts") {
            None => 3,
            Some(v) => v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
                AslError::invalid(state, format!("{field}.MaxAttempts"), "must be a non-negative integer")
            })?,
        };
        let backoff_rate = match map.get("BackoffRate") {
            None => 2.0,
            Some(v) => v.as_f64().filter(|r| *r >= 1.0 && r.is_finite()).ok_or_else(|| {
                AslError::invalid(state, format!("{field}.BackoffRate"), "must be a number of at least 1.0")
            })?,
        };
        let max_delay_seconds = match map.get("MaxDelaySeconds") {
            None => None,
            Some(v) => Some(positive_integer(state, &format!("{field}.MaxDelaySeconds"), v)?),
        };
        let jitter = match map.get("JitterStrategy") {
            None => Jitter::None,
            Some(Value::String(s)) if s == "NONE" => Jitter::None,
            Some(Value::String(s)) if s == "FULL" => Jitter::Full,
            Some(_) => {
                return Err(AslError::invalid(
                    state,
                    format!("{field}.JitterStrategy"),
                    "must be \"FULL\" or \"NONE\"",
                ));
            }
        };
        out.push(Retrier { error_equals, interval_seconds, max_attempts, backoff_rate, max_delay_seconds, jitter });
    }
    Ok(out)
}

/// Parses a state's `Catch` array (`value` may be absent).
pub(crate) fn parse_catch(state: &str, value: Option<&Value>) -> Result<Vec<Catcher>, AslError> {
    let items = array(state, "Catch", value)?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("Catch[{i}]");
        let map = object(state, &field, item, CATCHER_FIELDS, CATCHER_UNSUPPORTED)?;
        let error_equals = parse_error_equals(state, &field, map.get("ErrorEquals"), i + 1 == items.len())?;
        let next = match map.get("Next") {
            Some(Value::String(next)) => next.clone(),
            Some(_) => return Err(AslError::invalid(state, format!("{field}.Next"), "must be a string")),
            None => return Err(AslError::invalid(state, format!("{field}.Next"), "is required")),
        };
        let result_path = ResultPath::parse(map.get("ResultPath"))
            .map_err(|reason| AslError::invalid(state, format!("{field}.ResultPath"), reason))?;
        out.push(Catcher { error_equals, next, result_path });
    }
    Ok(out)
}

fn array<'v>(state: &str, field: &str, value: Option<&'v Value>) -> Result<&'v [Value], AslError> {
    match value {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(AslError::invalid(state, field, "must be an array")),
    }
}

fn object<'v>(
    state: &str,
    field: &str,
    value: &'v Value,
    allowed: &[&str],
    unsupported: &[&str],
) -> Result<&'v serde_json::Map<String, Value>, AslError> {
    let Value::Object(map) = value else {
        return Err(AslError::invalid(state, field, "must be an object"));
    };
    for key in map.keys() {
        if unsupported.contains(&key.as_str()) {
            return Err(AslError::unsupported(state, format!("{field}.{key}")));
        }
        if !allowed.contains(&key.as_str()) {
            return Err(AslError::invalid(state, format!("{field}.{key}"), "is not a known field"));
        }
    }
    Ok(map)
}

fn positive_integer(state: &str, field: &str, value: &Value) -> Result<u64, AslError> {
    value.as_u64().filter(|n| *n > 0).ok_or_else(|| AslError::invalid(state, field, "must be a positive integer"))
}

fn parse_error_equals(state: &str, field: &str, value: Option<&Value>, is_last: bool) -> Result<Vec<String>, AslError> {
    let field = format!("{field}.ErrorEquals");
    let Some(Value::Array(items)) = value else {
        return Err(AslError::invalid(state, field, "is required and must be an array of error names"));
    };
    if items.is_empty() {
        return Err(AslError::invalid(state, field, "must not be empty"));
    }
    let names = items
        .iter()
        .map(|item| item.as_str().map(str::to_owned))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| AslError::invalid(state, &field, "must contain only strings"))?;
    if names.iter().any(|n| n == STATES_ALL) && (names.len() != 1 || !is_last) {
        return Err(AslError::invalid(
            state,
            field,
            "may use `States.ALL` only on its own, in the last retrier or catcher",
        ));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn states_all_matches_everything_but_runtime() {
        let all = names(&[STATES_ALL]);
        assert!(error_matches(&all, "CopyFailed"));
        assert!(error_matches(&all, STATES_TIMEOUT));
        assert!(!error_matches(&all, STATES_RUNTIME));
    }

    #[test]
    fn task_failed_matches_everything_but_timeout_and_runtime() {
        let task_failed = names(&[STATES_TASK_FAILED]);
        assert!(error_matches(&task_failed, "CopyFailed"));
        assert!(!error_matches(&task_failed, STATES_TIMEOUT));
        assert!(!error_matches(&task_failed, STATES_RUNTIME));
    }

    #[test]
    fn exact_names_match_only_themselves() {
        let list = names(&["A", STATES_RUNTIME]);
        assert!(error_matches(&list, "A"));
        assert!(!error_matches(&list, "B"));
        assert!(error_matches(&list, STATES_RUNTIME));
    }

    #[test]
    fn retrier_defaults_follow_the_specification() {
        let retry = parse_retry("T", Some(&json!([{"ErrorEquals": ["A"]}]))).unwrap();
        let r = &retry[0];
        assert_eq!((r.interval_seconds, r.max_attempts, r.backoff_rate, r.max_delay_seconds), (1, 3, 2.0, None));
        assert_eq!(r.jitter, Jitter::None);
    }

    #[test]
    fn delays_grow_by_the_backoff_rate_and_respect_the_cap() {
        let retry = parse_retry(
            "T",
            Some(&json!([{"ErrorEquals": ["A"], "IntervalSeconds": 2, "BackoffRate": 3, "MaxDelaySeconds": 10}])),
        )
        .unwrap();
        let delays: Vec<u64> = (0..4).map(|n| retry[0].delay(n).as_secs()).collect();
        assert_eq!(delays, [2, 6, 10, 10]);
    }

    #[test]
    fn full_jitter_stays_within_the_backoff_delay() {
        let retry =
            parse_retry("T", Some(&json!([{"ErrorEquals": ["A"], "IntervalSeconds": 4, "JitterStrategy": "FULL"}])))
                .unwrap();
        for _ in 0..50 {
            assert!(retry[0].delay(1) <= Duration::from_secs(8));
        }
    }

    #[test]
    fn huge_backoff_does_not_panic() {
        let retry = parse_retry("T", Some(&json!([{"ErrorEquals": ["A"], "BackoffRate": 1e300}]))).unwrap();
        assert_eq!(retry[0].delay(5), Duration::MAX);
    }

    #[test]
    fn states_all_must_be_alone_and_last() {
        let err = parse_retry("T", Some(&json!([{"ErrorEquals": ["States.ALL", "A"]}]))).unwrap_err();
        assert!(err.to_string().contains("`Retry[0].ErrorEquals`"), "{err}");
        let err = parse_catch(
            "T",
            Some(&json!([{"ErrorEquals": ["States.ALL"], "Next": "X"}, {"ErrorEquals": ["A"], "Next": "X"}])),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`Catch[0].ErrorEquals`"), "{err}");
    }

    #[test]
    fn malformed_retriers_and_catchers_are_refused() {
        let cases = [
            (json!([{"ErrorEquals": []}]), "Retry[0].ErrorEquals"),
            (json!([{"ErrorEquals": ["A"], "IntervalSeconds": 0}]), "Retry[0].IntervalSeconds"),
            (json!([{"ErrorEquals": ["A"], "MaxAttempts": -1}]), "Retry[0].MaxAttempts"),
            (json!([{"ErrorEquals": ["A"], "BackoffRate": 0.5}]), "Retry[0].BackoffRate"),
            (json!([{"ErrorEquals": ["A"], "JitterStrategy": "SOME"}]), "Retry[0].JitterStrategy"),
            (json!([{"ErrorEquals": ["A"], "Foo": 1}]), "Retry[0].Foo"),
        ];
        for (retry, field) in cases {
            let err = parse_retry("T", Some(&retry)).unwrap_err().to_string();
            assert!(err.contains(&format!("`{field}`")), "{err}");
        }
        let err = parse_catch("T", Some(&json!([{"ErrorEquals": ["A"]}]))).unwrap_err().to_string();
        assert!(err.contains("`Catch[0].Next` is required"), "{err}");
        let err = parse_catch("T", Some(&json!([{"ErrorEquals": ["A"], "Next": "X", "Assign": {}}]))).unwrap_err();
        assert!(err.to_string().contains("`Catch[0].Assign` is not supported"), "{err}");
    }
}
