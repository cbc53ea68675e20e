//! The state machine definition: valid ASL, handled by the local runner, and every error name it
//! matches on produced by the Rust error mapping (a renamed error must fail here, not in AWS).

use std::collections::BTreeSet;
use std::path::PathBuf;

use pgferry_core::ErrorKind;
use pgferry_core::asl::StateMachine;
use pgferry_core::runner::{self, Function};

/// Errors the Lambda service raises before or around a function (Step Functions docs).
const LAMBDA_SERVICE_ERRORS: [&str; 4] = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
];

fn definition() -> serde_json::Value {
    serde_json::from_str(runner::DEFINITION).unwrap()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every object in the definition with a `Retry` or `Catch` array, with the state's name.
fn collect<'a>(states: &'a serde_json::Value, field: &str, out: &mut Vec<(String, &'a serde_json::Value)>) {
    for (name, state) in states.as_object().unwrap() {
        if let Some(list) = state.get(field) {
            out.push((name.clone(), list));
        }
        for nested in ["ItemProcessor", "Iterator"] {
            if let Some(inner) = state.get(nested) {
                collect(&inner["States"], field, out);
            }
        }
    }
}

/// Errors of the one AWS SDK integration task (DescribeStoppedRun: `sfn:describeExecution`).
const SDK_TASK_ERRORS: &[&str] = &["Sfn.SfnException", "States.Timeout"];

#[test]
fn every_error_name_the_definition_matches_exists_in_the_rust_mapping() {
    let machine = StateMachine::parse(runner::DEFINITION, &runner::local_substitutions()).unwrap();
    let produced: BTreeSet<&str> = ErrorKind::ALL.iter().map(|k| k.step_error_name()).collect();
    for name in machine.error_names() {
        let known = produced.contains(name.as_str())
            || LAMBDA_SERVICE_ERRORS.contains(&name.as_str())
            || SDK_TASK_ERRORS.contains(&name.as_str())
            || name == "States.ALL";
        assert!(known, "the definition matches `{name}`, which nothing produces");
    }
    // Fail states raise names the runbook and alarms rely on.
    let def = definition();
    for (name, state) in def["States"].as_object().unwrap() {
        if let Some(error) = state.get("Error").and_then(|e| e.as_str()) {
            assert!(produced.contains(error), "Fail state {name} raises unknown `{error}`");
        }
    }
}

#[test]
fn retries_never_match_states_all_and_every_task_is_caught() {
    let def = definition();
    let mut retries = Vec::new();
    collect(&def["States"], "Retry", &mut retries);
    assert!(!retries.is_empty());
    for (state, list) in retries {
        for retrier in list.as_array().unwrap() {
            let names = retrier["ErrorEquals"].as_array().unwrap();
            assert!(
                !names.iter().any(|n| n == "States.ALL" || n == "States.TaskFailed"),
                "{state} retries on a catch-all: {names:?}"
            );
        }
    }
    for (name, state) in def["States"].as_object().unwrap() {
        if matches!(state["Type"].as_str(), Some("Task" | "Map")) {
            assert!(state.get("Catch").is_some(), "{name} has no Catch");
        }
    }
}

#[test]
fn every_task_resource_is_one_of_the_four_functions() {
    let machine = StateMachine::parse(runner::DEFINITION, &runner::local_substitutions()).unwrap();
    let resources = machine.resources();
    for resource in &resources {
        assert!(
            Function::from_resource(resource).is_some() || resource == runner::DESCRIBE_EXECUTION,
            "unknown resource {resource}"
        );
    }
    for f in Function::ALL {
        assert!(resources.contains(&f.local_arn()), "{} is never invoked", f.name());
    }
}

#[test]
fn the_definition_passes_the_asl_validator() {
    let validator = repo().join("node_modules/.bin/asl-validator");
    assert!(validator.exists(), "{} is missing: run scripts/bootstrap", validator.display());
    let out = std::process::Command::new(validator)
        .args(["--json-path", "statemachine/replication.asl.json", "--no-arn-check"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "asl-validator rejected the definition:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A stand-in for the four functions and the bucket that answers every request with the
/// contract's fixture outputs, for a synthetic catalog of `tables` tables: one chunk, one index
/// and one foreign key validation per table.
struct Catalog {
    tables: usize,
    written: std::sync::atomic::AtomicUsize,
    /// The chunk whose copy fails (`Pgferry.Internal`), if any.
    failing_chunk: Option<String>,
}

fn fixture(name: &str) -> serde_json::Value {
    let path = repo().join("shared/tests/fixtures/steps").join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

impl pgferry_core::asl::Environment for Catalog {
    fn invoke(
        &self,
        _resource: &str,
        input: serde_json::Value,
    ) -> futures_util::future::BoxFuture<'_, Result<serde_json::Value, pgferry_core::asl::TaskFailure>> {
        let n = self.tables;
        let failing = self.failing_chunk.clone();
        Box::pin(async move {
            if input["action"] == "copyChunk" && input["chunk"]["id"].as_str() == failing.as_deref() {
                return Err(pgferry_core::asl::TaskFailure::new("Pgferry.Internal", "chunk broke"));
            }
            let mut out = match (input["action"].as_str(), input.get("chunk").is_some()) {
                (None | Some("verifyChunk"), true) => fixture("verify-chunk-output"),
                (None, false) => {
                    let mut p = fixture("preflight-output");
                    p["ok"] = true.into();
                    p
                }
                (Some("globals"), _) => fixture("globals-output"),
                (Some("preData" | "postData"), _) => fixture("schema-output"),
                (Some("plan"), _) => {
                    let mut p = fixture("plan-output");
                    (p["tables"], p["chunks"], p["verifyItems"]) = (n.into(), n.into(), n.into());
                    p
                }
                (Some("copyChunk"), _) => fixture("copy-chunk-output"),
                (Some("postDataPlan"), _) => {
                    let mut p = fixture("post-data-plan-output");
                    (p["indexes"], p["validations"]) = (n.into(), n.into());
                    p
                }
                (Some("postDataItem"), _) => fixture("post-data-item-output"),
                (Some("sequences"), _) => fixture("sequences-output"),
                (Some("largeObjects"), _) => fixture("large-objects-output"),
                (Some("report"), _) => fixture("report-output"),
                (Some("release"), _) => fixture("release-output"),
                (Some("cleanupReplication"), _) => fixture("drop-output"),
                // As the verify function's Diagnose: the Map's generic error, the item's own read
                // back from the Map's export (tested with a store in tests/tests/verify.rs).
                (Some("diagnose"), _) => {
                    assert_eq!(input["error"]["Error"], "States.ExceedToleratedFailureThreshold", "{input}");
                    serde_json::json!({"reportKey": "runs/run-catalog/failure.json", "error": "Pgferry.Internal", "cause": "chunk broke"})
                }
                (Some(other), _) => panic!("unexpected action {other}"),
            };
            if let Some(id) = input["chunk"]["id"].as_str() {
                out["chunkId"] = id.into();
            }
            Ok(out)
        })
    }

    fn read_items(
        &self,
        _resource: &str,
        _config: &serde_json::Value,
        parameters: serde_json::Value,
    ) -> futures_util::future::BoxFuture<'_, Result<Vec<serde_json::Value>, pgferry_core::asl::TaskFailure>> {
        let key = parameters["Key"].as_str().unwrap_or_default().to_string();
        let n = self.tables;
        Box::pin(async move {
            let (template, field) =
                if key.contains("post-data") || key.contains("indexes") || key.contains("validations") {
                    (fixture("post-data-item-input")["item"].clone(), "id")
                } else {
                    (fixture("chunk-input")["chunk"].clone(), "id")
                };
            Ok((0..n)
                .map(|i| {
                    let mut item = template.clone();
                    item[field] = format!("item-{i:06}").into();
                    item["table"]["name"] = format!("tenant_table_{i:06}").into();
                    item
                })
                .collect())
        })
    }

    fn write_result(
        &self,
        _resource: &str,
        _bucket: &str,
        _key: &str,
        body: Vec<u8>,
    ) -> futures_util::future::BoxFuture<'_, Result<(), pgferry_core::asl::TaskFailure>> {
        self.written.fetch_add(body.len(), std::sync::atomic::Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

async fn run_catalog(definition: &str, tables: usize) -> (pgferry_core::asl::Outcome, usize) {
    run_catalog_failing(definition, tables, None).await
}

async fn run_catalog_failing(
    definition: &str,
    tables: usize,
    failing_chunk: Option<&str>,
) -> (pgferry_core::asl::Outcome, usize) {
    let machine = StateMachine::parse(definition, &runner::local_substitutions()).unwrap();
    let env = std::sync::Arc::new(Catalog {
        tables,
        written: Default::default(),
        failing_chunk: failing_chunk.map(str::to_string),
    });
    let job = fixture("step-input")["job"].clone();
    let outcome = pgferry_core::asl::Execution::new(&machine, env.clone(), "run-catalog").run(job).await.unwrap();
    (outcome, env.written.load(std::sync::atomic::Ordering::Relaxed))
}

/// Issue 24: a catalog of 50,000 tables (50,000 chunks, index builds, validations and verify
/// items) runs through the definition with Step Functions' payload and history quotas enforced
/// by the local runner: every state's data stays under 256 KiB and every execution's history
/// under 25,000 events. Without a `ResultWriter`, the copy Map alone would pass the payload quota.
#[tokio::test]
async fn a_catalog_of_50000_tables_stays_within_step_functions_quotas() {
    let (outcome, written) = run_catalog(runner::DEFINITION, 50_000).await;
    assert!(matches!(outcome, pgferry_core::asl::Outcome::Succeeded(_)), "{outcome:?}");
    assert!(written > 50_000 * 4 * 100, "the Maps exported their results ({written} bytes)");

    let mut unwritten = definition();
    unwritten["States"]["CopyChunks"].as_object_mut().unwrap().remove("ResultWriter");
    let (outcome, _) = run_catalog(&unwritten.to_string(), 2_000).await;
    assert!(
        matches!(&outcome, pgferry_core::asl::Outcome::Failed { error, .. } if error == "States.DataLimitExceeded"),
        "{outcome:?}"
    );
}

/// Issue 24: in AWS a Distributed Map whose item fails ends with
/// `States.ExceedToleratedFailureThreshold`; the run still fails with the item's own error (as
/// Diagnose recovers it from the Map's export), which the alert and `pgferry watch` then name.
#[tokio::test]
async fn a_failed_chunk_fails_the_run_with_its_own_error_not_the_maps() {
    let (outcome, _) = run_catalog_failing(runner::DEFINITION, 20, Some("item-000007")).await;
    assert_eq!(
        outcome,
        pgferry_core::asl::Outcome::Failed { error: "Pgferry.Internal".into(), cause: "chunk broke".into() }
    );
}
