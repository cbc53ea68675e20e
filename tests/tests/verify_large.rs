//! Verification edge cases of RDS-CASES T55 that `verify.rs` does not cover: a table larger than
//! 1 GiB (no single aggregate over the table's text, which would hit the 1 GB value limit), text
//! keys chunked under a non-C collation, and databases whose default time zones differ.

use std::time::Instant;

use pgferry_core::plan::PlanOptions;
use pgferry_tests::copied::copy_with_steps;
use pgferry_tests::{Server, connect, source_with, testbed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t55_a_table_larger_than_1_gib_verifies_equal_and_one_changed_row_is_named() {
    let started = Instant::now();
    // ~1.9 kB rows kept inline and uncompressed (STORAGE EXTERNAL), filled in one INSERT…SELECT.
    let (source_db, target_db, source) = source_with(
        "t55_1gib",
        "CREATE TABLE big (id bigint PRIMARY KEY, payload text NOT NULL); \
         ALTER TABLE big ALTER COLUMN payload SET STORAGE EXTERNAL; \
         INSERT INTO big SELECT g, repeat(md5(g::text), 59) FROM generate_series(1, 600000) g;",
    )
    .await;
    let size: i64 = source.query_one("SELECT pg_total_relation_size('big')", &[]).await.unwrap().get(0);
    assert!(size > 1 << 30, "the table has {size} bytes, not more than 1 GiB");
    let generated = started.elapsed();

    let c = copy_with_steps(&source_db, &target_db, None).await;
    assert!(c.plan.verify_items.len() > 1, "a 1 GiB table is verified in several chunks");
    let copied_at = started.elapsed();
    let report = c.verify_all().await;
    assert!(report.equal(), "{:#?}\n{}", report.tables, report.inventory.summary());
    assert_eq!(report.tables[0].target_rows, 600_000);
    let verified_at = started.elapsed();

    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    target.batch_execute("UPDATE big SET payload = 'changed' WHERE id = 424242").await.unwrap();
    let report = c.verify_all().await;
    assert!(!report.equal());
    assert_eq!(report.tables[0].differences.different, vec!["424242"]);
    assert!(report.tables[0].differences.missing_on_target.is_empty());
    assert!(report.inventory.equal(), "{}", report.inventory.summary());
    eprintln!(
        "t55 1 GiB: {size} bytes; generated in {:.1}s, copied in {:.1}s, verified in {:.1}s, \
         drill-down verify in {:.1}s, total {:.1}s",
        generated.as_secs_f64(),
        (copied_at - generated).as_secs_f64(),
        (verified_at - copied_at).as_secs_f64(),
        (started.elapsed() - verified_at).as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop((source, target));
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t55_text_keys_under_a_non_c_collation_are_chunked_and_verified_equal() {
    // ICU (or a libc locale, on servers built without ICU) orders case and accents unlike bytes:
    // the chunk bounds are compared under the key's collation on both sides, so no row falls
    // between two chunks.
    let collation = if pgferry_tests::icu_available().await {
        "CREATE COLLATION words_order (provider = icu, locale = 'und')"
    } else {
        "CREATE COLLATION words_order (provider = libc, locale = 'de_DE.UTF-8')"
    };
    let (source_db, target_db, _source) = source_with(
        "t55_icu",
        &format!(
            r#"{collation};
               CREATE TABLE words (w text COLLATE words_order PRIMARY KEY, n int);
               INSERT INTO words SELECT v || g, g FROM generate_series(1, 4000) g,
                 unnest(ARRAY['apple', 'Apple', 'äpfel', 'Zebra', 'zebra', 'éclair', 'eclair', '_x', '10', '9']) v;"#
        ),
    )
    .await;
    let c = copy_with_steps(&source_db, &target_db, Some(PlanOptions { slice_bytes: 64 * 1024, slices_per_chunk: 2 }))
        .await;
    assert!(c.plan.verify_items.len() > 2, "{} verify items", c.plan.verify_items.len());
    let report = c.verify_all().await;
    assert!(report.equal(), "{:#?}\n{}", report.tables, report.inventory.summary());
    assert_eq!(report.tables[0].source_rows, 40_000);
    let target = connect(&testbed().url(Server::Target, &c.target_db)).await;
    target.batch_execute("UPDATE words SET n = -1 WHERE w = 'äpfel77'").await.unwrap();
    let report = c.verify_all().await;
    assert_eq!(report.tables[0].differences.different, vec!["äpfel77"]);
    drop(target);
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t55_databases_with_different_default_time_zones_hash_timestamptz_equal() {
    let (source_db, target_db, source) = source_with(
        "t55_tz",
        "CREATE TABLE events (id int PRIMARY KEY, at timestamptz, d date, t timetz);
         INSERT INTO events VALUES (1, '2024-03-31 01:30:00+01', '2024-03-31', '10:00+02'),
                                   (2, '2024-10-27 02:30:00+02', '2024-10-27', '23:59:59-11'),
                                   (3, 'infinity', '-infinity', NULL);",
    )
    .await;
    let c = copy_with_steps(&source_db, &target_db, None).await;
    // Each database's default time zone differs; the verify sessions pin UTC.
    for (server, db, tz) in
        [(Server::Source, &source_db, "Pacific/Chatham"), (Server::Target, &target_db, "America/St_Johns")]
    {
        connect(&testbed().url(server, db))
            .await
            .batch_execute(&format!("ALTER DATABASE {} SET TimeZone = '{tz}'", pgferry_core::pg::quote_ident(db)))
            .await
            .unwrap();
    }
    let report = c.verify_all().await;
    assert!(report.tables.iter().all(|t| t.equal), "{:#?}", report.tables);
    // The databases themselves differ, and the inventory says so.
    let tz = report.inventory.unexplained.iter().find(|d| d.object == "database" && d.aspect == "setting TimeZone");
    assert!(tz.is_some_and(|d| d.target.as_deref() == Some("America/St_Johns")), "{}", report.inventory.summary());
    assert!(!report.equal());
    drop(source);
    c.cleanup().await;
}
