//! `pgferry`: run the replication state machine locally, or one step of it.
//!
//! `pgferry run JOB` interprets `statemachine/replication.asl.json` in-process with the same step
//! code the Lambda functions run, so what runs on a laptop is what runs in AWS. Progress goes to
//! stderr, the summary to stdout; the exit status is 0 only when the copy completed and
//! verification found the target equal.

mod progress;
mod sfn;
mod summary;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand};
use pgferry_core::asl::{Event, Execution, Outcome, StateMachine};
use pgferry_core::context::{Credentials, StepContext};
use pgferry_core::job::Job;
use pgferry_core::runner::{self, Interrupt, LocalEnvironment};
use pgferry_core::step::{CheckStatus, ChunkInput, StepInput, keys};
use pgferry_core::store::ArtifactStore;
use pgferry_core::{Error, plan, preflight, verify};

use summary::{Phase, RunReport};

#[derive(Debug, Parser)]
#[command(name = "pgferry", version, about = "Copy a PostgreSQL/RDS database into another, and prove it is equal")]
struct Cli {
    /// Directory of the local artifact store (dumps, plans, reports).
    #[arg(long, global = true, default_value = ".pgferry/artifacts")]
    store: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole state machine locally: preflight, schema, copy, verify.
    Run {
        /// Job JSON file, or `-` for standard input.
        job: String,
        /// Write the JSON run report here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Execution name (default: a new `run-…` id).
        #[arg(long)]
        run_id: Option<String>,
        /// Continue a failed or killed run: its committed slices, applied schema sections and
        /// plan are kept, what was half done is done again.
        #[arg(long, value_name = "RUN_ID", conflicts_with = "run_id")]
        resume: Option<String>,
        /// Give each task invocation this many seconds, as Lambda's timeout does (default: no
        /// limit). Copy tasks stop between slices in time and are invoked again.
        #[arg(long, value_name = "SECONDS")]
        task_timeout: Option<u64>,
    },
    /// Cut over a running continuous replication (`"mode": "continuous"`): after writes on the
    /// source stopped, wait until the target caught up, sync sequences, verify, then drop the
    /// subscription, slots, publication and replication user. Exit 0 only when all that is done.
    Cutover {
        /// The continuous job's JSON file, or `-` for standard input.
        job: String,
        /// Write the JSON run report here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Execution name (default: a new `run-…` id).
        #[arg(long)]
        run_id: Option<String>,
        /// Give each task invocation this many seconds, as Lambda's timeout does.
        #[arg(long, value_name = "SECONDS")]
        task_timeout: Option<u64>,
    },
    /// Drop a running continuous replication without cutting over: the subscription, slots,
    /// publication and replication user (e.g. after an execution was stopped by hand).
    Abandon {
        /// The continuous job's JSON file, or `-` for standard input.
        job: String,
        /// Execution name (default: a new `run-…` id).
        #[arg(long)]
        run_id: Option<String>,
    },
    /// Run the preflight checks only (reads both sides, writes nothing).
    Preflight { job: String },
    /// Plan the copy and print the chunks (reads the source only).
    Plan { job: String },
    /// Compare source and target chunk by chunk; exit 0 only when equal.
    Verify {
        job: String,
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Start the deployed state machine on a job (checked first); prints the execution ARN.
    Start {
        /// Job JSON file, or `-` for standard input.
        job: String,
        /// ARN of the deployed state machine (the stack's `StateMachineArn` output).
        #[arg(long, value_name = "ARN")]
        state_machine: String,
        /// Execution name, which is also the run id (default: a new `run-…` id).
        #[arg(long)]
        name: Option<String>,
    },
    /// Follow an execution until it ends, then print its summary; exit 0 only when the target
    /// equals the source.
    Watch {
        execution_arn: String,
        /// The artifact bucket (default: $PGFERRY_ARTIFACT_BUCKET, else read from the definition).
        #[arg(long)]
        bucket: Option<String>,
        /// Seconds between two looks at the execution history.
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        poll_interval: f64,
    },
}

fn main() -> ExitCode {
    pgferry_core::telemetry::init_cli();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgferry: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        match dispatch(cli).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("pgferry: {}", e.with_advice());
                ExitCode::from(if e.kind() == pgferry_core::ErrorKind::InvalidInput { 2 } else { 1 })
            }
        }
    })
}

async fn dispatch(cli: Cli) -> Result<ExitCode, Error> {
    let store = ArtifactStore::local(&cli.store);
    match cli.command {
        Command::Run { job, report, run_id, resume, task_timeout } => {
            let (ctx, job) = load(&job, store)?;
            let budget = task_timeout.map(std::time::Duration::from_secs);
            // `--resume` or the job's own `resume` (as in AWS); both must agree.
            if let (Some(flag), Some(field)) = (&resume, &job.resume)
                && flag != field
            {
                return Err(Error::job(format!("--resume {flag} and the job's \"resume\": \"{field}\" differ")));
            }
            let resume = resume.or_else(|| job.resume.clone());
            if let Some(run_id) = &resume {
                eprintln!("pgferry: {}", resume_summary(&ctx, &job, run_id).await?);
            }
            run(ctx, job, report, resume.or(run_id).unwrap_or_else(new_run_id), budget, None).await
        }
        Command::Cutover { job, report, run_id, task_timeout } => {
            let (ctx, job) = load(&job, store)?;
            let budget = task_timeout.map(std::time::Duration::from_secs);
            run(ctx, job, report, run_id.unwrap_or_else(new_run_id), budget, Some("cutover")).await
        }
        Command::Abandon { job, run_id } => {
            let (ctx, job) = load(&job, store)?;
            run(ctx, job, None, run_id.unwrap_or_else(new_run_id), None, Some("abandon")).await
        }
        Command::Preflight { job } => {
            let (ctx, job) = load(&job, store)?;
            let out = preflight::run(&ctx, &StepInput { job, run_id: new_run_id() }).await?;
            print_checks(&out.checks);
            let count = |s: CheckStatus| out.checks.iter().filter(|c| c.status == s).count();
            println!(
                "preflight: {} ok, {} warning(s), {} failure(s); report {}",
                count(CheckStatus::Pass),
                count(CheckStatus::Warn),
                count(CheckStatus::Fail),
                ctx.store.location(&out.report_key)
            );
            Ok(if out.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Plan { job } => {
            let (ctx, job) = load(&job, store)?;
            let job_concurrency = job.effective_max_concurrency();
            let plan =
                plan::build(&ctx, &StepInput { job, run_id: new_run_id() }, plan::PlanOptions::default()).await?;
            println!("{:<10} {:<48} {:>7} {:<7} {:>14}", "chunk", "table", "slices", "format", "est. bytes");
            for c in &plan.chunks {
                let format = format!("{:?}", c.format).to_lowercase();
                println!(
                    "{:<10} {:<48} {:>7} {:<7} {:>14}",
                    c.id,
                    c.table.to_string(),
                    c.slices.len(),
                    format,
                    c.estimated_bytes
                );
            }
            for note in &plan.notes {
                println!("note: {note}");
            }
            for (name, why) in &plan.skipped {
                println!("{:<10} {:<48} {why}", "skipped", name.to_string());
            }
            for name in &plan.materialized_views {
                println!("{:<10} {:<48} refreshed after the copy", "matview", name.to_string());
            }
            println!(
                "{} chunks, {} bytes, about {} to copy at {} chunks in flight",
                plan.chunks.len(),
                plan.estimated_bytes,
                summary::human_duration(std::time::Duration::from_secs(plan.estimated_seconds)),
                job_concurrency
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { job, report } => {
            let (ctx, job) = load(&job, store)?;
            verify_only(ctx, job, report).await
        }
        Command::Start { job, state_machine, name } => sfn::start(&job, &state_machine, name).await,
        Command::Watch { execution_arn, bucket, poll_interval } => {
            let interval = std::time::Duration::try_from_secs_f64(poll_interval)
                .map_err(|_| Error::job("--poll-interval must be a non-negative number of seconds"))?;
            sfn::watch(&execution_arn, bucket, interval).await
        }
    }
}

/// The preflight table: one line per check, the advice under each warning and failure.
fn print_checks(checks: &[pgferry_core::step::Check]) {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(20).max(20);
    for c in checks {
        let mark = match c.status {
            CheckStatus::Pass => "ok  ",
            CheckStatus::Warn => "WARN",
            CheckStatus::Fail => "FAIL",
        };
        println!("{mark} {:<width$} {}", c.name, c.detail);
        if let Some(advice) = c.advice.as_ref().filter(|_| c.status != CheckStatus::Pass) {
            println!("     {:<width$} advice: {advice}", "");
        }
    }
}

/// Reads and validates the job (JSON Schema, then types); takes the passwords out of it into the
/// context.
fn load(path: &str, store: ArtifactStore) -> Result<(StepContext, Job), Error> {
    let text = if path == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| Error::io("read job from stdin", e))?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| Error::job(format!("cannot read {path}: {e}")))?
    };
    let job = Job::from_json(&text)?;
    let mut credentials = Credentials::default();
    let clean = credentials.take_from(&job)?;
    Ok((StepContext::new(store, credentials), clean))
}

/// `run-20261126T103000Z-1a2b`: sortable, unique enough for a laptop, valid as an execution name.
/// What a resumed run finds: "resumed run-…: 41 of 64 chunks already copied". The run must have
/// left artifacts in this store.
async fn resume_summary(ctx: &StepContext, job: &Job, run_id: &str) -> Result<String, Error> {
    use pgferry_core::step::{Chunk, keys};
    if ctx.store.get_json_opt::<serde_json::Value>(&keys::preflight(run_id)).await?.is_none() {
        return Err(Error::job(format!(
            "--resume {run_id}: no such run in this artifact store; give the --store it ran with"
        )));
    }
    let Some(chunks) = ctx.store.get_json_opt::<Vec<Chunk>>(&keys::chunks(run_id)).await? else {
        return Ok(format!("resumed {run_id}: it stopped before its copy was planned"));
    };
    let target = ctx.connect(job, pgferry_core::job::Side::Target, "resume", run_id).await?;
    let ledger: bool = target
        .query_one("SELECT to_regclass('pgferry.copied_chunks') IS NOT NULL", &[])
        .await
        .map_err(|e| Error::db("look for the chunk ledger", e))?
        .get(0);
    let rows = if ledger {
        target
            .query(
                "SELECT chunk_id, count(*)::bigint FROM pgferry.copied_chunks WHERE run_id = $1 GROUP BY chunk_id",
                &[&run_id],
            )
            .await
            .map_err(|e| Error::db("read the run's chunk ledger", e))?
    } else {
        vec![]
    };
    let committed: std::collections::HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let done = chunks
        .iter()
        .filter(|c| committed.get(&c.id).is_some_and(|n| usize::try_from(*n).unwrap_or(0) >= c.slices.len()))
        .count();
    Ok(format!("resumed {run_id}: {done} of {} chunks already copied", chunks.len()))
}

fn new_run_id() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("run-{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{:04x}", rem / 3600, rem % 3600 / 60, rem % 60, rand_suffix())
}

fn rand_suffix() -> u16 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    (nanos ^ std::process::id().rotate_left(16)) as u16
}

async fn run(
    ctx: StepContext,
    job: Job,
    report_file: Option<PathBuf>,
    run_id: String,
    task_budget: Option<std::time::Duration>,
    action: Option<&str>,
) -> Result<ExitCode, Error> {
    let machine = StateMachine::parse(runner::DEFINITION, &runner::local_substitutions())
        .map_err(|e| Error::Internal(format!("state machine definition: {e}")))?;
    let continuous = job.mode == pgferry_core::job::Mode::Continuous;
    let job_value = serde_json::to_value(&job).map_err(|e| Error::Internal(e.to_string()))?;
    // The state machine's input: the job itself, or `{"action": …, "job": …}` for an action.
    let input = match action {
        Some(action) => serde_json::json!({"action": action, "job": job_value}),
        None => job_value,
    };
    let phases: Arc<Mutex<Vec<Phase>>> = Arc::default();
    let observer = progress_observer(work_states(runner::DEFINITION), Arc::clone(&phases));
    let store = ctx.store.clone();
    eprintln!("pgferry: run {run_id}");
    let interrupt = Interrupt::default();
    let watcher = tokio::spawn(stop_on_ctrl_c(interrupt.clone(), run_id.clone()));
    let env = Arc::new(LocalEnvironment::new(ctx).with_task_budget(task_budget).with_interrupt(interrupt.clone()));
    let outcome = Execution::new(&machine, env, run_id.clone())
        .with_observer(observer)
        .run(input)
        .await
        .map_err(|e| Error::Internal(format!("state machine: {e}")))?;
    watcher.abort();

    let mut phases = phases.lock().map(|p| p.clone()).unwrap_or_default();
    // Preflight reports failed checks as its output (the task itself succeeded): the phase failed
    // all the same, and each failing check is shown with its advice, as `pgferry preflight` does.
    let preflight = store.get_json::<pgferry_core::step::PreflightOutput>(&keys::preflight(&run_id)).await.ok();
    if let Some(out) = preflight.as_ref().filter(|p| !p.ok) {
        for p in phases.iter_mut().filter(|p| p.phase == "Preflight") {
            p.ok = false;
        }
        eprintln!("  ✗ Preflight failed:");
        let failing: Vec<_> = out.checks.iter().filter(|c| c.status == CheckStatus::Fail).cloned().collect();
        print_checks(&failing);
    }
    let mut report = RunReport::gather(&store, &run_id, phases, &outcome).await;
    report.fill_phase_totals();
    print!("{}", report.table());
    // What the schema step kept, rewrote and left out, and what is left to do by hand.
    if let Some(schema) = pgferry_core::dump::report::summary(&store, &run_id).await {
        print!("{schema}");
    }
    // Schema objects, owners, ACLs, roles and settings: what the schema report explains, and not.
    if let Some(v) = &report.verification {
        print!("{}", v.inventory.summary());
        // Mode refresh: what was compared, left alone, re-copied and deleted, and how it was verified.
        if let Some(refresh) = &v.refresh {
            println!("{}", refresh.summary);
        }
    }
    // `"consistency": "clone"`: as of when the target equals the source.
    if let Ok(clone) =
        store.get_json::<pgferry_core::step::CloneRecord>(&pgferry_core::step::keys::clone(&run_id)).await
        && clone.available
    {
        println!(
            "copied from clone {} of {}: the target equals the source as of {} ({})",
            clone.identifier, clone.source, clone.point_in_time, clone.point_in_time_basis
        );
    }
    if let Some(path) = report_file {
        let text = serde_json::to_string_pretty(&report).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&path, text + "\n").map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    }
    match outcome {
        Outcome::Succeeded(_) if continuous && action.is_none() => {
            println!(
                "replication is running and caught up: stop writes on the source, then run `pgferry cutover` with the \
                 same job"
            );
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Succeeded(_) if action == Some("abandon") => {
            println!(
                "replication abandoned: subscription, replication slots, publication and replication user dropped"
            );
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Succeeded(_) => {
            println!("{}", report.equal_line());
            if action == Some("cutover") {
                println!("cutover done: subscription, replication slots, publication and replication user dropped");
            }
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Failed { error, cause } => {
            eprintln!("pgferry: {error}: {}", cause.lines().next().unwrap_or(""));
            Ok(if interrupt.fired() { ExitCode::from(EXIT_INTERRUPTED) } else { ExitCode::FAILURE })
        }
    }
}

/// The exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

/// On Ctrl-C, stops the run the way a failed run ends: the failure path still releases what the
/// run holds. A second Ctrl-C exits at once and says what may be left behind.
async fn stop_on_ctrl_c(interrupt: Interrupt, run_id: String) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    eprintln!(
        "pgferry: interrupted: stopping run {run_id}; committed slices stay in its ledger, the slice in flight rolls \
         back, and the failure path releases what the run holds (temporary memberships, source access, a \
         refresh's hold on the target, a clone). Ctrl-C again exits at once."
    );
    interrupt.fire();
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!(
            "pgferry: exiting without releasing run {run_id}: the master may keep temporary memberships, and a refresh \
             of this target needs \"refresh\": {{\"takeOverFrom\": \"{run_id}\"}}"
        );
        std::process::exit(i32::from(EXIT_INTERRUPTED));
    }
}

/// Top-level states that do work (Task and Map): the phases of the summary.
fn work_states(definition: &str) -> Vec<String> {
    let def: serde_json::Value = serde_json::from_str(definition).unwrap_or_default();
    def["States"]
        .as_object()
        .map(|states| {
            states
                .iter()
                .filter(|(_, s)| matches!(s["Type"].as_str(), Some("Task" | "Map")))
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Prints a line per finished phase (and retries) and remembers each phase's duration. While a
/// Map state runs, its progress (items, bytes, rate, time left) is redrawn in place on a terminal
/// and printed as a plain line every 10 s otherwise (see [`progress`]).
fn progress_observer(work: Vec<String>, phases: Arc<Mutex<Vec<Phase>>>) -> Arc<dyn Fn(&Event) + Send + Sync> {
    let live = std::io::stderr().is_terminal();
    let tracker = Mutex::new(Tracker::default());
    Arc::new(move |event: &Event| {
        let Ok(mut t) = tracker.lock() else { return };
        match event {
            Event::StateEntered { name, map_index: None } => t.map_entered(name),
            Event::TaskSucceeded { name, map_index, output } => {
                t.task_succeeded(name, map_index.is_some(), output);
                if let Some(map) = t.current.as_mut().filter(|_| map_index.is_some()) {
                    map.show(live);
                }
            }
            Event::StateExited { name, map_index: None, elapsed, ok } if work.contains(name) => {
                if t.current.take().is_some() && live {
                    eprint!("\r\x1b[2K");
                }
                eprintln!("  {} {name} ({})", if *ok { "✓" } else { "✗" }, summary::human_duration(*elapsed));
                if let Ok(mut p) = phases.lock() {
                    p.push(Phase::new(name, *elapsed, *ok));
                }
            }
            Event::Retrying { name, error, attempt, delay } => {
                eprintln!("  ↻ {name}: {error}, attempt {attempt} in {}", summary::human_duration(*delay));
            }
            _ => {}
        }
    })
}

/// What the progress display knows: the plans' totals and the Map state running.
#[derive(Debug, Default)]
struct Tracker {
    /// From the chunk plan: copy items, verify items, estimated bytes.
    chunks: Option<u64>,
    verify_items: Option<u64>,
    estimated_bytes: Option<u64>,
    /// From the post-data plan: index builds, foreign key validations.
    indexes: Option<u64>,
    validations: Option<u64>,
    current: Option<progress::MapProgress>,
}

impl Tracker {
    fn map_entered(&mut self, name: &str) {
        let (items, bytes) = match name {
            "CopyChunks" => (self.chunks, self.estimated_bytes),
            "VerifyChunks" | "CutoverVerify" => (self.verify_items, None),
            "BuildIndexes" => (self.indexes, None),
            "ValidateForeignKeys" => (self.validations, None),
            _ => return,
        };
        self.current = Some(progress::MapProgress::new(name, items, bytes));
    }

    fn task_succeeded(&mut self, name: &str, in_map: bool, output: &serde_json::Value) {
        if !in_map {
            let plan = match name {
                "PlanChunks" => &output["plan"],
                "CutoverPlan" => &output["plan"],
                "PlanPostData" => {
                    self.indexes = output["postDataPlan"]["indexes"].as_u64();
                    self.validations = output["postDataPlan"]["validations"].as_u64();
                    return;
                }
                _ => return,
            };
            self.chunks = plan["chunks"].as_u64();
            self.verify_items = plan["verifyItems"].as_u64().filter(|n| *n > 0).or(self.chunks);
            self.estimated_bytes = plan["estimatedBytes"].as_u64();
            return;
        }
        let Some(map) = self.current.as_mut() else { return };
        // Copy and post-data items put their result under `progress`; verify items are the result.
        let result = if output["progress"].is_object() { &output["progress"] } else { output };
        let done = result["done"].as_bool().unwrap_or(true);
        map.item(result["chunkId"].as_str(), result["bytes"].as_u64(), done);
    }
}

/// `pgferry verify`: plan, hash every chunk on both sides, report.
async fn verify_only(ctx: StepContext, job: Job, report_file: Option<PathBuf>) -> Result<ExitCode, Error> {
    let input = StepInput { job, run_id: new_run_id() };
    let started = std::time::Instant::now();
    plan::run(&ctx, &input).await?;
    let plan: plan::Plan = ctx.store.get_json(&keys::plan(&input.run_id)).await?;
    let mut pending = plan.verify_items.clone();
    while !pending.is_empty() {
        let batch: Vec<_> = pending.drain(..pending.len().min(4)).collect();
        let jobs = batch.into_iter().map(|chunk| {
            let chunk_input = ChunkInput { job: input.job.clone(), run_id: input.run_id.clone(), chunk };
            let ctx = &ctx;
            async move { verify::verify_chunk(ctx, &chunk_input).await }
        });
        for result in futures_util::future::join_all(jobs).await {
            result?;
        }
    }
    let out = verify::report(&ctx, &input).await?;
    let report: verify::Report = ctx.store.get_json(&out.report_key).await?;
    println!("{:<48} {:>12} {:>12}  result", "table", "source rows", "target rows");
    for t in &report.tables {
        println!(
            "{:<48} {:>12} {:>12}  {}",
            t.table.to_string(),
            t.source_rows,
            t.target_rows,
            if t.equal { "equal" } else { "DIFFERS" }
        );
        let d = &t.differences;
        for (label, keys) in [
            ("missing on target", &d.missing_on_target),
            ("extra on target", &d.extra_on_target),
            ("different", &d.different),
        ] {
            if !keys.is_empty() {
                println!("    {label}: key {}", keys.join("; key "));
            }
        }
        if d.more {
            println!("    … more keys differ than shown");
        }
    }
    for s in &report.sequences_differing {
        let show =
            |v: Option<(i64, bool)>| v.map_or("missing".to_string(), |(n, called)| format!("{n} (called: {called})"));
        println!("sequence {}: source {}, target {}", s.sequence, show(s.source), show(s.target));
    }
    let lo = &report.large_objects;
    if !lo.equal() {
        println!(
            "large objects: {} on the source, {} on the target; missing on target {:?}, extra on target {:?}",
            lo.source, lo.target, lo.missing_on_target, lo.extra_on_target
        );
    }
    print!("{}", report.inventory.summary());
    println!("{} ({})", out.summary, summary::human_duration(started.elapsed()));
    if let Some(path) = report_file {
        let text = serde_json::to_string_pretty(&report).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&path, text + "\n").map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    }
    Ok(if out.equal { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
