//! Mode `continuous` against the test bed (RDS-CASES T41–T48, T33): the state machine subscribes
//! while pgbench writes to the source, the target keeps following, the cutover ends with the
//! target verified equal, sequences set and nothing left on the source; a run killed between
//! slot and subscription leaves no slot once its failure path ran; DDL on the source surfaces as
//! an apply error with advice; preflight refuses a source without logical WAL.
//!
//! The test bed's RDS shim (scripts/rds_shim) lets the master manage subscriptions and gives
//! members of rds_replication the REPLICATION attribute, as RDS does.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgferry_core::asl::{Environment, Execution, Outcome, StateMachine, TaskFailure};
use pgferry_core::context::StepContext;
use pgferry_core::runner::{self, LocalEnvironment};
use pgferry_core::step::{CheckStatus, StepInput, keys};
use pgferry_core::{ErrorKind, continuous, preflight, verify};
use pgferry_tests::{Server, connect, create_db, drop_db, fingerprint, source_with, step_setup, testbed};
use serde_json::{Value, json};
use tokio_postgres::Client;

/// Replication slots, WAL senders and logical replication workers are few on the test bed:
/// the tests of this file run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Job fields of a continuous run on the test bed: quick lag checks, and the subscription's
/// connection verified against the test CA (a file the target server can read).
fn continuous_job(extra: Value) -> Value {
    let mut options = json!({"waitSeconds": 1, "sslMode": "verify-full", "sslRootCert": testbed().ca()});
    if let (Some(map), Some(more)) = (options.as_object_mut(), extra.as_object()) {
        map.extend(more.clone());
    }
    json!({"mode": "continuous", "continuous": options})
}

/// A step context and input for a continuous job from `source` to `target` (URLs) with
/// `options`, its passwords taken into the context as `pgferry run` takes them.
fn continuous_step(source: &str, target: &str, options: Value) -> (StepContext, StepInput) {
    let mut job = json!({"source": {"url": source}, "target": {"url": target}});
    if let (Some(map), Some(more)) = (job.as_object_mut(), continuous_job(options).as_object()) {
        map.extend(more.clone());
    }
    let job = pgferry_core::job::Job::from_json(&job.to_string()).unwrap();
    let mut credentials = pgferry_core::context::Credentials::default();
    let job = credentials.take_from(&job).unwrap();
    let store = pgferry_core::store::ArtifactStore::local(std::env::temp_dir().join(pgferry_tests::unique_name("pf")));
    (StepContext::new(store, credentials), StepInput { job, run_id: pgferry_tests::unique_name("run") })
}

/// Runs the state machine locally on `input` in `env`, as `pgferry run` does.
async fn run_machine(env: Arc<dyn Environment>, run_id: &str, input: Value) -> Outcome {
    let machine = StateMachine::parse(runner::DEFINITION, &runner::local_substitutions()).unwrap();
    Execution::new(&machine, env, run_id.to_string()).run(input).await.unwrap()
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// What pgferry could have left on the source server for database `db` and run `input`: slots,
/// publications, the replication user.
async fn leftovers(db: &str, input: &StepInput) -> (i64, i64, i64) {
    let user = continuous::Names::for_run(&input.run_id, &input.job).user;
    let admin = connect(&testbed().admin_url(Server::Source, db)).await;
    let slots: i64 =
        admin.query_one("SELECT count(*) FROM pg_replication_slots WHERE database = $1", &[&db]).await.unwrap().get(0);
    let publications = count(&admin, "SELECT count(*) FROM pg_publication").await;
    let users: i64 =
        admin.query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[&user]).await.unwrap().get(0);
    (slots, publications, users)
}

const WORKLOAD: &str = r"
\set n random(1, 1000000)
INSERT INTO orders (note) VALUES ('order ' || :n);
UPDATE orders SET note = note || ' updated' WHERE id = (SELECT max(id) - 3 FROM orders);
DELETE FROM orders WHERE id = (SELECT max(id) - 7 FROM orders);
INSERT INTO events VALUES (:n, date '2024-01-01' + :n % 700) ON CONFLICT DO NOTHING;
";

/// pgbench writing to the source until killed: TPC-B-like transactions (updates of three keyed
/// tables, inserts into the keyless pgbench_history), inserts, updates and deletes of `orders`,
/// whose ids come from a sequence, and inserts into both partitions of `events` (T36).
fn start_pgbench(db: &str, script: &std::path::Path) -> std::process::Child {
    std::process::Command::new(testbed().pg_bin("pgbench"))
        .args(["-n", "-c", "2", "-T", "600", "-b", "tpcb-like@3"])
        .arg("-f")
        .arg(format!("{}@1", script.display()))
        .arg(testbed().url(Server::Source, db))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start pgbench")
}

#[tokio::test(flavor = "multi_thread")]
async fn t41_t33_continuous_mode_follows_a_pgbench_workload_and_cutover_leaves_nothing_on_the_source() {
    let _serial = SERIAL.lock().await;
    let (source_db, target_db, source) = source_with(
        "cont",
        "CREATE TABLE orders (id bigserial PRIMARY KEY, note text NOT NULL);
         INSERT INTO orders (note) SELECT 'order ' || g FROM generate_series(1, 5000) g;
         CREATE TABLE events (id int, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
         CREATE TABLE events_rest PARTITION OF events DEFAULT;
         INSERT INTO events SELECT g, date '2024-06-01' + g FROM generate_series(1, 1000) g;",
    )
    .await;
    let init = std::process::Command::new(testbed().pg_bin("pgbench"))
        .args(["-i", "-q", "-s", "1"])
        .arg(testbed().url(Server::Source, &source_db))
        .output()
        .expect("pgbench -i");
    assert!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    source.batch_execute("ANALYZE").await.unwrap();
    let script = std::env::temp_dir().join(format!("{source_db}.pgbench"));
    std::fs::write(&script, WORKLOAD).unwrap();

    // pgbench_history has no key: the job consents to REPLICA IDENTITY FULL (T42).
    let (ctx, input) =
        step_setup(&source_db, &target_db, continuous_job(json!({"keylessTables": "replicaIdentityFull"})));
    let mut bench = start_pgbench(&source_db, &script);
    let started = Instant::now();
    let env: Arc<dyn Environment> = Arc::new(LocalEnvironment::new(ctx.clone()));
    let outcome = run_machine(Arc::clone(&env), &input.run_id, serde_json::to_value(&input.job).unwrap()).await;
    let Outcome::Succeeded(output) = &outcome else { panic!("continuous run failed: {outcome:?}") };
    assert_eq!(output["lag"]["caughtUp"], json!(true), "{output}");
    eprintln!("continuous run caught up in {:?}: {}", started.elapsed(), output["lag"]["summary"]);

    // Changes keep arriving while pgbench writes.
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    let before = count(&target, "SELECT count(*) FROM pgbench_history").await;
    let mut arriving = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if count(&target, "SELECT count(*) FROM pgbench_history").await > before {
            arriving = true;
            break;
        }
    }
    assert!(arriving, "no new pgbench_history rows reached the target in 10 s");
    assert!(bench.try_wait().unwrap().is_none(), "pgbench stopped early");
    bench.kill().unwrap();
    bench.wait().unwrap();
    let _ = std::fs::remove_file(&script);

    // Cutover, as a second execution of the same state machine.
    let cutover_run = format!("{}-cutover", input.run_id);
    let outcome = run_machine(env, &cutover_run, json!({"action": "cutover", "job": input.job})).await;
    let Outcome::Succeeded(output) = &outcome else { panic!("cutover failed: {outcome:?}") };
    let report: verify::Report = ctx.store.get_json(&keys::report(&cutover_run)).await.unwrap();
    assert!(report.equal, "cutover verification differs: {output}");
    for (table, key) in [
        ("orders", "id"),
        ("events", "id, at"),
        ("pgbench_accounts", "aid"),
        ("pgbench_branches", "bid"),
        ("pgbench_tellers", "tid"),
        ("pgbench_history", "tid, bid, aid, delta, mtime"),
    ] {
        assert_eq!(fingerprint(&source, table, key).await, fingerprint(&target, table, key).await, "{table}");
    }
    // T33: the sequence continues where the source's stopped.
    let seq = "SELECT last_value FROM orders_id_seq";
    assert_eq!(count(&source, seq).await, count(&target, seq).await);
    assert_eq!(
        leftovers(&source_db, &input).await,
        (0, 0, 0),
        "slots, publications, replication users left on the source"
    );
    // T42: the keyless table the run set to REPLICA IDENTITY FULL is back as it was.
    let identity = "SELECT relreplident::text FROM pg_class WHERE oid = 'pgbench_history'::regclass";
    assert_eq!(source.query_one(identity, &[]).await.unwrap().get::<_, String>(0), "d");
    let target_admin = connect(&testbed().admin_url(Server::Target, &target_db)).await;
    assert_eq!(count(&target_admin, "SELECT count(*) FROM pg_subscription").await, 0);
    eprintln!("whole test took {:?}", started.elapsed());

    drop_db(Server::Source, &source_db).await;
    drop_db(Server::Target, &target_db).await;
}

/// Runs tasks in-process like [`LocalEnvironment`], but "kills" the `subscribe` task (as a
/// Lambda timeout would) after checking that the slot it would use exists.
struct KillSubscribe {
    inner: LocalEnvironment,
    source_db: String,
    slot_seen: AtomicBool,
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, TaskFailure>> + Send + 'a>>;

impl Environment for KillSubscribe {
    fn invoke(&self, resource: &str, input: Value) -> Boxed<'_, Value> {
        if input["action"] == "subscribe" {
            return Box::pin(async move {
                let admin = connect(&testbed().admin_url(Server::Source, &self.source_db)).await;
                let slots: i64 = admin
                    .query_one("SELECT count(*) FROM pg_replication_slots WHERE database = $1", &[&self.source_db])
                    .await
                    .unwrap()
                    .get(0);
                self.slot_seen.store(slots == 1, Ordering::SeqCst);
                Err(TaskFailure { error: "States.Timeout".to_string(), cause: "killed by the test".to_string() })
            });
        }
        self.inner.invoke(resource, input)
    }

    fn read_items(&self, resource: &str, reader_config: &Value, parameters: Value) -> Boxed<'_, Vec<Value>> {
        self.inner.read_items(resource, reader_config, parameters)
    }

    fn write_result(&self, resource: &str, bucket: &str, key: &str, body: Vec<u8>) -> Boxed<'_, ()> {
        self.inner.write_result(resource, bucket, key, body)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn t43_a_run_killed_between_slot_and_subscription_leaves_no_orphan_slot() {
    let _serial = SERIAL.lock().await;
    let (source_db, target_db, _source) = source_with(
        "cont_kill",
        "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'i' || g FROM generate_series(1, 100) g;
         CREATE TABLE events (at timestamptz, what text); ALTER TABLE events REPLICA IDENTITY NOTHING;",
    )
    .await;
    let (ctx, input) =
        step_setup(&source_db, &target_db, continuous_job(json!({"keylessTables": "replicaIdentityFull"})));
    let env = Arc::new(KillSubscribe {
        inner: LocalEnvironment::new(ctx.clone()),
        source_db: source_db.clone(),
        slot_seen: AtomicBool::new(false),
    });
    let outcome =
        run_machine(Arc::clone(&env) as Arc<dyn Environment>, &input.run_id, serde_json::to_value(&input.job).unwrap())
            .await;
    assert!(matches!(&outcome, Outcome::Failed { error, .. } if error == "States.Timeout"), "{outcome:?}");
    assert!(env.slot_seen.load(Ordering::SeqCst), "the slot existed when the run was killed");
    assert_eq!(
        leftovers(&source_db, &input).await,
        (0, 0, 0),
        "the failure path left replication objects on the source"
    );
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    let outcome: String = target
        .query_one("SELECT outcome FROM pgferry.replication WHERE run_id = $1", &[&input.run_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(outcome, "cleaned up after a failure");
    // The production table the run set to REPLICA IDENTITY FULL is back to NOTHING.
    let source = connect(&testbed().url(Server::Source, &source_db)).await;
    let identity = "SELECT relreplident::text FROM pg_class WHERE oid = 'events'::regclass";
    assert_eq!(source.query_one(identity, &[]).await.unwrap().get::<_, String>(0), "n");
    drop_db(Server::Source, &source_db).await;
    drop_db(Server::Target, &target_db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn t43_abandoning_a_running_replication_drops_it_on_both_sides() {
    let _serial = SERIAL.lock().await;
    let (source_db, target_db, _source) =
        source_with("cont_abandon", "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1), (2);")
            .await;
    let (ctx, input) = step_setup(&source_db, &target_db, continuous_job(json!({})));
    let env: Arc<dyn Environment> = Arc::new(LocalEnvironment::new(ctx));
    let outcome = run_machine(Arc::clone(&env), &input.run_id, serde_json::to_value(&input.job).unwrap()).await;
    assert!(matches!(outcome, Outcome::Succeeded(_)), "{outcome:?}");
    assert_eq!(leftovers(&source_db, &input).await, (1, 1, 1), "slot, publication and user while streaming");

    let abandon = format!("{}-abandon", input.run_id);
    let outcome = run_machine(env, &abandon, json!({"action": "abandon", "job": input.job})).await;
    let Outcome::Succeeded(output) = &outcome else { panic!("abandon failed: {outcome:?}") };
    assert!(output["abandoned"]["dropped"].as_array().is_some_and(|d| d.len() == 4), "{output}");
    assert_eq!(leftovers(&source_db, &input).await, (0, 0, 0));
    let target_admin = connect(&testbed().admin_url(Server::Target, &target_db)).await;
    assert_eq!(count(&target_admin, "SELECT count(*) FROM pg_subscription").await, 0);
    drop_db(Server::Source, &source_db).await;
    drop_db(Server::Target, &target_db).await;
}

/// A hardened source (CONNECT revoked from PUBLIC, RDS-CASES issue 22) with a matview `WITH NO
/// DATA` (T66), a publication of its own (T67) and writes while the copy and the sync run: the
/// run's replication user is given CONNECT for the subscription, the cutover ends equal, and the
/// grant goes with the user.
#[tokio::test(flavor = "multi_thread")]
async fn continuous_mode_on_a_database_without_connect_for_public_cuts_over_and_leaves_it_clean() {
    let _serial = SERIAL.lock().await;
    let (source_db, target_db, source) = source_with(
        "cont_hard",
        "CREATE TABLE items (id bigserial PRIMARY KEY, note text);
         INSERT INTO items (note) SELECT 'item ' || g FROM generate_series(1, 2000) g;
         CREATE MATERIALIZED VIEW item_count AS SELECT count(*) AS n FROM items WITH NO DATA;
         CREATE PUBLICATION app_pub FOR TABLE items;",
    )
    .await;
    let admin = connect(&testbed().admin_url(Server::Source, &source_db)).await;
    admin.batch_execute(&format!("REVOKE CONNECT ON DATABASE \"{source_db}\" FROM PUBLIC")).await.unwrap();
    // The target logs every statement of the master's: the subscription's must not show its password.
    let target_admin = connect(&testbed().admin_url(Server::Target, "postgres")).await;
    target_admin.batch_execute("ALTER ROLE dbadmin SET log_statement = 'all'").await.unwrap();
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = Arc::clone(&writing);
        let url = testbed().url(Server::Source, &source_db);
        tokio::spawn(async move {
            let client = connect(&url).await;
            let mut n = 0u64;
            while writing.load(Ordering::SeqCst) {
                client.execute("INSERT INTO items (note) VALUES ('written during the run')", &[]).await.unwrap();
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n
        })
    };
    let (ctx, input) = step_setup(&source_db, &target_db, continuous_job(json!({})));
    let env: Arc<dyn Environment> = Arc::new(LocalEnvironment::new(ctx.clone()));
    let outcome = run_machine(Arc::clone(&env), &input.run_id, serde_json::to_value(&input.job).unwrap()).await;
    assert!(matches!(outcome, Outcome::Succeeded(_)), "{outcome:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    writing.store(false, Ordering::SeqCst);
    let written = writer.await.unwrap();
    assert!(written > 0, "the writer wrote nothing");

    let cutover_run = format!("{}-cutover", input.run_id);
    let outcome = run_machine(env, &cutover_run, json!({"action": "cutover", "job": input.job})).await;
    let Outcome::Succeeded(output) = &outcome else { panic!("cutover failed: {outcome:?}") };
    let report: verify::Report = ctx.store.get_json(&keys::report(&cutover_run)).await.unwrap();
    assert!(report.equal, "cutover verification differs: {output}");
    let target = connect(&testbed().admin_url(Server::Target, &target_db)).await;
    assert_eq!(fingerprint(&source, "items", "id").await, fingerprint(&target, "items", "id").await);
    let populated = "SELECT relispopulated FROM pg_class WHERE relname = 'item_count'";
    assert!(!target.query_one(populated, &[]).await.unwrap().get::<_, bool>(0), "T66");
    assert_eq!(count(&target, "SELECT count(*) FROM pg_publication WHERE pubname = 'app_pub'").await, 1, "T67");
    // Nothing of the run left on the source: its publication, slot and user are gone (the user's
    // CONNECT grant with it); the source's own publication stays.
    let (slots, publications, users) = leftovers(&source_db, &input).await;
    assert_eq!((slots, publications, users), (0, 1, 0), "only app_pub stays");
    let grantees = "SELECT count(*) FROM pg_database d, aclexplode(d.datacl) a \
                    WHERE d.datname = current_database() AND a.grantee NOT IN (d.datdba, 0)";
    assert_eq!(count(&admin, grantees).await, 0, "CONNECT granted to the run's user is revoked");
    target_admin.batch_execute("ALTER ROLE dbadmin RESET log_statement").await.unwrap();
    // T70: the subscription's connection string (with its password) is not in the target's log.
    let dir = std::env::var("PGFERRY_TESTBED_DIR").unwrap_or_else(|_| "/tmp/pgferry-testbed".to_string());
    let subscription = continuous::Names::for_run(&input.run_id, &input.job).subscription;
    let log = std::fs::read_to_string(format!("{dir}/target.log")).unwrap_or_default();
    assert!(log.contains("statement:"), "the target logged no statement: is log_statement set?");
    let leaked: Vec<&str> = log.lines().filter(|l| l.contains(&subscription) && l.contains("password=")).collect();
    assert!(leaked.is_empty(), "the subscription's password is in the target's log: {leaked:?}");
    drop_db(Server::Source, &source_db).await;
    drop_db(Server::Target, &target_db).await;
}

/// Issue 23: the failure path's cleanup with the target unreachable still takes the run's slot,
/// publication and user off the source (the error then makes the state machine retry); once the
/// target is back, a retry drops the subscription and finds the source clean.
#[tokio::test(flavor = "multi_thread")]
async fn cleanup_with_an_unreachable_target_still_cleans_the_source() {
    let _serial = SERIAL.lock().await;
    let (source_db, target_db, _source) =
        source_with("cont_unreach", "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1), (2);")
            .await;
    let (ctx, input) = step_setup(&source_db, &target_db, continuous_job(json!({})));
    let env: Arc<dyn Environment> = Arc::new(LocalEnvironment::new(ctx.clone()));
    let outcome = run_machine(env, &input.run_id, serde_json::to_value(&input.job).unwrap()).await;
    assert!(matches!(outcome, Outcome::Succeeded(_)), "{outcome:?}");
    assert_eq!(leftovers(&source_db, &input).await, (1, 1, 1), "slot, publication and user while streaming");

    let mut unreachable = input.clone();
    unreachable.job.target.url = Some(format!("postgresql://dbadmin@127.0.0.1:1/{target_db}?sslmode=verify-full"));
    let err = continuous::cleanup(&ctx, &unreachable).await.unwrap_err();
    assert_eq!(err.kind().step_error_name(), "Pgferry.ConnectionFailed", "{err}");
    assert_eq!(leftovers(&source_db, &input).await, (0, 0, 0), "the source is clean although the target is not");

    let done = continuous::cleanup(&ctx, &input).await.unwrap();
    assert!(done.dropped.iter().any(|d| d.starts_with("subscription")), "{:?}", done.dropped);
    let target_admin = connect(&testbed().admin_url(Server::Target, &target_db)).await;
    assert_eq!(count(&target_admin, "SELECT count(*) FROM pg_subscription").await, 0);
    drop_db(Server::Source, &source_db).await;
    drop_db(Server::Target, &target_db).await;
}

/// Calls `check_lag` until it fails or `limit` passes.
async fn check_lag_until_error(ctx: &StepContext, input: &StepInput, limit: Duration) -> pgferry_core::Error {
    let until = Instant::now() + limit;
    loop {
        match continuous::check_lag(ctx, input).await {
            Err(e) => return e,
            Ok(lag) => {
                assert!(Instant::now() < until, "no apply error reported within {limit:?}: {}", lag.summary);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn t48_ddl_on_the_source_is_reported_as_an_apply_error_with_advice() {
    let _serial = SERIAL.lock().await;
    let (source_db, target_db, source) = source_with(
        "cont_ddl",
        "CREATE TABLE orders (id int PRIMARY KEY, amount int); INSERT INTO orders SELECT g, g FROM generate_series(1, 100) g;",
    )
    .await;
    let (ctx, input) = step_setup(&source_db, &target_db, continuous_job(json!({})));
    let env: Arc<dyn Environment> = Arc::new(LocalEnvironment::new(ctx.clone()));
    let outcome = run_machine(env, &input.run_id, serde_json::to_value(&input.job).unwrap()).await;
    assert!(matches!(outcome, Outcome::Succeeded(_)), "{outcome:?}");

    source
        .batch_execute("ALTER TABLE orders ADD COLUMN x int; INSERT INTO orders VALUES (101, 101, 1);")
        .await
        .unwrap();
    let err = check_lag_until_error(&ctx, &input, Duration::from_secs(60)).await;
    assert_eq!(err.kind(), ErrorKind::ReplicationFailed, "{err}");
    assert_eq!(err.kind().step_error_name(), "Pgferry.ReplicationFailed");
    assert!(err.to_string().contains("apply the DDL on the target first"), "{err}");

    // The failure path's cleanup drops everything.
    let dropped = continuous::cleanup(&ctx, &input).await.unwrap();
    assert!(dropped.dropped.iter().any(|d| d.starts_with("slot ")), "{dropped:?}");
    assert_eq!(leftovers(&source_db, &input).await, (0, 0, 0));
    drop_db(Server::Source, &source_db).await;
    drop_db(Server::Target, &target_db).await;
}

/// `continuous.replicationUser` naming a role that exists: preflight fails naming it, and the
/// replication step refuses it before recording it as the run's (every end of a run drops that
/// user); the role keeps its password, grants and existence.
#[tokio::test]
async fn an_existing_role_named_as_replication_user_is_refused_and_left_untouched() {
    let _serial = SERIAL.lock().await;
    let role = pgferry_tests::unique_name("app_login");
    let (source_db, target_db, _source) =
        source_with("cont_ru", "CREATE TABLE keyed (id int PRIMARY KEY); INSERT INTO keyed VALUES (1);").await;
    let admin = connect(&testbed().admin_url(Server::Source, &source_db)).await;
    admin
        .batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD 'kept-pw'; GRANT SELECT ON keyed TO {role}"))
        .await
        .unwrap();
    let facts = "SELECT format('%s %s %s', r.rolpassword IS NOT NULL, r.rolcanlogin, \
                 has_table_privilege(r.oid, 'public.keyed', 'SELECT')) FROM pg_authid r WHERE rolname = $1";
    let before: String = admin.query_one(facts, &[&role]).await.unwrap().get(0);
    let (ctx, input) = continuous_step(
        &testbed().url(Server::Source, &source_db),
        &testbed().url(Server::Target, &target_db),
        json!({"replicationUser": role}),
    );
    let out = preflight::run(&ctx, &input).await.unwrap();
    let check = out.checks.iter().find(|c| c.name == "replication-user").expect("replication-user check");
    assert_eq!(check.status, CheckStatus::Fail, "{check:?}");
    assert!(check.detail.contains(&role), "{check:?}");
    assert!(!out.ok);
    // The step itself refuses it too (a caller that skipped preflight), before anything records
    // the role as the run's.
    let err = continuous::prepare(&ctx, &input).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreflightFailed, "{err}");
    let after: String = admin.query_one(facts, &[&role]).await.unwrap().get(0);
    assert_eq!(before, after, "the role is untouched");
    assert_eq!(after, "t t t");
    drop(admin);
    drop_db(Server::Source, &source_db).await;
    connect(&testbed().admin_url(Server::Source, "postgres"))
        .await
        .batch_execute(&format!("DROP ROLE {role}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn t44_t42_preflight_refuses_a_source_without_logical_wal_and_lists_keyless_tables() {
    // The target server of the test bed runs with wal_level=replica (rds.logical_replication=0).
    let db = create_db(Server::Target, "cont_pf").await;
    let client = connect(&testbed().url(Server::Target, &db)).await;
    client
        .batch_execute("CREATE TABLE events (at timestamptz, what text); CREATE TABLE keyed (id int PRIMARY KEY);")
        .await
        .unwrap();
    let other = pgferry_tests::unique_name("cont_pf_dst");
    let job_for = |options: Value| {
        continuous_step(&testbed().url(Server::Target, &db), &testbed().url(Server::Source, &other), options)
    };
    let (ctx, input) = job_for(json!({}));
    let out = preflight::run(&ctx, &input).await.unwrap();
    assert!(!out.ok);
    let check = |name: &str| out.checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no {name}")).clone();
    let wal = check("source-wal-level");
    assert_eq!(wal.status, CheckStatus::Fail);
    assert!(wal.advice.unwrap().contains("rds.logical_replication=1"));
    let keyless = check("source-replica-identity");
    assert_eq!(keyless.status, CheckStatus::Fail);
    assert!(keyless.detail.contains("public.events") && !keyless.detail.contains("keyed"), "{keyless:?}");
    assert!(keyless.advice.unwrap().contains("replicaIdentityFull"));

    // With consent the keyless tables are a warning; the WAL level still fails.
    let (ctx, input) = job_for(json!({"keylessTables": "exclude"}));
    let out = preflight::run(&ctx, &input).await.unwrap();
    let keyless = out.checks.iter().find(|c| c.name == "source-replica-identity").unwrap();
    assert_eq!(keyless.status, CheckStatus::Warn, "{keyless:?}");
    assert!(!out.ok);
    drop_db(Server::Target, &db).await;
}

#[tokio::test]
async fn continuous_preflight_probes_the_source_from_the_target_server() {
    let _serial = SERIAL.lock().await;
    let source_db = create_db(Server::Source, "cont_reach").await;
    connect(&testbed().url(Server::Source, &source_db))
        .await
        .batch_execute("CREATE TABLE keyed (id int PRIMARY KEY)")
        .await
        .unwrap();
    let target_db = pgferry_tests::unique_name("cont_reach_dst");
    let preflight_with = |options: Value| {
        let (ctx, input) = continuous_step(
            &testbed().url(Server::Source, &source_db),
            &testbed().url(Server::Target, &target_db),
            options,
        );
        async move {
            let out = preflight::run(&ctx, &input).await.unwrap();
            out.checks.into_iter().find(|c| c.name == "target-reaches-source").expect("no target-reaches-source check")
        }
    };

    // The test bed's target server reaches the source over TLS verified against the test CA.
    let reached = preflight_with(json!({})).await;
    assert_eq!(reached.status, CheckStatus::Pass, "{reached:?}");

    // A port nothing listens on: the target server cannot connect, and the advice is about the
    // path from the target instance, not the functions.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let refused = preflight_with(json!({"publisherHost": "127.0.0.1", "publisherPort": closed})).await;
    assert_eq!(refused.status, CheckStatus::Fail, "{refused:?}");
    assert!(refused.detail.contains(&format!("127.0.0.1:{closed}")), "{refused:?}");
    assert!(refused.advice.as_deref().unwrap().contains("target instance's security group"), "{refused:?}");

    // verify-full with a CA file the target server does not have: TCP works, TLS does not.
    let tls = preflight_with(json!({"sslRootCert": "/nonexistent/ca.pem"})).await;
    assert_eq!(tls.status, CheckStatus::Fail, "{tls:?}");
    assert!(tls.detail.contains("TLS fails"), "{tls:?}");

    // The probe leaves nothing behind on either server.
    let target_admin = connect(&testbed().admin_url(Server::Target, "postgres")).await;
    assert_eq!(
        count(&target_admin, "SELECT count(*) FROM pg_subscription WHERE subname = 'pgferry_reach_probe'").await,
        0
    );
    let source_admin = connect(&testbed().admin_url(Server::Source, &source_db)).await;
    assert_eq!(
        count(&source_admin, "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()").await,
        0
    );
    drop_db(Server::Source, &source_db).await;
}
