//! Functions and the local runner: what a Task resource means, in AWS and on a laptop.
//!
//! The state machine names four Lambda functions through `DefinitionSubstitutions`
//! (`${PreflightFunctionArn}` …). In AWS those resolve to deployed functions whose handlers call
//! [`invoke`]; locally the same names resolve to ARNs that [`LocalEnvironment`] maps back to the
//! same [`invoke`], in-process. The Maps' ItemReader and ResultWriter read and write the artifact
//! store instead of S3.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::asl::{Environment, TaskFailure};
use crate::context::StepContext;
use crate::error::{Error, Result};
use crate::step::{CloneRequest, CopyRequest, SchemaRequest, StepInput, VerifyRequest};
use crate::{dispatch, preflight};

/// The state machine definition, compiled in so that `pgferry run` runs exactly this file.
pub const DEFINITION: &str = include_str!("../../statemachine/replication.asl.json");

/// The `DefinitionSubstitutions` name of the artifact bucket.
pub const ARTIFACT_BUCKET: &str = "ArtifactBucket";

/// The four Lambda functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Preflight,
    Schema,
    Copy,
    Verify,
}

impl Function {
    pub const ALL: [Function; 4] = [Self::Preflight, Self::Schema, Self::Copy, Self::Verify];

    /// The `DefinitionSubstitutions` key naming this function's ARN.
    pub fn substitution(self) -> &'static str {
        match self {
            Self::Preflight => "PreflightFunctionArn",
            Self::Schema => "SchemaFunctionArn",
            Self::Copy => "CopyFunctionArn",
            Self::Verify => "VerifyFunctionArn",
        }
    }

    /// The function's name (`pgferry-copy`…), also the last part of its local ARN.
    pub fn name(self) -> &'static str {
        match self {
            Self::Preflight => "pgferry-preflight",
            Self::Schema => "pgferry-schema",
            Self::Copy => "pgferry-copy",
            Self::Verify => "pgferry-verify",
        }
    }

    /// The ARN the local runner substitutes.
    pub fn local_arn(self) -> String {
        format!("arn:aws:lambda:local:000000000000:function:{}", self.name())
    }

    /// The function an ARN (or bare name) refers to.
    pub fn from_resource(resource: &str) -> Option<Self> {
        let name = resource.rsplit(':').next().unwrap_or(resource);
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// Substitutions for running the definition locally.
pub fn local_substitutions() -> BTreeMap<String, String> {
    let mut subs: BTreeMap<String, String> =
        Function::ALL.iter().map(|f| (f.substitution().to_string(), f.local_arn())).collect();
    subs.insert(ARTIFACT_BUCKET.to_string(), "local".to_string());
    subs
}

fn request<T: DeserializeOwned>(function: Function, payload: Value) -> Result<T> {
    serde_json::from_value(payload).map_err(|e| Error::job(format!("{} request: {e}", function.name())))
}

/// Runs one function on its payload: the body of every Lambda handler and of local Tasks.
/// `deadline` is when the invocation will be stopped (Lambda's remaining time), if ever.
pub async fn invoke(ctx: &StepContext, function: Function, payload: Value, deadline: Option<Instant>) -> Result<Value> {
    match function {
        // The preflight function also hosts the clone actions of `"consistency": "clone"`, told
        // apart by their `action`; the preflight request itself has none.
        Function::Preflight if payload.get("action").is_some() => {
            dispatch::clone(ctx, request::<CloneRequest>(function, payload)?).await
        }
        Function::Preflight => {
            let input: StepInput = request(function, payload)?;
            Ok(crate::step::to_value(preflight::run(ctx, &input).await?))
        }
        Function::Schema => dispatch::schema_until(ctx, request::<SchemaRequest>(function, payload)?, deadline).await,
        Function::Copy => dispatch::copy(ctx, request::<CopyRequest>(function, payload)?, deadline).await,
        Function::Verify => dispatch::verify(ctx, request::<VerifyRequest>(function, payload)?).await,
    }
}

/// An invocation deadline given in milliseconds since the Unix epoch (as Lambda gives it), as an
/// `Instant`; `None` when it has passed or cannot be represented.
pub fn deadline_from_epoch_ms(deadline_ms: u64) -> Option<Instant> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    let left = u128::from(deadline_ms).checked_sub(now)?;
    Some(Instant::now() + Duration::from_millis(u64::try_from(left).ok()?))
}

/// The Step Functions `{"Error", "Cause"}` of an error: a stable name and a message with advice.
pub fn task_failure(err: &Error) -> TaskFailure {
    TaskFailure { error: err.kind().step_error_name().to_string(), cause: err.with_advice() }
}

/// The error of a Task stopped by an [`Interrupt`]. No `Retry` matches it; every `Catch` does
/// (`States.ALL`), so the state machine goes down its failure path.
pub const STEP_ERROR_INTERRUPTED: &str = "Pgferry.Interrupted";

/// The Task actions of the state machine's failure path (and the release step): they undo what
/// a run holds — the master's temporary memberships, read access obtained on the source, a
/// refresh's hold on its target, a logical replication set up, a clone — and run to their end
/// even after an [`Interrupt`].
const UNDOING_ACTIONS: [&str; 4] = ["diagnose", "cleanupReplication", "release", "deleteClone"];

/// A request to stop a local run (`pgferry run` on Ctrl-C). Unlike a Step Functions
/// `StopExecution`, which runs no `Catch`, the run still ends the way a failed run does: Tasks in
/// flight stop (their transactions roll back with their connections, the ledger keeps the slices
/// already committed) and fail with [`STEP_ERROR_INTERRUPTED`], later work Tasks fail at once,
/// and the failure path's Tasks ([`UNDOING_ACTIONS`]) run normally.
#[derive(Debug, Clone)]
pub struct Interrupt(tokio::sync::watch::Sender<bool>);

impl Default for Interrupt {
    fn default() -> Self {
        Self(tokio::sync::watch::Sender::new(false))
    }
}

impl Interrupt {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    pub fn fired(&self) -> bool {
        *self.0.borrow()
    }

    async fn wait(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`: the channel cannot close while this waits.
        let _ = rx.wait_for(|fired| *fired).await;
    }
}

fn interrupted(action: &str) -> TaskFailure {
    TaskFailure {
        error: STEP_ERROR_INTERRUPTED.to_string(),
        cause: format!("the run was interrupted (Ctrl-C) at task {action}; its failure path undoes what it holds"),
    }
}

/// The one AWS SDK integration of the definition: the StoppedRun route asks Step Functions about
/// the execution a status-change event names.
pub const DESCRIBE_EXECUTION: &str = "arn:aws:states:::aws-sdk:sfn:describeExecution";

/// Runs Task states in-process and reads ItemReader objects from the artifact store.
#[derive(Debug)]
pub struct LocalEnvironment {
    ctx: StepContext,
    task_budget: Option<Duration>,
    interrupt: Option<Interrupt>,
    /// Executions `sfn:describeExecution` knows locally, by ARN (a local run has no Step
    /// Functions to ask: what a test or caller registers with [`LocalEnvironment::with_execution`]).
    executions: std::collections::HashMap<String, Value>,
}

impl LocalEnvironment {
    pub fn new(ctx: StepContext) -> Self {
        Self { ctx, task_budget: None, interrupt: None, executions: std::collections::HashMap::new() }
    }

    /// Makes `sfn:describeExecution` of `arn` answer as Step Functions would for an execution of
    /// the local state machine named `name` that ended with `status` on `input`.
    pub fn with_execution(mut self, arn: &str, name: &str, status: &str, input: &Value) -> Self {
        let described = serde_json::json!({
            "ExecutionArn": arn,
            "Name": name,
            "Status": status,
            "StateMachineArn": crate::asl::local_state_machine_arn(),
            "Input": input.to_string(),
        });
        self.executions.insert(arn.to_string(), described);
        self
    }

    /// Gives every Task invocation this much time, as Lambda's timeout would (no limit by default).
    pub fn with_task_budget(self, budget: Option<Duration>) -> Self {
        Self { task_budget: budget, ..self }
    }

    /// Stops work Tasks when `interrupt` fires (see [`Interrupt`]).
    pub fn with_interrupt(self, interrupt: Interrupt) -> Self {
        Self { interrupt: Some(interrupt), ..self }
    }
}

impl Environment for LocalEnvironment {
    fn invoke(&self, resource: &str, input: Value) -> BoxFuture<'_, std::result::Result<Value, TaskFailure>> {
        let function = Function::from_resource(resource);
        let resource = resource.to_string();
        Box::pin(async move {
            if resource == DESCRIBE_EXECUTION {
                let arn = input.get("ExecutionArn").and_then(Value::as_str).unwrap_or_default();
                return self.executions.get(arn).cloned().ok_or_else(|| TaskFailure {
                    error: "Sfn.ExecutionDoesNotExistException".to_string(),
                    cause: format!("Execution Does Not Exist: '{arn}'"),
                });
            }
            let Some(function) = function else {
                return Err(TaskFailure {
                    error: "States.Runtime".to_string(),
                    cause: format!("no local handler for resource {resource}"),
                });
            };
            let deadline = self.task_budget.map(|b| Instant::now() + b);
            let action = input.get("action").and_then(Value::as_str).unwrap_or(function.name()).to_string();
            let undoing = UNDOING_ACTIONS.contains(&action.as_str());
            let task = invoke(&self.ctx, function, input, deadline);
            match self.interrupt.as_ref().filter(|_| !undoing) {
                Some(interrupt) if interrupt.fired() => Err(interrupted(&action)),
                Some(interrupt) => tokio::select! {
                    result = task => result.map_err(|e| task_failure(&e)),
                    () = interrupt.wait() => Err(interrupted(&action)),
                },
                None => task.await.map_err(|e| task_failure(&e)),
            }
        })
    }

    fn read_items(
        &self,
        resource: &str,
        _reader_config: &Value,
        parameters: Value,
    ) -> BoxFuture<'_, std::result::Result<Vec<Value>, TaskFailure>> {
        let resource = resource.to_string();
        Box::pin(async move {
            let failure = |cause: String| TaskFailure { error: "States.ItemReaderFailed".to_string(), cause };
            if resource != "arn:aws:states:::s3:getObject" {
                return Err(failure(format!("the local runner reads items only with s3:getObject, not {resource}")));
            }
            let key = parameters
                .get("Key")
                .and_then(Value::as_str)
                .ok_or_else(|| failure("ItemReader Parameters have no Key".to_string()))?;
            self.ctx.store.get_json::<Vec<Value>>(key).await.map_err(|e| failure(e.to_string()))
        })
    }

    /// The Distributed Maps' `ResultWriter` exports go to the artifact store under the same keys
    /// as in the bucket (the bucket is the store, as for `read_items`).
    fn write_result(
        &self,
        resource: &str,
        _bucket: &str,
        key: &str,
        body: Vec<u8>,
    ) -> BoxFuture<'_, std::result::Result<(), TaskFailure>> {
        let resource = resource.to_string();
        let key = key.to_string();
        Box::pin(async move {
            let failure =
                |cause: String| TaskFailure { error: crate::asl::STATES_RESULT_WRITER_FAILED.to_string(), cause };
            if resource != "arn:aws:states:::s3:putObject" {
                return Err(failure(format!(
                    "the local runner writes Map results only with s3:putObject, not {resource}"
                )));
            }
            self.ctx.store.put_bytes(&key, &body).await.map_err(|e| failure(e.to_string()))
        })
    }
}
