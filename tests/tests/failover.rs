//! Issue 23: a target that goes away in the middle of `CopyChunks` — restarted with 20 s of
//! downtime, as an RDS reboot or a Multi-AZ failover does — is waited for (the definition retries
//! `Pgferry.ConnectionFailed` for ~8 minutes after preflight, and a dropped connection is
//! `Pgferry.Retryable`): the run goes on where the ledger says, exits well and ends equal.
//!
//! Alone in its test binary: it stops the test bed's target server.

use std::process::Command;
use std::time::{Duration, Instant};

use pgferry_core::asl::Outcome;
use pgferry_tests::{Server, connect, drop_db, run_machine, small_tables_ddl, source_with, step_setup, testbed};

/// Runs the target server's `pg_ctl` (as the OS user postgres when running as root).
fn pg_ctl(args: &[&str]) {
    let bin = testbed().target_pg_bin("pg_ctl");
    let dir = std::env::var("PGFERRY_TESTBED_DIR").unwrap_or_else(|_| "/tmp/pgferry-testbed".to_string());
    let data = format!("{dir}/target");
    let log = format!("{dir}/target.log");
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &bin]);
        c
    } else {
        Command::new(&bin)
    };
    let out = cmd.args(args).args(["-D", &data, "-l", &log, "-w", "-t", "60"]).output().expect("pg_ctl");
    assert!(out.status.success(), "pg_ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_restarted_with_20_seconds_of_downtime_mid_copy_is_waited_for_and_the_run_ends_equal() {
    // Many small tables: CopyChunks lasts long enough to be caught in the middle.
    let (source_db, target_db, _source) = source_with("failover", &small_tables_ddl(150, 3000)).await;
    let (ctx, input) = step_setup(&source_db, &target_db, serde_json::json!({}));

    let admin_url = testbed().admin_url(Server::Target, "postgres");
    let outage = async {
        // As soon as the first rows are being copied into the target database…
        let admin = connect(&admin_url).await;
        let started = Instant::now();
        loop {
            let copying: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'COPY %'",
                    &[&target_db],
                )
                .await
                .unwrap()
                .get(0);
            if copying > 0 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(300), "the copy never started");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(admin);
        // …the server goes down (sessions terminated), stays down 20 s, and comes back.
        let (stop, start) = (tokio::task::spawn_blocking(|| pg_ctl(&["stop", "-m", "fast"])), Duration::from_secs(20));
        stop.await.unwrap();
        let down = Instant::now();
        tokio::time::sleep(start).await;
        tokio::task::spawn_blocking(|| pg_ctl(&["start"])).await.unwrap();
        down.elapsed()
    };
    let ((outcome, report), downtime) = tokio::join!(run_machine(ctx, &input), outage);
    assert!(downtime >= Duration::from_secs(20));
    assert!(matches!(outcome, Outcome::Succeeded(_)), "the run did not survive the restart: {outcome:?}");
    let report = report.expect("the run's report");
    assert!(report.equal, "target differs after the restart");
    assert_eq!(report.tables.len(), 150);
    drop_db(Server::Source, &source_db).await;
    drop_db(Server::Target, &target_db).await;
}
