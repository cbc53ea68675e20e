//! Copies between PostgreSQL majors, as the test bed's pair of versions makes them
//! (`PGFERRY_SOURCE_PG`, `PGFERRY_TARGET_PG`; `scripts/test` runs this file on each pair of its
//! matrix and on a copy down, 17 → 16).
//!
//! A copy into an older major is refused by preflight unless the job consents
//! (`allowOlderTarget`); with consent it is done, and every statement the older target does not
//! understand is skipped and named in the schema report (rule `version.older-target`), never
//! silently. On a pair where the target is as new as the source, the same job needs no consent.

use pgferry_core::asl::Outcome;
use pgferry_core::dump::report::SchemaReport;
use pgferry_core::preflight;
use pgferry_core::step::{CheckStatus, keys};
use pgferry_tests::{Server, connect, drop_db, run_machine, source_with, step_setup, testbed, unique_name};

async fn major(server: Server) -> i32 {
    let client = connect(&testbed().admin_url(server, "postgres")).await;
    let v: i32 = client.query_one("SELECT current_setting('server_version_num')::int", &[]).await.unwrap().get(0);
    v / 10000
}

#[tokio::test]
async fn a_copy_to_an_older_major_needs_consent_and_reports_every_statement_the_target_refuses() {
    let (source_major, target_major) = (major(Server::Source).await, major(Server::Target).await);
    let reader = unique_name("ver_reader");
    connect(&testbed().url(Server::Source, "postgres"))
        .await
        .batch_execute(&format!("CREATE ROLE {reader} NOLOGIN"))
        .await
        .unwrap();
    // From 17: MAINTAIN, a privilege an older target cannot grant (the sanitizer knows it), and
    // JSON_TABLE, syntax an older target does not understand (only its answer tells).
    let newer = if source_major >= 17 {
        format!(
            "GRANT MAINTAIN ON items TO {reader};
             CREATE VIEW tabled AS SELECT * FROM JSON_TABLE('[1, 2]'::jsonb, '$[*]' COLUMNS (v int PATH '$'));"
        )
    } else {
        String::new()
    };
    let (source_db, target_db, _source) = source_with(
        "versions",
        &format!(
            "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g;
             CREATE VIEW named AS SELECT id, upper(name) AS name FROM items;
             GRANT SELECT ON items TO {reader}; {newer}"
        ),
    )
    .await;

    let (ctx, input) = step_setup(&source_db, &target_db, serde_json::json!({}));
    let out = preflight::run(&ctx, &input).await.unwrap();
    let check = out.checks.iter().find(|c| c.name == "target-version").expect("target-version check");
    if target_major >= source_major {
        assert_eq!(check.status, CheckStatus::Pass, "{check:?}");
    } else {
        assert_eq!(check.status, CheckStatus::Fail, "a copy down needs consent: {check:?}");
        assert!(check.advice.as_deref().unwrap_or_default().contains("allowOlderTarget"), "{check:?}");
    }

    let (ctx, input) = step_setup(&source_db, &target_db, serde_json::json!({"allowOlderTarget": true}));
    let store = ctx.store.clone();
    let (outcome, report) = run_machine(ctx, &input).await;
    let report = report.expect("a report");
    assert!(matches!(outcome, Outcome::Succeeded(_)), "{outcome:?}\n{}", report.inventory.summary());
    assert!(report.equal, "{}", report.inventory.summary());
    assert!(report.tables.iter().all(|t| t.equal && t.source_rows == t.target_rows), "{:?}", report.tables);
    let pre: SchemaReport = store.get_json(&keys::schema_report(&input.run_id, "pre-data")).await.unwrap();
    let statements: Vec<_> = pre.plans.iter().flat_map(|p| &p.statements).collect();
    let by_rule = |rule: &str| statements.iter().filter(|s| s.rule.as_deref() == Some(rule)).collect::<Vec<_>>();
    let (refused, dropped) = (by_rule("version.older-target"), by_rule("privilege.version"));
    if target_major < source_major && !newer.is_empty() {
        assert!(
            refused
                .iter()
                .any(|s| s.before.contains("JSON_TABLE") && s.reason.as_deref().is_some_and(|r| !r.is_empty())),
            "the view the target does not understand is reported with its answer: {refused:#?}"
        );
        assert!(
            dropped
                .iter()
                .any(|s| s.before.contains("MAINTAIN") && s.after.as_deref().is_some_and(|a| !a.contains("MAINTAIN"))),
            "MAINTAIN is dropped from the grant, SELECT kept: {dropped:#?}"
        );
    } else {
        assert!(refused.is_empty() && dropped.is_empty(), "nothing refused from {source_major} to {target_major}");
    }

    drop_db(Server::Target, &target_db).await;
    drop_db(Server::Source, &source_db).await;
    for server in [Server::Source, Server::Target] {
        let admin = connect(&testbed().admin_url(server, "postgres")).await;
        admin.batch_execute(&format!("DROP ROLE IF EXISTS {reader}")).await.unwrap();
    }
}
