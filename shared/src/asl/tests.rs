//! Behaviour of whole executions, each on a small inline definition and a recording test
//! environment. Time-dependent tests run under paused tokio time, so delays are exact and the
//! tests do not actually sleep.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::*;

type Handler = dyn Fn(&str, Value) -> BoxFuture<'static, Result<Value, TaskFailure>> + Send + Sync;

/// One object a result writer stored: resource, bucket, key and the body as JSON.
type Written = (String, String, String, Value);

/// Records every call and answers tasks with a handler, item reads with fixed items and result
/// writes with `write_failure` (or success).
struct FakeEnv {
    handler: Box<Handler>,
    items: Result<Vec<Value>, TaskFailure>,
    write_failure: Option<TaskFailure>,
    calls: Mutex<Vec<(String, Value)>>,
    reads: Mutex<Vec<(String, Value, Value)>>,
    writes: Mutex<Vec<Written>>,
}

impl FakeEnv {
    fn with_handler(
        handler: impl Fn(&str, Value) -> BoxFuture<'static, Result<Value, TaskFailure>> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            handler: Box::new(handler),
            items: Ok(Vec::new()),
            write_failure: None,
            calls: Mutex::new(Vec::new()),
            reads: Mutex::new(Vec::new()),
            writes: Mutex::new(Vec::new()),
        })
    }

    /// Every task returns its input.
    fn echo() -> Arc<Self> {
        Self::with_handler(|_, input| async move { Ok(input) }.boxed())
    }

    /// Every task fails with `error`.
    fn failing(error: &'static str) -> Arc<Self> {
        Self::with_handler(move |_, _| async move { Err(TaskFailure::new(error, "it broke")) }.boxed())
    }

    /// Task `n` (counting from 1) returns the result of `script(n)`.
    fn scripted(script: impl Fn(u32) -> Result<Value, TaskFailure> + Send + Sync + 'static) -> Arc<Self> {
        let count = AtomicU32::new(0);
        Self::with_handler(move |_, _| {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let result = script(n);
            async move { result }.boxed()
        })
    }

    fn with_items(self: Arc<Self>, items: Result<Vec<Value>, TaskFailure>) -> Arc<Self> {
        let mut env = Arc::into_inner(self).unwrap();
        env.items = items;
        Arc::new(env)
    }

    fn failing_writes(self: Arc<Self>, failure: TaskFailure) -> Arc<Self> {
        let mut env = Arc::into_inner(self).unwrap();
        env.write_failure = Some(failure);
        Arc::new(env)
    }

    fn calls(&self) -> Vec<(String, Value)> {
        self.calls.lock().unwrap().clone()
    }

    fn writes(&self) -> Vec<Written> {
        self.writes.lock().unwrap().clone()
    }
}

impl Environment for FakeEnv {
    fn invoke(&self, resource: &str, input: Value) -> BoxFuture<'_, Result<Value, TaskFailure>> {
        self.calls.lock().unwrap().push((resource.to_owned(), input.clone()));
        (self.handler)(resource, input)
    }

    fn read_items(
        &self,
        resource: &str,
        reader_config: &Value,
        parameters: Value,
    ) -> BoxFuture<'_, Result<Vec<Value>, TaskFailure>> {
        self.reads.lock().unwrap().push((resource.to_owned(), reader_config.clone(), parameters));
        let items = self.items.clone();
        async move { items }.boxed()
    }

    fn write_result(
        &self,
        resource: &str,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
    ) -> BoxFuture<'_, Result<(), TaskFailure>> {
        let result = match &self.write_failure {
            Some(failure) => Err(failure.clone()),
            None => {
                let body = serde_json::from_slice(&body).expect("result objects are JSON");
                self.writes.lock().unwrap().push((resource.to_owned(), bucket.to_owned(), key.to_owned(), body));
                Ok(())
            }
        };
        async move { result }.boxed()
    }
}

fn machine(text: &str) -> StateMachine {
    StateMachine::parse(text, &BTreeMap::new()).unwrap_or_else(|e| panic!("fixture does not parse: {e}"))
}

async fn run(text: &str, env: Arc<FakeEnv>, input: Value) -> Outcome {
    let machine = machine(text);
    Execution::new(&machine, env, "test-run").run(input).await.unwrap()
}

/// Runs and also returns every event, in order.
async fn run_observed(text: &str, env: Arc<FakeEnv>, input: Value) -> (Outcome, Vec<Event>) {
    let machine = machine(text);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let outcome = Execution::new(&machine, env, "test-run")
        .with_observer(Arc::new(move |event: &Event| sink.lock().unwrap().push(event.clone())))
        .run(input)
        .await
        .unwrap();
    let events = events.lock().unwrap().clone();
    (outcome, events)
}

fn failed(error: &str) -> impl Fn(&Outcome) -> bool + '_ {
    move |outcome| matches!(outcome, Outcome::Failed { error: e, .. } if e == error)
}

fn retry_delays(events: &[Event]) -> Vec<Duration> {
    events.iter().filter_map(|e| if let Event::Retrying { delay, .. } = e { Some(*delay) } else { None }).collect()
}

// ---------------------------------------------------------------------------------------------
// Retry and Catch

const RETRIED_TASK: &str = r#"{
    "StartAt": "Copy",
    "States": {
        "Copy": {"Type": "Task", "Resource": "arn:copy", "End": true,
                 "Retry": [{"ErrorEquals": ["Lambda.TooManyRequestsException"], "IntervalSeconds": 1,
                            "BackoffRate": 2, "MaxAttempts": 3}]}
    }
}"#;

#[tokio::test(start_paused = true)]
async fn retried_task_succeeds_on_the_third_attempt_after_one_and_two_seconds() {
    let env = FakeEnv::scripted(|n| {
        if n < 3 {
            Err(TaskFailure::new("Lambda.TooManyRequestsException", "slow down"))
        } else {
            Ok(json!({"rows": 10}))
        }
    });
    let started = Instant::now();
    let (outcome, events) = run_observed(RETRIED_TASK, env.clone(), json!({})).await;
    assert_eq!(outcome, Outcome::Succeeded(json!({"rows": 10})));
    assert_eq!(env.calls().len(), 3);
    assert_eq!(retry_delays(&events), [Duration::from_secs(1), Duration::from_secs(2)]);
    assert_eq!(started.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn exhausted_retrier_hands_the_error_to_catch_at_its_result_path() {
    let text = r#"{
        "StartAt": "Copy",
        "States": {
            "Copy": {"Type": "Task", "Resource": "arn:copy", "Next": "Done",
                     "Retry": [{"ErrorEquals": ["CopyFailed"], "MaxAttempts": 2}],
                     "Catch": [{"ErrorEquals": ["CopyFailed"], "ResultPath": "$.error", "Next": "Cleanup"}]},
            "Done": {"Type": "Succeed"},
            "Cleanup": {"Type": "Pass", "End": true}
        }
    }"#;
    let env = FakeEnv::failing("CopyFailed");
    let (outcome, events) = run_observed(text, env.clone(), json!({"run": 1})).await;
    assert_eq!(outcome, Outcome::Succeeded(json!({"run": 1, "error": {"Error": "CopyFailed", "Cause": "it broke"}})));
    assert_eq!(env.calls().len(), 3, "one attempt and two retries");
    assert_eq!(retry_delays(&events), [Duration::from_secs(1), Duration::from_secs(2)]);
}

#[tokio::test(start_paused = true)]
async fn catch_without_result_path_replaces_the_output_with_the_error() {
    let text = r#"{"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "r", "End": true,
              "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "After"}]},
        "After": {"Type": "Pass", "End": true}}}"#;
    let outcome = run(text, FakeEnv::failing("Boom"), json!({"keep": false})).await;
    assert_eq!(outcome, Outcome::Succeeded(json!({"Error": "Boom", "Cause": "it broke"})));
}

#[tokio::test(start_paused = true)]
async fn max_attempts_zero_never_retries() {
    let text = r#"{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true,
        "Retry": [{"ErrorEquals": ["Boom"], "MaxAttempts": 0}]}}}"#;
    let env = FakeEnv::failing("Boom");
    let outcome = run(text, env.clone(), json!({})).await;
    assert_eq!(outcome, Outcome::Failed { error: "Boom".into(), cause: "it broke".into() });
    assert_eq!(env.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn only_the_first_matching_retrier_applies() {
    // The exhausted first retrier does not fall through to the second one.
    let text = r#"{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true,
        "Retry": [{"ErrorEquals": ["Boom"], "MaxAttempts": 1},
                  {"ErrorEquals": ["States.ALL"], "MaxAttempts": 5}]}}}"#;
    let env = FakeEnv::failing("Boom");
    assert!(failed("Boom")(&run(text, env.clone(), json!({})).await));
    assert_eq!(env.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn each_retrier_keeps_its_own_attempt_count() {
    let text = r#"{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true,
        "Retry": [{"ErrorEquals": ["A"], "MaxAttempts": 2, "IntervalSeconds": 1, "BackoffRate": 10},
                  {"ErrorEquals": ["B"], "MaxAttempts": 2, "IntervalSeconds": 5, "BackoffRate": 1}]}}}"#;
    let env = FakeEnv::scripted(|n| match n {
        1 | 3 => Err(TaskFailure::new("A", "")),
        2 | 4 => Err(TaskFailure::new("B", "")),
        _ => Ok(json!("done")),
    });
    let (outcome, events) = run_observed(text, env.clone(), json!({})).await;
    assert_eq!(outcome, Outcome::Succeeded(json!("done")));
    let secs: Vec<u64> = retry_delays(&events).iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [1, 5, 10, 5], "A backs off on its own count, B on its own");
}

#[tokio::test(start_paused = true)]
async fn max_delay_caps_the_backoff() {
    let text = r#"{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true,
        "Retry": [{"ErrorEquals": ["A"], "MaxAttempts": 4, "IntervalSeconds": 3, "MaxDelaySeconds": 7}]}}}"#;
    let (_, events) = run_observed(text, FakeEnv::failing("A"), json!({})).await;
    let secs: Vec<u64> = retry_delays(&events).iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [3, 6, 7, 7]);
}

const CATCH_BY_KIND: &str = r#"{"StartAt": "T", "States": {
    "T": {"Type": "Task", "Resource": "r", "End": true, "TimeoutSeconds": 5,
          "Catch": [{"ErrorEquals": ["States.TaskFailed"], "Next": "TaskFailed"},
                    {"ErrorEquals": ["States.ALL"], "Next": "Other"}]},
    "TaskFailed": {"Type": "Pass", "Result": "task-failed", "End": true},
    "Other": {"Type": "Pass", "Result": "other", "End": true}}}"#;

#[tokio::test(start_paused = true)]
async fn task_failed_matches_task_errors() {
    let outcome = run(CATCH_BY_KIND, FakeEnv::failing("CopyFailed"), json!({})).await;
    assert_eq!(outcome, Outcome::Succeeded(json!("task-failed")));
}

#[tokio::test(start_paused = true)]
async fn task_failed_does_not_match_a_timeout_but_states_all_does() {
    let env = FakeEnv::with_handler(|_, _| {
        async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(json!(null))
        }
        .boxed()
    });
    let outcome = run(CATCH_BY_KIND, env, json!({})).await;
    assert_eq!(outcome, Outcome::Succeeded(json!("other")));
}

#[tokio::test(start_paused = true)]
async fn catchers_are_tried_in_order() {
    let text = r#"{"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "r", "End": true,
              "Catch": [{"ErrorEquals": ["X"], "Next": "First"},
                        {"ErrorEquals": ["Y", "X"], "Next": "Second"}]},
        "First": {"Type": "Pass", "Result": 1, "End": true},
        "Second": {"Type": "Pass", "Result": 2, "End": true}}}"#;
    assert_eq!(run(text, FakeEnv::failing("X"), json!({})).await, Outcome::Succeeded(json!(1)));
    assert_eq!(run(text, FakeEnv::failing("Y"), json!({})).await, Outcome::Succeeded(json!(2)));
    assert!(failed("Z")(&run(text, FakeEnv::failing("Z"), json!({})).await));
}

#[tokio::test(start_paused = true)]
async fn task_timeout_seconds_fails_with_states_timeout() {
    let text =
        r#"{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true, "TimeoutSeconds": 2}}}"#;
    let env = FakeEnv::with_handler(|_, _| {
        async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok(json!(null))
        }
        .boxed()
    });
    let started = Instant::now();
    let outcome = run(text, env, json!({})).await;
    assert!(failed(STATES_TIMEOUT)(&outcome), "{outcome:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn timed_out_attempts_are_retried_by_a_timeout_retrier() {
    let text = r#"{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true, "TimeoutSeconds": 2,
        "Retry": [{"ErrorEquals": ["States.Timeout"], "MaxAttempts": 1}]}}}"#;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let env = FakeEnv::with_handler(move |_, _| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            Ok(json!("second try"))
        }
        .boxed()
    });
    assert_eq!(run(text, env, json!({})).await, Outcome::Succeeded(json!("second try")));
}

#[tokio::test(start_paused = true)]
async fn execution_timeout_seconds_fails_the_execution() {
    let text =
        r#"{"StartAt": "W", "TimeoutSeconds": 10, "States": {"W": {"Type": "Wait", "Seconds": 60, "End": true}}}"#;
    let started = Instant::now();
    let outcome = run(text, FakeEnv::echo(), json!({})).await;
    assert!(failed(STATES_TIMEOUT)(&outcome), "{outcome:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------------------
// States.Runtime

const UNRESOLVED_PARAMETER: &str = r#"{"StartAt": "T", "States": {
    "T": {"Type": "Task", "Resource": "r", "End": true,
          "Parameters": {"Key.$": "$.plan.key"},
          "Retry": [{"ErrorEquals": ["States.ALL"]}],
          "Catch": [CATCHERS]},
    "Handled": {"Type": "Pass", "End": true}}}"#;

#[tokio::test(start_paused = true)]
async fn unresolved_path_fails_with_states_runtime_that_an_explicit_catcher_routes() {
    let text = UNRESOLVED_PARAMETER
        .replace("CATCHERS", r#"{"ErrorEquals": ["States.Runtime"], "ResultPath": "$.error", "Next": "Handled"}"#);
    let env = FakeEnv::echo();
    let outcome = run(&text, env.clone(), json!({"run": 1})).await;
    let Outcome::Succeeded(output) = outcome else { panic!("not caught: {outcome:?}") };
    assert_eq!(output["run"], 1);
    assert_eq!(output["error"]["Error"], STATES_RUNTIME);
    let cause = output["error"]["Cause"].as_str().unwrap();
    assert!(cause.contains("state `T`") && cause.contains("`$.plan.key`") && cause.contains("`Key.$`"), "{cause}");
    assert!(env.calls().is_empty(), "the task is never invoked");
}

#[tokio::test(start_paused = true)]
async fn states_runtime_is_neither_retried_nor_caught_by_states_all() {
    let text = UNRESOLVED_PARAMETER.replace("CATCHERS", r#"{"ErrorEquals": ["States.ALL"], "Next": "Handled"}"#);
    let (outcome, events) = run_observed(&text, FakeEnv::echo(), json!({})).await;
    assert!(failed(STATES_RUNTIME)(&outcome), "{outcome:?}");
    assert!(retry_delays(&events).is_empty());
}

#[tokio::test(start_paused = true)]
async fn input_path_that_does_not_resolve_fails_the_execution() {
    let text = r#"{"StartAt": "P", "States": {"P": {"Type": "Pass", "InputPath": "$.missing", "End": true}}}"#;
    let Outcome::Failed { error, cause } = run(text, FakeEnv::echo(), json!({})).await else { panic!("succeeded") };
    assert_eq!(error, STATES_RUNTIME);
    assert!(cause.contains("`InputPath`"), "{cause}");
}

#[tokio::test(start_paused = true)]
async fn result_path_through_a_scalar_fails_with_result_path_match_failure() {
    let text =
        r#"{"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": 1, "ResultPath": "$.a.b", "End": true}}}"#;
    let outcome = run(text, FakeEnv::echo(), json!({"a": "text"})).await;
    assert!(failed(STATES_RESULT_PATH_MATCH_FAILURE)(&outcome), "{outcome:?}");
}

// ---------------------------------------------------------------------------------------------
// Input and output processing

#[tokio::test]
async fn parameters_take_paths_context_and_intrinsics() {
    let text = r#"{"StartAt": "Plan", "States": {"Plan": {"Type": "Task", "Resource": "arn:plan", "End": true,
        "Parameters": {
            "Bucket": "artifacts",
            "Key.$": "States.Format('runs/{}/plan-{}.json', $$.Execution.Name, $.attempt)",
            "Tables.$": "$.job.tables",
            "First.$": "$.job.tables[0]",
            "Spaced.$": "$['with space']",
            "State.$": "$$.State.Name",
            "Machine.$": "$$.StateMachine.Name",
            "ExecutionId.$": "$$.Execution.Id",
            "Job.$": "$$.Execution.Input.job",
            "Count.$": "States.ArrayLength($.job.tables)",
            "Static": {"nested": [1, {"Inner.$": "$.attempt"}]}
        }}}}"#;
    let env = FakeEnv::echo();
    let input = json!({"attempt": 2, "job": {"tables": ["a", "b"]}, "with space": true});
    run(text, env.clone(), input).await;
    let calls = env.calls();
    assert_eq!(calls.len(), 1);
    let (resource, sent) = &calls[0];
    assert_eq!(resource, "arn:plan");
    assert_eq!(
        sent,
        &json!({
            "Bucket": "artifacts",
            "Key": "runs/test-run/plan-2.json",
            "Tables": ["a", "b"],
            "First": "a",
            "Spaced": true,
            "State": "Plan",
            "Machine": "local",
            "ExecutionId": "arn:aws:states:local:000000000000:execution:local:test-run",
            "Job": {"tables": ["a", "b"]},
            "Count": 2,
            "Static": {"nested": [1, {"Inner": 2}]}
        })
    );
}

#[tokio::test]
async fn context_has_start_and_entered_times() {
    let text = r#"{"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true,
        "Parameters": {"start.$": "$$.Execution.StartTime", "entered.$": "$$.State.EnteredTime"}}}}"#;
    let Outcome::Succeeded(output) = run(text, FakeEnv::echo(), json!({})).await else { panic!() };
    for key in ["start", "entered"] {
        let text = output[key].as_str().unwrap();
        assert!(time::parse_rfc3339(text).is_some(), "{key}: {text}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_count_in_the_context_counts_retries() {
    let text = r#"{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true,
        "Parameters": {"retry.$": "$$.State.RetryCount"},
        "Retry": [{"ErrorEquals": ["A"]}]}}}"#;
    let env = FakeEnv::with_handler(|_, input| {
        async move { if input["retry"] == 2 { Ok(input) } else { Err(TaskFailure::new("A", "")) } }.boxed()
    });
    assert_eq!(run(text, env.clone(), json!({})).await, Outcome::Succeeded(json!({"retry": 2})));
    let seen: Vec<Value> = env.calls().into_iter().map(|(_, input)| input["retry"].clone()).collect();
    assert_eq!(seen, [json!(0), json!(1), json!(2)]);
}

#[tokio::test]
async fn result_selector_then_result_path_then_output_path() {
    let text = r#"{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true,
        "ResultSelector": {"rows.$": "$.Payload.rows", "fixed": "x"},
        "ResultPath": "$.copy.result",
        "OutputPath": "$.copy"}}}"#;
    let env = FakeEnv::with_handler(|_, _| async { Ok(json!({"Payload": {"rows": 42, "noise": true}})) }.boxed());
    let outcome = run(text, env, json!({"copy": {"table": "t"}, "other": 1})).await;
    assert_eq!(outcome, Outcome::Succeeded(json!({"table": "t", "result": {"rows": 42, "fixed": "x"}})));
}

#[tokio::test]
async fn input_path_null_gives_the_task_an_empty_object() {
    let text = r#"{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true,
        "InputPath": null, "ResultPath": "$.result"}}}"#;
    let env = FakeEnv::echo();
    let outcome = run(text, env.clone(), json!({"secret": "s"})).await;
    assert_eq!(env.calls()[0].1, json!({}));
    assert_eq!(outcome, Outcome::Succeeded(json!({"secret": "s", "result": {}})));
}

#[tokio::test]
async fn result_path_null_keeps_the_input_and_output_path_null_empties_it() {
    let discard =
        r#"{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true, "ResultPath": null}}}"#;
    let env = FakeEnv::with_handler(|_, _| async { Ok(json!("ignored")) }.boxed());
    assert_eq!(run(discard, env, json!({"a": 1})).await, Outcome::Succeeded(json!({"a": 1})));
    let empty = r#"{"StartAt": "P", "States": {"P": {"Type": "Pass", "OutputPath": null, "End": true}}}"#;
    assert_eq!(run(empty, FakeEnv::echo(), json!({"a": 1})).await, Outcome::Succeeded(json!({})));
}

#[tokio::test]
async fn pass_with_result_puts_it_at_the_result_path() {
    let text = r#"{"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true,
        "Result": {"mode": "full"}, "ResultPath": "$.settings"}}}"#;
    let outcome = run(text, FakeEnv::echo(), json!({"run": 3})).await;
    assert_eq!(outcome, Outcome::Succeeded(json!({"run": 3, "settings": {"mode": "full"}})));
}

#[tokio::test]
async fn pass_with_parameters_and_input_path_shapes_its_output() {
    let text = r#"{"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true,
        "InputPath": "$.job", "Parameters": {"name.$": "$.name", "merged.$": "States.JsonMerge($.a, $.b, false)"}}}}"#;
    let input = json!({"job": {"name": "n", "a": {"x": 1}, "b": {"y": 2}}});
    let outcome = run(text, FakeEnv::echo(), input).await;
    assert_eq!(outcome, Outcome::Succeeded(json!({"name": "n", "merged": {"x": 1, "y": 2}})));
}

#[tokio::test]
async fn succeed_applies_input_and_output_paths() {
    let text = r#"{"StartAt": "S", "States": {"S": {"Type": "Succeed", "InputPath": "$.a", "OutputPath": "$.b"}}}"#;
    assert_eq!(run(text, FakeEnv::echo(), json!({"a": {"b": 5}})).await, Outcome::Succeeded(json!(5)));
}

// ---------------------------------------------------------------------------------------------
// Choice

const ROUTER: &str = r#"{"StartAt": "Route", "States": {
    "Route": {"Type": "Choice", "Default": "Fallback", "Choices": [
        {"And": [{"Variable": "$.tables", "IsPresent": true},
                 {"Variable": "$.tables", "NumericGreaterThanEquals": 100},
                 {"Not": {"Variable": "$.mode", "StringEquals": "schema-only"}}],
         "Next": "Big"},
        {"Variable": "$.tables", "NumericGreaterThanEquals": 1, "Next": "Small"}]},
    "Big": {"Type": "Pass", "Result": "big", "End": true},
    "Small": {"Type": "Pass", "Result": "small", "End": true},
    "Fallback": {"Type": "Pass", "Result": "fallback", "End": true}}}"#;

#[tokio::test]
async fn choice_routes_with_and_not_numeric_and_is_present() {
    let route = |input: Value| async move { run(ROUTER, FakeEnv::echo(), input).await };
    assert_eq!(route(json!({"tables": 100, "mode": "full"})).await, Outcome::Succeeded(json!("big")));
    assert_eq!(route(json!({"tables": 100, "mode": "schema-only"})).await, Outcome::Succeeded(json!("small")));
    assert_eq!(route(json!({"tables": 5})).await, Outcome::Succeeded(json!("small")));
    assert_eq!(route(json!({"tables": 0})).await, Outcome::Succeeded(json!("fallback")));
}

#[tokio::test]
async fn choice_without_a_match_or_default_fails_with_no_choice_matched() {
    let text = r#"{"StartAt": "C", "States": {
        "C": {"Type": "Choice", "Choices": [{"Variable": "$.x", "BooleanEquals": true, "Next": "Yes"}]},
        "Yes": {"Type": "Succeed"}}}"#;
    let outcome = run(text, FakeEnv::echo(), json!({"x": false})).await;
    assert!(failed(STATES_NO_CHOICE_MATCHED)(&outcome), "{outcome:?}");
}

#[tokio::test]
async fn choice_passes_its_effective_input_through_output_path() {
    let text = r#"{"StartAt": "C", "States": {
        "C": {"Type": "Choice", "InputPath": "$.job", "OutputPath": "$.name",
              "Choices": [{"Variable": "$.name", "StringMatches": "pg*", "Next": "Yes"}]},
        "Yes": {"Type": "Succeed"}}}"#;
    let outcome = run(text, FakeEnv::echo(), json!({"job": {"name": "pgferry"}})).await;
    assert_eq!(outcome, Outcome::Succeeded(json!("pgferry")));
}

// ---------------------------------------------------------------------------------------------
// Map

#[tokio::test(start_paused = true)]
async fn map_with_max_concurrency_two_never_has_more_than_two_in_flight_and_keeps_order() {
    let text = r#"{"StartAt": "M", "States": {"M": {"Type": "Map", "End": true, "ItemsPath": "$.items",
        "MaxConcurrency": 2,
        "ItemProcessor": {"StartAt": "Work", "States": {"Work": {"Type": "Task", "Resource": "arn:work", "End": true}}}}}}"#;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (current, max) = (in_flight.clone(), peak.clone());
    let env = FakeEnv::with_handler(move |_, input| {
        let (current, max) = (current.clone(), max.clone());
        async move {
            let now = current.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(now, Ordering::SeqCst);
            // Later items finish sooner, so completion order differs from item order.
            let n = input.as_u64().unwrap();
            tokio::time::sleep(Duration::from_millis(100 - 10 * n)).await;
            current.fetch_sub(1, Ordering::SeqCst);
            Ok(json!(n * 10))
        }
        .boxed()
    });
    let outcome = run(text, env.clone(), json!({"items": [0, 1, 2, 3, 4, 5, 6]})).await;
    assert_eq!(outcome, Outcome::Succeeded(json!([0, 10, 20, 30, 40, 50, 60])));
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    assert_eq!(env.calls().len(), 7);
}

#[tokio::test(start_paused = true)]
async fn map_max_concurrency_path_reads_the_limit_from_the_input() {
    let text = r#"{"StartAt": "M", "States": {"M": {"Type": "Map", "End": true, "ItemsPath": "$.items",
        "MaxConcurrencyPath": "$.limit",
        "ItemProcessor": {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 5, "End": true}}}}}}"#;
    let started = Instant::now();
    let outcome = run(text, FakeEnv::echo(), json!({"items": [1, 2, 3, 4], "limit": 2})).await;
    assert_eq!(outcome, Outcome::Succeeded(json!([1, 2, 3, 4])));
    assert_eq!(started.elapsed(), Duration::from_secs(10), "two waves of two");
    let outcome = run(text, FakeEnv::echo(), json!({"items": [1], "limit": "two"})).await;
    assert!(matches!(outcome, Outcome::Failed { ref error, .. } if error == "States.Runtime"), "{outcome:?}");
}

#[tokio::test(start_paused = true)]
async fn map_without_max_concurrency_runs_every_item_at_once() {
    let text = r#"{"StartAt": "M", "States": {"M": {"Type": "Map", "End": true,
        "Iterator": {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 5, "End": true}}}}}}"#;
    let started = Instant::now();
    let outcome = run(text, FakeEnv::echo(), json!([1, 2, 3, 4])).await;
    assert_eq!(outcome, Outcome::Succeeded(json!([1, 2, 3, 4])));
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[tokio::test]
async fn map_item_reader_resolves_its_parameters_against_the_input() {
    let text = r#"{"StartAt": "CopyChunks", "States": {"CopyChunks": {"Type": "Map", "End": true,
        "InputPath": "$.run",
        "ItemReader": {"Resource": "arn:aws:states:::s3:getObject",
                       "ReaderConfig": {"InputType": "JSON"},
                       "Parameters": {"Bucket": "artifacts", "Key.$": "States.Format('runs/{}/plan.json', $.id)"}},
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                          "StartAt": "Copy", "States": {"Copy": {"Type": "Task", "Resource": "arn:copy", "End": true}}}}}}"#;
    let env = FakeEnv::echo().with_items(Ok(vec![json!({"chunk": 1}), json!({"chunk": 2})]));
    let outcome = run(text, env.clone(), json!({"run": {"id": "r7"}})).await;
    assert_eq!(outcome, Outcome::Succeeded(json!([{"chunk": 1}, {"chunk": 2}])));
    let reads = env.reads.lock().unwrap().clone();
    assert_eq!(
        reads,
        [(
            "arn:aws:states:::s3:getObject".to_owned(),
            json!({"InputType": "JSON"}),
            json!({"Bucket": "artifacts", "Key": "runs/r7/plan.json"})
        )]
    );
}

#[tokio::test]
async fn item_reader_failure_fails_the_map_and_can_be_caught() {
    let text = r#"{"StartAt": "M", "States": {
        "M": {"Type": "Map", "End": true,
              "ItemReader": {"Resource": "arn:aws:states:::s3:getObject", "Parameters": {"Bucket": "b", "Key": "k"}},
              "Catch": [{"ErrorEquals": ["States.ItemReaderFailed"], "Next": "NoPlan"}],
              "ItemProcessor": {"StartAt": "A", "States": {"A": {"Type": "Succeed"}}}},
        "NoPlan": {"Type": "Pass", "Result": "no plan", "End": true}}}"#;
    let env = FakeEnv::echo().with_items(Err(TaskFailure::new("States.ItemReaderFailed", "no such key")));
    assert_eq!(run(text, env, json!({})).await, Outcome::Succeeded(json!("no plan")));
}

/// The shape of the deployed CopyChunks: a Distributed Map reading its items from S3 and writing
/// its results under the run's prefix, its result discarded by `ResultPath: null` — here kept at
/// `$.copied` to check what AWS makes of it.
const WRITING_MAP: &str = r#"{"StartAt": "CopyChunks", "States": {
    "CopyChunks": {"Type": "Map", "Next": "Done", "Label": "Copy",
        "ItemReader": {"Resource": "arn:aws:states:::s3:getObject", "ReaderConfig": {"InputType": "JSON"},
                       "Parameters": {"Bucket": "artifacts", "Key": "plan.json"}},
        "ItemSelector": {"runId.$": "$.runId", "chunk.$": "$$.Map.Item.Value"},
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                          "StartAt": "Copy", "States": {"Copy": {"Type": "Task", "Resource": "arn:copy", "End": true}}},
        "ResultWriter": {"Resource": "arn:aws:states:::s3:putObject",
                         "Parameters": {"Bucket": "artifacts", "Prefix.$": "States.Format('runs/{}/map-results/copy', $.runId)"}},
        "MaxConcurrency": 2,
        "ResultPath": "$.copied",
        "Catch": [{"ErrorEquals": ["States.ResultWriterFailed"], "ResultPath": "$.error", "Next": "NotWritten"}]},
    "Done": {"Type": "Succeed"},
    "NotWritten": {"Type": "Pass", "End": true}}}"#;

#[tokio::test]
async fn result_writer_exports_the_iterations_and_the_map_result_names_the_manifest() {
    let env = FakeEnv::with_handler(|_, input| async move { Ok(json!({"copied": input["chunk"]["id"]})) }.boxed())
        .with_items(Ok(vec![json!({"id": "c1"}), json!({"id": "c2"}), json!({"id": "c3"})]));
    let outcome = run(WRITING_MAP, env.clone(), json!({"runId": "r7"})).await;
    let Outcome::Succeeded(output) = outcome else { panic!("{outcome:?}") };

    // The Map's result is no longer the array but where it went.
    let map_run_arn = output["copied"]["MapRunArn"].as_str().unwrap().to_owned();
    let (map_run, id) = map_run_arn.rsplit_once(':').unwrap();
    assert_eq!(map_run, "arn:aws:states:local:000000000000:mapRun:local/Copy");
    let dir = format!("runs/r7/map-results/copy/{id}/");
    let manifest_key = format!("{dir}manifest.json");
    assert_eq!(output["copied"]["ResultWriterDetails"], json!({"Bucket": "artifacts", "Key": manifest_key}));
    assert_eq!(output["runId"], "r7");

    // Results first, the manifest last (a reader that finds the manifest finds what it lists).
    let writes = env.writes();
    let keys: Vec<&str> = writes.iter().map(|(_, _, key, _)| key.as_str()).collect();
    assert_eq!(keys, [format!("{dir}SUCCEEDED_0.json"), manifest_key.clone()]);
    for (resource, bucket, _, _) in &writes {
        assert_eq!((resource.as_str(), bucket.as_str()), ("arn:aws:states:::s3:putObject", "artifacts"));
    }
    let records = writes[0].3.as_array().unwrap();
    let field = |name: &str| -> Vec<Value> {
        records.iter().map(|r| serde_json::from_str(r[name].as_str().unwrap()).unwrap()).collect()
    };
    assert_eq!(field("Output"), [json!({"copied": "c1"}), json!({"copied": "c2"}), json!({"copied": "c3"})]);
    assert_eq!(field("Input")[1], json!({"runId": "r7", "chunk": {"id": "c2"}}));
    assert!(records.iter().all(|r| r["Status"] == "SUCCEEDED"));
    let manifest = &writes[1].3;
    assert_eq!(manifest["MapRunArn"], map_run_arn.as_str());
    assert_eq!(manifest["ResultFiles"]["SUCCEEDED"][0]["Key"], format!("{dir}SUCCEEDED_0.json"));
    assert_eq!(manifest["ResultFiles"]["FAILED"], json!([]));
}

#[tokio::test]
async fn result_writer_failure_fails_the_map_with_its_error_which_catch_routes() {
    let env = FakeEnv::echo()
        .with_items(Ok(vec![json!(1)]))
        .failing_writes(TaskFailure::new("States.ResultWriterFailed", "access denied"));
    let outcome = run(WRITING_MAP, env.clone(), json!({"runId": "r7"})).await;
    assert_eq!(
        outcome,
        Outcome::Succeeded(
            json!({"runId": "r7", "error": {"Error": "States.ResultWriterFailed", "Cause": "access denied"}})
        )
    );
    assert_eq!(env.calls().len(), 1, "the iteration ran before the write failed");
}

#[tokio::test]
async fn result_writer_without_a_bucket_fails_before_any_iteration_runs() {
    let text = WRITING_MAP.replace(r#""Bucket": "artifacts", "Prefix.$""#, r#""Bucket.$": "$.bucket", "Prefix.$""#);
    let env = FakeEnv::echo().with_items(Ok(vec![json!(1), json!(2)]));
    let outcome = run(&text, env.clone(), json!({"runId": "r7", "bucket": null})).await;
    assert!(failed(STATES_RUNTIME)(&outcome), "{outcome:?}");
    assert!(env.calls().is_empty() && env.writes().is_empty());
}

/// As in AWS: a Distributed Map whose child execution fails fails with
/// `States.ExceedToleratedFailureThreshold`, not the child's error, which is in the export.
#[tokio::test]
async fn a_failed_child_execution_fails_the_distributed_map_with_the_threshold_name_and_is_exported() {
    let env = FakeEnv::failing("Pgferry.CopyFailed").with_items(Ok(vec![json!(1)]));
    let outcome = run(WRITING_MAP, env.clone(), json!({"runId": "r7"})).await;
    let Outcome::Failed { error, cause } = &outcome else { panic!("{outcome:?}") };
    assert_eq!(error, "States.ExceedToleratedFailureThreshold");
    assert!(cause.contains("1 of 1 items failed") && !cause.contains("Pgferry.CopyFailed"), "{cause}");
    let writes = env.writes();
    let failed_file = writes.iter().find(|w| w.2.ends_with("/FAILED_0.json")).expect("the failed records");
    let records = failed_file.3.as_array().unwrap();
    assert_eq!(
        (records[0]["Status"].as_str(), records[0]["Error"].as_str()),
        (Some("FAILED"), Some("Pgferry.CopyFailed"))
    );
    assert_eq!(records[0]["Cause"], "it broke");
    let manifest = &writes.iter().find(|w| w.2.ends_with("/manifest.json")).unwrap().3;
    assert_eq!(manifest["ResultFiles"]["FAILED"][0]["Key"], json!(failed_file.2));
}

/// Step Functions' quotas hold here as in AWS: a state output over 256 KiB fails the execution
/// with `States.DataLimitExceeded`, which `States.ALL` does not catch.
#[tokio::test]
async fn an_output_over_256_kib_fails_the_execution_uncaught() {
    let text = r#"{"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "r", "End": true,
              "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]},
        "Caught": {"Type": "Succeed"}}}"#;
    let big = "x".repeat(crate::asl::PAYLOAD_LIMIT_BYTES);
    let env = FakeEnv::with_handler(move |_, _| {
        let big = big.clone();
        async move { Ok(json!({"blob": big})) }.boxed()
    });
    let outcome = run(text, env, json!({})).await;
    assert!(failed("States.DataLimitExceeded")(&outcome), "{outcome:?}");
    // Just under the limit passes.
    let fits = "x".repeat(crate::asl::PAYLOAD_LIMIT_BYTES - 100);
    let env = FakeEnv::with_handler(move |_, _| {
        let fits = fits.clone();
        async move { Ok(json!({"blob": fits})) }.boxed()
    });
    assert!(matches!(run(text, env, json!({})).await, Outcome::Succeeded(_)));
}

/// A loop that would write more than 25,000 history events fails when it passes them, and no
/// `Catch` runs; the same loop as a Distributed Map's child executions has a history each.
#[tokio::test]
async fn a_loop_past_25000_history_events_fails_the_execution() {
    let looping = r#"{"StartAt": "Count", "States": {
        "Count": {"Type": "Pass", "Parameters": {"n.$": "States.MathAdd($.n, 1)"}, "Next": "More"},
        "More": {"Type": "Choice", "Choices": [{"Variable": "$.n", "NumericLessThan": LIMIT, "Next": "Count"}],
                 "Default": "Done"},
        "Done": {"Type": "Succeed"}}}"#;
    // Two states of two events each a pass, plus the execution's own two.
    let within = looping.replace("LIMIT", "6000");
    assert!(matches!(run(&within, FakeEnv::echo(), json!({"n": 0})).await, Outcome::Succeeded(_)));
    let past = looping.replace("LIMIT", "6300");
    let outcome = run(&past, FakeEnv::echo(), json!({"n": 0})).await;
    let Outcome::Failed { error, cause } = &outcome else { panic!("{outcome:?}") };
    assert_eq!(error, "States.Runtime");
    assert!(cause.contains("25000 events"), "{cause}");
}

#[tokio::test]
async fn item_selector_sees_the_map_item_index_and_value() {
    let text = r#"{"StartAt": "M", "States": {"M": {"Type": "Map", "End": true, "ItemsPath": "$.tables",
        "ItemSelector": {"index.$": "$$.Map.Item.Index", "table.$": "$$.Map.Item.Value", "run.$": "$.run"},
        "ItemProcessor": {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}}}}}}"#;
    let outcome = run(text, FakeEnv::echo(), json!({"run": 9, "tables": ["a", "b"]})).await;
    assert_eq!(
        outcome,
        Outcome::Succeeded(json!([{"index": 0, "table": "a", "run": 9}, {"index": 1, "table": "b", "run": 9}]))
    );
}

#[tokio::test]
async fn legacy_map_parameters_act_as_item_selector() {
    let text = r#"{"StartAt": "M", "States": {"M": {"Type": "Map", "End": true,
        "Parameters": {"i.$": "$$.Map.Item.Index"},
        "Iterator": {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}}}}}}"#;
    assert_eq!(run(text, FakeEnv::echo(), json!(["x", "y"])).await, Outcome::Succeeded(json!([{"i": 0}, {"i": 1}])));
}

const FAILING_ITERATION: &str = r#"{"StartAt": "M", "States": {
    "M": {"Type": "Map", "Next": "Done", "MaxConcurrency": 1,
          "Catch": [{"ErrorEquals": ["ChunkFailed"], "ResultPath": "$.failure", "Next": "Report"}],
          "ItemsPath": "$.chunks",
          "ItemProcessor": {"StartAt": "Check", "States": {
              "Check": {"Type": "Choice", "Default": "Copy",
                        "Choices": [{"Variable": "$.bad", "IsPresent": true, "Next": "Broken"}]},
              "Broken": {"Type": "Fail", "Error": "ChunkFailed", "Cause": "chunk is bad"},
              "Copy": {"Type": "Task", "Resource": "arn:copy", "End": true}}}},
    "Done": {"Type": "Succeed"},
    "Report": {"Type": "Pass", "End": true}}}"#;

#[tokio::test]
async fn failing_iteration_fails_the_map_with_its_error_which_catch_routes() {
    let env = FakeEnv::echo();
    let input = json!({"chunks": [{"n": 1}, {"n": 2, "bad": true}, {"n": 3}]});
    let outcome = run(FAILING_ITERATION, env.clone(), input.clone()).await;
    let mut expected = input;
    expected["failure"] = json!({"Error": "ChunkFailed", "Cause": "chunk is bad"});
    assert_eq!(outcome, Outcome::Succeeded(expected));
    assert_eq!(env.calls().len(), 1, "iterations after the failure do not start");
}

#[tokio::test]
async fn uncaught_iteration_failure_fails_the_execution() {
    let text = FAILING_ITERATION.replace("ChunkFailed\"], \"ResultPath", "Other\"], \"ResultPath");
    let outcome = run(&text, FakeEnv::echo(), json!({"chunks": [{"bad": true}]})).await;
    assert_eq!(outcome, Outcome::Failed { error: "ChunkFailed".into(), cause: "chunk is bad".into() });
}

#[tokio::test(start_paused = true)]
async fn map_retry_reruns_the_whole_map() {
    let text = r#"{"StartAt": "M", "States": {"M": {"Type": "Map", "End": true,
        "Retry": [{"ErrorEquals": ["Flaky"], "MaxAttempts": 1}],
        "ItemProcessor": {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true}}}}}}"#;
    let env = FakeEnv::scripted(|n| if n == 2 { Err(TaskFailure::new("Flaky", "")) } else { Ok(json!(n)) });
    let outcome = run(text, env.clone(), json!([0, 0])).await;
    assert_eq!(outcome, Outcome::Succeeded(json!([3, 4])));
    assert_eq!(env.calls().len(), 4);
}

#[tokio::test]
async fn map_result_selector_and_result_path_apply_to_the_result_array() {
    let text = r#"{"StartAt": "M", "States": {"M": {"Type": "Map", "End": true, "ItemsPath": "$.items",
        "ResultSelector": {"count.$": "States.ArrayLength($)"}, "ResultPath": "$.summary",
        "ItemProcessor": {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}}}}}}"#;
    let outcome = run(text, FakeEnv::echo(), json!({"items": [1, 2, 3]})).await;
    assert_eq!(outcome, Outcome::Succeeded(json!({"items": [1, 2, 3], "summary": {"count": 3}})));
}

#[tokio::test]
async fn items_path_that_is_not_an_array_is_a_runtime_failure() {
    let text = r#"{"StartAt": "M", "States": {"M": {"Type": "Map", "End": true, "ItemsPath": "$.items",
        "ItemProcessor": {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}}}}}}"#;
    let outcome = run(text, FakeEnv::echo(), json!({"items": "nope"})).await;
    assert!(failed(STATES_RUNTIME)(&outcome), "{outcome:?}");
}

#[tokio::test]
async fn empty_map_produces_an_empty_array() {
    let text = r#"{"StartAt": "M", "States": {"M": {"Type": "Map", "End": true, "MaxConcurrency": 3,
        "ItemProcessor": {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}}}}}}"#;
    assert_eq!(run(text, FakeEnv::echo(), json!([])).await, Outcome::Succeeded(json!([])));
}

// ---------------------------------------------------------------------------------------------
// Wait, Fail

#[tokio::test(start_paused = true)]
async fn wait_seconds_sleeps_that_long() {
    let text = r#"{"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 30, "End": true}}}"#;
    let started = Instant::now();
    assert_eq!(run(text, FakeEnv::echo(), json!({"a": 1})).await, Outcome::Succeeded(json!({"a": 1})));
    assert_eq!(started.elapsed(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn wait_seconds_path_reads_the_delay_from_the_input() {
    let text = r#"{"StartAt": "W", "States": {"W": {"Type": "Wait", "SecondsPath": "$.delay", "End": true}}}"#;
    let started = Instant::now();
    run(text, FakeEnv::echo(), json!({"delay": 7})).await;
    assert_eq!(started.elapsed(), Duration::from_secs(7));
    let outcome = run(text, FakeEnv::echo(), json!({"delay": "soon"})).await;
    assert!(failed(STATES_RUNTIME)(&outcome), "{outcome:?}");
}

#[tokio::test(start_paused = true)]
async fn wait_timestamp_sleeps_until_then() {
    let target = std::time::SystemTime::now() + Duration::from_secs(3600);
    let text = r#"{"StartAt": "W", "States": {"W": {"Type": "Wait", "TimestampPath": "$.at", "End": true}}}"#;
    let started = Instant::now();
    run(text, FakeEnv::echo(), json!({"at": time::format_rfc3339(target)})).await;
    let waited = started.elapsed();
    assert!(waited > Duration::from_secs(3598) && waited <= Duration::from_secs(3600), "{waited:?}");
    let past =
        r#"{"StartAt": "W", "States": {"W": {"Type": "Wait", "Timestamp": "2000-01-01T00:00:00Z", "End": true}}}"#;
    let started = Instant::now();
    run(past, FakeEnv::echo(), json!({})).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn fail_state_reports_its_error_and_cause() {
    let text = r#"{"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "PreflightFailed", "Cause": "no wal_level=logical"}}}"#;
    let outcome = run(text, FakeEnv::echo(), json!({})).await;
    assert_eq!(outcome, Outcome::Failed { error: "PreflightFailed".into(), cause: "no wal_level=logical".into() });
}

#[tokio::test]
async fn fail_state_reads_error_and_cause_paths() {
    let text = r#"{"StartAt": "F", "States": {"F": {"Type": "Fail", "ErrorPath": "$.failure.Error",
        "CausePath": "States.Format('step {} failed: {}', $.step, $.failure.Cause)"}}}"#;
    let input = json!({"step": "copy", "failure": {"Error": "CopyFailed", "Cause": "disk full"}});
    let outcome = run(text, FakeEnv::echo(), input).await;
    assert_eq!(outcome, Outcome::Failed { error: "CopyFailed".into(), cause: "step copy failed: disk full".into() });
}

#[tokio::test]
async fn fail_state_without_fields_has_empty_error_and_cause() {
    let text = r#"{"StartAt": "F", "States": {"F": {"Type": "Fail"}}}"#;
    assert_eq!(
        run(text, FakeEnv::echo(), json!({})).await,
        Outcome::Failed { error: String::new(), cause: String::new() }
    );
}

// ---------------------------------------------------------------------------------------------
// Substitutions

#[tokio::test]
async fn substitutions_fill_resources_and_numbers() {
    let text = r#"{"StartAt": "M", "States": {"M": {"Type": "Map", "End": true, "MaxConcurrency": ${Parallelism},
        "ItemProcessor": {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "${CopyFunctionArn}", "End": true}}}}}}"#;
    let substitutions = BTreeMap::from([
        ("Parallelism".to_owned(), "2".to_owned()),
        ("CopyFunctionArn".to_owned(), "arn:aws:lambda:eu-west-1:1:function:copy".to_owned()),
    ]);
    let machine = StateMachine::parse(text, &substitutions).unwrap();
    assert_eq!(machine.resources(), ["arn:aws:lambda:eu-west-1:1:function:copy"]);
    let env = FakeEnv::echo();
    let outcome = Execution::new(&machine, env.clone(), "x").run(json!([1])).await.unwrap();
    assert_eq!(outcome, Outcome::Succeeded(json!([1])));
    assert_eq!(env.calls()[0].0, "arn:aws:lambda:eu-west-1:1:function:copy");
}

#[test]
fn missing_substitution_is_refused_by_name() {
    let text = r#"{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "${CopyFunctionArn}", "End": true}}}"#;
    let err = StateMachine::parse(text, &BTreeMap::new()).unwrap_err();
    assert_eq!(err.to_string(), "definition substitution `${CopyFunctionArn}` has no value; pass it as a substitution");
}

// ---------------------------------------------------------------------------------------------
// Events

#[tokio::test(start_paused = true)]
async fn events_are_emitted_in_order() {
    let text = r#"{"StartAt": "Prepare", "States": {
        "Prepare": {"Type": "Pass", "Next": "Copy"},
        "Copy": {"Type": "Map", "End": true, "MaxConcurrency": 1,
                 "ItemProcessor": {"StartAt": "One", "States": {
                     "One": {"Type": "Task", "Resource": "r", "End": true,
                             "Retry": [{"ErrorEquals": ["Flaky"], "IntervalSeconds": 2}]}}}}}}"#;
    let env = FakeEnv::scripted(|n| if n == 1 { Err(TaskFailure::new("Flaky", "")) } else { Ok(json!(n)) });
    let (outcome, events) = run_observed(text, env, json!([10, 20])).await;
    assert_eq!(outcome, Outcome::Succeeded(json!([2, 3])));
    let entered = |name: &str, map_index| Event::StateEntered { name: name.into(), map_index };
    let exited = |name: &str, map_index, secs, ok| Event::StateExited {
        name: name.into(),
        map_index,
        elapsed: Duration::from_secs(secs),
        ok,
    };
    assert_eq!(
        events,
        [
            entered("Prepare", None),
            exited("Prepare", None, 0, true),
            entered("Copy", None),
            entered("One", Some(0)),
            Event::Retrying { name: "One".into(), error: "Flaky".into(), attempt: 1, delay: Duration::from_secs(2) },
            exited("One", Some(0), 2, true),
            Event::TaskSucceeded { name: "One".into(), map_index: Some(0), output: json!(2) },
            entered("One", Some(1)),
            exited("One", Some(1), 0, true),
            Event::TaskSucceeded { name: "One".into(), map_index: Some(1), output: json!(3) },
            exited("Copy", None, 2, true),
        ]
    );
}

#[tokio::test]
async fn caught_and_failing_states_exit_not_ok() {
    let text = r#"{"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "r", "Next": "F", "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "F"}]},
        "F": {"Type": "Fail", "Error": "Stop"}}}"#;
    let (outcome, events) = run_observed(text, FakeEnv::failing("Boom"), json!({})).await;
    assert!(failed("Stop")(&outcome));
    let oks: Vec<(String, bool)> = events
        .into_iter()
        .filter_map(|e| if let Event::StateExited { name, ok, .. } = e { Some((name, ok)) } else { None })
        .collect();
    assert_eq!(oks, [("T".to_owned(), false), ("F".to_owned(), false)]);
}

#[test]
fn execution_future_is_send_so_a_cli_can_spawn_it() {
    fn assert_send<T: Send>(_: &T) {}
    let machine = machine(ROUTER);
    let execution = Execution::new(&machine, FakeEnv::echo(), "x");
    let future = execution.run(json!({}));
    assert_send(&future);
}
