//! A Distributed Map's `ResultWriter`: the iterations' results exported the way AWS exports them.
//!
//! With a `ResultWriter`, Step Functions does not hand the iterations' outputs to the next state
//! (that array is what outgrows the 256 KiB state limit). It writes them under
//! `<Prefix>/<map run id>/`: one file per child execution status (`SUCCEEDED_0.json`, …), each a
//! JSON array of child execution records (ARN, name, input and output as JSON strings, status,
//! start and stop dates), then a `manifest.json` listing those files. The Map's result becomes
//! `{"MapRunArn": …, "ResultWriterDetails": {"Bucket": …, "Key": <the manifest's key>}}`, on
//! which `ResultSelector`, `ResultPath` and `OutputPath` then work as usual.
//!
//! This module computes that layout and those documents; the [`Environment`](super::Environment)
//! stores them (S3 in AWS terms, the artifact store in the CLI). Only the default export is
//! produced (no `WriterConfig`: transformation `NONE`, JSON output). A Map Run that fails exports
//! its failed child executions too (`FAILED_0.json`, with each one's `Error` and `Cause`); the
//! items never started are not listed (AWS lists them as `PENDING`).

use std::time::SystemTime;

use serde_json::{Value, json};

use super::TaskFailure;
use super::context::Scope;
use super::path::kind_of;
use super::time::format_rfc3339;

/// What one iteration did, for its child execution record.
#[derive(Debug)]
pub(crate) struct Iteration {
    pub(crate) input: Value,
    /// The child execution's output, or how it failed.
    pub(crate) output: Result<Value, TaskFailure>,
    pub(crate) started: SystemTime,
    pub(crate) stopped: SystemTime,
}

/// Where the export goes: the writer's `Parameters` after evaluation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Destination {
    pub(crate) bucket: String,
    /// The `Prefix` with a trailing `/` (empty when there is none), as AWS joins it.
    pub(crate) prefix: String,
}

impl Destination {
    /// Reads `Bucket` (required) and `Prefix` (optional) from the evaluated `Parameters`.
    pub(crate) fn from_parameters(scope: &Scope<'_>, parameters: &Value) -> Result<Self, TaskFailure> {
        let field = |name: &str| parameters.get(name);
        let bucket = match field("Bucket") {
            Some(Value::String(bucket)) if !bucket.is_empty() => bucket.clone(),
            Some(other) => {
                return Err(scope.runtime(format!(
                    "field `ResultWriter.Parameters.Bucket` must be a non-empty string, got {}",
                    kind_of(other)
                )));
            }
            None => return Err(scope.runtime("field `ResultWriter.Parameters.Bucket` is required")),
        };
        let prefix = match field("Prefix") {
            None => String::new(),
            Some(Value::String(prefix)) if prefix.is_empty() || prefix.ends_with('/') => prefix.clone(),
            Some(Value::String(prefix)) => format!("{prefix}/"),
            Some(other) => {
                return Err(scope.runtime(format!(
                    "field `ResultWriter.Parameters.Prefix` must be a string, got {}",
                    kind_of(other)
                )));
            }
        };
        if let Value::Object(map) = parameters {
            if let Some(extra) = map.keys().find(|k| !matches!(k.as_str(), "Bucket" | "Prefix")) {
                return Err(scope.runtime(format!("field `ResultWriter.Parameters.{extra}` is not a known field")));
            }
        }
        Ok(Self { bucket, prefix })
    }
}

/// One Map Run: the identity its export and its result are named by.
#[derive(Debug, Clone)]
pub(crate) struct MapRun {
    /// `arn:…:mapRun:<state machine name>/<label>:<id>`.
    pub(crate) arn: String,
    id: String,
    /// `arn:…:stateMachine:<state machine name>/<label>`: what child executions run.
    child_state_machine: String,
    /// `arn:…:execution:<state machine name>/<label>`: child execution ARNs go on with `:<name>`.
    child_execution_prefix: String,
}

impl MapRun {
    /// A new Map Run of the Map labelled `label` in the state machine `state_machine_arn`
    /// (`arn:aws:states:<region>:<account>:stateMachine:<name>`).
    pub(crate) fn new(state_machine_arn: &str, label: &str) -> Self {
        let id = random_uuid();
        let (base, name) = state_machine_arn.split_once(":stateMachine:").unwrap_or((state_machine_arn, ""));
        Self {
            arn: format!("{base}:mapRun:{name}/{label}:{id}"),
            child_state_machine: format!("{base}:stateMachine:{name}/{label}"),
            child_execution_prefix: format!("{base}:execution:{name}/{label}"),
            id,
        }
    }

    /// The objects to write, in order (result files first, the manifest last), and the Map's
    /// result, which names the manifest.
    pub(crate) fn export(&self, destination: &Destination, iterations: &[Iteration]) -> Export {
        let directory = format!("{}{}/", destination.prefix, self.id);
        let mut objects = Vec::new();
        let mut files = serde_json::Map::new();
        for (status, ok) in [("FAILED", false), ("SUCCEEDED", true)] {
            let records: Vec<Value> = iterations
                .iter()
                .filter(|iteration| iteration.output.is_ok() == ok)
                .map(|iteration| self.record(iteration))
                .collect();
            let mut listed = Vec::new();
            if !records.is_empty() {
                let body = serde_json::to_vec(&records).unwrap_or_default();
                let key = format!("{directory}{status}_0.json");
                listed.push(json!({"Key": key, "Size": body.len()}));
                objects.push((key, body));
            }
            files.insert(status.to_string(), Value::Array(listed));
        }
        files.insert("PENDING".to_string(), json!([]));
        let manifest = json!({
            "DestinationBucket": destination.bucket,
            "MapRunArn": self.arn,
            "ResultFiles": files,
        });
        let manifest_key = format!("{directory}manifest.json");
        objects.push((manifest_key.clone(), serde_json::to_vec(&manifest).unwrap_or_default()));
        let result = json!({
            "MapRunArn": self.arn,
            "ResultWriterDetails": {"Bucket": destination.bucket, "Key": manifest_key},
        });
        Export { objects, result }
    }

    /// The child execution record of one iteration (transformation `NONE`).
    fn record(&self, iteration: &Iteration) -> Value {
        let name = random_uuid();
        let mut record = json!({
            "ExecutionArn": format!("{}:{name}", self.child_execution_prefix),
            "Input": iteration.input.to_string(),
            "InputDetails": {"Included": true},
            "Name": name,
            "RedriveCount": 0,
            "StartDate": format_rfc3339(iteration.started),
            "StateMachineArn": self.child_state_machine,
            "StopDate": format_rfc3339(iteration.stopped),
        });
        let fields = match &iteration.output {
            Ok(output) => json!({
                "Output": output.to_string(),
                "OutputDetails": {"Included": true},
                "RedriveStatus": "NOT_REDRIVABLE",
                "RedriveStatusReason": "Execution is SUCCEEDED and cannot be redriven",
                "Status": "SUCCEEDED",
            }),
            Err(failure) => json!({
                "Error": failure.error,
                "Cause": failure.cause,
                "RedriveStatus": "REDRIVABLE",
                "Status": "FAILED",
            }),
        };
        if let (Value::Object(record), Value::Object(fields)) = (&mut record, fields) {
            record.extend(fields);
        }
        record
    }
}

/// What a `ResultWriter` writes and the Map's result.
#[derive(Debug)]
pub(crate) struct Export {
    /// `(key, JSON body)` in write order.
    pub(crate) objects: Vec<(String, Vec<u8>)>,
    pub(crate) result: Value,
}

/// A random (version 4) UUID, the form Step Functions gives Map Run and child execution ids.
fn random_uuid() -> String {
    const VERSION_MASK: u128 = 0xf << 76;
    const VERSION_4: u128 = 0x4 << 76;
    const VARIANT_MASK: u128 = 0xc << 60;
    const VARIANT_RFC_4122: u128 = 0x8 << 60;
    let bits = (rand::random::<u128>() & !VERSION_MASK & !VARIANT_MASK) | VERSION_4 | VARIANT_RFC_4122;
    let hex = format!("{bits:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asl::context::Context;

    fn destination(parameters: Value) -> Result<Destination, TaskFailure> {
        let context = Context::empty();
        let input = Value::Null;
        Destination::from_parameters(&Scope { state: "M", input: &input, context: &context }, &parameters)
    }

    #[test]
    fn prefix_gets_one_trailing_slash_and_may_be_absent() {
        let d = destination(json!({"Bucket": "b", "Prefix": "runs/1/copy"})).unwrap();
        assert_eq!(d, Destination { bucket: "b".into(), prefix: "runs/1/copy/".into() });
        assert_eq!(destination(json!({"Bucket": "b", "Prefix": "runs/"})).unwrap().prefix, "runs/");
        assert_eq!(destination(json!({"Bucket": "b"})).unwrap().prefix, "");
    }

    #[test]
    fn missing_bucket_or_unknown_parameters_are_runtime_failures() {
        let err = destination(json!({"Prefix": "p"})).unwrap_err();
        assert_eq!(err.error, "States.Runtime");
        assert!(err.cause.contains("`ResultWriter.Parameters.Bucket` is required"), "{}", err.cause);
        let err = destination(json!({"Bucket": 3})).unwrap_err();
        assert!(err.cause.contains("must be a non-empty string, got a number"), "{}", err.cause);
        let err = destination(json!({"Bucket": "b", "Key": "k"})).unwrap_err();
        assert!(err.cause.contains("`ResultWriter.Parameters.Key` is not a known field"), "{}", err.cause);
    }

    #[test]
    fn map_run_arns_follow_the_state_machine_and_label() {
        let run = MapRun::new("arn:aws:states:eu-west-1:123456789012:stateMachine:pgferry", "CopyChunks");
        let (head, id) = run.arn.rsplit_once(':').unwrap();
        assert_eq!(head, "arn:aws:states:eu-west-1:123456789012:mapRun:pgferry/CopyChunks");
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4", "version 4 UUID: {id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "RFC 4122 variant: {id}");
    }

    #[test]
    fn export_writes_succeeded_records_then_a_manifest_naming_them() {
        let run = MapRun::new("arn:aws:states:local:000000000000:stateMachine:local", "Copy");
        let destination = Destination { bucket: "b".into(), prefix: "runs/1/copy/".into() };
        let at = SystemTime::UNIX_EPOCH;
        let iterations = [
            Iteration { input: json!({"n": 1}), output: Ok(json!({"done": true})), started: at, stopped: at },
            Iteration { input: json!({"n": 2}), output: Ok(json!("two")), started: at, stopped: at },
        ];
        let export = run.export(&destination, &iterations);
        let [(results_key, results), (manifest_key, manifest)] = export.objects.as_slice() else {
            panic!("expected two objects, got {:?}", export.objects.len());
        };
        let dir = format!("runs/1/copy/{}/", run.id);
        assert_eq!(results_key, &format!("{dir}SUCCEEDED_0.json"));
        assert_eq!(manifest_key, &format!("{dir}manifest.json"));

        let records: Vec<Value> = serde_json::from_slice(results).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0]["Input"], r#"{"n":1}"#);
        assert_eq!(records[0]["Output"], r#"{"done":true}"#);
        assert_eq!(records[1]["Output"], r#""two""#);
        assert_eq!(records[0]["Status"], "SUCCEEDED");
        assert_eq!(records[0]["StartDate"], "1970-01-01T00:00:00.000Z");
        assert_eq!(records[0]["StateMachineArn"], "arn:aws:states:local:000000000000:stateMachine:local/Copy");
        let arn = records[0]["ExecutionArn"].as_str().unwrap();
        assert_eq!(
            arn,
            format!("arn:aws:states:local:000000000000:execution:local/Copy:{}", records[0]["Name"].as_str().unwrap())
        );
        assert_ne!(records[0]["Name"], records[1]["Name"]);

        let manifest: Value = serde_json::from_slice(manifest).unwrap();
        assert_eq!(
            manifest,
            json!({"DestinationBucket": "b", "MapRunArn": run.arn, "ResultFiles": {
                "FAILED": [], "PENDING": [], "SUCCEEDED": [{"Key": results_key, "Size": results.len()}]}})
        );
        assert_eq!(
            export.result,
            json!({"MapRunArn": run.arn, "ResultWriterDetails": {"Bucket": "b", "Key": manifest_key}})
        );
    }

    #[test]
    fn an_empty_map_writes_only_the_manifest() {
        let run = MapRun::new("arn:aws:states:local:000000000000:stateMachine:local", "Verify");
        let export = run.export(&Destination { bucket: "b".into(), prefix: String::new() }, &[]);
        assert_eq!(export.objects.len(), 1);
        let manifest: Value = serde_json::from_slice(&export.objects[0].1).unwrap();
        assert_eq!(manifest["ResultFiles"]["SUCCEEDED"], json!([]));
        assert_eq!(export.result["ResultWriterDetails"]["Key"], format!("{}/manifest.json", run.id));
    }
}
