//! A small, in-process interpreter for the Amazon States Language (ASL, JSONPath flavour).
//!
//! pgferry deploys one state machine to AWS Step Functions, and the CLI runs *the very same
//! definition file* locally so that a migration behaves the same on a laptop as in the cloud.
//! This module is that local runner: [`StateMachine::parse`] validates a definition against the
//! subset we support and refuses everything else up front (a definition that the runner would
//! silently misinterpret is worse than one it rejects), and [`Execution::run`] interprets it,
//! calling out to an [`Environment`] for Task resources and Map item readers.
//!
//! Supported: `Task`, `Choice`, `Map` (inline and distributed, run in-process, with `ItemReader`
//! and `ResultWriter`), `Pass`, `Wait`, `Succeed` and `Fail` states; `InputPath`, `Parameters`,
//! `ResultSelector`, `ResultPath`, `OutputPath`; `Retry` and `Catch`; payload templates with
//! context-object paths and a set of intrinsic functions. Not supported: `Parallel`, JSONata,
//! variables (`Assign`), the `WriterConfig` transformations of result writers, batching and
//! failure tolerance. See each module for the details.
//!
//! Runtime failures follow Step Functions: they are not Rust errors but [`Outcome::Failed`] with
//! a `States.*` error name, which `Retry` and `Catch` can match like any other error. As in AWS,
//! `States.Runtime` (a path that does not resolve, a payload that is not what a field needs) is
//! not retried and is not caught by `States.ALL` or `States.TaskFailed`; only a catcher that names
//! `States.Runtime` explicitly catches it locally.

mod choice;
mod context;
mod definition;
mod error;
mod execute;
mod intrinsic;
mod path;
mod result_writer;
mod retry;
mod substitute;
mod template;
mod time;

#[cfg(test)]
mod tests;

use std::time::Duration;

use futures_util::future::BoxFuture;

pub use self::definition::StateMachine;
pub use self::error::AslError;
pub use self::execute::{Execution, local_state_machine_arn};

/// Wildcard error name that matches every error except `States.Runtime`.
pub const STATES_ALL: &str = "States.ALL";
/// Wildcard error name that matches every error except `States.Timeout` and `States.Runtime`.
pub const STATES_TASK_FAILED: &str = "States.TaskFailed";
/// A Task ran longer than its `TimeoutSeconds`, or the execution ran longer than its own.
pub const STATES_TIMEOUT: &str = "States.Timeout";
/// A path did not resolve or selected a value of the wrong type; neither retried nor caught by
/// the wildcards.
pub const STATES_RUNTIME: &str = "States.Runtime";
/// A Choice state found no matching rule and has no `Default`.
pub const STATES_NO_CHOICE_MATCHED: &str = "States.NoChoiceMatched";
/// A `ResultPath` could not be applied to the state's input (e.g. it goes through a string).
pub const STATES_RESULT_PATH_MATCH_FAILURE: &str = "States.ResultPathMatchFailure";
/// An intrinsic function was called with arguments it cannot work with.
pub const STATES_INTRINSIC_FAILURE: &str = "States.IntrinsicFailure";
/// A Map `ItemReader` could not read its items.
pub const STATES_ITEM_READER_FAILED: &str = "States.ItemReaderFailed";
/// A Map `ResultWriter` could not write the results.
pub const STATES_RESULT_WRITER_FAILED: &str = "States.ResultWriterFailed";
/// A state's input or output passed [`PAYLOAD_LIMIT_BYTES`]; like `States.Runtime`, neither
/// retried nor caught by the wildcards: the execution fails and no `Catch` runs.
pub const STATES_DATA_LIMIT_EXCEEDED: &str = "States.DataLimitExceeded";
/// A Distributed Map's child executions failed more than it tolerates (none, here): the Map
/// fails with this name, whatever the children's errors were (they are in its `ResultWriter`
/// export, `FAILED_*.json`).
pub const STATES_EXCEED_TOLERATED_FAILURE_THRESHOLD: &str = "States.ExceedToleratedFailureThreshold";

/// Step Functions' payload quota: a state's input and output, as JSON text, at most 256 KiB.
pub const PAYLOAD_LIMIT_BYTES: usize = 262_144;
/// Step Functions' history quota: events per execution (a Distributed Map's child executions
/// each have their own). Passing it fails the execution at once, with no `Catch` run.
pub const HISTORY_LIMIT_EVENTS: usize = 25_000;

/// What a Task or ItemReader failure looks like (Step Functions' `{"Error", "Cause"}`).
///
/// The interpreter uses the same shape for every state failure, since that is what `Retry`,
/// `Catch` and the execution outcome see.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFailure {
    /// The error name that `ErrorEquals` matches on, e.g. `States.Timeout` or `CopyFailed`.
    pub error: String,
    /// Human-readable detail; never matched on.
    pub cause: String,
}

impl TaskFailure {
    /// A failure with the given error name and cause.
    pub fn new(error: impl Into<String>, cause: impl Into<String>) -> Self {
        Self { error: error.into(), cause: cause.into() }
    }
}

/// Connects the interpreter to the world: Lambda invocations, S3 reads and writes.
///
/// Object-safe so the CLI can pick an implementation at run time.
pub trait Environment: Send + Sync {
    /// Runs a Task state's `Resource` with the effective input (after `InputPath` and
    /// `Parameters`); `Ok` is the task's result, `Err` its error name and cause.
    fn invoke(&self, resource: &str, input: serde_json::Value)
    -> BoxFuture<'_, Result<serde_json::Value, TaskFailure>>;

    /// Reads a Map `ItemReader`: `resource` (e.g. `arn:aws:states:::s3:getObject`),
    /// `reader_config` (the `ReaderConfig` object, or `Null` when absent) and the already
    /// resolved `parameters` (e.g. `{"Bucket": "b", "Key": "runs/1/plan.json"}`); returns the
    /// items. A failure fails the Map state with that error (AWS reports
    /// `States.ItemReaderFailed`, so implementations should use that name).
    fn read_items(
        &self,
        resource: &str,
        reader_config: &serde_json::Value,
        parameters: serde_json::Value,
    ) -> BoxFuture<'_, Result<Vec<serde_json::Value>, TaskFailure>>;

    /// Stores one object of a Map `ResultWriter` export: `resource` (e.g.
    /// `arn:aws:states:::s3:putObject`), the bucket from the writer's `Parameters` and the key
    /// the interpreter chose in AWS's layout (`<Prefix>/<map run id>/SUCCEEDED_0.json`, then
    /// `…/manifest.json`), and the JSON body. A failure fails the Map state with that error (AWS
    /// reports `States.ResultWriterFailed`, so implementations should use that name).
    fn write_result(
        &self,
        resource: &str,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
    ) -> BoxFuture<'_, Result<(), TaskFailure>>;
}

/// Progress events for a CLI, delivered synchronously to the observer in the order they happen
/// (iterations of a Map interleave).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A state started; `map_index` is the index of the innermost Map iteration it runs in.
    StateEntered {
        /// The state's name within its own `States` block.
        name: String,
        /// `None` for top-level states.
        map_index: Option<usize>,
    },
    /// A state finished. `ok` is false when the state failed, even if a `Catch` handled it, and
    /// for `Fail` states.
    StateExited {
        /// The state's name within its own `States` block.
        name: String,
        /// `None` for top-level states.
        map_index: Option<usize>,
        /// Time from entering to leaving, retries included.
        elapsed: Duration,
        /// Whether the state completed without an error.
        ok: bool,
    },
    /// A Task state succeeded (emitted after its `StateExited`); `output` is the state's output,
    /// after its `ResultPath` and `OutputPath` (what the next state receives).
    TaskSucceeded { name: String, map_index: Option<usize>, output: serde_json::Value },
    /// A Task or Map failed with an error that a retrier matched; the state runs again after
    /// `delay`.
    Retrying {
        /// The state being retried.
        name: String,
        /// The error name that triggered the retry.
        error: String,
        /// 1 for the first retry of this state entry, 2 for the second, and so on.
        attempt: u32,
        /// How long the runner sleeps before the retry.
        delay: Duration,
    },
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The execution reached a terminal state; the value is its output.
    Succeeded(serde_json::Value),
    /// A state failed and no `Catch` handled it, a `Fail` state was reached, or the execution
    /// ran out of time.
    Failed {
        /// The error name, e.g. `States.Timeout`.
        error: String,
        /// Detail for a human.
        cause: String,
    },
}
