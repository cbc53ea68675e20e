//! The SAM template (`infra/template.yaml`): it lints clean, it wires the state machine to exactly
//! the functions and bucket the definition names, and its IAM stays least privilege.
//!
//! The template is YAML with CloudFormation short-form tags (`!Ref`, `!Sub`, `!If` …). Rather than
//! adding a YAML parser that knows those tags, the tests ask cfn-lint (pinned in the repo's venv by
//! `scripts/bootstrap`) to decode it, and to apply the SAM transform offline, and read both as JSON:
//! the template as written and what CloudFormation would deploy.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use pgferry_core::runner::{self, Function};
use serde_json::Value;

const TEMPLATE: &str = "infra/template.yaml";

/// Decodes the template and the SAM-transformed template with cfn-lint's own decoder.
const DECODE: &str = r#"
import json, sys
from cfnlint.decode import decode
from cfnlint.template.transforms._sam import Transform
path = sys.argv[1]
raw, matches = decode(path)
if matches:
    sys.exit("cannot decode %s: %s" % (path, "; ".join(str(m) for m in matches)))
# The transform rewrites its input in place: give it a second copy.
source, _ = decode(path)
transform = Transform(path, source, "us-east-1")
errors = transform.transform_template()
if errors:
    sys.exit("the SAM transform failed: %s" % "; ".join(str(e) for e in errors))
json.dump({"template": raw, "transformed": transform.template()}, sys.stdout)
"#;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn venv_tool(name: &str) -> PathBuf {
    let path = repo().join(".tools/venv/bin").join(name);
    assert!(path.exists(), "{} is missing: run scripts/bootstrap", path.display());
    path
}

struct Templates {
    /// The template as written (SAM resources, Globals, short-form tags expanded).
    raw: Value,
    /// After the SAM transform: plain CloudFormation, including the roles SAM generates.
    transformed: Value,
}

fn templates() -> &'static Templates {
    static TEMPLATES: OnceLock<Templates> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let out =
            Command::new(venv_tool("python")).args(["-c", DECODE, TEMPLATE]).current_dir(repo()).output().unwrap();
        assert!(out.status.success(), "decoding {TEMPLATE} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let mut both: Value = serde_json::from_slice(&out.stdout).unwrap();
        Templates { raw: both["template"].take(), transformed: both["transformed"].take() }
    })
}

fn resources(template: &Value) -> &serde_json::Map<String, Value> {
    template["Resources"].as_object().unwrap()
}

/// The logical ids of the resources of one type.
fn of_type<'a>(template: &'a Value, ty: &str) -> Vec<(&'a String, &'a Value)> {
    resources(template).iter().filter(|(_, r)| r["Type"] == ty).collect()
}

/// The one resource of a type.
fn only<'a>(template: &'a Value, ty: &str) -> (&'a String, &'a Value) {
    let found = of_type(template, ty);
    assert_eq!(found.len(), 1, "expected exactly one {ty}, found {}", found.len());
    found[0]
}

/// The logical id a `!GetAtt X.Arn` (either form) or `!Ref X` points at.
fn target_of(value: &Value, attribute: Option<&str>) -> Option<String> {
    match attribute {
        None => value.get("Ref")?.as_str().map(str::to_string),
        Some(attr) => match value.get("Fn::GetAtt")? {
            Value::Array(parts) if parts.len() == 2 && parts[1] == attr => parts[0].as_str().map(str::to_string),
            Value::String(dotted) => dotted.strip_suffix(&format!(".{attr}")).map(str::to_string),
            _ => None,
        },
    }
}

/// The `${Name}` placeholders of the state machine definition (JSONPath `$.x` has no braces).
fn asl_placeholders(definition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = definition;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after.find('}').expect("unterminated ${ in the definition");
        names.insert(after[..end].to_string());
        rest = &after[end + 1..];
    }
    names
}

fn substitutions() -> &'static serde_json::Map<String, Value> {
    let (_, machine) = only(&templates().raw, "AWS::Serverless::StateMachine");
    machine["Properties"]["DefinitionSubstitutions"].as_object().expect("the state machine has DefinitionSubstitutions")
}

#[test]
fn cfn_lint_reports_nothing_on_the_template() {
    let out = Command::new(venv_tool("cfn-lint")).arg(TEMPLATE).current_dir(repo()).output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "cfn-lint {TEMPLATE}:\n{report}");
}

#[test]
fn definition_substitutions_and_asl_placeholders_are_the_same_set() {
    let placeholders = asl_placeholders(runner::DEFINITION);
    let keys: BTreeSet<String> = substitutions().keys().cloned().collect();
    assert_eq!(keys, placeholders, "DefinitionSubstitutions keys (left) vs ${{…}} in the ASL (right)");
    // The local runner substitutes the same names, so `pgferry run` resolves every placeholder too.
    let local: BTreeSet<String> = runner::local_substitutions().into_keys().collect();
    assert_eq!(local, placeholders, "local_substitutions() (left) vs ${{…}} in the ASL (right)");
}

#[test]
fn every_function_substitution_refers_to_the_function_built_from_its_binary() {
    let raw = &templates().raw;
    let prefix = raw["Parameters"]["NamePrefix"]["Default"].as_str().unwrap();
    for f in Function::ALL {
        let value = &substitutions()[f.substitution()];
        let id = target_of(value, Some("Arn"))
            .unwrap_or_else(|| panic!("{} is not a !GetAtt …Arn: {value}", f.substitution()));
        let resource = &resources(raw)[&id];
        assert_eq!(resource["Type"], "AWS::Serverless::Function", "{} refers to {id}", f.substitution());
        assert_eq!(resource["Metadata"]["BuildMethod"], "rust-cargolambda", "{id}");
        assert_eq!(resource["Metadata"]["BuildProperties"]["Binary"], f.name(), "{id} builds the wrong binary");
        // With the default prefix, the deployed name is the one the runner and the CLI know.
        let name =
            resource["Properties"]["FunctionName"]["Fn::Sub"].as_str().unwrap_or_else(|| panic!("{id} FunctionName"));
        assert_eq!(name.replace("${NamePrefix}", prefix), f.name(), "{id} FunctionName");
        // The binary is the crate's: functions/<step>/Cargo.toml declares it.
        let step = f.name().strip_prefix("pgferry-").unwrap();
        let manifest = std::fs::read_to_string(repo().join("functions").join(step).join("Cargo.toml")).unwrap();
        assert!(manifest.contains(&format!("name = \"{}\"", f.name())), "functions/{step} has no binary {}", f.name());
    }
    let bucket = target_of(&substitutions()[runner::ARTIFACT_BUCKET], None).expect("ArtifactBucket is a !Ref");
    assert_eq!(resources(raw)[&bucket]["Type"], "AWS::S3::Bucket");
}

/// Actions that AWS documents as accepting only `"Resource": "*"`, beyond the rds/ec2
/// `Describe*`/`List*` calls (which look resources up by identifier or filter):
const STAR_RESOURCE_EXCEPTIONS: [&str; 12] = [
    // Step Functions logging to CloudWatch Logs (vended log delivery): "IAM policies for logging
    // to CloudWatch Logs" in the Step Functions developer guide.
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    // X-Ray tracing (SAM attaches AWSXrayWriteOnlyAccess for `Tracing`; allowed if written out).
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
];

/// AWS-managed policies a role may carry: ENI management of VPC functions (Lambda's documented
/// execution role for VPC access) and X-Ray writes (added by SAM for `Tracing: Enabled`).
const ALLOWED_MANAGED_POLICIES: [&str; 2] =
    [":iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole", ":iam::aws:policy/AWSXrayWriteOnlyAccess"];

fn describe_or_list_of_rds_or_ec2(action: &str) -> bool {
    let Some((service, call)) = action.split_once(':') else { return false };
    matches!(service, "rds" | "ec2") && (call.starts_with("Describe") || call.starts_with("List"))
}

fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Every policy statement (an object with `Effect`) anywhere under `value`, with where it is;
/// this reaches statements inside `Fn::If` branches and SAM `Policies` alike.
fn statements<'a>(value: &'a Value, at: &str, out: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) => {
            if map.contains_key("Effect") {
                out.push((at.to_string(), value));
            }
            for (key, inner) in map {
                statements(inner, &format!("{at}.{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                statements(inner, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Every leaf under a `ManagedPolicyArns` (through `Fn::If`), as written.
fn managed_policy_arns<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| managed_policy_arns(v, out)),
        Value::Object(map) if map.contains_key("Fn::If") => {
            map["Fn::If"].as_array().unwrap().iter().skip(1).for_each(|v| managed_policy_arns(v, out));
        }
        Value::Object(map) if map.contains_key("Ref") && map["Ref"] == "AWS::NoValue" => {}
        Value::Null => {}
        _ => out.push(value),
    }
}

fn check_iam(template: &Value, which: &str) -> usize {
    let mut found = Vec::new();
    for (id, resource) in resources(template) {
        statements(resource, id, &mut found);
    }
    for (at, statement) in &found {
        if statement["Effect"] != "Allow" {
            // Deny statements only take away (the bucket's TLS-only `s3:*` deny is the point).
            continue;
        }
        assert!(statement.get("NotAction").is_none(), "{which} {at}: Allow with NotAction");
        assert!(statement.get("NotResource").is_none(), "{which} {at}: Allow with NotResource");
        if let Some(principal) = statement.get("Principal") {
            assert!(principal != "*" && principal.get("AWS") != Some(&Value::from("*")), "{which} {at}: public Allow");
        }
        let actions = strings(&statement["Action"]);
        assert!(!actions.is_empty(), "{which} {at}: no literal Action");
        for action in &actions {
            assert!(!action.contains('*'), "{which} {at}: wildcard action `{action}`");
        }
        if strings(&statement["Resource"]).contains(&"*") {
            for action in &actions {
                assert!(
                    describe_or_list_of_rds_or_ec2(action) || STAR_RESOURCE_EXCEPTIONS.contains(action),
                    "{which} {at}: `{action}` on \"Resource\": \"*\" (only rds/ec2 Describe/List calls and the \
                     documented log-delivery/X-Ray calls may have it)"
                );
            }
        }
    }
    for (id, resource) in resources(template) {
        let mut arns = Vec::new();
        managed_policy_arns(&resource["Properties"]["ManagedPolicyArns"], &mut arns);
        for arn in arns {
            if let Some(target) = target_of(arn, None) {
                assert_eq!(resources(template)[&target]["Type"], "AWS::IAM::ManagedPolicy", "{which} {id}: {arn}");
                continue;
            }
            let text = arn.as_str().or_else(|| arn["Fn::Sub"].as_str()).unwrap_or_default();
            assert!(
                ALLOWED_MANAGED_POLICIES.iter().any(|p| text.ends_with(p)),
                "{which} {id}: managed policy {arn} is not one this template may use"
            );
        }
    }
    found.len()
}

#[test]
fn iam_policies_grant_no_wildcard_actions_and_wildcard_resources_only_to_describe_calls() {
    let Templates { raw, transformed } = templates();
    // SAM policy templates (`S3CrudPolicy: …`) would hide their statements from the walk on the
    // template as written: every SAM `Policies` entry must be a policy document.
    for (id, resource) in resources(raw) {
        if let Some(Value::Array(policies)) = resource["Properties"].get("Policies") {
            if resource["Type"].as_str().is_some_and(|t| t.starts_with("AWS::Serverless::")) {
                for policy in policies {
                    assert!(policy.get("Statement").is_some(), "{id}: write statements, not {policy}");
                }
            }
        }
    }
    let written = check_iam(raw, "template");
    // What CloudFormation deploys, including the role SAM generates for the state machine.
    let deployed = check_iam(transformed, "transformed");
    assert!(written >= 20, "found only {written} statements: is the walk still reaching the policies?");
    assert!(deployed >= written, "the transform lost statements ({deployed} < {written})");
}

#[test]
fn the_template_has_the_four_functions_state_machine_bucket_schedule_and_alert_rule() {
    let raw = &templates().raw;
    let globals = &raw["Globals"]["Function"];
    let param = |value: &Value| -> String {
        let name = target_of(value, None).unwrap_or_else(|| panic!("{value} is not a !Ref"));
        assert!(raw["Parameters"].get(&name).is_some(), "{name} is not a parameter");
        name
    };

    // Functions: arm64 on provided.al2023 from cargo-lambda, JSON logs, sized by parameters.
    let functions = of_type(raw, "AWS::Serverless::Function");
    assert_eq!(functions.len(), 4);
    for (id, f) in &functions {
        let p = &f["Properties"];
        let prop = |key: &str| p.get(key).unwrap_or(&globals[key]);
        assert_eq!(prop("Runtime"), "provided.al2023", "{id}");
        assert_eq!(prop("Architectures"), &serde_json::json!(["arm64"]), "{id}");
        assert_eq!(prop("Handler"), "bootstrap", "{id}");
        assert_eq!(p["LoggingConfig"]["LogFormat"], "JSON", "{id}");
        param(&p["Timeout"]);
        param(&p["MemorySize"]);
        let vars = &globals["Environment"]["Variables"];
        for var in ["RUST_LOG", "PGFERRY_ARTIFACT_BUCKET", "PGFERRY_ALLOWED_SOURCES", "PGFERRY_ALLOWED_TARGETS"] {
            assert!(vars.get(var).is_some(), "Globals set no {var}");
        }
    }
    // Issue 23: the allow-lists are required parameters (no default: `*` only when written).
    for name in ["AllowedSources", "AllowedTargets"] {
        let p = &raw["Parameters"][name];
        assert!(p.is_object() && p.get("Default").is_none(), "{name}: a parameter without a default");
    }
    // The VPC is optional: an `!If` on a condition, no VPC when the parameters are empty.
    let vpc = &globals["VpcConfig"]["Fn::If"];
    assert!(raw["Conditions"].get(vpc[0].as_str().unwrap()).is_some(), "VpcConfig is not conditional");
    assert_eq!(vpc[2], serde_json::json!({"Ref": "AWS::NoValue"}));

    // pg_dump ships with the schema function (and preflight, which checks its version).
    let (layer_id, _) = only(raw, "AWS::Serverless::LayerVersion");
    for id in ["SchemaFunction", "PreflightFunction"] {
        let p = &resources(raw)[id]["Properties"];
        assert!(p["Layers"].as_array().unwrap().iter().any(|l| target_of(l, None).as_ref() == Some(layer_id)), "{id}");
        assert_eq!(p["Environment"]["Variables"]["PGFERRY_PG_BIN"], "/opt/bin", "{id}");
    }
    assert!(repo().join("infra/pg-client/Makefile").exists() && repo().join("infra/pg-client/Dockerfile").exists());

    // The state machine: this repo's definition, logged and traced.
    let (machine_id, machine) = only(raw, "AWS::Serverless::StateMachine");
    let p = &machine["Properties"];
    assert_eq!(p["DefinitionUri"], "../statemachine/replication.asl.json");
    assert_eq!(p["Tracing"]["Enabled"], true);
    param(&p["Logging"]["Level"]);
    assert!(p["Logging"]["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"].is_object());

    // The bucket: encrypted, private, TLS only, expiring.
    let (bucket_id, bucket) = only(raw, "AWS::S3::Bucket");
    let b = &bucket["Properties"];
    let sse = &b["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"];
    assert!(matches!(sse["SSEAlgorithm"].as_str(), Some("AES256" | "aws:kms" | "aws:kms:dsse")), "{sse}");
    for key in ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"] {
        assert_eq!(b["PublicAccessBlockConfiguration"][key], true, "{key}");
    }
    param(&b["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"]);
    let (_, policy) = only(raw, "AWS::S3::BucketPolicy");
    assert_eq!(target_of(&policy["Properties"]["Bucket"], None).as_ref(), Some(bucket_id));
    let tls_deny = policy["Properties"]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["Effect"] == "Deny" && s["Condition"]["Bool"]["aws:SecureTransport"].as_str() == Some("false"));
    assert!(tls_deny, "the bucket policy does not deny plain-HTTP access");

    // The schedule: optional, starts the state machine with the job parameter, its own role.
    let (schedule_id, schedule) = only(raw, "AWS::Scheduler::Schedule");
    assert!(schedule.get("Condition").is_some(), "{schedule_id} is not optional");
    let target = &schedule["Properties"]["Target"];
    assert_eq!(target_of(&target["Arn"], None).as_ref(), Some(machine_id));
    let role = target_of(&target["RoleArn"], Some("Arn")).expect("the schedule has its own role");
    assert_eq!(resources(raw)[&role]["Type"], "AWS::IAM::Role");
    let job_param = param(&target["Input"]);
    param(&schedule["Properties"]["ScheduleExpressionTimezone"]);
    let job: Value = serde_json::from_str(raw["Parameters"][&job_param]["Default"].as_str().unwrap()).unwrap();
    assert_eq!(job["mode"], "refresh", "the default scheduled job is a refresh");
    assert!(job["source"]["rdsInstance"].is_string() && job["target"]["rdsInstance"].is_string(), "{job}");

    // Failure alerts: failed, timed-out and aborted executions of this state machine to SNS.
    let rules = of_type(raw, "AWS::Events::Rule");
    assert_eq!(rules.len(), 2, "an alert rule and a stopped-run rule");
    let rule = resources(raw)["ExecutionFailedRule"].clone();
    let pattern = &rule["Properties"]["EventPattern"];
    assert_eq!(pattern["source"], serde_json::json!(["aws.states"]));
    let statuses: BTreeSet<&str> = strings(&pattern["detail"]["status"]).into_iter().collect();
    assert_eq!(statuses, BTreeSet::from(["FAILED", "TIMED_OUT", "ABORTED"]));
    assert_eq!(target_of(&pattern["detail"]["stateMachineArn"][0], None).as_ref(), Some(machine_id));
    let (topic_id, _) = only(raw, "AWS::SNS::Topic");
    assert_eq!(target_of(&rule["Properties"]["Targets"][0]["Arn"], None).as_ref(), Some(topic_id));
    let (_, topic_policy) = only(raw, "AWS::SNS::TopicPolicy");
    assert_eq!(
        topic_policy["Properties"]["PolicyDocument"]["Statement"][0]["Principal"]["Service"],
        "events.amazonaws.com"
    );
    let (subscription_id, subscription) = only(raw, "AWS::SNS::Subscription");
    assert!(subscription.get("Condition").is_some(), "{subscription_id} is not optional");

    // Executions stopped by hand or timed out: their whole status-change event starts the state
    // machine (its StoppedRun branch), through a role that may only start this state machine.
    let rule = &resources(raw)["ExecutionStoppedRule"];
    let pattern = &rule["Properties"]["EventPattern"];
    assert_eq!(pattern["detail-type"], serde_json::json!(["Step Functions Execution Status Change"]));
    let statuses: BTreeSet<&str> = strings(&pattern["detail"]["status"]).into_iter().collect();
    assert_eq!(statuses, BTreeSet::from(["TIMED_OUT", "ABORTED"]), "a FAILED execution ran its failure path");
    assert_eq!(target_of(&pattern["detail"]["stateMachineArn"][0], None).as_ref(), Some(machine_id));
    let target = &rule["Properties"]["Targets"][0];
    assert_eq!(target_of(&target["Arn"], None).as_ref(), Some(machine_id));
    assert!(target.get("Input").is_none() && target.get("InputTransformer").is_none(), "the event as it is");
    let role = target_of(&target["RoleArn"], Some("Arn")).expect("the rule has its own role");
    let statements = &resources(raw)[&role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"];
    assert_eq!(statements.as_array().unwrap().len(), 1);
    assert_eq!(statements[0]["Action"], "states:StartExecution");
    assert_eq!(target_of(&statements[0]["Resource"], None).as_ref(), Some(machine_id));

    for output in ["StateMachineArn", "ArtifactBucketName", "AlertTopicArn"] {
        assert!(raw["Outputs"].get(output).is_some(), "no output {output}");
    }
}

/// Every Map of the definition (nested ones included), with its name.
fn maps<'a>(states: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    for (name, state) in states.as_object().unwrap() {
        if state["Type"] == "Map" {
            out.push((name.clone(), state));
        }
        for nested in ["ItemProcessor", "Iterator"] {
            if let Some(inner) = state.get(nested) {
                maps(&inner["States"], out);
            }
        }
    }
}

#[test]
fn the_state_machine_role_may_read_every_item_reader_object_and_write_every_result_writer_prefix() {
    let definition: Value = serde_json::from_str(runner::DEFINITION).unwrap();
    let mut found = Vec::new();
    maps(&definition["States"], &mut found);
    // The objects the Maps touch: all in the artifact bucket, all under `runs/`.
    let mut writers = 0;
    for (name, map) in &found {
        if let Some(reader) = map.get("ItemReader") {
            assert_eq!(reader["Parameters"]["Bucket"], "${ArtifactBucket}", "{name}: ItemReader bucket");
        }
        let Some(writer) = map.get("ResultWriter") else { continue };
        writers += 1;
        assert_eq!(writer["Resource"], "arn:aws:states:::s3:putObject", "{name}");
        let parameters = &writer["Parameters"];
        assert_eq!(parameters["Bucket"], "${ArtifactBucket}", "{name}: ResultWriter bucket");
        let prefix = parameters["Prefix"]
            .as_str()
            .or_else(|| parameters["Prefix.$"].as_str().and_then(|f| f.strip_prefix("States.Format('")))
            .unwrap_or_else(|| panic!("{name}: the ResultWriter Prefix is neither literal nor States.Format"));
        assert!(prefix.starts_with("runs/"), "{name}: results would go outside runs/: {prefix}");
        // The run's prefix comes from the execution name, which is the run id (the `Start`
        // state copies it), because moto resolves writer paths against the iteration results.
        assert!(parameters["Prefix.$"].as_str().is_none_or(|p| p.contains("$$.Execution.Name")), "{name}: {prefix}");
    }
    // Issue 24: every Distributed Map writes its results to S3 (an item list of a few hundred would
    // pass the 256 KiB payload limit as the Map's result), and the execution has a bound.
    assert!(definition["TimeoutSeconds"].as_u64().is_some_and(|t| t > 0), "no top-level TimeoutSeconds");
    for (name, map) in &found {
        if map["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED" {
            assert!(map.get("ResultWriter").is_some(), "Distributed Map {name} has no ResultWriter");
        }
    }
    for required in ["CopyChunks", "VerifyChunks", "BuildIndexes", "ValidateForeignKeys"] {
        let (_, map) = found.iter().find(|(n, _)| n == required).unwrap_or_else(|| panic!("no Map {required}"));
        assert!(map.get("ResultWriter").is_some(), "{required} has no ResultWriter");
        // No state reads the Map's result (it is the ResultWriterDetails object, not the array).
        assert!(map["ResultPath"].is_null(), "{required} keeps its result in the state: {}", map["ResultPath"]);
    }

    // The role SAM generates for the state machine: the writes ResultWriter makes (multipart
    // uploads for large result files included) and the ItemReader's reads, on runs/ only.
    let (_, machine) = only(&templates().raw, "AWS::Serverless::StateMachine");
    let mut granted = Vec::new();
    statements(&machine["Properties"]["Policies"], "Policies", &mut granted);
    let on_runs: BTreeSet<&str> = granted
        .iter()
        .filter(|(_, s)| s["Effect"] == "Allow" && s["Resource"]["Fn::Sub"] == "${ArtifactBucket.Arn}/runs/*")
        .flat_map(|(_, s)| strings(&s["Action"]))
        .collect();
    let needed = ["s3:GetObject", "s3:PutObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"];
    for action in needed.iter().take(if writers > 0 { 4 } else { 1 }) {
        assert!(on_runs.contains(action), "the state machine role lacks {action} on ${{ArtifactBucket.Arn}}/runs/*");
    }
}

/// Creating, tagging and deleting RDS resources (the temporary clones of `"consistency":
/// "clone"`) is allowed only on instances and clusters named with pgferry's prefix; restoring
/// also needs the listed sources and the source's groups, never anything to delete or tag.
#[test]
fn clone_lifecycle_calls_are_limited_to_pgferry_prefixed_instances_and_clusters() {
    let raw = &templates().raw;
    let prefix = pgferry_core::aws::rds::CLONE_PREFIX;
    let own = [format!(":db:{prefix}*"), format!(":cluster:{prefix}*")];
    let groups = [":subgrp:*", ":pg:*", ":cluster-pg:*", ":og:*"];
    let restore = ["rds:RestoreDBInstanceToPointInTime", "rds:RestoreDBClusterToPointInTime", "rds:CreateDBInstance"];
    let changing = ["rds:AddTagsToResource", "rds:DeleteDBInstance", "rds:DeleteDBCluster"];
    let mut found = Vec::new();
    for (id, resource) in resources(raw) {
        statements(resource, id, &mut found);
    }
    let mut granted = BTreeSet::new();
    for (at, statement) in &found {
        let actions = strings(&statement["Action"]);
        let lifecycle: Vec<&str> =
            actions.iter().copied().filter(|a| restore.contains(a) || changing.contains(a)).collect();
        if statement["Effect"] != "Allow" || lifecycle.is_empty() {
            continue;
        }
        granted.extend(lifecycle.iter().map(|a| a.to_string()));
        let listed = match &statement["Resource"] {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        for resource in &listed {
            if target_of(resource, None).as_deref() == Some("CloneSourceArns") {
                assert!(
                    lifecycle.iter().all(|a| a.starts_with("rds:Restore")),
                    "{at}: the listed sources may only be restored from, not {lifecycle:?}"
                );
                continue;
            }
            let text =
                resource["Fn::Sub"].as_str().unwrap_or_else(|| panic!("{at}: resource {resource} is not an ARN"));
            if own.iter().any(|o| text.ends_with(o.as_str())) {
                continue;
            }
            assert!(
                groups.iter().any(|g| text.ends_with(g)) && lifecycle.iter().all(|a| restore.contains(a)),
                "{at}: {lifecycle:?} on {text}: only {prefix}* instances and clusters may be created, tagged or deleted"
            );
        }
    }
    for action in restore.iter().chain(&changing) {
        assert!(granted.contains(*action), "the template never grants {action}: clone mode cannot work");
    }
    let preflight_role = &resources(raw)["PreflightRole"]["Properties"]["ManagedPolicyArns"];
    assert!(
        preflight_role.to_string().contains("CloneLifecyclePolicy"),
        "the preflight function hosts the clone steps"
    );
    // Grants on the sources' KMS keys (encrypted clones): only the listed keys, only through
    // RDS, only for AWS resources.
    let kms: Vec<_> =
        found.iter().filter(|(_, s)| strings(&s["Action"]).iter().any(|a| a.starts_with("kms:Create"))).collect();
    assert_eq!(kms.len(), 1, "one statement grants kms:CreateGrant: {kms:?}");
    let (at, statement) = kms[0];
    assert_eq!(target_of(&statement["Resource"], None).as_deref(), Some("CloneKmsKeyArns"), "{at}");
    assert!(statement["Condition"]["StringEquals"]["kms:ViaService"].to_string().contains("rds."), "{at}: {statement}");
    assert_eq!(statement["Condition"]["Bool"]["kms:GrantIsForAWSResource"], "true", "{at}: {statement}");
}

/// The layers of `pgferry-core` (docs/architecture.md), from the ground up.
const LAYERS: [(&str, &[&str]); 4] = [
    ("foundation", &["error", "pg", "aws", "store", "seal", "job", "step", "context", "telemetry", "catalog", "asl"]),
    (
        "machinery",
        &["dump", "chunk", "ledger", "roles", "replication", "access", "watermark", "keystream", "rowset", "refresh"],
    ),
    ("steps", &["preflight", "schema", "plan", "copy", "lobs", "verify", "continuous", "clone"]),
    ("dispatch", &["dispatch", "runner"]),
];

/// Issue 26: the rule of docs/architecture.md holds — each layer imports only layers below it
/// (within the foundation and the machinery, a module may use a neighbour), and no step imports
/// another step. Read from the code (`crate::<module>` paths outside test modules).
#[test]
fn each_layer_imports_only_the_layers_below_and_no_step_imports_another() {
    let src = repo().join("shared/src");
    let layer_of = |module: &str| LAYERS.iter().position(|(_, mods)| mods.contains(&module));
    let mut files = vec![src.clone()];
    let mut violations = Vec::new();
    let mut seen = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
        let module = rel.split(['/', '.']).next().unwrap().to_string();
        if module == "lib" {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            violations.push(format!("{rel}: module `{module}` is in no layer of docs/architecture.md"));
            continue;
        };
        seen += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let mut used: Vec<&str> = code.match_indices("crate::").map(|(i, _)| &code[i + 7..]).collect();
        // `use crate::{a, b::c}` names several modules at once.
        let braces: Vec<&str> = code.match_indices("use crate::{").map(|(i, _)| &code[i + 12..]).collect();
        for list in braces {
            let list = &list[..list.find("};").unwrap_or(list.len())];
            used.extend(list.split(',').map(str::trim));
        }
        for target in used {
            let name: String = target.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let Some(theirs) = layer_of(&name) else { continue };
            let step_to_step = LAYERS[own].0 == "steps" && LAYERS[theirs].0 == "steps" && name != module;
            if theirs > own || step_to_step {
                violations.push(format!("{rel} ({}) uses `crate::{name}` ({})", LAYERS[own].0, LAYERS[theirs].0));
            }
        }
    }
    violations.sort();
    violations.dedup();
    assert!(seen > 40, "only {seen} files read");
    assert!(violations.is_empty(), "imports against docs/architecture.md:\n{}", violations.join("\n"));
}
