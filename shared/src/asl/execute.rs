//! Running a parsed [`StateMachine`]: state by state, with retries, catchers, Map iterations and
//! timeouts.
//!
//! All waiting goes through `tokio::time` (retry delays, `Wait` states, timeouts), so tests can
//! run a machine under paused time and observe exact delays. Map iterations run concurrently on
//! the calling task (bounded by `MaxConcurrency`), not on spawned tasks: they borrow the machine,
//! and the work they wait on is I/O in the environment.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use serde_json::{Value, json};
use tokio::time::{Duration, Instant};

use super::context::{Context, LOCAL_STATE_MACHINE_NAME, Scope};
use super::definition::{
    Choice, Fail, FailText, IoPath, Items, Kind, MapState, Pass, State, StateMachine, States, Succeed, Task,
    Transition, Wait, WaitFor,
};
use super::path::{ResultPath, kind_of};
use super::result_writer::{Destination, Iteration, MapRun};
use super::retry::{Catcher, Retrier, error_matches};
use super::template::Template;
use super::time::{format_rfc3339, now_unix_nanos, parse_rfc3339, until};
use super::{
    AslError, Environment, Event, HISTORY_LIMIT_EVENTS, Outcome, PAYLOAD_LIMIT_BYTES, STATES_DATA_LIMIT_EXCEEDED,
    STATES_EXCEED_TOLERATED_FAILURE_THRESHOLD, STATES_NO_CHOICE_MATCHED, STATES_RESULT_PATH_MATCH_FAILURE,
    STATES_RUNTIME, STATES_TIMEOUT, TaskFailure,
};

/// Account and region placeholder in the ARNs a local run reports in the context object.
const LOCAL_ARN_PREFIX: &str = "arn:aws:states:local:000000000000";

/// `$$.StateMachine.Id` of a local run.
pub fn local_state_machine_arn() -> String {
    format!("{LOCAL_ARN_PREFIX}:stateMachine:{LOCAL_STATE_MACHINE_NAME}")
}

/// The observer callback type.
type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

/// One run of a state machine: the machine, the environment it calls, an optional progress
/// observer and the execution name (`$$.Execution.Name`).
pub struct Execution<'a> {
    machine: &'a StateMachine,
    env: Arc<dyn Environment>,
    observer: Option<Observer>,
    name: String,
}

impl fmt::Debug for Execution<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Execution")
            .field("name", &self.name)
            .field("machine", &self.machine)
            .field("observer", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

/// Per-run values the context object of every state borrows.
struct Run {
    execution: Value,
    state_machine: Value,
}

/// The history events of one execution (the run, or one child execution of a Distributed Map),
/// counted as Step Functions writes them, so that a definition that would pass
/// [`HISTORY_LIMIT_EVENTS`] in AWS fails here too.
#[derive(Debug)]
struct History(AtomicUsize);

impl History {
    /// `ExecutionStarted` and the event that ends the execution.
    fn new() -> Self {
        Self(AtomicUsize::new(2))
    }

    /// Counts `events`; passing the limit fails the execution with `States.Runtime`, which no
    /// `Catch` handles (as in AWS, where the failure path would not run either).
    fn add(&self, events: usize, state: &str) -> Result<(), TaskFailure> {
        let total = self.0.fetch_add(events, Ordering::Relaxed) + events;
        if total > HISTORY_LIMIT_EVENTS {
            return Err(TaskFailure::new(
                STATES_RUNTIME,
                format!(
                    "state `{state}`: the execution's history passed Step Functions' {HISTORY_LIMIT_EVENTS} events; \
                     a loop must go on in a new execution before that"
                ),
            ));
        }
        Ok(())
    }

    /// The events a state writes when it runs once (retries are counted as they happen):
    /// a Lambda Task entered, scheduled, started, succeeded or failed, exited; a Distributed Map
    /// entered, started, its Map Run started and ended, the Map ended and exited (its iterations
    /// are child executions); an inline Map entered, started, ended, exited (and two events per
    /// iteration); a Fail state entered; any other state entered and exited.
    fn events_of(kind: &Kind) -> usize {
        match kind {
            Kind::Task(_) => 5,
            Kind::Map(map) if map.distributed => 6,
            Kind::Map(_) => 4,
            Kind::Fail(_) => 1,
            _ => 2,
        }
    }
}

/// Fails a state whose output passes Step Functions' payload quota.
fn check_payload(state: &str, what: &str, value: &Value) -> Result<(), TaskFailure> {
    let size = serde_json::to_vec(value).map_or(0, |v| v.len());
    if size > PAYLOAD_LIMIT_BYTES {
        return Err(TaskFailure::new(
            STATES_DATA_LIMIT_EXCEEDED,
            format!(
                "state `{state}`: its {what} is {size} bytes, more than the {PAYLOAD_LIMIT_BYTES} bytes Step Functions \
                 passes between states; keep big data in the artifact store and pass its key"
            ),
        ));
    }
    Ok(())
}

/// How a state ended.
enum Step<'m> {
    /// Go to `next`. `ok` is false when a catcher chose `next` after an error.
    Next { next: &'m str, output: Value, ok: bool },
    /// The `States` block ends with `output`.
    End(Value),
    /// The state failed and nothing caught it.
    Failed(TaskFailure),
}

impl<'m> Step<'m> {
    fn after(transition: &'m Transition, output: Value) -> Self {
        match transition {
            Transition::Next(next) => Self::Next { next, output, ok: true },
            Transition::End => Self::End(output),
        }
    }
}

impl<'a> Execution<'a> {
    /// An execution of `machine` named `name`, calling `env` for tasks and item readers.
    pub fn new(machine: &'a StateMachine, env: Arc<dyn Environment>, name: impl Into<String>) -> Self {
        Self { machine, env, observer: None, name: name.into() }
    }

    /// Delivers [`Event`]s to `observer` as the execution progresses.
    pub fn with_observer(mut self, observer: Arc<dyn Fn(&Event) + Send + Sync>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Runs the machine on `input` to the end.
    ///
    /// Failures of the execution (an uncaught error, a `Fail` state, `TimeoutSeconds`) are an
    /// `Ok(Outcome::Failed { .. })`; `Err` is reserved for problems of the runner itself and is
    /// not produced today, since the definition was fully validated by [`StateMachine::parse`].
    pub async fn run(&self, input: Value) -> Result<Outcome, AslError> {
        let run = Run {
            execution: json!({
                "Id": format!("{LOCAL_ARN_PREFIX}:execution:{LOCAL_STATE_MACHINE_NAME}:{}", self.name),
                "Name": self.name,
                "Input": input,
                "StartTime": format_rfc3339(SystemTime::now()),
            }),
            state_machine: json!({
                "Id": local_state_machine_arn(),
                "Name": LOCAL_STATE_MACHINE_NAME,
            }),
        };
        let input = run.execution["Input"].clone();
        let history = History::new();
        if let Err(failure) = check_payload("(execution)", "input", &input) {
            return Ok(Outcome::Failed { error: failure.error, cause: failure.cause });
        }
        let states = self.run_states(&run, &self.machine.root, input, None, &history);
        let result = match self.machine.timeout {
            None => states.await,
            Some(limit) => tokio::time::timeout(limit, states).await.unwrap_or_else(|_| {
                Err(TaskFailure::new(
                    STATES_TIMEOUT,
                    format!("the execution did not finish within its TimeoutSeconds ({} s)", limit.as_secs()),
                ))
            }),
        };
        Ok(match result {
            Ok(output) => Outcome::Succeeded(output),
            Err(TaskFailure { error, cause }) => {
                tracing::debug!(execution = %self.name, %error, "execution failed");
                Outcome::Failed { error, cause }
            }
        })
    }

    fn emit(&self, event: Event) {
        if let Some(observer) = &self.observer {
            observer(&event);
        }
    }

    /// Runs a `States` block from its `StartAt` to a terminal state. Boxed because Map states
    /// recurse into it.
    fn run_states<'s>(
        &'s self,
        run: &'s Run,
        states: &'s States,
        input: Value,
        map_index: Option<usize>,
        history: &'s History,
    ) -> BoxFuture<'s, Result<Value, TaskFailure>> {
        Box::pin(async move {
            let mut name = states.start_at.as_str();
            let mut input = input;
            loop {
                // Parsing checked every transition, so a missing state is a bug of the runner.
                let Some(state) = states.states.get(name) else {
                    return Err(TaskFailure::new(STATES_RUNTIME, format!("state `{name}` does not exist")));
                };
                history.add(History::events_of(&state.kind), &state.name)?;
                self.emit(Event::StateEntered { name: state.name.clone(), map_index });
                tracing::debug!(state = %state.name, ?map_index, "entered state");
                let started = Instant::now();
                let mut step = self.run_state(run, state, input, history).await;
                if let Step::Next { output, .. } | Step::End(output) = &step
                    && let Err(failure) = check_payload(&state.name, "output", output)
                {
                    step = Step::Failed(failure);
                }
                let ok = match &step {
                    Step::Next { ok, .. } => *ok,
                    Step::End(_) => true,
                    Step::Failed(_) => false,
                };
                let elapsed = started.elapsed();
                tracing::debug!(state = %state.name, ?map_index, ok, ?elapsed, "exited state");
                self.emit(Event::StateExited { name: state.name.clone(), map_index, elapsed, ok });
                if self.observer.is_some() && matches!(state.kind, Kind::Task(_)) {
                    let output = match &step {
                        Step::Next { ok: true, output, .. } | Step::End(output) => Some(output.clone()),
                        _ => None,
                    };
                    if let Some(output) = output {
                        self.emit(Event::TaskSucceeded { name: state.name.clone(), map_index, output });
                    }
                }
                match step {
                    Step::Next { next, output, .. } => {
                        name = next;
                        input = output;
                    }
                    Step::End(output) => return Ok(output),
                    Step::Failed(failure) => return Err(failure),
                }
            }
        })
    }

    async fn run_state<'s>(&'s self, run: &'s Run, state: &'s State, input: Value, history: &'s History) -> Step<'s> {
        let entered = format_rfc3339(SystemTime::now());
        let name = state.name.as_str();
        let context = |retry_count| Context::new(&run.execution, &run.state_machine, name, &entered, retry_count);
        let result = match &state.kind {
            Kind::Task(task) => {
                let input = &input;
                let result = self
                    .with_retry(name, &task.retry, history, |retry_count| async move {
                        let context = context(retry_count);
                        self.task_attempt(&Scope { state: name, input, context: &context }, task).await
                    })
                    .await;
                return settle(name, result, &task.catch, &task.transition, input.clone());
            }
            Kind::Map(map) => {
                let input = &input;
                let result = self
                    .with_retry(name, &map.retry, history, |retry_count| async move {
                        let context = context(retry_count);
                        self.map_attempt(run, &Scope { state: name, input, context: &context }, map, history).await
                    })
                    .await;
                return settle(name, result, &map.catch, &map.transition, input.clone());
            }
            Kind::Pass(pass) => run_pass(&Scope { state: name, input: &input, context: &context(0) }, pass),
            Kind::Choice(choice) => run_choice(&Scope { state: name, input: &input, context: &context(0) }, choice),
            Kind::Wait(wait) => run_wait(&Scope { state: name, input: &input, context: &context(0) }, wait).await,
            Kind::Succeed(succeed) => run_succeed(&Scope { state: name, input: &input, context: &context(0) }, succeed),
            Kind::Fail(fail) => Err(run_fail(&Scope { state: name, input: &input, context: &context(0) }, fail)),
        };
        result.unwrap_or_else(Step::Failed)
    }

    /// Runs `attempt` until it succeeds, or fails with an error no retrier (still) covers.
    /// `attempt` gets the number of retries so far (`$$.State.RetryCount`).
    async fn with_retry<F, Fut>(
        &self,
        name: &str,
        retriers: &[Retrier],
        history: &History,
        mut attempt: F,
    ) -> Result<Value, TaskFailure>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<Value, TaskFailure>>,
    {
        let mut attempts_by_retrier = vec![0u32; retriers.len()];
        let mut retries = 0u32;
        loop {
            let failure = match attempt(retries).await {
                Ok(output) => return Ok(output),
                Err(failure) => failure,
            };
            if failure.error == STATES_RUNTIME || failure.error == STATES_DATA_LIMIT_EXCEEDED {
                return Err(failure);
            }
            // Only the first matching retrier applies, even when it is exhausted.
            let Some(index) = retriers.iter().position(|r| error_matches(&r.error_equals, &failure.error)) else {
                return Err(failure);
            };
            let retrier = &retriers[index];
            if attempts_by_retrier[index] >= retrier.max_attempts {
                return Err(failure);
            }
            // A retry writes the task's scheduled, started and failed events again.
            history.add(3, name)?;
            let delay = retrier.delay(attempts_by_retrier[index]);
            attempts_by_retrier[index] += 1;
            retries += 1;
            tracing::debug!(state = %name, error = %failure.error, retry = retries, ?delay, "retrying state");
            self.emit(Event::Retrying { name: name.to_owned(), error: failure.error, attempt: retries, delay });
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt of a Task state: input processing, the call, output processing.
    async fn task_attempt(&self, scope: &Scope<'_>, task: &Task) -> Result<Value, TaskFailure> {
        let effective = effective_input(scope, &task.input_path, task.parameters.as_ref())?;
        check_payload(scope.state, "input", &effective)?;
        let call = self.env.invoke(&task.resource, effective);
        let result = match task.timeout {
            None => call.await?,
            Some(limit) => tokio::time::timeout(limit, call).await.map_err(|_| {
                scope.failure(
                    STATES_TIMEOUT,
                    format!("the task did not finish within its TimeoutSeconds ({} s)", limit.as_secs()),
                )
            })??,
        };
        check_payload(scope.state, "result", &result)?;
        state_output(scope, result, task.result_selector.as_ref(), &task.result_path, &task.output_path)
    }

    /// One attempt of a Map state: read the items, run every iteration, collect results in
    /// item order (or export them through the `ResultWriter`). The first iteration to fail fails
    /// the attempt; the others are dropped, as AWS aborts them.
    async fn map_attempt(
        &self,
        run: &Run,
        scope: &Scope<'_>,
        map: &MapState,
        history: &History,
    ) -> Result<Value, TaskFailure> {
        let effective = select(scope, &map.input_path, "InputPath")?;
        let effective_scope = scope.with_input(&effective);
        let items = match &map.items {
            Items::Path(path) => match effective_scope.resolve(path, "ItemsPath")?.into_owned() {
                Value::Array(items) => items,
                other => {
                    return Err(scope.runtime(format!(
                        "the JSONPath `{path}` specified for the field `ItemsPath` selects {}, not an array",
                        kind_of(&other)
                    )));
                }
            },
            Items::Reader(reader) => {
                let parameters = match &reader.parameters {
                    Some(template) => template.eval(&effective_scope)?,
                    None => Value::Object(serde_json::Map::new()),
                };
                self.env.read_items(&reader.resource, &reader.config, parameters).await?
            }
        };
        // The writer's parameters resolve against the Map's effective input (as in AWS); a bad
        // one fails before any iteration runs rather than after all of them.
        let writer = match &map.result_writer {
            None => None,
            Some(writer) => {
                let parameters = writer.parameters.eval(&effective_scope)?;
                Some((writer, Destination::from_parameters(scope, &parameters)?))
            }
        };
        let inputs = match &map.item_selector {
            None => items,
            Some(selector) => items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    let context = effective_scope.context.with_map_item(index, item);
                    selector.eval(&Scope { state: scope.state, input: &effective, context: &context })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let count = inputs.len();
        let max_concurrency = match &map.max_concurrency_path {
            None => map.max_concurrency,
            Some(path) => {
                let value = effective_scope.resolve(path, "MaxConcurrencyPath")?;
                value.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| {
                    scope.runtime(format!(
                        "the JSONPath `{path}` specified for the field `MaxConcurrencyPath` selects {}, not a non-negative integer",
                        kind_of(&value)
                    ))
                })?
            }
        };
        let limit = if max_concurrency == 0 { count.max(1) } else { max_concurrency };
        let keep_inputs = writer.is_some();
        if !map.distributed {
            // Inline: every iteration's events (started, succeeded, and its states') are the
            // execution's own.
            history.add(2 * count, scope.state)?;
        }
        let mut iterations = stream::iter(inputs.into_iter().enumerate())
            .map(|(index, input)| async move {
                let started = SystemTime::now();
                let kept = if keep_inputs { input.clone() } else { Value::Null };
                // A Distributed Map's iteration is a child execution, with a history of its own.
                let child = History::new();
                let history = if map.distributed { &child } else { history };
                let output = self.run_states(run, &map.processor, input, Some(index), history).await;
                (index, Iteration { input: kept, output, started, stopped: SystemTime::now() })
            })
            .buffer_unordered(limit);
        let mut done: Vec<Option<Iteration>> = (0..count).map(|_| None).collect();
        let mut failed = 0usize;
        while let Some((index, iteration)) = iterations.next().await {
            if let Err(failure) = &iteration.output {
                // Inline: the iteration's error is the Map's. Distributed: the Map Run fails at
                // its first failed child (no failure is tolerated); the children in flight are
                // aborted and the rest never start, as in AWS.
                if !map.distributed {
                    return Err(failure.clone());
                }
                failed += 1;
                done[index] = Some(iteration);
                break;
            }
            done[index] = Some(iteration);
        }
        drop(iterations);
        let done: Vec<Iteration> = done.into_iter().flatten().collect();
        let label = map.label.as_deref().unwrap_or(scope.state);
        let map_run = MapRun::new(run.state_machine["Id"].as_str().unwrap_or_default(), label);
        let result = match writer {
            None => {
                // The iterations' results come back as one array, whatever `ResultPath` keeps of
                // it: past the quota, a `ResultWriter` must export them instead.
                let result = Value::Array(done.into_iter().filter_map(|iteration| iteration.output.ok()).collect());
                if failed == 0 {
                    check_payload(scope.state, "result (the iterations' outputs)", &result)?;
                }
                result
            }
            Some((writer, destination)) => {
                let export = map_run.export(&destination, &done);
                for (key, body) in export.objects {
                    self.env.write_result(&writer.resource, &destination.bucket, &key, body).await?;
                }
                tracing::debug!(state = %scope.state, map_run = %map_run.arn, "map results written");
                export.result
            }
        };
        if failed > 0 {
            return Err(scope.failure(
                STATES_EXCEED_TOLERATED_FAILURE_THRESHOLD,
                format!(
                    "Map Run {} failed: {failed} of {count} items failed and the Map tolerates none; the items' \
                     errors are in its ResultWriter export (FAILED_*.json)",
                    map_run.arn
                ),
            ));
        }
        state_output(scope, result, map.result_selector.as_ref(), &map.result_path, &map.output_path)
    }
}

/// Turns a Task or Map result into the next step, routing an error through the first matching
/// catcher, which puts `{"Error", "Cause"}` at its `ResultPath` in the state's raw input.
fn settle<'m>(
    name: &str,
    result: Result<Value, TaskFailure>,
    catchers: &'m [Catcher],
    transition: &'m Transition,
    raw_input: Value,
) -> Step<'m> {
    let failure = match result {
        Ok(output) => return Step::after(transition, output),
        Err(failure) => failure,
    };
    let Some((index, catcher)) =
        catchers.iter().enumerate().find(|(_, c)| error_matches(&c.error_equals, &failure.error))
    else {
        return Step::Failed(failure);
    };
    tracing::debug!(state = %name, error = %failure.error, next = %catcher.next, "caught error");
    let error_output = json!({"Error": failure.error, "Cause": failure.cause});
    match catcher.result_path.apply(raw_input, error_output) {
        Ok(output) => Step::Next { next: &catcher.next, output, ok: false },
        Err(reason) => Step::Failed(TaskFailure::new(
            STATES_RESULT_PATH_MATCH_FAILURE,
            format!("state `{name}`: field `Catch[{index}].ResultPath`: {reason}"),
        )),
    }
}

fn run_pass<'m>(scope: &Scope<'_>, pass: &'m Pass) -> Result<Step<'m>, TaskFailure> {
    let effective = effective_input(scope, &pass.input_path, pass.parameters.as_ref())?;
    let result = pass.result.clone().unwrap_or(effective);
    let output = state_output(scope, result, None, &pass.result_path, &pass.output_path)?;
    Ok(Step::after(&pass.transition, output))
}

fn run_choice<'m>(scope: &Scope<'_>, choice: &'m Choice) -> Result<Step<'m>, TaskFailure> {
    let effective = select(scope, &choice.input_path, "InputPath")?;
    let effective_scope = scope.with_input(&effective);
    let mut next = None;
    for rule in &choice.choices {
        if rule.condition.eval(&effective_scope)? {
            next = Some(rule.next.as_str());
            break;
        }
    }
    let next = next
        .or(choice.default.as_deref())
        .ok_or_else(|| scope.failure(STATES_NO_CHOICE_MATCHED, "no choice rule matched and there is no `Default`"))?;
    let output = select(&effective_scope, &choice.output_path, "OutputPath")?;
    Ok(Step::Next { next, output, ok: true })
}

async fn run_wait<'m>(scope: &Scope<'_>, wait: &'m Wait) -> Result<Step<'m>, TaskFailure> {
    let effective = select(scope, &wait.input_path, "InputPath")?;
    let effective_scope = scope.with_input(&effective);
    let duration = match &wait.wait_for {
        WaitFor::Seconds(seconds) => Duration::from_secs(*seconds),
        WaitFor::Timestamp(at) => until(*at, now_unix_nanos()),
        WaitFor::SecondsPath(path) => {
            let value = effective_scope.resolve(path, "SecondsPath")?;
            let seconds = value.as_u64().ok_or_else(|| {
                scope.runtime(format!(
                    "the value at `{path}` (field `SecondsPath`) must be a non-negative integer, got {}",
                    kind_of(&value)
                ))
            })?;
            Duration::from_secs(seconds)
        }
        WaitFor::TimestampPath(path) => {
            let value = effective_scope.resolve(path, "TimestampPath")?;
            let at = value.as_str().and_then(parse_rfc3339).ok_or_else(|| {
                scope.runtime(format!(
                    "the value at `{path}` (field `TimestampPath`) must be an RFC 3339 timestamp string"
                ))
            })?;
            until(at, now_unix_nanos())
        }
    };
    tokio::time::sleep(duration).await;
    let output = select(&effective_scope, &wait.output_path, "OutputPath")?;
    Ok(Step::after(&wait.transition, output))
}

fn run_succeed<'m>(scope: &Scope<'_>, succeed: &Succeed) -> Result<Step<'m>, TaskFailure> {
    let effective = select(scope, &succeed.input_path, "InputPath")?;
    Ok(Step::End(select(&scope.with_input(&effective), &succeed.output_path, "OutputPath")?))
}

/// The failure a Fail state ends with; a `States.Runtime` failure if `ErrorPath` or `CausePath`
/// does not yield a string.
fn run_fail(scope: &Scope<'_>, fail: &Fail) -> TaskFailure {
    let text = |text: &Option<FailText>, field: &str| -> Result<String, TaskFailure> {
        match text {
            None => Ok(String::new()),
            Some(FailText::Literal(text)) => Ok(text.clone()),
            Some(FailText::Dynamic(expr)) => match expr.eval(scope, field)? {
                Value::String(text) => Ok(text),
                other => Err(scope.runtime(format!("field `{field}` must yield a string, got {}", kind_of(&other)))),
            },
        }
    };
    match (text(&fail.error, "ErrorPath"), text(&fail.cause, "CausePath")) {
        (Ok(error), Ok(cause)) => TaskFailure { error, cause },
        (Err(failure), _) | (_, Err(failure)) => failure,
    }
}

/// Applies an `InputPath` or `OutputPath` (`None` is `null`, which yields `{}`).
fn select(scope: &Scope<'_>, path: &IoPath, field: &str) -> Result<Value, TaskFailure> {
    match path {
        None => Ok(Value::Object(serde_json::Map::new())),
        Some(path) => scope.resolve(path, field).map(Cow::into_owned),
    }
}

/// `InputPath`, then `Parameters`: what a Task is called with and what a Pass passes on.
fn effective_input(
    scope: &Scope<'_>,
    input_path: &IoPath,
    parameters: Option<&Template>,
) -> Result<Value, TaskFailure> {
    let selected = select(scope, input_path, "InputPath")?;
    match parameters {
        None => Ok(selected),
        Some(template) => template.eval(&scope.with_input(&selected)),
    }
}

/// `ResultSelector` on the result, `ResultPath` into the raw input, then `OutputPath`.
fn state_output(
    scope: &Scope<'_>,
    result: Value,
    result_selector: Option<&Template>,
    result_path: &ResultPath,
    output_path: &IoPath,
) -> Result<Value, TaskFailure> {
    let result = match result_selector {
        Some(selector) => selector.eval(&scope.with_input(&result))?,
        None => result,
    };
    let combined = result_path
        .apply(scope.input.clone(), result)
        .map_err(|reason| scope.failure(STATES_RESULT_PATH_MATCH_FAILURE, format!("field `ResultPath`: {reason}")))?;
    select(&scope.with_input(&combined), output_path, "OutputPath")
}
