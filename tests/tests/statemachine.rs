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
