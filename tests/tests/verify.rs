//! Verification against the test bed: hashes that are equal exactly when the data is, whatever
//! the client settings (RDS-CASES T55), and a drill-down that names the differing keys.

use pgferry_core::plan::PlanOptions;
use pgferry_tests::copied::{Copied, copy_with_steps};
use pgferry_tests::source_with;

/// Builds a source with `ddl`, copies it with pgferry's steps (schema, chunks, post-data).
async fn copied(prefix: &str, ddl: &str) -> Copied {
    let (source_db, target_db, _source) = source_with(prefix, ddl).await;
    copy_with_steps(&source_db, &target_db, Some(PlanOptions { slice_bytes: 256 * 1024, slices_per_chunk: 4 })).await
}

const EDGES: &str = r#"
    CREATE TABLE edges (id int PRIMARY KEY, t text, j json, x xml, p point, ts timestamptz, f float8, r real,
                        b bytea, c text COLLATE "C", n numeric, iv interval, arr int[]);
    INSERT INTO edges VALUES
      (1, NULL, '{"a": 1,  "b": [1, 2]}', '<a>1</a>', '(1,2)', '2024-03-31 01:30:00+01', '-0', '-0', '\x00ff', 'Zebra', 1.50, '1 day', '{1,NULL}'),
      (2, '', '[]', '<b/>', '(0,0)', '2024-10-27 02:30:00+02', 'NaN', 'Infinity', '\x', 'apple', -0.0, '-1 mon', '{}'),
      (3, 'é', 'null', NULL, NULL, 'infinity', '-Infinity', '1e-40', NULL, '', 1e-20, NULL, NULL),
      (4, 'a\b', '"x"', '<c>&amp;</c>', '(-1.5,2e10)', '1970-01-01 00:00:00+00', 1e308, '3.4e38', '\xdeadbeef', 'ä', 'NaN', '1 year 2 mons', '{{1,2},{3,4}}');
    CREATE TABLE empty_one (id int PRIMARY KEY, v text);
    CREATE TABLE dup_rows (v text);
    INSERT INTO dup_rows VALUES ('same'), ('same'), ('other');
"#;

#[tokio::test]
async fn t55_edge_values_verify_equal_and_one_changed_byte_is_found() {
    let c = copied("t55", EDGES).await;
    let report = c.verify_all().await;
    assert!(report.equal, "{report:#?}");
    assert_eq!(report.tables.len(), 3);

    let target = c.target().await;
    // A client with other settings changes nothing: the verify session pins its own.
    target
        .batch_execute("SET TimeZone = 'America/St_Johns'; SET extra_float_digits = 0; SET bytea_output = 'escape'")
        .await
        .unwrap();
    target.batch_execute("UPDATE edges SET b = '\\x00fe' WHERE id = 1").await.unwrap();
    // NULL and '' must not collide.
    target.batch_execute("UPDATE edges SET t = '' WHERE id = 1; UPDATE edges SET t = NULL WHERE id = 2").await.unwrap();
    // Two equal rows do not cancel out: replacing a duplicate by a third copy is a difference.
    target.batch_execute("UPDATE dup_rows SET v = 'same' WHERE v = 'other'").await.unwrap();
    let report = c.verify_all().await;
    let table = |name: &str| report.tables.iter().find(|t| t.table.name == name).unwrap();
    assert!(!table("edges").equal);
    assert_eq!(table("edges").differences.different, vec!["1", "2"]);
    assert!(!table("dup_rows").equal, "a keyless table is compared as a whole");
    assert!(table("empty_one").equal);
    drop(target);
    c.cleanup().await;
}

#[tokio::test]
async fn rows_swapping_a_value_and_values_equal_but_written_differently_are_found() {
    // Integers, text and timestamps hash by their type's own function; floats and numerics by
    // their text form (-0 = 0 and 1.5 = 1.50 for their hash functions, not for a copy).
    let c = copied(
        "swap",
        "CREATE TABLE m (id int PRIMARY KEY, qty int, label text, at timestamptz, f float8, n numeric);
         INSERT INTO m SELECT g, g * 10, 'l' || g, timestamptz '2025-01-01' + g * interval '1 h', g / 4.0, g / 2.0
           FROM generate_series(1, 8) g;",
    )
    .await;
    let target = c.target().await;
    // The sum over rows must not be a linear combination of column hashes: swapping one
    // column's values between two rows changes it.
    target.batch_execute("UPDATE m SET qty = CASE id WHEN 1 THEN 20 ELSE 10 END WHERE id IN (1, 2)").await.unwrap();
    let report = c.verify_all().await;
    assert!(!report.equal);
    assert_eq!(report.tables[0].differences.different, vec!["1", "2"]);
    target
        .batch_execute(
            "UPDATE m SET qty = id * 10; UPDATE m SET f = '-0' WHERE id = 3; UPDATE m SET n = 2.00 WHERE id = 4; \
             UPDATE m SET label = '' WHERE id = 5; UPDATE m SET label = NULL WHERE id = 6",
        )
        .await
        .unwrap();
    let source =
        pgferry_tests::connect(&pgferry_tests::testbed().url(pgferry_tests::Server::Source, &c.source_db)).await;
    source.batch_execute("UPDATE m SET f = 0 WHERE id = 3; UPDATE m SET label = '' WHERE id = 6").await.unwrap();
    let report = c.verify_all().await;
    let mut different = report.tables[0].differences.different.clone();
    different.sort();
    assert_eq!(different, vec!["3", "4", "5", "6"], "{report:#?}");
    drop((source, target));
    c.cleanup().await;
}

#[tokio::test]
async fn a_differing_chunk_is_drilled_down_to_missing_extra_and_different_keys() {
    let c = copied(
        "drill",
        "CREATE TABLE big (id bigint PRIMARY KEY, v text NOT NULL);
         INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 60000) g;
         CREATE TABLE small (k text PRIMARY KEY, n int);
         INSERT INTO small SELECT 'k' || g, g FROM generate_series(1, 50) g;
         CREATE SEQUENCE invoice_no; SELECT setval('invoice_no', 4242);
         SELECT lo_from_bytea(777001, 'attached');",
    )
    .await;
    assert!(c.plan.verify_items.iter().filter(|i| i.table.name == "big").count() >= 2);
    assert!(c.verify_all().await.equal);
    let target = c.target().await;
    target
        .batch_execute(
            "UPDATE big SET v = 'changed' WHERE id = 31337; DELETE FROM big WHERE id = 4242; \
             INSERT INTO small VALUES ('k999', 999); SELECT nextval('invoice_no'); \
             SELECT lo_unlink(777001)",
        )
        .await
        .unwrap();
    let report = c.verify_all().await;
    assert!(!report.equal);
    let big = report.tables.iter().find(|t| t.table.name == "big").unwrap();
    assert_eq!(big.differences.different, vec!["31337"]);
    assert_eq!(big.differences.missing_on_target, vec!["4242"]);
    assert!(big.differences.extra_on_target.is_empty());
    let small = report.tables.iter().find(|t| t.table.name == "small").unwrap();
    assert_eq!(small.differences.extra_on_target, vec!["k999"]);
    assert_eq!(report.sequences_differing.len(), 1);
    assert_eq!(report.sequences_differing[0].source, Some((4242, true)));
    assert_eq!(report.sequences_differing[0].target, Some((4243, true)));
    assert_eq!(report.large_objects.missing_on_target, vec![777001]);
    drop(target);
    c.cleanup().await;
}
