//! The deployed orchestration, offline: moto's Step Functions — an interpreter we did not write —
//! runs `statemachine/replication.asl.json` with the template's substitutions, and its Lambda
//! calls reach the four real function binaries (see `pgferry_tests::lambda`). The job is started
//! with `pgferry start` and followed with `pgferry watch`, as an operator would.
//!
//! Each test runs its own moto server (the test bed's shared one is not touched), its own bucket,
//! secrets and databases. What moto's interpreter does differently from AWS with the Distributed
//! Maps' `ItemReader`/`ResultWriter` is shown by `scripts/moto-distributed-map`; the definition
//! avoids those differences, so the file runs here unmodified.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_sfn::types::{ExecutionStatus, HistoryEventType};
use pgferry_core::aws::Clients;
use pgferry_core::context::Credentials;
use pgferry_core::job::Job;
use pgferry_core::pg::ConnSpec;
use pgferry_core::runner::{self, ARTIFACT_BUCKET, Function};
use pgferry_tests::lambda::{self, LambdaHost};
use pgferry_tests::moto::{self, MotoServer};
use pgferry_tests::{Server, aws, connect, drop_db, source_with, testbed, unique_name};
use serde_json::{Value, json};

/// The binaries (functions and CLI), built once for all tests of this file.
fn binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(lambda::build_binaries)
}

/// A private moto with Step Functions executing, the functions behind it, a bucket and the state
/// machine created from the definition file.
struct Stack {
    // Dropped in this order: the functions, then moto.
    host: LambdaHost,
    moto: MotoServer,
    aws: Clients,
    sfn: aws_sdk_sfn::Client,
    bucket: String,
    /// The deployment's seal secret (the template generates one).
    seal_secret: String,
    state_machine: String,
    dir: PathBuf,
}

impl Stack {
    async fn start(name: &str) -> Self {
        let bin_dir = binaries();
        let dir = std::env::temp_dir().join(unique_name(&format!("pgferry-sfn-{name}")));
        std::fs::create_dir_all(&dir).unwrap();
        let adapter_port = moto::free_port();
        let moto = MotoServer::start(adapter_port, &dir).await;
        let aws = moto.clients().await;
        let sfn = aws_sdk_sfn::Client::new(&aws.config);
        let bucket = aws::unique("pgferry-artifacts");
        aws.s3.create_bucket().bucket(&bucket).send().await.expect("create bucket");
        let seal_secret = format!("{:064x}", rand::random::<u128>());
        let seal_arn = aws
            .secrets
            .create_secret()
            .name(aws::unique("pgferry-seal"))
            .secret_string(&seal_secret)
            .send()
            .await
            .expect("create seal secret")
            .arn()
            .unwrap()
            .to_string();

        // The functions' environment in the template, pointed at this emulator and the test bed.
        let mut env = moto.env();
        env.push(("PGFERRY_ARTIFACT_BUCKET".into(), bucket.clone()));
        env.push(("PGFERRY_SEAL_SECRET".into(), seal_arn));
        env.push(("PGFERRY_PG_BIN".into(), testbed().var("PGFERRY_TEST_PG_BIN").into()));
        env.push(("RUST_LOG".into(), "info".into()));
        // As a deployment's AllowedSources / AllowedTargets: the test bed's two servers only.
        env.push(("PGFERRY_ALLOWED_SOURCES".into(), format!("127.0.0.1:{}", testbed().port(Server::Source))));
        env.push(("PGFERRY_ALLOWED_TARGETS".into(), format!("127.0.0.1:{}", testbed().port(Server::Target))));
        let host = LambdaHost::start(bin_dir, adapter_port, moto.addr, &env, &dir).await;

        let definition = substituted_definition(&bucket);
        let state_machine = sfn
            .create_state_machine()
            .name(aws::unique("pgferry-replication"))
            .definition(definition)
            .role_arn(format!("arn:aws:iam::{}:role/pgferry-replication", moto::ACCOUNT))
            .send()
            .await
            .expect("create state machine")
            .state_machine_arn()
            .to_string();
        Self { host, moto, aws, sfn, bucket, seal_secret, state_machine, dir }
    }

    /// Runs the CLI with this emulator's AWS environment and nothing else of ours.
    async fn pgferry(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(binaries().join("pgferry"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.moto.env())
            .current_dir(&self.dir)
            .output()
            .await
            .expect("run pgferry")
    }

    /// Waits for an execution to end (moto runs it in the background).
    async fn wait(&self, execution: &str) -> aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let described = self.sfn.describe_execution().execution_arn(execution).send().await.unwrap();
            if *described.status() != ExecutionStatus::Running {
                return described;
            }
            assert!(Instant::now() < deadline, "the execution still runs after 10 minutes\n{}", self.host.logs());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn diagnostics(&self, out: &Output) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}\n{}\n--- moto\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.host.logs(),
            self.moto.log_tail()
        )
    }
}

impl Drop for Stack {
    /// Keeps the logs (moto, cargo-lambda, every function) of a failed test, for its message.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The definition with every `${…}` the template's `DefinitionSubstitutions` fills (the infra
/// tests check that the names are the same set): function ARNs in moto's account, the bucket.
fn substituted_definition(bucket: &str) -> String {
    let mut text = runner::DEFINITION.to_string();
    for name in runner::local_substitutions().into_keys() {
        let value = if name == ARTIFACT_BUCKET {
            bucket.to_string()
        } else {
            let function = Function::ALL.into_iter().find(|f| f.substitution() == name).expect("a function ARN");
            format!("arn:aws:lambda:{}:{}:function:{}", moto::REGION, moto::ACCOUNT, function.name())
        };
        text = text.replace(&format!("${{{name}}}"), &value);
    }
    assert!(!text.contains("${"), "a placeholder is left in the definition");
    text
}

const SHOP: &str = "
    CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, joined date);
    INSERT INTO customers SELECT g, 'customer ' || g, date '2024-01-01' + g FROM generate_series(1, 3000) g;
    CREATE TABLE orders (id bigserial PRIMARY KEY, customer int NOT NULL REFERENCES customers,
                         total numeric(10, 2), note text);
    INSERT INTO orders (customer, total, note)
        SELECT 1 + g % 3000, g / 7.0, repeat('n', g % 50) FROM generate_series(1, 20000) g;
    CREATE INDEX orders_by_customer ON orders (customer);
    CREATE TABLE events (at timestamptz, payload jsonb);
    INSERT INTO events SELECT timestamptz '2024-01-01' + g * interval '1 minute', jsonb_build_object('g', g)
        FROM generate_series(1, 5000) g;
";

/// Row count and a digest of every row's text form, per table.
async fn contents(server: Server, db: &str) -> Vec<(String, i64, String)> {
    let client = connect(&testbed().url(server, db)).await;
    let mut out = Vec::new();
    for table in ["customers", "orders", "events"] {
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"
                ),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{table} on {server:?}: {e}"));
        out.push((table.to_string(), row.get(0), row.get(1)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moto_runs_the_definition_through_the_real_handlers_and_the_target_equals_the_source() {
    let stack = Stack::start("e2e").await;
    let (source_db, target_db, _source) = source_with("sfn", SHOP).await;

    // The job as it would be started in AWS: no password anywhere in it, secrets in Secrets Manager.
    let with_passwords = Job::from_value(json!({
        "source": {"url": testbed().url(Server::Source, &source_db)},
        "target": {"url": testbed().url(Server::Target, &target_db)},
        "maxConcurrency": 2
    }))
    .unwrap();
    let job = Credentials::default().take_from(&with_passwords).unwrap();
    let mut job = serde_json::to_value(&job).unwrap();
    for (side, server) in [("source", Server::Source), ("target", Server::Target)] {
        let spec = ConnSpec::parse(&testbed().url(server, "postgres")).unwrap();
        let arn = aws::create_secret(&stack.aws, &spec.user, spec.password.as_ref().unwrap().expose()).await;
        job[side]["secretArn"] = json!(arn);
    }
    let job_file = stack.dir.join("job.json");
    std::fs::write(&job_file, job.to_string()).unwrap();

    let run_id = unique_name("run");
    let started = stack
        .pgferry(&["start", job_file.to_str().unwrap(), "--state-machine", &stack.state_machine, "--name", &run_id])
        .await;
    assert!(started.status.success(), "pgferry start failed\n{}", stack.diagnostics(&started));
    let execution = String::from_utf8(started.stdout.clone()).unwrap().trim().to_string();
    assert!(execution.starts_with("arn:aws:states:") && execution.ends_with(&format!(":{run_id}")), "{execution}");

    let watched = stack.pgferry(&["watch", &execution, "--poll-interval", "0.5"]).await;
    let stdout = String::from_utf8_lossy(&watched.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&watched.stderr).into_owned();
    assert!(watched.status.success(), "pgferry watch failed\n{}", stack.diagnostics(&watched));
    eprintln!("pgferry watch:\n{stderr}{stdout}");
    assert!(stdout.contains("target equals source: 28000 rows in 3 tables"), "{stdout}");
    for state in ["Preflight", "SchemaPreData", "PlanChunks", "CopyChunks", "VerifyChunks", "Report", "Release"] {
        assert!(stderr.contains(&format!("✓ {state} (")), "watch did not show {state} exiting:\n{stderr}");
    }
    assert!(stdout.contains("CopyChunks"), "the summary has no CopyChunks phase:\n{stdout}");

    // Checked independently of pgferry's own hashes.
    assert_eq!(contents(Server::Target, &target_db).await, contents(Server::Source, &source_db).await);
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    let next: i64 = target.query_one("SELECT nextval('orders_id_seq')", &[]).await.unwrap().get(0);
    assert_eq!(next, 20001, "the sequence was not set from the source");
    let indexed: bool = target
        .query_one("SELECT EXISTS (SELECT FROM pg_indexes WHERE indexname = 'orders_by_customer')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(indexed, "post-data did not build the index");

    // Both Maps ran in moto as Distributed Maps: a Map Run each, and their iterations reached the
    // real handlers (one copyChunk and one verifyChunk invocation per chunk at least).
    let history = stack.sfn.get_execution_history().execution_arn(&execution).max_results(1000).send().await.unwrap();
    let map_runs = history.events().iter().filter(|e| *e.r#type() == HistoryEventType::MapRunStarted).count();
    assert!(map_runs >= 2, "expected the copy and verify Map Runs, saw {map_runs}");
    let invocations = stack.host.invocations();
    let count = |action: &str| invocations.iter().filter(|i| i.action.as_deref() == Some(action)).count();
    assert!(count("copyChunk") >= 3 && count("verifyChunk") >= 3, "{invocations:?}");
    assert!(invocations.iter().all(|i| i.status == 200), "a handler failed: {invocations:?}");

    // The artifacts are in the bucket under the run id: the report, and each Map's ResultWriter
    // manifest under the run's prefix.
    // Read as the functions read: every object must carry the deployment's seal.
    let key = pgferry_core::seal::SealKey::from_secret(&stack.seal_secret).unwrap();
    let store = pgferry_core::store::ArtifactStore::s3(stack.aws.s3.clone(), &stack.bucket, Some(key));
    let report: Value = store.get_json(&format!("runs/{run_id}/report.json")).await.unwrap();
    assert_eq!(report["equal"], true, "{report}");
    for map in ["copy", "verify"] {
        let listed = stack
            .aws
            .s3
            .list_objects_v2()
            .bucket(&stack.bucket)
            .prefix(format!("runs/{run_id}/map-results/{map}/"))
            .send()
            .await
            .unwrap();
        let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
        assert!(keys.iter().any(|k| k.ends_with("/manifest.json")), "no {map} results manifest: {keys:?}");
    }

    drop_db(Server::Source, &source_db).await;
    drop_db(Server::Target, &target_db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_error_reaches_step_functions_under_its_own_name_and_watch_reports_it() {
    let stack = Stack::start("failure").await;

    // `pgferry start` refuses a job the schema refuses, before anything reaches Step Functions.
    let bad_job = stack.dir.join("bad.json");
    std::fs::write(&bad_job, r#"{"source": {"url": "postgresql://a@h/db"}, "target": {}, "colour": 1}"#).unwrap();
    let refused = stack.pgferry(&["start", bad_job.to_str().unwrap(), "--state-machine", &stack.state_machine]).await;
    assert_eq!(refused.status.code(), Some(2), "{}", stack.diagnostics(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("colour"), "{}", stack.diagnostics(&refused));
    let executions = stack.sfn.list_executions().state_machine_arn(&stack.state_machine).send().await.unwrap();
    assert!(executions.executions().is_empty(), "an execution was started for a refused job");

    // An input that is not a job makes every handler fail with `Pgferry.InvalidJob`; the state
    // machine catches it, diagnoses, releases and fails with the original error.
    let execution = stack
        .sfn
        .start_execution()
        .state_machine_arn(&stack.state_machine)
        .name(unique_name("not-a-job"))
        .input(r#"{"source": "nowhere"}"#)
        .send()
        .await
        .unwrap()
        .execution_arn()
        .to_string();
    let described = stack.wait(&execution).await;
    assert_eq!(*described.status(), ExecutionStatus::Failed);
    assert_eq!(described.error(), Some("Pgferry.InvalidJob"), "cause: {:?}\n{}", described.cause(), stack.host.logs());
    let invocations = stack.host.invocations();
    assert!(
        invocations.iter().any(|i| i.function == "pgferry-preflight" && i.status == 500),
        "the preflight handler's error did not go through the adapter: {invocations:?}"
    );

    let watched = stack.pgferry(&["watch", &execution, "--poll-interval", "0.2"]).await;
    assert_eq!(watched.status.code(), Some(1), "{}", stack.diagnostics(&watched));
    let stderr = String::from_utf8_lossy(&watched.stderr);
    assert!(stderr.contains("! Pgferry.InvalidJob"), "watch did not show the task failure:\n{stderr}");
    assert!(
        stderr.trim_end().lines().last().is_some_and(|l| l.starts_with("pgferry: FAILED: Pgferry.InvalidJob: ")),
        "{stderr}"
    );
}
