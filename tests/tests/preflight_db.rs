//! Preflight's database checks against the RDS-like test bed, each with a passing and a failing
//! case: what the copy could not read or would silently get wrong, and what the target cannot
//! take. Jobs name both sides by URL, so no AWS API is involved.

use std::time::Duration;

use pgferry_core::context::{Credentials, StepContext};
use pgferry_core::job::{Job, Side};
use pgferry_core::pg::{ConnSpec, Session, quote_ident};
use pgferry_core::preflight::{self, Requirements, db};
use pgferry_core::step::{Check, CheckStatus, PreflightOutput, StepInput};
use pgferry_core::store::ArtifactStore;
use pgferry_tests::{Server, connect, create_db, drop_db, testbed, unique_name};
use serde_json::{Value, json};

async fn run(job: Value) -> PreflightOutput {
    run_with(job, Requirements::default()).await
}

async fn run_with(job: Value, req: Requirements) -> PreflightOutput {
    let job = Job::from_value(job).expect("valid job");
    let mut credentials = Credentials::default();
    let job = credentials.take_from(&job).unwrap();
    let ctx = StepContext::new(
        ArtifactStore::local(std::env::temp_dir().join(unique_name("pgferry-preflight-db"))),
        credentials,
    );
    preflight::run_with(&ctx, &StepInput { job, run_id: unique_name("run") }, req).await.expect("preflight runs")
}

fn check<'a>(out: &'a PreflightOutput, name: &str) -> &'a Check {
    out.checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no check {name} in {:#?}", out.checks))
}

/// A job from a fresh source database (set up by `sql` as the master user) to a missing target.
async fn job_with(prefix: &str, sql: &str) -> (Value, String) {
    let src = create_db(Server::Source, prefix).await;
    if !sql.is_empty() {
        connect(&testbed().url(Server::Source, &src)).await.batch_execute(sql).await.expect("source setup");
    }
    let job = json!({
        "source": {"url": testbed().url(Server::Source, &src)},
        "target": {"url": testbed().url(Server::Target, &unique_name(&format!("{prefix}_dst")))},
    });
    (job, src)
}

const PLAIN: &str = "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'a');";

#[tokio::test]
async fn a_plain_source_and_a_missing_target_pass_every_database_check() {
    let (job, src) = job_with("plain", PLAIN).await;
    let out = run(job).await;
    assert!(out.ok, "{}", out.summary);
    for name in [
        "source-connect",
        "source-version",
        "pg-dump-version",
        "source-database",
        "target-connect",
        "distinct-servers",
        "source-privileges",
        "source-row-security",
        "keyless-tables",
        "large-objects",
        "unlogged-tables",
        "source-activity",
        "source-connections",
        "target-connections",
        "target-privileges",
        "target-version",
        "encoding",
        "extensions",
        "shared-preload",
    ] {
        assert_eq!(check(&out, name).status, CheckStatus::Pass, "{:?}", check(&out, name));
    }
    assert!(
        out.checks.iter().all(|c| !c.name.contains("rds") && !c.name.contains("network")),
        "no AWS checks for URLs"
    );
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn t39_a_table_the_master_cannot_read_fails_with_the_grant_that_fixes_it() {
    let owner = unique_name("app_owner");
    let (job, src) = job_with("t39", PLAIN).await;
    let admin = connect(&testbed().admin_url(Server::Source, &src)).await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {o} NOLOGIN; CREATE TABLE secret_stuff (id int PRIMARY KEY); ALTER TABLE secret_stuff OWNER TO {o};",
            o = quote_ident(&owner)
        ))
        .await
        .unwrap();
    let out = run(job).await;
    let c = check(&out, "source-privileges");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(c.detail.contains("public.secret_stuff"), "{}", c.detail);
    let grant = format!("GRANT {} TO {}, or consent", quote_ident(&owner), quote_ident("postgres"));
    assert!(c.advice.as_deref().unwrap().contains(&grant), "{c:?}");
    assert!(!c.advice.as_deref().unwrap().contains(";;"), "{c:?}");
    drop(admin);
    drop_db(Server::Source, &src).await;
    let admin = connect(&testbed().admin_url(Server::Source, "postgres")).await;
    admin.batch_execute(&format!("DROP ROLE {}", quote_ident(&owner))).await.expect("drop the owner role");
}

#[tokio::test]
async fn t38_forced_row_level_security_fails_and_owner_exempt_rls_passes() {
    let (job, src) = job_with(
        "t38",
        "CREATE TABLE tenants (id int PRIMARY KEY, tenant text); ALTER TABLE tenants ENABLE ROW LEVEL SECURITY; \
         CREATE POLICY only_a ON tenants USING (tenant = 'a');",
    )
    .await;
    let out = run(job.clone()).await;
    assert_eq!(check(&out, "source-row-security").status, CheckStatus::Pass, "the owner is exempt without FORCE");

    connect(&testbed().url(Server::Source, &src))
        .await
        .batch_execute("ALTER TABLE tenants FORCE ROW LEVEL SECURITY")
        .await
        .unwrap();
    let out = run(job).await;
    let c = check(&out, "source-row-security");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(c.detail.contains("public.tenants") && c.advice.as_deref().unwrap().contains("BYPASSRLS"), "{c:?}");
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn tables_without_a_key_large_objects_and_unlogged_tables_are_reported() {
    let (job, src) = job_with(
        "inventory",
        "CREATE TABLE log_lines (at timestamptz, line text); SELECT lo_create(0); \
         CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY);",
    )
    .await;
    let out = run(job.clone()).await;
    let c = check(&out, "keyless-tables");
    assert_eq!(c.status, CheckStatus::Warn);
    assert!(c.detail.contains("public.log_lines"), "{}", c.detail);
    assert_eq!(check(&out, "large-objects").status, CheckStatus::Warn);
    assert!(check(&out, "large-objects").detail.contains("1 large object"));
    assert!(
        check(&out, "large-objects").detail.contains("copied with their OIDs"),
        "{:?}",
        check(&out, "large-objects")
    );
    let c = check(&out, "unlogged-tables");
    assert_eq!(c.status, CheckStatus::Pass, "a snapshot copies unlogged tables");
    assert!(c.detail.contains("public.scratch"));
    assert!(out.ok, "warnings do not stop the run: {}", out.summary);

    let out = run_with(job, Requirements { logical_replication: true }).await;
    assert_eq!(check(&out, "unlogged-tables").status, CheckStatus::Warn, "logical replication skips them");
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn t42_t44_t46_logical_replication_prerequisites_pass_on_the_source_and_fail_where_missing() {
    let req = Requirements { logical_replication: true };
    let (job, src) = job_with("repl", PLAIN).await;
    let out = run_with(job, req).await;
    for name in ["source-wal-level", "source-replication-slots", "source-replication-role", "source-replica-identity"] {
        assert_eq!(check(&out, name).status, CheckStatus::Pass, "{:?}", check(&out, name));
    }
    drop_db(Server::Source, &src).await;

    // The target server has wal_level=replica; a table without a key; a user without replication.
    let db_name = create_db(Server::Target, "repl_src").await;
    let admin = connect(&testbed().admin_url(Server::Target, &db_name)).await;
    let user = unique_name("plain_user");
    let spec = ConnSpec::parse(&testbed().url(Server::Target, &db_name)).unwrap();
    let password = spec.password.clone().unwrap();
    admin
        .batch_execute(&format!(
            "CREATE TABLE events (at timestamptz, what text); CREATE ROLE {u} LOGIN PASSWORD {p}; \
             GRANT SELECT ON events TO {u};",
            u = quote_ident(&user),
            p = pgferry_core::pg::quote_literal(password.expose())
        ))
        .await
        .unwrap();
    let mut as_user = spec.clone();
    as_user.user = user.clone();
    let client = pgferry_core::pg::connect(&as_user, &Session::new("test", "t46")).await.unwrap();
    let checks = db::replication_checks(&client).await.unwrap();
    let by_name = |n: &str| checks.iter().find(|c| c.name == n).unwrap().clone();
    let c = by_name("source-wal-level");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(c.advice.as_deref().unwrap().contains("rds.logical_replication=1"), "{c:?}");
    let c = by_name("source-replica-identity");
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(c.detail.contains("public.events") && c.detail.contains("UPDATE and DELETE"), "{c:?}");
    let c = by_name("source-replication-role");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(c.advice.as_deref().unwrap().contains(&format!("GRANT rds_replication TO {}", quote_ident(&user))));

    // T46: membership in rds_replication is enough, though rolreplication stays false.
    admin.batch_execute(&format!("GRANT rds_replication TO {}", quote_ident(&user))).await.unwrap();
    let checks = db::replication_checks(&client).await.unwrap();
    let c = checks.iter().find(|c| c.name == "source-replication-role").unwrap();
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    drop((client, admin));
    drop_db(Server::Target, &db_name).await;
    let admin = connect(&testbed().admin_url(Server::Target, "postgres")).await;
    admin.batch_execute(&format!("DROP ROLE {}", quote_ident(&user))).await.expect("drop the test user");
}

#[tokio::test]
async fn t14_an_existing_target_with_another_encoding_fails_and_a_missing_one_passes() {
    let (mut job, src) = job_with("t14", PLAIN).await;
    let out = run(job.clone()).await;
    let c = check(&out, "encoding");
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    assert!(c.detail.contains("UTF8"), "{}", c.detail);

    let dst = unique_name("t14_latin");
    let master = connect(&testbed().url(Server::Target, "postgres")).await;
    master
        .batch_execute(&format!(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'",
            quote_ident(&dst)
        ))
        .await
        .unwrap();
    job["target"] = json!({"url": testbed().url(Server::Target, &dst)});
    let out = run(job).await;
    let c = check(&out, "encoding");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(c.detail.contains("SQL_ASCII") && c.advice.as_deref().unwrap().contains("ENCODING 'UTF8'"), "{c:?}");
    drop_db(Server::Target, &dst).await;
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn t17_a_trusted_extension_passes_and_one_needing_a_superuser_on_the_target_fails() {
    let (job, src) = job_with("t17", PLAIN).await;
    let admin = connect(&testbed().admin_url(Server::Source, &src)).await;
    admin.batch_execute("CREATE EXTENSION hstore").await.unwrap();
    let out = run(job.clone()).await;
    let c = check(&out, "extensions");
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    assert!(c.detail.contains("hstore"));

    admin.batch_execute("CREATE EXTENSION pg_stat_statements").await.unwrap();
    let out = run(job).await;
    let c = check(&out, "extensions");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(c.detail.contains("pg_stat_statements (needs a superuser on the target)"), "{}", c.detail);
    // T18: the vanilla target does not preload it either; the advice is the server-side change.
    let c = check(&out, "shared-preload");
    assert_eq!(c.status, CheckStatus::Warn, "{c:?}");
    // (The test bed preloads its RDS shim: the advice keeps what is loaded and adds the library.)
    let advice = c.advice.as_deref().unwrap();
    assert!(
        advice.contains("shared_preload_libraries = '") && advice.contains("pg_stat_statements' and restart"),
        "{c:?}"
    );
    drop(admin);
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn connection_headroom_passes_for_the_default_concurrency_and_fails_for_a_thousand_chunks() {
    let (mut job, src) = job_with("conns", PLAIN).await;
    let out = run(job.clone()).await;
    assert_eq!(check(&out, "source-connections").status, CheckStatus::Pass);
    job["maxConcurrency"] = json!(1000);
    let out = run(job).await;
    let c = check(&out, "target-connections");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(
        c.detail.contains("1000 chunks in flight") && c.advice.as_deref().unwrap().contains("maxConcurrency"),
        "{c:?}"
    );
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn long_running_transactions_on_the_source_are_reported() {
    let (_, src) = job_with("activity", PLAIN).await;
    let client = connect(&testbed().url(Server::Source, &src)).await;
    let quiet = db::source_activity_check(&client, Duration::from_secs(24 * 3600)).await.unwrap();
    assert_eq!(quiet.status, CheckStatus::Pass, "{quiet:?}");

    let other = connect(&testbed().url(Server::Source, &src)).await;
    other.batch_execute("BEGIN; SELECT txid_current();").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let busy = db::source_activity_check(&client, Duration::from_secs(1)).await.unwrap();
    assert_eq!(busy.status, CheckStatus::Warn, "{busy:?}");
    assert!(busy.detail.contains("open for more than 1s"), "{}", busy.detail);
    other.batch_execute("ROLLBACK").await.unwrap();
    drop((client, other));
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn target_privileges_pass_for_the_master_and_fail_on_a_database_it_may_not_create_in() {
    let (mut job, src) = job_with("tpriv", PLAIN).await;
    let out = run(job.clone()).await;
    let c = check(&out, "target-privileges");
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    assert!(c.detail.contains("member of rds_superuser"), "{}", c.detail);

    let dst = unique_name("tpriv_foreign");
    let admin = connect(&testbed().admin_url(Server::Target, "postgres")).await;
    admin.batch_execute(&format!("CREATE DATABASE {}", quote_ident(&dst))).await.unwrap();
    job["target"] = json!({"url": testbed().url(Server::Target, &dst)});
    let out = run(job).await;
    let c = check(&out, "target-privileges");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(c.advice.as_deref().unwrap().contains("GRANT CREATE ON DATABASE"), "{c:?}");
    drop_db(Server::Target, &dst).await;
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn t12_t13_postgres_is_copied_like_any_database_and_data_left_in_it_is_pointed_out() {
    // The job names `postgres` itself: a normal database to copy; rdsadmin is never copied.
    let out = run(json!({
        "source": {"url": testbed().url(Server::Source, "postgres")},
        "target": {"url": testbed().url(Server::Target, &unique_name("t12_dst"))},
    }))
    .await;
    let c = check(&out, "source-database");
    assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
    assert!(c.detail.contains("copying database postgres like any other database"), "{}", c.detail);
    assert!(c.detail.contains("never copied: rdsadmin"), "{}", c.detail);

    // The job names another database while `postgres` holds tables (here on the target server,
    // driven directly so that no other test sees the table).
    let table = unique_name("left_behind");
    let pg_master = connect(&testbed().admin_url(Server::Target, "postgres")).await;
    pg_master.batch_execute(&format!("CREATE TABLE {} (id int)", quote_ident(&table))).await.unwrap();
    let other = create_db(Server::Target, "t12_other").await;
    let spec = ConnSpec::parse(&testbed().url(Server::Target, &other)).unwrap();
    let client = connect(&testbed().url(Server::Target, &other)).await;
    let c = db::source_database_check(&client, &spec, &Session::new("test", "t12")).await.unwrap();
    pg_master.batch_execute(&format!("DROP TABLE {}", quote_ident(&table))).await.unwrap();
    assert_eq!(c.status, CheckStatus::Warn, "{c:?}");
    assert!(c.detail.contains(&format!("public.{table}")), "{}", c.detail);
    assert!(c.advice.as_deref().unwrap().contains("\"database\": \"postgres\""), "{c:?}");
    drop(client);
    drop_db(Server::Target, &other).await;
}

#[tokio::test]
async fn t59_the_source_server_under_another_host_name_is_refused() {
    let (mut job, src) = job_with("t59", PLAIN).await;
    let out = run(job.clone()).await;
    assert_eq!(check(&out, "distinct-servers").status, CheckStatus::Pass);

    let port = testbed().port(Server::Source);
    let other_name = testbed()
        .url(Server::Source, &unique_name("t59_copy"))
        .replace(&format!("@127.0.0.1:{port}"), &format!("@localhost:{port}"));
    job["target"] = json!({"url": other_name.replace("sslmode=verify-full", "sslmode=verify-ca")});
    let out = run(job).await;
    assert!(!out.ok);
    let c = check(&out, "distinct-servers");
    assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
    assert!(c.detail.contains("same server"), "{}", c.detail);
    drop_db(Server::Source, &src).await;
}

#[tokio::test]
async fn the_report_keeps_how_each_side_is_reached_without_secrets() {
    let (job, src) = job_with("facts", PLAIN).await;
    let out = run(job).await;
    let source = out.facts.iter().find(|f| f.side == Side::Source).unwrap();
    assert_eq!(source.endpoint, format!("127.0.0.1:{}", testbed().port(Server::Source)));
    assert_eq!(source.credentials.as_deref(), Some("the password given to the CLI"));
    let text = serde_json::to_string(&out).unwrap();
    assert!(!text.contains("p@ss"), "no password in the report");
    assert_eq!(out.facts.len(), 2);
    drop_db(Server::Source, &src).await;
}
