//! AWS Lambda function `pgferry-copy`: a thin adapter over [`pgferry_core::runner::invoke`].
//!
//! Built once per cold start: tracing and the step context (artifact store, credentials). Each
//! invocation deserializes its payload, runs the step and maps a failure to the Step Functions
//! error name that the state machine's `Retry`/`Catch` blocks match on.

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use pgferry_core::context::StepContext;
use pgferry_core::runner::{self, Function};
use serde_json::Value;

const FUNCTION: Function = Function::Copy;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    pgferry_core::telemetry::init_lambda();
    let ctx = StepContext::from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| handler(&ctx, event))).await
}

/// Handles one invocation.
async fn handler(ctx: &StepContext, event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
    runner::invoke(ctx, FUNCTION, event.payload, runner::deadline_from_epoch_ms(event.context.deadline)).await.map_err(
        |e| {
            let failure = runner::task_failure(&e);
            tracing::error!(error = %failure.error, cause = %failure.cause, "step failed");
            Diagnostic { error_type: failure.error, error_message: failure.cause }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_context() -> StepContext {
        let dir = std::env::temp_dir().join(format!("pgferry-fn-test-{}", std::process::id()));
        StepContext::new(pgferry_core::store::ArtifactStore::local(dir), Default::default())
    }

    fn fixture_event() -> LambdaEvent<Value> {
        let payload = serde_json::from_str(include_str!("../../../shared/tests/fixtures/events/copy.json")).unwrap();
        LambdaEvent::new(payload, Default::default())
    }

    #[tokio::test]
    async fn the_fixture_event_fails_with_the_connection_error_name() {
        let err = handler(&test_context(), fixture_event()).await.unwrap_err();
        assert_eq!(err.error_type, "Pgferry.ConnectionFailed");
        assert!(err.error_message.contains("127.0.0.1:1/shop"), "{}", err.error_message);
    }

    #[tokio::test]
    async fn a_malformed_event_fails_with_the_invalid_job_error_name() {
        let event = LambdaEvent::new(serde_json::json!({"job": {"source": {}}, "runId": "r"}), Default::default());
        let err = handler(&test_context(), event).await.unwrap_err();
        assert_eq!(err.error_type, "Pgferry.InvalidJob");
        assert!(err.error_message.contains("pgferry-copy request"), "{}", err.error_message);
    }
}
