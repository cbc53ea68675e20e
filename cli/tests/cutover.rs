//! `pgferry run` of a continuous job, then `pgferry cutover` with the same job file: the target
//! follows writes made after the run, and the cutover leaves no slot, publication or
//! subscription (RDS-CASES T41, T43).

mod common;

use common::{libpq_tool, pgferry, scratch};
use pgferry_tests::{Server, connect, drop_db, fingerprint, source_with, testbed};

#[tokio::test(flavor = "multi_thread")]
async fn continuous_run_then_cutover_from_the_command_line() {
    let (source_db, target_db, source) = source_with(
        "cli_cont",
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);
         INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 1000) g;",
    )
    .await;
    let dir = scratch("cutover");
    let job = dir.join("job.json");
    let doc = serde_json::json!({
        "source": {"url": testbed().url(Server::Source, &source_db)},
        "target": {"url": testbed().url(Server::Target, &target_db)},
        "mode": "continuous",
        "continuous": {"waitSeconds": 1, "sslMode": "verify-full", "sslRootCert": testbed().ca()}
    });
    std::fs::write(&job, doc.to_string()).unwrap();
    let out = pgferry(&["run", job.to_str().unwrap()], &dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pgferry run: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("replication is running"), "{stdout}");

    // Written after the run: arrives through the subscription, not a copy.
    libpq_tool(
        "psql",
        &[
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "INSERT INTO items (name) SELECT 'late ' || g FROM generate_series(1, 50) g; \
             UPDATE items SET name = name || '!' WHERE id % 10 = 0; DELETE FROM items WHERE id % 7 = 0;",
        ],
        Server::Source,
        &source_db,
    );
    let out = pgferry(&["cutover", job.to_str().unwrap()], &dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pgferry cutover: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("cutover done"), "{stdout}");
    // The rows the target holds, verified; a cutover copies none itself.
    assert!(stdout.contains(" rows in 1 tables (0 copied by this run)"), "{stdout}");

    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    assert_eq!(fingerprint(&source, "items", "id").await, fingerprint(&target, "items", "id").await);
    let last = "SELECT last_value FROM items_id_seq";
    let (s, t): (i64, i64) =
        (source.query_one(last, &[]).await.unwrap().get(0), target.query_one(last, &[]).await.unwrap().get(0));
    assert_eq!(s, t, "sequence set at cutover");
    let admin = connect(&testbed().admin_url(Server::Source, &source_db)).await;
    let left: i64 = admin
        .query_one(
            "SELECT (SELECT count(*) FROM pg_replication_slots WHERE database = current_database())
                  + (SELECT count(*) FROM pg_publication)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "slots or publications left on the source");
    drop_db(Server::Source, &source_db).await;
    drop_db(Server::Target, &target_db).await;
    let _ = std::fs::remove_dir_all(&dir);
}
