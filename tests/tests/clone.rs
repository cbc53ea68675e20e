//! `"consistency": "clone"`: the temporary point-in-time clone of the source, against the AWS
//! emulator (restore, describe, delete; the cleanup on the failure path) and, for the data path,
//! a third PostgreSQL server made from the live source with `pg_basebackup` standing in for the
//! clone's database (reached through the job's local-only `source.clone.host`/`port`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pgferry_core::asl::{Execution, Outcome, StateMachine};
use pgferry_core::aws::Clients;
use pgferry_core::aws::rds::{self, CLONE_PREFIX, TAG_EXECUTION};
use pgferry_core::clone::{self, clone_identifier};
use pgferry_core::context::{Credentials, StepContext};
use pgferry_core::job::Job;
use pgferry_core::runner::{self, LocalEnvironment};
use pgferry_core::step::{CheckStatus, CloneInput, CloneRecord, StepInput, keys};
use pgferry_core::store::ArtifactStore;
use pgferry_core::{ErrorKind, preflight};
use pgferry_tests::aws::{self, InstanceSpec, unique};
use pgferry_tests::clone::{StandIn, rds_resources_named, source_instance};
use pgferry_tests::moto::MotoServer;
use pgferry_tests::{Server, connect, create_db, drop_db, fingerprint, testbed, unique_name};
use serde_json::{Value, json};

/// A private instance in a fresh VPC of `c`, named `prod-…` (not pgferry-*), whose managed
/// secret holds the test bed source's master password; returns its identifier.
async fn source(c: &Clients, backup_days: i32) -> String {
    source_with_key(c, backup_days, None).await
}

/// As [`source`], its storage encrypted with `kms_key`.
async fn source_with_key(c: &Clients, backup_days: i32, kms_key: Option<&str>) -> String {
    let o = aws::vpc_octet();
    let vpc = aws::vpc(c, &format!("10.{o}.0.0/16"), &[&format!("10.{o}.8.0/24"), &format!("10.{o}.9.0/24")]).await;
    let db_sg = aws::security_group(c, &vpc, "clone-db").await;
    let id = unique("prod");
    let spec = InstanceSpec { kms_key: kms_key.map(str::to_string), ..InstanceSpec::new(&vpc, &[&db_sg], "postgres") };
    source_instance(c, &spec, &id, backup_days).await;
    id
}

/// The Describe step, as the state machine's loop runs it, until the clone is available (at
/// most five looks).
async fn describe_until_available(ctx: &StepContext, input: &StepInput, record: &CloneRecord) -> CloneRecord {
    let mut looked = record.clone();
    for _ in 0..5 {
        let describe = CloneInput { job: input.job.clone(), run_id: input.run_id.clone(), clone: looked.clone() };
        looked = clone::describe(ctx, &describe).await.unwrap();
        if looked.available {
            break;
        }
    }
    looked
}

fn context(c: &Clients, credentials: Credentials) -> StepContext {
    let store = ArtifactStore::local(std::env::temp_dir().join(unique_name("pgferry-clone")));
    StepContext::new(store, credentials).with_aws(c.clone())
}

/// A clone-mode job: the source instance (its live server is the test bed source), the clone
/// dialled at `clone_port`, the target a database on the test bed target.
fn job(instance: &str, source_db: &str, clone_port: u16, target_db: &str) -> (Job, Credentials) {
    job_in_mode(instance, source_db, clone_port, target_db, "snapshot")
}

fn job_in_mode(instance: &str, source_db: &str, clone_port: u16, target_db: &str, mode: &str) -> (Job, Credentials) {
    let bed = testbed();
    let text = json!({
        "source": {
            "rdsInstance": instance, "database": source_db,
            "host": "127.0.0.1", "port": bed.port(Server::Source), "sslRootCert": bed.ca(),
            "consistency": "clone",
            "clone": {"pollSeconds": 1, "maxWaitMinutes": 5, "host": "127.0.0.1", "port": clone_port}
        },
        "target": {"url": bed.url(Server::Target, target_db)},
        "mode": mode
    });
    let job = Job::from_json(&text.to_string()).expect("clone job");
    let mut credentials = Credentials::default();
    let job = credentials.take_from(&job).expect("credentials");
    (job, credentials)
}

/// Runs the state machine in-process, as `pgferry run` does.
async fn execute(ctx: StepContext, job: &Job, run_id: &str) -> Outcome {
    let machine = StateMachine::parse(runner::DEFINITION, &runner::local_substitutions()).expect("definition");
    let env = Arc::new(LocalEnvironment::new(ctx));
    Execution::new(&machine, env, run_id.to_string())
        .run(serde_json::to_value(job).unwrap())
        .await
        .expect("the runner itself")
}

#[tokio::test]
async fn a_clone_is_restored_in_the_sources_network_described_and_deleted_idempotently() {
    let c = aws::clients().await;
    let instance = source(&c, 7).await;
    let source_facts = rds::describe_instance(&c, &instance).await.unwrap();
    let (mut job, credentials) = job(&instance, "postgres", 5999, "postgres");
    job.source.clone.as_mut().unwrap().instance_class = Some("db.t4g.medium".to_string());
    let ctx = context(&c, credentials);
    let input = StepInput { job: job.clone(), run_id: unique_name("run") };

    let record = clone::create(&ctx, &input).await.unwrap();
    assert_eq!(record.identifier, clone_identifier(&input.run_id));
    assert!(record.identifier.starts_with(CLONE_PREFIX));
    // The emulator's LatestRestorableTime is "now": the instant restored is the one described
    // just before the restore, passed as an explicit RestoreTime and kept in a tag.
    let described_before = source_facts.latest_restorable_time.clone().unwrap();
    assert!(record.point_in_time >= described_before, "{} < {described_before}", record.point_in_time);
    let again = clone::create(&ctx, &input).await.expect("a retried create finds its clone");
    assert_eq!((&again.identifier, &again.point_in_time), (&record.identifier, &record.point_in_time));

    let made = rds::describe_instance(&c, &record.identifier).await.unwrap();
    assert_eq!(made.tags.get(TAG_EXECUTION), Some(&input.run_id));
    assert_eq!(made.tags.get(rds::TAG_SOURCE), Some(&instance));
    assert_eq!(made.tags.get(rds::TAG_POINT_IN_TIME), Some(&record.point_in_time));
    assert_eq!(made.security_group_ids, source_facts.security_group_ids);
    assert_eq!(made.subnet_group, source_facts.subnet_group);
    assert_eq!(made.publicly_accessible, Some(false));
    assert_eq!(made.instance_class.as_deref(), Some("db.t4g.medium"));

    let looked = describe_until_available(&ctx, &input, &record).await;
    assert!(looked.available, "moto's restored instance becomes available: {looked:?}");
    let rewritten = looked.job.clone().unwrap();
    assert_eq!(rewritten.source.rds_instance.as_deref(), Some(instance.as_str()), "the source's name and secret");
    assert_eq!((rewritten.source.host.as_deref(), rewritten.source.port), (Some("127.0.0.1"), Some(5999)));

    let deleted = clone::delete(&ctx, &input).await.unwrap();
    assert!(deleted.deleted);
    assert!(deleted.summary.contains(&record.point_in_time), "{}", deleted.summary);
    let err = rds::describe_instance(&c, &record.identifier).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AwsNotFound);
    let twice = clone::delete(&ctx, &input).await.expect("deleting a deleted clone is fine");
    assert!(!twice.deleted);
    // The source is untouched, its master secret included.
    rds::describe_instance(&c, &instance).await.unwrap();
    ctx.secret(source_facts.master_secret_arn.as_deref().unwrap()).await.expect("source secret still there");
}

/// An Aurora cluster is cloned copy-on-write, with a writer of its own; both are deleted.
#[tokio::test]
async fn an_aurora_clone_is_a_copy_on_write_cluster_with_a_writer_and_both_are_deleted() {
    let c = aws::clients().await;
    let o = aws::vpc_octet();
    let vpc = aws::vpc(&c, &format!("10.{o}.0.0/16"), &[&format!("10.{o}.8.0/24"), &format!("10.{o}.9.0/24")]).await;
    let db_sg = aws::security_group(&c, &vpc, "clone-aurora").await;
    let subnet_group = aws::db_subnet_group(&c, &vpc, "clone-aurora-sng").await;
    let cluster = unique("prod-aurora");
    c.rds
        .create_db_cluster()
        .db_cluster_identifier(&cluster)
        .engine("aurora-postgresql")
        .engine_version("15.4")
        .master_username("postgres")
        .manage_master_user_password(true)
        .backup_retention_period(7)
        .db_subnet_group_name(&subnet_group)
        .vpc_security_group_ids(&db_sg)
        .send()
        .await
        .unwrap();
    c.rds
        .create_db_instance()
        .db_instance_identifier(format!("{cluster}-1"))
        .db_cluster_identifier(&cluster)
        .engine("aurora-postgresql")
        .db_instance_class("db.r6g.xlarge")
        .send()
        .await
        .unwrap();
    let job = Job::from_json(
        &json!({"source": {"rdsCluster": cluster, "database": "shop", "consistency": "clone"},
                "target": {"url": testbed().url(Server::Target, "postgres")}})
        .to_string(),
    )
    .unwrap();
    let mut credentials = Credentials::default();
    let job = credentials.take_from(&job).unwrap();
    let ctx = context(&c, credentials);
    let input = StepInput { job, run_id: unique_name("run") };

    let record = clone::create(&ctx, &input).await.unwrap();
    assert_eq!(record.kind, rds::ResourceKind::Cluster);
    let writer = record.instance_identifier.clone().unwrap();
    assert!(writer.starts_with(&record.identifier));
    let made = rds::describe_cluster(&c, &record.identifier).await.unwrap();
    assert_eq!(made.tags.get(TAG_EXECUTION), Some(&input.run_id));
    assert_eq!(made.subnet_group.as_deref(), Some(subnet_group.as_str()));
    assert_eq!(made.security_group_ids, vec![db_sg.clone()]);
    let writer_facts = rds::describe_instance(&c, &writer).await.unwrap();
    assert_eq!(writer_facts.instance_class.as_deref(), Some("db.r6g.xlarge"), "the source writer's class");
    assert_eq!(writer_facts.publicly_accessible, Some(false));

    let looked = describe_until_available(&ctx, &input, &record).await;
    assert!(looked.available, "{looked:?}");
    let rewritten = looked.job.clone().unwrap();
    assert_eq!(rewritten.source.rds_cluster.as_deref(), Some(cluster.as_str()));
    assert_eq!(rewritten.source.host, made.address, "dialled at the clone's writer endpoint");
    let deleted = clone::delete(&ctx, &input).await.unwrap();
    assert!(deleted.deleted);
    assert_eq!(rds_resources_named(&c, &record.identifier).await, Vec::<String>::new());
    rds::describe_cluster(&c, &cluster).await.expect("the source cluster is left alone");
}

#[tokio::test]
async fn preflight_fails_clone_mode_without_automated_backups_and_estimates_the_clone() {
    let c = aws::clients().await;
    let without = source(&c, 0).await;
    // Encrypted with a customer-managed key: restoring needs grants on it, named in the report.
    let key = "arn:aws:kms:us-east-1:123456789012:key/0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    let with = source_with_key(&c, 7, Some(key)).await;
    let target_db = unique_name("clone_pf");
    for (instance, backups) in [(without, false), (with, true)] {
        let (job, credentials) = job(&instance, "postgres", 5999, &target_db);
        let ctx = context(&c, credentials);
        let out = preflight::run(&ctx, &StepInput { job, run_id: unique_name("run") }).await.unwrap();
        let check =
            |name: &str| out.checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("{name}: {out:?}"));
        let backup = check("source-clone-backups");
        if backups {
            assert_eq!(backup.status, CheckStatus::Pass, "{backup:?}");
        } else {
            assert_eq!(backup.status, CheckStatus::Fail);
            assert!(!out.ok);
            assert!(backup.advice.as_deref().unwrap().contains("--backup-retention-period 7"), "{backup:?}");
        }
        let estimate = check("source-clone-estimate");
        assert!(estimate.detail.starts_with("estimate:") && estimate.detail.contains("db.r6g.large"), "{estimate:?}");
        assert!(estimate.detail.contains("20 GiB gp3"), "{estimate:?}");
        assert_eq!(check("source-clone-network").status, CheckStatus::Pass);
        let permissions = check("source-clone-permissions");
        if backups {
            assert!(
                permissions.detail.contains(&format!("kms:CreateGrant and kms:DescribeKey on {key}")),
                "{permissions:?}"
            );
            assert!(permissions.detail.contains("CloneKmsKeyArns"), "{permissions:?}");
        } else {
            assert!(!permissions.detail.contains("kms:"), "an unencrypted source needs no key: {permissions:?}");
        }
    }
}

/// A step after the clone's creation fails (the clone's database does not answer): the run fails
/// and the clone is gone. A private emulator, so that "no pgferry-* instance" means just that.
#[tokio::test]
async fn a_run_that_fails_after_the_clone_exists_deletes_the_clone() {
    let log_dir = std::env::temp_dir().join(unique_name("pgferry-clone-moto"));
    std::fs::create_dir_all(&log_dir).unwrap();
    let moto = MotoServer::start(pgferry_tests::moto::free_port(), &log_dir).await;
    let c = moto.clients().await;
    let instance = source(&c, 7).await;
    let source_db = create_db(Server::Source, "clone_fail").await;
    let target_db = unique_name("clone_fail_dst");
    let nobody = pgferry_tests::moto::free_port();
    let (job, credentials) = job(&instance, &source_db, nobody, &target_db);
    let ctx = context(&c, credentials);
    let run_id = unique_name("run");

    let outcome = execute(ctx.clone(), &job, &run_id).await;
    let Outcome::Failed { error, cause } = outcome else { panic!("the run must fail: {outcome:?}") };
    assert_eq!(error, "Pgferry.PreflightFailed", "{cause}");
    assert!(cause.contains("source"), "the clone's preflight names what failed: {cause}");
    let record: pgferry_core::step::CloneRecord = ctx.store.get_json(&keys::clone(&run_id)).await.unwrap();
    assert!(record.available, "the clone existed before the failure: {record:?}");
    assert_eq!(rds_resources_named(&c, CLONE_PREFIX).await, Vec::<String>::new(), "{}", moto.log_tail());
    rds::describe_instance(&c, &instance).await.expect("the source is left alone");
    drop_db(Server::Source, &source_db).await;
    drop_db(Server::Target, &target_db).await;
}

const SHOP: &str = "
    CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL,
                            created_at timestamptz NOT NULL DEFAULT clock_timestamp());
    CREATE TABLE orders (id bigserial PRIMARY KEY,
                         customer_id bigint NOT NULL REFERENCES customers ON DELETE CASCADE,
                         amount numeric NOT NULL, created_at timestamptz NOT NULL DEFAULT clock_timestamp());
    CREATE INDEX ON orders (customer_id);
    INSERT INTO customers (name) SELECT 'c' || g FROM generate_series(1, 2000) g;
    INSERT INTO orders (customer_id, amount) SELECT 1 + g % 2000, g FROM generate_series(1, 6000) g;
";

/// Writes to the source until told to stop: a new customer with orders referencing it, and the
/// oldest customer deleted with its orders (the writes that break a chunked copy of a live source).
fn start_writer(url: String, stop: Arc<AtomicBool>, writes: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = connect(&url).await;
        while !stop.load(Ordering::Relaxed) {
            client
                .batch_execute(
                    "BEGIN;
                     WITH c AS (INSERT INTO customers (name) VALUES ('live') RETURNING id)
                     INSERT INTO orders (customer_id, amount) SELECT id, 1 FROM c, generate_series(1, 3);
                     DELETE FROM customers WHERE id = (SELECT min(id) FROM customers);
                     COMMIT;",
                )
                .await
                .expect("write to the source");
            writes.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
}

/// Customers created after an RFC 3339 instant.
async fn rows_after(client: &tokio_postgres::Client, at: &str) -> i64 {
    let sql = "SELECT count(*) FROM customers WHERE created_at > $1::text::timestamptz";
    client.query_one(sql, &[&at]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_clone_mode_copy_of_a_source_under_writes_equals_the_clone_with_valid_foreign_keys() {
    let c = aws::clients().await;
    let source_db = create_db(Server::Source, "clone_shop").await;
    let source_client = connect(&testbed().url(Server::Source, &source_db)).await;
    source_client.batch_execute(SHOP).await.unwrap();
    source_client.batch_execute("ANALYZE").await.unwrap();
    let target_db = unique_name("clone_shop_dst");

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = start_writer(testbed().url(Server::Source, &source_db), Arc::clone(&stop), Arc::clone(&writes));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The clone's database: the live source copied at one instant, while the writer runs.
    let standin = tokio::task::spawn_blocking(StandIn::from_source).await.unwrap();
    let instance = source(&c, 7).await;
    let (job, credentials) = job(&instance, &source_db, standin.port, &target_db);
    let ctx = context(&c, credentials);
    let run_id = unique_name("run");

    let started = std::time::Instant::now();
    let outcome = execute(ctx.clone(), &job, &run_id).await;
    let elapsed = started.elapsed();
    // Keep writing a little after the run, then stop.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let output = match outcome {
        Outcome::Succeeded(output) => output,
        Outcome::Failed { error, cause } => panic!("clone-mode run failed: {error}: {cause}"),
    };
    assert!(writes.load(Ordering::Relaxed) > 20, "the source was written to during the whole run ({elapsed:?})");

    // The target equals the clone, not the live source.
    let clone_db = connect(&standin.url(&source_db)).await;
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    for (table, key) in [("customers", "id"), ("orders", "id")] {
        let on_clone = fingerprint(&clone_db, table, key).await;
        assert_eq!(fingerprint(&target, table, key).await, on_clone, "{table}: target equals the clone");
        assert_ne!(fingerprint(&source_client, table, key).await, on_clone, "{table}: the source moved on");
    }
    // Its foreign keys are valid, and validated.
    let orphans: i64 = target
        .query_one(
            "SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = o.customer_id)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0);
    let unvalidated: i64 = target
        .query_one("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND NOT convalidated", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(unvalidated, 0);

    // The report names the point in time; writes on the source after it are not on the target.
    let report: Value = ctx.store.get_json(&keys::report(&run_id)).await.unwrap();
    let at = report["consistency"]["pointInTime"].as_str().expect("report names the point in time").to_string();
    assert_eq!(report["equal"], true);
    assert!(report["consistency"]["estimate"].as_str().is_some_and(|e| e.starts_with("estimate:")), "{report}");
    assert_eq!(output["cloneDeleted"]["pointInTime"], at.as_str());
    assert!(output["cloneDeleted"]["summary"].as_str().unwrap().contains(&format!("as of {at}")), "{output}");
    assert!(rows_after(&source_client, &at).await > 0, "the source was written to after the point in time");
    assert_eq!(rows_after(&target, &at).await, 0, "no write after the point in time reached the target");
    assert_eq!(rds_resources_named(&c, &clone_identifier(&run_id)).await, Vec::<String>::new(), "clone deleted");
    eprintln!("clone-mode run: {elapsed:?}, {} source transactions meanwhile", writes.load(Ordering::Relaxed));

    drop(clone_db);
    drop(standin);
    drop(target);
    drop(source_client);
    drop_db(Server::Source, &source_db).await;
    drop_db(Server::Target, &target_db).await;
}

/// Nightly refreshes from clones (RDS-CASES T57: a refresh only updates an earlier copy of the same
/// source): the target of a clone-mode copy is recognised as a copy of the source, not of a clone
/// that is gone, and the refresh brings it to the second clone's point in time.
#[tokio::test]
async fn t57_a_clone_mode_refresh_updates_the_copy_made_from_an_earlier_clone() {
    let c = aws::clients().await;
    let source_db = create_db(Server::Source, "clone_refresh").await;
    let source_client = connect(&testbed().url(Server::Source, &source_db)).await;
    source_client.batch_execute(SHOP).await.unwrap();
    source_client.batch_execute("ANALYZE").await.unwrap();
    let target_db = unique_name("clone_refresh_dst");
    let instance = source(&c, 7).await;

    let first = tokio::task::spawn_blocking(StandIn::from_source).await.unwrap();
    let (job, credentials) = job_in_mode(&instance, &source_db, first.port, &target_db, "snapshot");
    let outcome = execute(context(&c, credentials), &job, &unique_name("run")).await;
    assert!(matches!(outcome, Outcome::Succeeded(_)), "first copy: {outcome:?}");
    drop(first);

    source_client
        .batch_execute(
            "UPDATE customers SET name = 'renamed' WHERE id % 7 = 0;
             DELETE FROM customers WHERE id % 11 = 0;
             INSERT INTO customers (name) SELECT 'new' FROM generate_series(1, 50);",
        )
        .await
        .unwrap();
    let second = tokio::task::spawn_blocking(StandIn::from_source).await.unwrap();
    let (job, credentials) = job_in_mode(&instance, &source_db, second.port, &target_db, "refresh");
    let ctx = context(&c, credentials);
    let run_id = unique_name("run");
    let outcome = execute(ctx.clone(), &job, &run_id).await;
    if let Outcome::Failed { error, cause } = &outcome {
        panic!("refresh from a clone failed: {error}: {cause}");
    }
    let clone_db = connect(&second.url(&source_db)).await;
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    for (table, key) in [("customers", "id"), ("orders", "id")] {
        assert_eq!(fingerprint(&target, table, key).await, fingerprint(&clone_db, table, key).await, "{table}");
    }
    let report: Value = ctx.store.get_json(&keys::report(&run_id)).await.unwrap();
    assert!(report["refresh"].is_object(), "a refresh, not a new copy: {report}");
    assert!(report["consistency"]["pointInTime"].is_string(), "{report}");
    assert_eq!(rds_resources_named(&c, &clone_identifier(&run_id)).await, Vec::<String>::new());

    drop((clone_db, target, second, source_client));
    drop_db(Server::Source, &source_db).await;
    drop_db(Server::Target, &target_db).await;
}

/// The state machine's side of the cleanup, with canned step results: whichever step fails once a
/// clone may exist (its creation, a look at it, a later step), the failure path deletes it; a job
/// without a clone never calls the clone actions.
#[derive(Default)]
struct Scripted {
    fail_at: &'static str,
    describes: std::sync::Mutex<u32>,
    calls: std::sync::Mutex<Vec<String>>,
}

impl pgferry_core::asl::Environment for Scripted {
    fn invoke(
        &self,
        resource: &str,
        input: Value,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Value, pgferry_core::asl::TaskFailure>> + Send + '_>> {
        let function = runner::Function::from_resource(resource).expect("a pgferry function").name();
        let action = input["action"].as_str().unwrap_or("preflight").to_string();
        self.calls.lock().unwrap().push(action.clone());
        let failure =
            |error: &str| pgferry_core::asl::TaskFailure { error: error.into(), cause: format!("{action} broke") };
        let result = match action.as_str() {
            a if a == self.fail_at => Err(failure("Pgferry.Internal")),
            "preflight" => Ok(json!({"ok": true, "summary": "", "checks": [], "reportKey": "k"})),
            "createClone" => Ok(json!({"identifier": "pgferry-x", "pollSeconds": 1, "available": false})),
            "describeClone" => {
                let mut n = self.describes.lock().unwrap();
                *n += 1;
                Ok(json!({"identifier": "pgferry-x", "pollSeconds": 1, "available": *n > 1,
                          "job": input["job"]}))
            }
            _ => Ok(json!({"function": function})),
        };
        Box::pin(async move { result })
    }

    fn read_items(
        &self,
        _: &str,
        _: &Value,
        _: Value,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<Value>, pgferry_core::asl::TaskFailure>> + Send + '_>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn write_result(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), pgferry_core::asl::TaskFailure>> + Send + '_>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn every_failure_once_a_clone_may_exist_takes_the_path_that_deletes_it() {
    let machine = StateMachine::parse(runner::DEFINITION, &runner::local_substitutions()).unwrap();
    let clone_job = json!({"source": {"rdsInstance": "prod-db", "database": "shop", "consistency": "clone"},
                           "target": {"rdsInstance": "stage", "database": "shop"}});
    let plain_job = json!({"source": {"rdsInstance": "prod-db", "database": "shop"},
                           "target": {"rdsInstance": "stage", "database": "shop"}});
    for (job, fail_at, deletes) in [
        (&clone_job, "createClone", true),
        (&clone_job, "describeClone", true),
        (&clone_job, "globals", true),
        (&clone_job, "preData", true),
        (&clone_job, "plan", true),
        (&plain_job, "globals", false),
    ] {
        // A describe that fails must fail on its first look; the others see "creating" once.
        let env = Arc::new(Scripted { fail_at, ..Scripted::default() });
        let outcome = Execution::new(&machine, env.clone(), unique_name("run")).run(job.clone()).await.unwrap();
        let calls = env.calls.lock().unwrap().clone();
        let Outcome::Failed { error, .. } = outcome else { panic!("{fail_at}: must fail: {calls:?}") };
        assert_eq!(error, "Pgferry.Internal", "{fail_at}: the original error is the execution's");
        assert_eq!(calls.iter().filter(|c| *c == "deleteClone").count(), usize::from(deletes), "{fail_at}: {calls:?}");
        if deletes {
            let failed_at = calls.iter().position(|c| c == fail_at).unwrap();
            let deleted_at = calls.iter().position(|c| c == "deleteClone").unwrap();
            assert!(deleted_at > failed_at && calls[failed_at + 1..deleted_at].contains(&"release".to_string()));
            assert_eq!(calls.last().map(String::as_str), Some("deleteClone"), "{fail_at}: {calls:?}");
        }
        if fail_at == "globals" && deletes {
            assert_eq!(calls.iter().filter(|c| *c == "preflight").count(), 2, "the clone is preflighted: {calls:?}");
        }
    }
}
