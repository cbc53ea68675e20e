//! The `pgferry` command's contract, end to end against the RDS-like test bed: a full run through
//! the real state machine definition, malformed jobs that fail with one line and write nothing,
//! and Ctrl-C, which ends a run the way a failed run ends — the slice in flight rolls back and the
//! failure path releases what the run holds — so the next run needs no take-over.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{libpq_tool, pgferry, scratch};
use pgferry_tests::{
    Server, connect, create_db, drop_db, fingerprint, small_tables_ddl, source_with, testbed, unique_name,
};

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

/// Issue 28: misspelt fields are all named at once, each with its suggestion, exit 2.
#[tokio::test]
async fn misspelt_fields_are_all_named_with_a_suggestion_each() {
    let dir = scratch("misspelt");
    let target_db = unique_name("never_created");
    let job = serde_json::json!({
        "sorce": {"url": testbed().url(Server::Source, "postgres")},
        "target": {"url": testbed().url(Server::Target, &target_db)},
        "maxConcurency": 4
    });
    let path = dir.join("job.json");
    std::fs::write(&path, job.to_string()).unwrap();
    let out = pgferry(&["run", path.to_str().unwrap()], &dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `sorce` (did you mean `source`?)"), "{stderr}");
    assert!(stderr.contains("unknown field `maxConcurency` (did you mean `maxConcurrency`?)"), "{stderr}");
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
    // The failing check with its advice, as `pgferry preflight` prints it, and the phase failed.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL source-connect") && stdout.contains("advice:"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("Preflight") && l.contains("failed")), "{stdout}");
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

const INTERRUPT_SHOP: &str = "
    CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
    INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 20000) g;
    CREATE TABLE notes (id int PRIMARY KEY, body text);
    INSERT INTO notes SELECT g, repeat('n', g % 40) FROM generate_series(1, 2000) g;
";

fn write_mode_job(dir: &Path, name: &str, source_db: &str, target_db: &str, mode: &str) -> PathBuf {
    let job = serde_json::json!({
        "source": {"url": testbed().url(Server::Source, source_db)},
        "target": {"url": testbed().url(Server::Target, target_db)},
        "mode": mode
    });
    let path = dir.join(name);
    std::fs::write(&path, job.to_string()).unwrap();
    path
}

/// Waits until `sql` (one boolean) is true on the target, or panics after a minute.
async fn until(client: &tokio_postgres::Client, sql: &str, run_id: &str) {
    let started = Instant::now();
    while !client.query_one(sql, &[&run_id]).await.unwrap().get::<_, bool>(0) {
        assert!(started.elapsed() < Duration::from_secs(60), "timed out waiting for: {sql}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn ctrl_c_stops_a_refresh_mid_copy_and_its_failure_path_releases_the_target_for_the_next_run() {
    let (source_db, target_db, source) = source_with("cli_interrupt", INTERRUPT_SHOP).await;
    let dir = scratch("interrupt");
    let copy = write_mode_job(&dir, "copy.json", &source_db, &target_db, "snapshot");
    let out = pgferry(&["run", copy.to_str().unwrap()], &dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    source.batch_execute("UPDATE items SET name = 'renamed' WHERE id % 100 = 0").await.unwrap();

    // A session of the test holds `items` in SHARE mode, so the refresh stops mid-copy: its repair
    // of the renamed rows waits for the lock. (Not ACCESS EXCLUSIVE: that lock takes a transaction
    // id, which would hold back the marks other tests' runs record meanwhile.)
    let admin = connect(&testbed().admin_url(Server::Target, &target_db)).await;
    let blocker = connect(&testbed().admin_url(Server::Target, &target_db)).await;
    blocker.batch_execute("BEGIN; LOCK TABLE items IN SHARE MODE").await.unwrap();
    let refresh = write_mode_job(&dir, "refresh.json", &source_db, &target_db, "refresh");
    let run_id = pgferry_tests::unique_name("run-interrupted");
    let child = Command::new(env!("CARGO_BIN_EXE_pgferry"))
        .args(["run", refresh.to_str().unwrap(), "--run-id", &run_id, "--store"])
        .arg(dir.join("artifacts"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    until(
        &admin,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
         AND application_name LIKE '%' || $1 || '%')",
        &run_id,
    )
    .await;
    let held: bool =
        admin.query_one("SELECT active FROM pgferry.runs WHERE run_id = $1", &[&run_id]).await.unwrap().get(0);
    assert!(held, "the refresh holds the target while it copies");

    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    // The waiting statement is abandoned with its connection; let it through so it can end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.batch_execute("ROLLBACK").await.unwrap();
    let pid = child.id().to_string();
    let waited = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
    )
    .await;
    let Ok(out) = waited else {
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        panic!("pgferry did not end within two minutes of Ctrl-C");
    };
    let out = out.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains(&format!("interrupted: stopping run {run_id}")), "{stderr}");
    assert!(stderr.contains("Pgferry.Interrupted"), "{stderr}");

    // The failure path ran: the target is released, and the failure is on record.
    let held: bool =
        admin.query_one("SELECT active FROM pgferry.runs WHERE run_id = $1", &[&run_id]).await.unwrap().get(0);
    assert!(!held, "the interrupted refresh released the target");
    let failure = dir.join("artifacts").join("runs").join(&run_id).join("failure.json");
    let failure: serde_json::Value = serde_json::from_slice(&std::fs::read(&failure).unwrap()).unwrap();
    assert_eq!(failure["error"], "Pgferry.Interrupted", "{failure}");

    // The next refresh needs no take-over and ends equal, the renamed items copied.
    let out = pgferry(&["run", refresh.to_str().unwrap()], &dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let renamed: i64 = admin.query_one("SELECT count(*) FROM items WHERE name = 'renamed'", &[]).await.unwrap().get(0);
    assert_eq!(renamed, 200);
    drop((admin, blocker, source));
    drop_db(Server::Target, &target_db).await;
    drop_db(Server::Source, &source_db).await;
}

/// Issue 24: a run killed with SIGKILL in the middle of `CopyChunks` (no failure path runs) is
/// continued with `pgferry run JOB --resume RUN_ID`: preflight recognises the run's own partial
/// copy, the schema sections and the plan are kept, committed slices are not copied again, and
/// the run says how many chunks it found copied; exit 0, every table equal.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_mid_copy_is_resumed_and_ends_equal() {
    let (source_db, target_db, source) = source_with("cli_resume", &small_tables_ddl(120, 2000)).await;
    let dir = scratch("resume");
    let job = dir.join("job.json");
    std::fs::write(
        &job,
        serde_json::json!({
            "source": {"url": testbed().url(Server::Source, &source_db)},
            "target": {"url": testbed().url(Server::Target, &target_db)},
            "maxConcurrency": 1
        })
        .to_string(),
    )
    .unwrap();
    let run_id = unique_name("run-killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgferry"))
        .args(["run", job.to_str().unwrap(), "--run-id", &run_id, "--store"])
        .arg(dir.join("artifacts"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once some chunks are committed (and well before all are).
    let started = Instant::now();
    loop {
        let committed: i64 = match connect_opt(&testbed().admin_url(Server::Target, &target_db)).await {
            Some(c) => c
                .query_one(
                    "SELECT CASE WHEN to_regclass('pgferry.copied_chunks') IS NULL THEN 0 \
                     ELSE (SELECT count(*) FROM pgferry.copied_chunks) END",
                    &[],
                )
                .await
                .map_or(0, |r| r.get(0)),
            None => 0,
        };
        if committed >= 10 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "the copy never got going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // A new run is refused the target, with how to continue the killed one.
    let out = pgferry(&["preflight", job.to_str().unwrap()], &dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&format!("--resume {run_id}")), "{stdout}");
    // Resumed as a job started in AWS would be: `"resume"` in the job (the definition takes it as
    // the run id); `--resume RUN_ID` does the same for a job without it.
    let mut resumed: serde_json::Value = serde_json::from_slice(&std::fs::read(&job).unwrap()).unwrap();
    resumed["resume"] = serde_json::Value::String(run_id.clone());
    let resumed_job = dir.join("resumed.json");
    std::fs::write(&resumed_job, resumed.to_string()).unwrap();
    let out = pgferry(&["run", resumed_job.to_str().unwrap()], &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let line = stderr.lines().find(|l| l.contains(&format!("resumed {run_id}:"))).unwrap_or_else(|| panic!("{stderr}"));
    let copied: usize =
        line.split(": ").nth(2).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(copied >= 9 && line.ends_with("of 120 chunks already copied"), "{line}");
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    for i in [0, 59, 119] {
        let table = format!("t{i}");
        assert_eq!(fingerprint(&source, &table, "id").await, fingerprint(&target, &table, "id").await, "{table}");
    }
    let slices: i64 = target
        .query_one("SELECT count(*) FROM pgferry.copied_chunks WHERE run_id = $1", &[&run_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(slices, 120, "each slice committed once, by one of the two invocations");
    drop((target, source));
    drop_db(Server::Target, &target_db).await;
    drop_db(Server::Source, &source_db).await;
}

/// A connection, or `None` while the database does not exist yet.
async fn connect_opt(url: &str) -> Option<tokio_postgres::Client> {
    let spec = pgferry_core::pg::ConnSpec::parse(url).ok()?;
    pgferry_core::pg::connect(&spec, &pgferry_core::pg::Session::new("test", "resume")).await.ok()
}
