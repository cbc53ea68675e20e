//! The `pgferry` command's contract, end to end against the RDS-like test bed: a full run through
//! the real state machine definition, and malformed jobs that fail with one line and write nothing.

mod common;

use std::path::{Path, PathBuf};

use common::{libpq_tool, pgferry, scratch};
use pgferry_tests::{Server, connect, create_db, drop_db, fingerprint, testbed, unique_name};

fn write_job(dir: &Path, source_db: &str, target_db: &str) -> PathBuf {
    let job = serde_json::json!({
        "source": {"url": testbed().url(Server::Source, source_db)},
        "target": {"url": testbed().url(Server::Target, target_db)},
        "mode": "snapshot"
    });
    let path = dir.join("job.json");
    std::fs::write(&path, job.to_string()).unwrap();
    path
}

async fn constraints(client: &tokio_postgres::Client) -> Vec<(String, String, String)> {
    client
        .query(
            "SELECT conrelid::regclass::text, contype::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn run_copies_pgbench_scale_10_into_a_missing_database_equal_with_keys() {
    let source_db = create_db(Server::Source, "pgbench_src").await;
    libpq_tool("pgbench", &["-q", "-i", "-s", "10", "--foreign-keys"], Server::Source, &source_db);
    let target_db = unique_name("pgbench_dst");
    let dir = scratch("pgbench");
    let job = write_job(&dir, &source_db, &target_db);
    let report = dir.join("report.json");

    let out = pgferry(&["run", job.to_str().unwrap(), "--report", report.to_str().unwrap()], &dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgferry run failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("CopyChunks") && stdout.contains("target equals source"), "{stdout}");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["verification"]["equal"], true);
    assert!(!stderr.contains("p@ss"), "no secret may reach the output");

    let source = connect(&testbed().url(Server::Source, &source_db)).await;
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    for (table, key) in [
        ("pgbench_accounts", "aid"),
        ("pgbench_branches", "bid"),
        ("pgbench_tellers", "tid"),
        ("pgbench_history", "tid, bid, aid, mtime, delta"),
    ] {
        assert_eq!(fingerprint(&source, table, key).await, fingerprint(&target, table, key).await, "{table}");
    }
    let (accounts, _) = fingerprint(&target, "pgbench_accounts", "aid").await;
    assert_eq!(accounts, 1_000_000);
    let source_constraints = constraints(&source).await;
    let target_constraints = constraints(&target).await;
    assert_eq!(source_constraints, target_constraints);
    assert_eq!(source_constraints.iter().filter(|c| c.1 == "p").count(), 3, "{source_constraints:?}");
    assert!(source_constraints.iter().filter(|c| c.1 == "f").count() >= 4, "{source_constraints:?}");

    // The single-step commands on the same pair.
    let job = job.to_str().unwrap();
    let out = pgferry(&["plan", job], &dir);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"public\".\"pgbench_accounts\""));
    let out = pgferry(&["preflight", job], &dir);
    assert_eq!(out.status.code(), Some(1), "a populated target must fail preflight");
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL target-empty"));
    let out = pgferry(&["verify", job], &dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 tables, 0 sequences and 0 large objects equal"));
    target.batch_execute("UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1").await.unwrap();
    let out = pgferry(&["verify", job], &dir);
    assert_eq!(out.status.code(), Some(1), "one changed value must fail verification");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l.contains("pgbench_branches") && l.contains("DIFFERS")), "{stdout}");

    // A refresh with the same pair re-copies that one row, says so, and verify agrees after it.
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(job).unwrap()).unwrap();
    doc["mode"] = "refresh".into();
    let refresh_job = dir.join("refresh.json");
    std::fs::write(&refresh_job, doc.to_string()).unwrap();
    let out = pgferry(&["run", refresh_job.to_str().unwrap()], &dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("refresh re-copied 1 row and deleted 1"), "{stdout}");
    assert!(stdout.contains("target equals source: 1000110 rows in 4 tables (1 copied by this run)"), "{stdout}");
    let out = pgferry(&["verify", job], &dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    drop(target);
    drop_db(Server::Target, &target_db).await;
    drop_db(Server::Source, &source_db).await;
}

async fn target_database_exists(name: &str) -> bool {
    let admin = connect(&testbed().admin_url(Server::Target, "postgres")).await;
    admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await.unwrap().is_some()
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).lines().last().unwrap_or("").to_string()
}

#[tokio::test]
async fn run_refuses_malformed_json_with_one_line() {
    let dir = scratch("badjson");
    let job = dir.join("job.json");
    std::fs::write(&job, "{\"source\": {\"url\": ").unwrap();
    let out = pgferry(&["run", job.to_str().unwrap()], &dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("pgferry: invalid job: EOF while parsing"), "{stderr}");
}

#[tokio::test]
async fn run_refuses_an_unknown_field_naming_it_and_writes_nothing() {
    let dir = scratch("unknown");
    let target_db = unique_name("never_created");
    let job = serde_json::json!({
        "source": {"url": testbed().url(Server::Source, "postgres")},
        "target": {"url": testbed().url(Server::Target, &target_db)},
        "mode": "snapshot",
        "paralelism": 4
    });
    let path = dir.join("job.json");
    std::fs::write(&path, job.to_string()).unwrap();
    let out = pgferry(&["run", path.to_str().unwrap()], &dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unknown field `paralelism`"), "{stderr}");
    assert!(!target_database_exists(&target_db).await);
}

#[tokio::test]
async fn run_with_an_unreachable_source_fails_preflight_in_one_line_and_writes_nothing() {
    let dir = scratch("unreachable");
    let target_db = unique_name("never_created");
    let unreachable =
        testbed().url(Server::Source, "shop").replace(&format!(":{}/", testbed().port(Server::Source)), ":1/");
    let job = serde_json::json!({
        "source": {"url": unreachable},
        "target": {"url": testbed().url(Server::Target, &target_db)}
    });
    let path = dir.join("job.json");
    std::fs::write(&path, job.to_string()).unwrap();
    let out = pgferry(&["run", path.to_str().unwrap()], &dir);
    assert_eq!(out.status.code(), Some(1));
    let reason = last_line(&out.stderr);
    assert!(reason.starts_with("pgferry: Pgferry.PreflightFailed: source-connect"), "{reason}");
    assert!(reason.contains("127.0.0.1:1/shop"), "{reason}");
    assert!(!target_database_exists(&target_db).await);
}

#[tokio::test]
async fn run_refuses_a_non_empty_target_and_leaves_it_untouched() {
    let source_db = create_db(Server::Source, "src_small").await;
    let target_db = create_db(Server::Target, "dst_busy").await;
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    target.batch_execute("CREATE TABLE precious (id int); INSERT INTO precious VALUES (42)").await.unwrap();
    let dir = scratch("nonempty");
    let job = write_job(&dir, &source_db, &target_db);
    let out = pgferry(&["run", job.to_str().unwrap()], &dir);
    assert_eq!(out.status.code(), Some(1));
    let reason = last_line(&out.stderr);
    assert!(reason.contains("target-empty") && reason.contains("precious"), "{reason}");
    let n: i64 = target.query_one("SELECT count(*) FROM precious", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    drop(target);
    drop_db(Server::Target, &target_db).await;
    drop_db(Server::Source, &source_db).await;
}
