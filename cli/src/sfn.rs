//! `pgferry start` and `pgferry watch`: the deployed state machine, driven from a terminal.
//!
//! `start` checks a job exactly as `pgferry run` does (JSON Schema, then types) before anything
//! reaches AWS, refuses passwords (an execution keeps its input in the history, where anyone who
//! may read executions sees it) and starts an execution named like a local run id, which becomes
//! the run's artifact prefix. `watch` follows an execution through its history, a line per state
//! entered, exited or failed, and at the end reads the run's artifacts from the bucket to print
//! the same summary as `pgferry run`. Both use the standard AWS environment (`AWS_REGION`,
//! credentials, `AWS_ENDPOINT_URL`) through the clients of `pgferry_core::aws`.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::time::Duration;

use aws_sdk_sfn::types::{ExecutionStatus, HistoryEvent};
use pgferry_core::asl::Outcome;
use pgferry_core::aws::{Clients, sdk_error};
use pgferry_core::context::{ARTIFACT_BUCKET_VAR, Credentials};
use pgferry_core::job::Job;
use pgferry_core::store::ArtifactStore;
use pgferry_core::{Error, Result};
use serde_json::Value;

use crate::summary::{self, Phase, RunReport};

/// Longest execution name Step Functions accepts.
const MAX_EXECUTION_NAME: usize = 80;

/// `pgferry start`: validates the job, starts an execution, prints its ARN on stdout.
pub async fn start(job_path: &str, state_machine_arn: &str, name: Option<String>) -> Result<ExitCode> {
    let text = read_job(job_path)?;
    let value: Value = serde_json::from_str(&text).map_err(|e| Error::job(format!("{job_path}: {e}")))?;
    let job = Job::from_value(value)?;
    refuse_passwords(&job)?;
    let name = name.unwrap_or_else(crate::new_run_id);
    check_execution_name(&name)?;
    let input = serde_json::to_string(&job).map_err(|e| Error::Internal(e.to_string()))?;

    let sfn = client().await?;
    let started = Box::pin(sfn.start_execution().state_machine_arn(state_machine_arn).name(&name).input(input).send())
        .await
        .map_err(|e| sdk_error("states:StartExecution", state_machine_arn, e))?;
    eprintln!("pgferry: started {name}; follow it with `pgferry watch {}`", started.execution_arn());
    println!("{}", started.execution_arn());
    Ok(ExitCode::SUCCESS)
}

/// `pgferry watch`: prints the execution's progress until it ends, then the run's summary.
/// Exits 0 only when it succeeded with the target equal to the source.
pub async fn watch(execution_arn: &str, bucket: Option<String>, interval: Duration) -> Result<ExitCode> {
    let clients = Clients::from_env().await?;
    let sfn = aws_sdk_sfn::Client::new(&clients.config);
    let described = describe(&sfn, execution_arn).await?;
    let run_id = described.name().unwrap_or_default().to_string();
    let machine = Machine::describe(&sfn, described.state_machine_arn()).await;
    let bucket = bucket.or_else(|| std::env::var(ARTIFACT_BUCKET_VAR).ok()).or(machine.bucket.clone());
    eprintln!("pgferry: watching {run_id} ({})", described.status().as_str());

    let mut progress = Progress::new(machine.work_states);
    let described = loop {
        let events = history(&sfn, execution_arn).await?;
        progress.show(&events);
        progress.show_map_run(&sfn).await;
        let described = describe(&sfn, execution_arn).await?;
        if *described.status() != ExecutionStatus::Running {
            // Events written between the history read and the status read.
            progress.show(&history(&sfn, execution_arn).await?);
            break described;
        }
        tokio::time::sleep(interval).await;
    };

    let status = described.status().clone();
    let output: Value = described.output().and_then(|o| serde_json::from_str(o).ok()).unwrap_or(Value::Null);
    let outcome = match &status {
        ExecutionStatus::Succeeded => Outcome::Succeeded(output.clone()),
        other => Outcome::Failed {
            error: described.error().map_or_else(|| format!("States.{}", other.as_str()), str::to_string),
            cause: described.cause().unwrap_or_default().to_string(),
        },
    };
    match &bucket {
        Some(bucket) => {
            // Read only, for display: the CLI does not hold the deployment's seal key.
            let store = ArtifactStore::s3(clients.s3.clone(), bucket, None);
            let mut report = RunReport::gather(&store, &run_id, progress.phases, &outcome).await;
            report.fill_phase_totals();
            print!("{}", report.table());
            if let Some(schema) = pgferry_core::dump::report::summary(&store, &run_id).await {
                print!("{schema}");
            }
            if let Some(failure) = &report.failure {
                println!("failure report: s3://{bucket}/{}", failure.report_key);
            }
        }
        None => eprintln!(
            "pgferry: the artifact bucket is unknown (pass --bucket or set {ARTIFACT_BUCKET_VAR}); no report shown"
        ),
    }
    let report = &output["report"];
    match outcome {
        Outcome::Succeeded(_) if report["equal"] == true => {
            if let Some(summary) = report["summary"].as_str() {
                println!("{summary}");
            }
            if let (Some(bucket), Some(key)) = (&bucket, report["reportKey"].as_str()) {
                println!("report: s3://{bucket}/{key}");
            }
            let copied = report["rows"].as_u64().unwrap_or(0);
            let held = report["targetRows"].as_u64().unwrap_or(copied);
            let tables = report["tables"].as_u64().unwrap_or(0) as usize;
            println!("{}", crate::summary::equal_line(held, copied, tables));
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Succeeded(_) => {
            eprintln!("pgferry: the execution succeeded but its output does not report the target equal");
            Ok(ExitCode::FAILURE)
        }
        Outcome::Failed { error, cause } => {
            eprintln!("pgferry: {}: {error}: {}", status.as_str(), cause.lines().next().unwrap_or(""));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A Step Functions client from the standard environment, on pgferry's one HTTPS client.
async fn client() -> Result<aws_sdk_sfn::Client> {
    Ok(aws_sdk_sfn::Client::new(&Clients::from_env().await?.config))
}

fn read_job(path: &str) -> Result<String> {
    if path == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| Error::io("read job from stdin", e))?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(|e| Error::job(format!("cannot read {path}: {e}")))
    }
}

/// An execution's input stays in its history and in the console: a password must not go there.
fn refuse_passwords(job: &Job) -> Result<()> {
    let clean = Credentials::default().take_from(job)?;
    for (side, given, cleaned) in [("source", &job.source, &clean.source), ("target", &job.target, &clean.target)] {
        if given.url != cleaned.url {
            return Err(Error::job(format!(
                "{side}.url holds a password, which an execution would keep in its input and history; \
                 name the server by rdsInstance/rdsCluster with a secretArn (or iamAuth) instead"
            )));
        }
    }
    Ok(())
}

/// Step Functions names: 1–80 characters; pgferry also uses the name as the run's artifact prefix,
/// so only letters, digits, `-` and `_`.
fn check_execution_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_EXECUTION_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::job(format!(
            "execution name `{name}`: use 1 to {MAX_EXECUTION_NAME} letters, digits, `-` and `_` \
             (it names the run's artifacts too)"
        )))
    }
}

async fn describe(
    sfn: &aws_sdk_sfn::Client,
    execution_arn: &str,
) -> Result<aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput> {
    Box::pin(sfn.describe_execution().execution_arn(execution_arn).send())
        .await
        .map_err(|e| sdk_error("states:DescribeExecution", execution_arn, e))
}

/// The whole history, oldest first, without execution data (inputs and outputs stay out of the
/// terminal).
async fn history(sfn: &aws_sdk_sfn::Client, execution_arn: &str) -> Result<Vec<HistoryEvent>> {
    let mut events = Vec::new();
    let mut token = None;
    loop {
        let page = Box::pin(
            sfn.get_execution_history()
                .execution_arn(execution_arn)
                .include_execution_data(false)
                .max_results(1000)
                .set_next_token(token)
                .send(),
        )
        .await
        .map_err(|e| sdk_error("states:GetExecutionHistory", execution_arn, e))?;
        events.extend(page.events().iter().cloned());
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(events);
        }
    }
}

/// What `watch` learns from the state machine's (substituted) definition.
#[derive(Debug, Default)]
struct Machine {
    /// Top-level Task and Map states: the phases of the summary.
    work_states: Vec<String>,
    /// The artifact bucket the Maps read their items from.
    bucket: Option<String>,
}

impl Machine {
    /// Reads the definition; without `states:DescribeStateMachine` every state is shown and the
    /// bucket must be given.
    async fn describe(sfn: &aws_sdk_sfn::Client, state_machine_arn: &str) -> Self {
        let described = match Box::pin(sfn.describe_state_machine().state_machine_arn(state_machine_arn).send()).await {
            Ok(described) => described,
            Err(e) => {
                let e = sdk_error("states:DescribeStateMachine", state_machine_arn, e);
                eprintln!("pgferry: cannot read the state machine's definition: {e}");
                return Self::default();
            }
        };
        let definition: Value = serde_json::from_str(described.definition()).unwrap_or_default();
        let bucket = definition["States"].as_object().and_then(|states| {
            states.values().find_map(|s| s["ItemReader"]["Parameters"]["Bucket"].as_str().map(str::to_string))
        });
        Self { work_states: crate::work_states(described.definition()), bucket }
    }
}

/// Prints history events not printed yet and keeps each work state's duration.
struct Progress {
    work_states: Vec<String>,
    last_event: i64,
    /// State name → when it was entered (ms since the epoch) and whether it failed since.
    open: HashMap<String, (i64, bool)>,
    phases: Vec<Phase>,
    /// The Map Run in flight and its progress (from `DescribeMapRun`'s item counts).
    map_run: Option<(String, crate::progress::MapProgress)>,
    /// The work state entered last (the Map a Map Run belongs to).
    last_entered: String,
}

impl Progress {
    fn new(work_states: Vec<String>) -> Self {
        Self {
            work_states,
            last_event: 0,
            open: HashMap::new(),
            phases: Vec::new(),
            map_run: None,
            last_entered: String::new(),
        }
    }

    /// The running Map Run's items: a bar on a terminal, a plain line every 10 s otherwise. A
    /// failed `DescribeMapRun` (e.g. not allowed) shows nothing.
    async fn show_map_run(&mut self, sfn: &aws_sdk_sfn::Client) {
        let Some((arn, map)) = self.map_run.as_mut() else { return };
        let Ok(described) = Box::pin(sfn.describe_map_run().map_run_arn(arn.as_str()).send()).await else { return };
        if let Some(counts) = described.item_counts() {
            let done = counts.succeeded() + counts.failed() + counts.aborted() + counts.timed_out();
            map.set_counts(u64::try_from(done).unwrap_or(0), u64::try_from(counts.total()).unwrap_or(0));
        }
        map.show(std::io::stderr().is_terminal());
    }

    fn is_work(&self, name: &str) -> bool {
        self.work_states.is_empty() || self.work_states.iter().any(|w| w == name)
    }

    fn show(&mut self, events: &[HistoryEvent]) {
        let seen = self.last_event;
        for event in events.iter().filter(|e| e.id() > seen) {
            self.last_event = event.id();
            let at = millis(event.timestamp());
            if let Some(entered) = event.state_entered_event_details() {
                self.open.insert(entered.name().to_string(), (at, false));
                self.last_entered = entered.name().to_string();
                if self.is_work(entered.name()) {
                    eprintln!("  → {}", entered.name());
                }
            } else if let Some(exited) = event.state_exited_event_details() {
                let name = exited.name();
                let (since, failed) = self.open.remove(name).unwrap_or((at, false));
                let elapsed = Duration::from_millis(u64::try_from(at - since).unwrap_or(0));
                if self.is_work(name) {
                    if self.map_run.take().is_some() && std::io::stderr().is_terminal() {
                        eprint!("\r\x1b[2K");
                    }
                    let mark = if failed { "✗" } else { "✓" };
                    eprintln!("  {mark} {name} ({})", summary::human_duration(elapsed));
                    self.phases.push(Phase::new(name, elapsed, !failed));
                }
            } else if let Some((error, cause)) = failure(event) {
                for (_, failed) in self.open.values_mut() {
                    *failed = true;
                }
                eprintln!("  ! {error}: {}", cause.lines().next().unwrap_or(""));
            } else if let Some(started) = event.map_run_started_event_details() {
                eprintln!("    map run started");
                if let Some(arn) = started.map_run_arn() {
                    let map = crate::progress::MapProgress::new(&self.last_entered, None, None);
                    self.map_run = Some((arn.to_string(), map));
                }
            }
        }
    }
}

/// The error and cause of an event that reports a failure, if it is one.
fn failure(event: &HistoryEvent) -> Option<(&str, &str)> {
    fn pair<'e>(default: Option<&'e str>, e: Option<&'e str>, c: Option<&'e str>) -> Option<(&'e str, &'e str)> {
        Some((e.or(default).unwrap_or("failed"), c.unwrap_or("")))
    }
    if let Some(d) = event.lambda_function_failed_event_details() {
        return pair(None, d.error(), d.cause());
    }
    if let Some(d) = event.lambda_function_timed_out_event_details() {
        return pair(Some("States.Timeout"), d.error(), d.cause());
    }
    if let Some(d) = event.task_failed_event_details() {
        return pair(None, d.error(), d.cause());
    }
    if let Some(d) = event.task_timed_out_event_details() {
        return pair(Some("States.Timeout"), d.error(), d.cause());
    }
    if let Some(d) = event.map_run_failed_event_details() {
        return pair(None, d.error(), d.cause());
    }
    if let Some(d) = event.execution_failed_event_details() {
        return pair(None, d.error(), d.cause());
    }
    None
}

fn millis(time: &aws_sdk_sfn::primitives::DateTime) -> i64 {
    time.secs() * 1000 + i64::from(time.subsec_nanos() / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_names_are_safe_artifact_prefixes() {
        assert!(check_execution_name("run-20261126T103000Z-1a2b").is_ok());
        assert!(check_execution_name(&"a".repeat(80)).is_ok());
        for bad in ["", "has space", "a/b", "x.y", &"a".repeat(81)] {
            assert!(check_execution_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn passwords_are_refused_and_password_free_urls_pass() {
        let job = |source: &str| {
            Job::from_value(serde_json::json!({
                "source": {"url": source},
                "target": {"rdsInstance": "staging", "database": "shop"}
            }))
            .unwrap()
        };
        let err = refuse_passwords(&job("postgresql://app:s3cret@db.example.com/shop")).unwrap_err().to_string();
        assert!(err.contains("source.url holds a password"), "{err}");
        assert!(!err.contains("s3cret"), "the error repeats the password: {err}");
        refuse_passwords(&job("postgresql://app@db.example.com/shop")).unwrap();
    }
}
