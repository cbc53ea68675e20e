//! Mode `refresh` against the test bed: after a copy, only what differs is re-copied, an
//! unchanged database copies no rows, a target that is not an earlier pgferry copy is refused
//! (RDS-CASES T57), and table shape changes stop the refresh unless the job consents to rebuilds.

use std::sync::Arc;

use pgferry_core::asl::{Execution, Outcome, StateMachine};
use pgferry_core::context::StepContext;
use pgferry_core::plan::{self, PlanOptions};
use pgferry_core::refresh::TableAction;
use pgferry_core::runner::{self, LocalEnvironment};
use pgferry_core::step::{CheckStatus, ChunkInput, CopyChunkOutput, SchemaRequest, StepInput, keys};
use pgferry_core::verify::refresh::RefreshSummary;
use pgferry_core::{ErrorKind, copy, schema, verify};
use pgferry_tests::{Server, connect, create_db, drop_db, run_machine, source_with, step_setup, testbed};
use tokio_postgres::Client;

const SHOP: &str = r#"
    CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text);
    INSERT INTO customers SELECT g, 'customer ' || g, CASE WHEN g % 7 <> 0 THEN 'c' || g || '@example.com' END
      FROM generate_series(1, 2000) g;
    CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers ON DELETE CASCADE,
                         amount numeric(10, 2) NOT NULL, placed timestamptz NOT NULL);
    INSERT INTO orders (customer_id, amount, placed)
      SELECT 1 + g % 2000, (g % 1000) / 10.0, timestamptz '2025-01-01' + g * interval '1 min'
      FROM generate_series(1, 20000) g;
    CREATE TABLE order_lines (order_id bigint NOT NULL REFERENCES orders, line int NOT NULL, sku text NOT NULL,
                              qty int NOT NULL, PRIMARY KEY (order_id, line));
    INSERT INTO order_lines SELECT 1 + g / 2, g % 2, 'sku-' || (g % 311), 1 + g % 5 FROM generate_series(0, 39999) g;
    CREATE TABLE notes (id int PRIMARY KEY, body text);
    INSERT INTO notes SELECT g, repeat('n', g % 50) FROM generate_series(1, 500) g;
    CREATE TABLE audit_log (at timestamptz NOT NULL, line text NOT NULL);
    INSERT INTO audit_log SELECT timestamptz '2025-01-01' + g * interval '1 s', 'event ' || g FROM generate_series(1, 5000) g;
    CREATE INDEX orders_customer_idx ON orders (customer_id);
    SELECT lo_from_bytea(880001, 'first'), lo_from_bytea(880002, 'second');
"#;

/// What `pgferry verify JOB` does: plan, hash every verify item on both sides, report.
async fn verify_now(source_db: &str, target_db: &str) -> verify::Report {
    let (ctx, input) = step_setup(source_db, target_db, serde_json::json!({}));
    plan::run(&ctx, &input).await.unwrap();
    let plan: plan::Plan = ctx.store.get_json(&keys::plan(&input.run_id)).await.unwrap();
    for item in &plan.verify_items {
        let ci = ChunkInput { job: input.job.clone(), run_id: input.run_id.clone(), chunk: item.clone() };
        verify::verify_chunk(&ctx, &ci).await.unwrap();
    }
    let out = verify::report(&ctx, &input).await.unwrap();
    ctx.store.get_json(&out.report_key).await.unwrap()
}

fn refresh_job(extra: serde_json::Value) -> serde_json::Value {
    let mut job = serde_json::json!({"mode": "refresh"});
    if let (Some(map), Some(more)) = (job.as_object_mut(), extra.as_object()) {
        map.extend(more.clone());
    }
    job
}

fn refresh_of(report: &verify::Report) -> &RefreshSummary {
    report.refresh.as_ref().expect("a refresh run's report has a refresh section")
}

fn table<'a>(report: &'a verify::Report, name: &str) -> &'a verify::TableReport {
    report.tables.iter().find(|t| t.table.name == name).unwrap_or_else(|| panic!("no table {name} in the report"))
}

/// A source built from `ddl` and its full copy by `pgferry run` (snapshot mode).
async fn copied(prefix: &str, ddl: &str) -> (String, String) {
    let (source_db, target_db, _source) = source_with(prefix, ddl).await;
    copy_equal(&source_db, &target_db).await;
    (source_db, target_db)
}

/// A full copy of `source_db` into `target_db` by `pgferry run` (snapshot mode), found equal.
async fn copy_equal(source_db: &str, target_db: &str) {
    let (ctx, input) = step_setup(source_db, target_db, serde_json::json!({}));
    let (outcome, report) = run_machine(ctx, &input).await;
    assert!(matches!(outcome, Outcome::Succeeded(_)), "snapshot failed: {outcome:?}");
    assert!(report.unwrap().equal);
}

async fn cleanup(source_db: &str, target_db: &str) {
    drop_db(Server::Target, target_db).await;
    drop_db(Server::Source, source_db).await;
}

#[tokio::test]
async fn a_refresh_repairs_rows_changed_on_the_target_that_verify_names_and_then_copies_nothing() {
    let (source_db, target_db) = copied("rf_must", SHOP).await;
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    target
        .batch_execute(
            "UPDATE customers SET name = 'changed by hand' WHERE id = 42; \
             DELETE FROM order_lines WHERE order_id = 777 AND line = 1; \
             INSERT INTO notes VALUES (9001, 'not on the source')",
        )
        .await
        .unwrap();

    // `pgferry verify` names each key.
    let report = verify_now(&source_db, &target_db).await;
    assert!(!report.equal);
    assert_eq!(table(&report, "customers").differences.different, vec!["42"]);
    assert_eq!(table(&report, "order_lines").differences.missing_on_target, vec!["777, 1"]);
    assert_eq!(table(&report, "notes").differences.extra_on_target, vec!["9001"]);
    assert!(table(&report, "orders").equal);

    // A refresh re-copies exactly those rows.
    let (ctx, input) = step_setup(&source_db, &target_db, refresh_job(serde_json::json!({})));
    let (outcome, report) = run_machine(ctx, &input).await;
    assert!(matches!(outcome, Outcome::Succeeded(_)), "refresh failed: {outcome:?}");
    let report = report.unwrap();
    assert!(report.equal, "{report:#?}");
    let r = refresh_of(&report);
    assert_eq!((r.counts.rows_reloaded, r.counts.rows_deleted), (2, 2), "{r:#?}");
    let changed: Vec<&str> = r.tables_changed.iter().map(|(t, _, _)| t.name.as_str()).collect();
    assert_eq!(changed, ["customers", "notes", "order_lines"]);
    assert!(r.summary.starts_with("refresh re-copied 2 rows and deleted 2"), "{}", r.summary);
    assert!(verify_now(&source_db, &target_db).await.equal);

    // An unchanged database: nothing copied, and the report says so.
    let (ctx, input) = step_setup(&source_db, &target_db, refresh_job(serde_json::json!({})));
    let (outcome, report) = run_machine(ctx, &input).await;
    assert!(matches!(outcome, Outcome::Succeeded(_)), "second refresh failed: {outcome:?}");
    let report = report.unwrap();
    let r = refresh_of(&report);
    assert_eq!(r.counts.rows_reloaded + r.counts.rows_deleted, 0);
    assert_eq!(r.counts.rows_compared, 2000 + 20000 + 40000 + 500 + 5000);
    assert!(r.summary.starts_with("refresh copied no rows"), "{}", r.summary);
    assert_eq!(report.tables.iter().map(|t| t.rows_copied).sum::<u64>(), 0);
    drop(target);
    cleanup(&source_db, &target_db).await;
}

#[tokio::test]
async fn t57_a_refresh_of_a_database_pgferry_did_not_copy_is_refused_by_every_step() {
    let (source_db, _unused, _source) = source_with("rf_t57", SHOP).await;
    let target_db = create_db(Server::Target, "rf_t57_foreign").await;
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    target
        .batch_execute(
            "CREATE TABLE customers (id int PRIMARY KEY, name text); INSERT INTO customers VALUES (1, 'keep me')",
        )
        .await
        .unwrap();

    let (ctx, input) = step_setup(&source_db, &target_db, refresh_job(serde_json::json!({})));
    let out = pgferry_core::preflight::run(&ctx, &input).await.unwrap();
    assert!(!out.ok);
    let check = out.checks.iter().find(|c| c.name == "refresh-target").expect("a refresh-target check");
    assert_eq!(check.status, CheckStatus::Fail, "{check:?}");
    assert!(check.detail.contains("no pgferry bookkeeping"), "{}", check.detail);
    assert!(check.advice.as_deref().unwrap_or("").contains("snapshot"));
    assert!(!out.checks.iter().any(|c| c.name == "target-empty"), "a refresh expects a populated target");

    // Never trust that preflight ran: each writing step refuses on its own.
    let err = pgferry_core::dispatch::schema(&ctx, SchemaRequest::Globals(input.clone())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TargetNotEmpty, "{err}");
    assert!(err.to_string().contains("mode refresh updates only a database pgferry copied from"), "{err}");
    let err = schema::pre_data(&ctx, &input).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TargetNotEmpty, "{err}");
    let plan = plan::build(&ctx, &input, PlanOptions::default()).await.unwrap();
    let chunk = plan.chunks.iter().find(|c| c.table.name == "customers").unwrap().clone();
    let ci = ChunkInput { job: input.job.clone(), run_id: input.run_id.clone(), chunk };
    let err = copy::copy_chunk(&ctx, &ci, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TargetNotEmpty, "{err}");
    let kept: String = target.query_one("SELECT name FROM customers WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(kept, "keep me");

    // A pgferry copy of another source database is refused too.
    let (other_db, _, _other) = source_with("rf_t57_other", "CREATE TABLE t (id int PRIMARY KEY)").await;
    let other_target = pgferry_tests::unique_name("rf_t57_other_dst");
    let (ctx, input) = step_setup(&other_db, &other_target, serde_json::json!({}));
    assert!(matches!(run_machine(ctx, &input).await.0, Outcome::Succeeded(_)));
    let (ctx, input) = step_setup(&source_db, &other_target, refresh_job(serde_json::json!({})));
    let err = pgferry_core::dispatch::schema(&ctx, SchemaRequest::Globals(input.clone())).await.unwrap_err();
    assert!(err.to_string().contains("another source"), "{err}");

    // A missing database has nothing to refresh.
    let (ctx, input) =
        step_setup(&source_db, &pgferry_tests::unique_name("rf_t57_missing"), refresh_job(serde_json::json!({})));
    let err = pgferry_core::dispatch::schema(&ctx, SchemaRequest::Globals(input.clone())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    drop(target);
    cleanup(&source_db, &target_db).await;
    cleanup(&other_db, &other_target).await;
}

/// `(run id, active)` of the target's refresh runs, oldest first.
async fn holders(target: &Client) -> Vec<(String, Option<bool>)> {
    let rows = target
        .query("SELECT run_id, active FROM pgferry.runs WHERE mode = 'refresh' ORDER BY started_at, run_id", &[])
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test]
async fn one_refresh_at_a_time_holds_the_target_and_a_stopped_one_is_taken_over_only_when_named() {
    let (source_db, target_db) = copied("rf_busy", SHOP).await;
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    let none = || refresh_job(serde_json::json!({}));

    // Two refreshes start together: both pass globals, the first to reach pre-data holds the
    // target and the second stops there, naming it, before it writes anything.
    let (ctx_a, a) = step_setup(&source_db, &target_db, none());
    let (ctx_b, b) = step_setup(&source_db, &target_db, none());
    pgferry_core::dispatch::schema(&ctx_a, SchemaRequest::Globals(a.clone())).await.unwrap();
    pgferry_core::dispatch::schema(&ctx_b, SchemaRequest::Globals(b.clone())).await.unwrap();
    pgferry_core::dispatch::schema(&ctx_a, SchemaRequest::PreData(a.clone())).await.unwrap();
    let err = pgferry_core::dispatch::schema(&ctx_b, SchemaRequest::PreData(b.clone())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TargetBusy, "{err}");
    assert!(err.to_string().contains(&format!("held by refresh run {}", a.run_id)), "{err}");
    assert_eq!(err.kind().step_error_name(), "Pgferry.TargetBusy");
    assert_eq!(holders(&target).await, vec![(a.run_id.clone(), Some(true))], "B recorded nothing");

    // A is then stopped by hand (no release step). The next nightly refresh is refused by
    // preflight and, were preflight skipped, by globals; the run names A and what to do.
    let src = source(&source_db).await;
    src.batch_execute("UPDATE customers SET name = 'renamed' WHERE id = 5").await.unwrap();
    let (ctx, input) = step_setup(&source_db, &target_db, none());
    let out = pgferry_core::preflight::run(&ctx, &input).await.unwrap();
    let check = out.checks.iter().find(|c| c.name == "refresh-target").unwrap();
    assert_eq!(check.status, CheckStatus::Fail, "{check:?}");
    assert!(check.detail.contains(&a.run_id), "{}", check.detail);
    assert!(check.advice.as_deref().unwrap().contains("takeOverFrom"), "{check:?}");
    let err = pgferry_core::dispatch::schema(&ctx, SchemaRequest::Globals(input.clone())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TargetBusy, "{err}");
    let (outcome, _) = run_machine(ctx, &input).await;
    assert!(matches!(&outcome, Outcome::Failed { error, .. } if error == "Pgferry.PreflightFailed"), "{outcome:?}");
    let name: String = target.query_one("SELECT name FROM customers WHERE id = 5", &[]).await.unwrap().get(0);
    assert_eq!(name, "customer 5", "a refused run changes nothing");

    // Taking over from a run that does not hold the target is no way around it.
    let other = refresh_job(serde_json::json!({"refresh": {"takeOverFrom": "run-that-never-was"}}));
    let (ctx, input) = step_setup(&source_db, &target_db, other);
    let err = pgferry_core::dispatch::schema(&ctx, SchemaRequest::Globals(input.clone())).await.unwrap_err();
    assert!(err.to_string().contains("takeOverFrom names run-that-never-was, which does not hold it"), "{err}");

    // Naming A takes over: the run refreshes, says so, and lets go at its end.
    let take_over = refresh_job(serde_json::json!({"refresh": {"takeOverFrom": a.run_id}}));
    let (ctx, input) = step_setup(&source_db, &target_db, take_over);
    let out = pgferry_core::preflight::run(&ctx, &input).await.unwrap();
    let check = out.checks.iter().find(|c| c.name == "refresh-target").unwrap();
    assert_eq!(check.status, CheckStatus::Warn, "{check:?}");
    let (outcome, report) = run_machine(ctx.clone(), &input).await;
    assert!(matches!(outcome, Outcome::Succeeded(_)), "take-over refresh failed: {outcome:?}");
    assert!(report.unwrap().equal);
    let schema_step: serde_json::Value = ctx.store.get_json(&keys::refresh_schema(&input.run_id)).await.unwrap();
    let notes = schema_step["notes"].to_string();
    assert!(notes.contains(&format!("took the target over from refresh run {}", a.run_id)), "{notes}");
    let name: String = target.query_one("SELECT name FROM customers WHERE id = 5", &[]).await.unwrap().get(0);
    assert_eq!(name, "renamed");
    assert_eq!(holders(&target).await, vec![(a.run_id.clone(), Some(false)), (input.run_id.clone(), Some(false))]);

    // A, had it still been alive, writes nothing more: its next chunk stops.
    let plan = plan::build(&ctx_a, &a, PlanOptions::default()).await.unwrap();
    let ci = ChunkInput { job: a.job.clone(), run_id: a.run_id.clone(), chunk: plan.chunks[0].clone() };
    let err = copy::copy_chunk(&ctx_a, &ci, None).await.unwrap_err();
    assert!(err.to_string().contains(&format!("refresh run {} no longer holds", a.run_id)), "{err}");

    // With the target released, the next refresh needs no take-over and copies nothing.
    let report = refresh_steps(&source_db, &target_db, serde_json::json!({})).await.unwrap();
    assert!(report.equal);
    assert_eq!(refresh_of(&report).counts.rows_reloaded, 0);
    assert!(holders(&target).await.iter().all(|(_, active)| *active == Some(false)));
    drop(target);
    cleanup(&source_db, &target_db).await;
}

/// The status-change event EventBridge sends when an execution of the state machine ends
/// `status` (the template's ExecutionStoppedRule), for the execution named `run` on `input`.
fn status_change(run: &str, status: &str, input: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "version": "0",
        "id": "6f3c2a4e-0d2b-4c1e-9a51-2f0f6f6c9b11",
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "account": "123456789012",
        "region": "eu-west-1",
        "detail": {
            "executionArn": format!("arn:aws:states:eu-west-1:123456789012:execution:pgferry-replication:{run}"),
            "stateMachineArn": "arn:aws:states:eu-west-1:123456789012:stateMachine:pgferry-replication",
            "name": run,
            "status": status,
            "input": input.to_string(),
        }
    })
}

#[tokio::test]
async fn an_execution_stopped_by_hand_gets_its_failure_path_from_its_status_change_event() {
    let (source_db, target_db) = copied("rf_stopped", SHOP).await;
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    // A refresh stopped by hand during its copy phase: Step Functions runs no Catch, so no
    // release step; the target stays held.
    let RefreshRun { ctx, input, .. } = refresh_copy(&source_db, &target_db, serde_json::json!({})).await.unwrap();
    assert_eq!(holders(&target).await.last(), Some(&(input.run_id.clone(), Some(true))));

    let machine = StateMachine::parse(runner::DEFINITION, &runner::local_substitutions()).unwrap();
    let job = serde_json::to_value(&input.job).unwrap();
    // A made-up event naming the live run (anyone may start an execution with any input): Step
    // Functions says it is running, or knows no such execution; nothing is released.
    let event = status_change(&input.run_id, "ABORTED", &job);
    let arn = event["detail"]["executionArn"].as_str().unwrap().to_string();
    for env in [
        LocalEnvironment::new(ctx.clone()).with_execution(&arn, &input.run_id, "RUNNING", &job),
        LocalEnvironment::new(ctx.clone()),
    ] {
        let outcome = Execution::new(&machine, Arc::new(env), "5e0d9a0c-forged".to_string()).run(event.clone()).await;
        let Outcome::Failed { error, .. } = outcome.unwrap() else { panic!("a forged event was acted on") };
        assert_eq!(error, "Pgferry.InvalidJob");
        assert_eq!(holders(&target).await.last(), Some(&(input.run_id.clone(), Some(true))), "still held");
    }

    // The stopped execution's status-change event starts the state machine, which asks Step
    // Functions about it, runs the stopped run's failure path under its run id and ends failed,
    // saying why.
    for stopped_input in [job.clone(), serde_json::json!({"action": "cutover", "job": job})] {
        let event = status_change(&input.run_id, "ABORTED", &stopped_input);
        let env =
            Arc::new(LocalEnvironment::new(ctx.clone()).with_execution(&arn, &input.run_id, "ABORTED", &stopped_input));
        let outcome = Execution::new(&machine, env, "5e0d9a0c-cleanup".to_string()).run(event).await.unwrap();
        let Outcome::Failed { error, cause } = outcome else { panic!("{outcome:?}") };
        assert_eq!(error, "Pgferry.Stopped");
        assert!(cause.contains(&format!("execution {} ended ABORTED", input.run_id)), "{cause}");
        assert_eq!(holders(&target).await.last(), Some(&(input.run_id.clone(), Some(false))), "released");
    }
    let failure: serde_json::Value = ctx.store.get_json(&keys::failure(&input.run_id)).await.unwrap();
    assert_eq!(failure["error"], "Pgferry.Stopped", "{failure}");

    // The next refresh needs no take-over.
    let report = refresh_steps(&source_db, &target_db, serde_json::json!({})).await.unwrap();
    assert!(report.equal);
    drop(target);
    cleanup(&source_db, &target_db).await;
}

/// The refresh steps one by one, as the state machine runs them, with small slices so that
/// tables are cut into key and page ranges.
async fn refresh_steps(
    source_db: &str,
    target_db: &str,
    extra: serde_json::Value,
) -> pgferry_core::Result<verify::Report> {
    let run = refresh_copy(source_db, target_db, extra).await?;
    refresh_verify(run).await
}

/// A refresh run up to and including its copy phase.
struct RefreshRun {
    ctx: StepContext,
    input: StepInput,
    plan: plan::Plan,
}

async fn refresh_copy(source_db: &str, target_db: &str, extra: serde_json::Value) -> pgferry_core::Result<RefreshRun> {
    let (ctx, input) = step_setup(source_db, target_db, refresh_job(extra));
    pgferry_core::dispatch::schema(&ctx, SchemaRequest::Globals(input.clone())).await?;
    pgferry_core::dispatch::schema(&ctx, SchemaRequest::PreData(input.clone())).await?;
    let plan = plan::build(&ctx, &input, PlanOptions { slice_bytes: 128 * 1024, slices_per_chunk: 3 }).await?;
    ctx.store.put_json(&keys::plan(&input.run_id), &plan).await?;
    ctx.store.put_json(&keys::chunks(&input.run_id), &plan.chunks).await?;
    for chunk in &plan.chunks {
        let ci = ChunkInput { job: input.job.clone(), run_id: input.run_id.clone(), chunk: chunk.clone() };
        let out: CopyChunkOutput = copy::copy_chunk(&ctx, &ci, None).await?;
        assert!(out.done && out.refresh.is_some());
    }
    Ok(RefreshRun { ctx, input, plan })
}

/// The rest of a refresh run after its copy phase: sequences, large objects, verification, and
/// the release step that lets go of the target.
async fn refresh_verify(run: RefreshRun) -> pgferry_core::Result<verify::Report> {
    let RefreshRun { ctx, input, plan } = run;
    pgferry_core::dispatch::schema(&ctx, SchemaRequest::Sequences(input.clone())).await?;
    pgferry_core::lobs::copy_all(&ctx, &input).await?;
    for item in &plan.verify_items {
        let ci = ChunkInput { job: input.job.clone(), run_id: input.run_id.clone(), chunk: item.clone() };
        verify::verify_chunk(&ctx, &ci).await?;
    }
    let out = verify::report(&ctx, &input).await?;
    pgferry_core::dispatch::schema(&ctx, SchemaRequest::Release(input.clone())).await?;
    ctx.store.get_json(&out.report_key).await
}

async fn source(db: &str) -> Client {
    connect(&testbed().url(Server::Source, db)).await
}

#[tokio::test]
async fn a_refresh_after_one_percent_of_rows_changed_on_the_source_ends_equal() {
    let (source_db, target_db) = copied("rf_pct", SHOP).await;
    let src = source(&source_db).await;
    // About 1% of the rows: updates, inserts and deletes in every table, parents and children of
    // foreign keys included (deleting a customer cascades to its orders on the source), a
    // keyless table, a sequence and the large objects.
    src.batch_execute(
        "UPDATE customers SET email = NULL WHERE id % 100 = 3; \
         INSERT INTO customers SELECT g, 'new ' || g, NULL FROM generate_series(2001, 2020) g; \
         DELETE FROM order_lines WHERE order_id IN (SELECT id FROM orders WHERE customer_id = 1500); \
         DELETE FROM customers WHERE id = 1500; \
         UPDATE orders SET amount = amount + 1 WHERE id % 100 = 7; \
         INSERT INTO orders (customer_id, amount, placed) SELECT 2001 + g % 20, 1, now() FROM generate_series(1, 200) g; \
         DELETE FROM order_lines WHERE order_id % 211 = 0; \
         UPDATE order_lines SET qty = qty + 10 WHERE order_id % 97 = 0; \
         INSERT INTO notes VALUES (501, 'late'), (502, NULL); DELETE FROM notes WHERE id = 250; \
         UPDATE audit_log SET line = line || '!' WHERE extract(epoch FROM at)::bigint % 100 = 0; \
         INSERT INTO audit_log VALUES (now(), 'after the copy'); \
         SELECT lo_unlink(880001); SELECT lo_from_bytea(880003, 'third'); \
         SELECT lo_put(880002, 0, '\\x5345434f4e44')",
    )
    .await
    .unwrap();
    src.batch_execute("ANALYZE").await.unwrap();
    let report = refresh_steps(&source_db, &target_db, serde_json::json!({})).await.unwrap();
    assert!(report.equal, "{report:#?}");
    let r = refresh_of(&report);
    assert!(r.counts.rows_skipped * 10 > r.counts.rows_compared * 8, "unchanged rows are left alone: {r:#?}");
    assert!(r.counts.rows_reloaded < r.counts.rows_compared / 5, "{r:#?}");
    assert!(verify_now(&source_db, &target_db).await.equal);
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    let invalid: i64 = target
        .query_one("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND NOT convalidated", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(invalid, 0);
    drop(target);
    drop(src);
    cleanup(&source_db, &target_db).await;
}

/// `(name, definition, oid)` of a table's indexes, by name.
async fn indexes_of(c: &Client, table: &str) -> Vec<(String, String, u32)> {
    c.query(
        "SELECT c.relname::text, pg_get_indexdef(i.indexrelid), i.indexrelid \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass($1) ORDER BY 1",
        &[&table],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[tokio::test]
async fn a_keyless_table_reloaded_whole_gets_its_plain_indexes_rebuilt_after_the_rows_and_keeps_the_others() {
    const EVENTS: &str = r#"
        CREATE TABLE events (at timestamptz NOT NULL, kind text NOT NULL, ref int, body text);
        INSERT INTO events SELECT timestamptz '2025-01-01' + g * interval '1 s', 'k' || g % 5, g % 1000, 'event ' || g
          FROM generate_series(1, 20000) g;
        CREATE INDEX events_at_idx ON events (at);
        CREATE INDEX events_kind_ref_idx ON events (kind, ref DESC) WITH (fillfactor = 80) WHERE kind <> 'k0';
        CREATE INDEX events_body_idx ON events (lower(body));
        CREATE INDEX events_commented_idx ON events (ref);
        COMMENT ON INDEX events_commented_idx IS 'kept as it is';
        CREATE UNIQUE INDEX events_ref_body_key ON events (ref, body);
    "#;
    // Owned by a role other than the master on both sides, as an application's tables are.
    let owner = pgferry_tests::unique_name("rf_events_owner");
    let (source_db, target_db, src) = source_with("rf_idx", EVENTS).await;
    let master: String = src.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    let admin = connect(&testbed().admin_url(Server::Source, &source_db)).await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {owner} NOLOGIN; ALTER TABLE events OWNER TO {owner}; GRANT SELECT ON events TO {master}"
        ))
        .await
        .unwrap();
    copy_equal(&source_db, &target_db).await;
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    let owned_by: String = target
        .query_one("SELECT tableowner::text FROM pg_tables WHERE tablename = 'events'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(owned_by, owner);
    let before = indexes_of(&target, "events").await;
    assert_eq!(before.len(), 5);
    admin.batch_execute("UPDATE events SET body = body || '!' WHERE ref = 7; ANALYZE events").await.unwrap();

    // Reloaded whole: the job asks for it (tables above the row limit are).
    let report = refresh_steps(&source_db, &target_db, serde_json::json!({"refresh": {"matchKeylessRowsUpTo": 0}}))
        .await
        .unwrap();
    assert!(report.equal, "{report:#?}");
    assert_eq!(refresh_of(&report).counts.rows_reloaded, 20000);
    let after = indexes_of(&target, "events").await;
    // The same indexes, defined the same; the plain ones are new objects (dropped before the
    // rows, built after), the commented and the unique one are the same objects as before.
    let definitions =
        |v: &[(String, String, u32)]| v.iter().map(|(n, d, _)| (n.clone(), d.clone())).collect::<Vec<_>>();
    assert_eq!(definitions(&after), definitions(&before));
    let rebuilt: Vec<&str> = before.iter().zip(&after).filter(|(b, a)| b.2 != a.2).map(|(b, _)| b.0.as_str()).collect();
    assert_eq!(rebuilt, ["events_at_idx", "events_body_idx", "events_kind_ref_idx"]);
    let comment: Option<String> = target
        .query_one("SELECT obj_description('events_commented_idx'::regclass, 'pg_class')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(comment.as_deref(), Some("kept as it is"));
    let valid: bool = target
        .query_one("SELECT bool_and(indisvalid AND indisready) FROM pg_index WHERE indrelid = 'events'::regclass", &[])
        .await
        .unwrap()
        .get(0);
    assert!(valid);
    // The rebuilt indexes serve queries with the refreshed rows.
    let found: i64 =
        target.query_one("SELECT count(*) FROM events WHERE lower(body) = 'event 7!'", &[]).await.unwrap().get(0);
    assert_eq!(found, 1);
    assert!(verify_now(&source_db, &target_db).await.equal);
    drop(target);
    drop(src);
    drop(admin);
    cleanup(&source_db, &target_db).await;
    for server in [Server::Source, Server::Target] {
        let admin = connect(&testbed().admin_url(server, "postgres")).await;
        admin.batch_execute(&format!("DROP ROLE IF EXISTS {owner}")).await.unwrap();
    }
}

#[tokio::test]
async fn a_changed_table_stops_a_refresh_unless_the_job_allows_rebuilding_it() {
    let (source_db, target_db) = copied("rf_shape", SHOP).await;
    let src = source(&source_db).await;
    src.batch_execute(
        "ALTER TABLE orders ALTER COLUMN amount TYPE numeric(12, 2); \
         ALTER TABLE notes ADD COLUMN pinned boolean NOT NULL DEFAULT false; \
         CREATE TABLE tags (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, tag text NOT NULL); \
         CREATE INDEX tags_tag_idx ON tags (tag); \
         INSERT INTO tags (customer_id, tag) SELECT g, 'vip' FROM generate_series(1, 50) g; \
         ANALYZE",
    )
    .await
    .unwrap();
    let err = refresh_steps(&source_db, &target_db, serde_json::json!({})).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::TargetNotEmpty, "{text}");
    assert!(
        text.contains("table \"public\".\"orders\": column \"amount\": type numeric(10,2) → numeric(12,2)"),
        "{text}"
    );
    assert!(text.contains("table \"public\".\"notes\": column \"pinned\" added (boolean NOT NULL)"), "{text}");
    assert!(text.contains("rebuildChangedTables"), "{text}");
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    let tags: Option<String> = target.query_one("SELECT to_regclass('public.tags')::text", &[]).await.unwrap().get(0);
    assert_eq!(tags, None, "a refused refresh changes nothing");

    let report = refresh_steps(&source_db, &target_db, serde_json::json!({"refresh": {"rebuildChangedTables": true}}))
        .await
        .unwrap();
    assert!(report.equal, "{report:#?}");
    let r = refresh_of(&report);
    let actions: Vec<(&str, TableAction)> = r.schema.iter().map(|t| (t.table.name.as_str(), t.action)).collect();
    assert_eq!(
        actions,
        [("notes", TableAction::Rebuilt), ("orders", TableAction::Rebuilt), ("tags", TableAction::Created)]
    );
    // The rebuilt and created tables have their keys, indexes and foreign keys, including the
    // one of order_lines that references the rebuilt orders, validated after the reload.
    let constraints: Vec<String> = target
        .query(
            "SELECT conrelid::regclass::text || ' ' || conname || ' ' || convalidated FROM pg_constraint \
             WHERE connamespace = 'public'::regnamespace AND contype IN ('p', 'f') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        constraints,
        [
            "customers customers_pkey true",
            "notes notes_pkey true",
            "order_lines order_lines_order_id_fkey true",
            "order_lines order_lines_pkey true",
            "orders orders_customer_id_fkey true",
            "orders orders_pkey true",
            "tags tags_customer_id_fkey true",
            "tags tags_pkey true",
        ]
    );
    let indexes: i64 = target
        .query_one("SELECT count(*) FROM pg_indexes WHERE indexname IN ('orders_customer_idx', 'tags_tag_idx')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(indexes, 2);
    drop(target);
    drop(src);
    cleanup(&source_db, &target_db).await;
}

async fn xmin_of(c: &Client, id: i32) -> String {
    c.query_one("SELECT xmin::text FROM notes WHERE id = $1", &[&id]).await.unwrap().get(0)
}

/// Rows of `table` re-copied and deleted by a refresh, from its report.
fn changed_rows(r: &RefreshSummary, name: &str) -> (u64, u64) {
    r.tables_changed.iter().find(|(t, _, _)| t.name == name).map_or((0, 0), |(_, c, d)| (*c, *d))
}

#[tokio::test]
async fn a_slice_reloaded_whole_is_verified_by_a_second_pass_while_repaired_slices_prove_themselves() {
    let (source_db, target_db) = copied("rf_proof", SHOP).await;
    let src = source(&source_db).await;
    // Most of `notes` changes (its slice is reloaded whole, which proves nothing); two customers
    // change (repaired key by key, proven in the repair's transaction).
    src.batch_execute(
        "UPDATE notes SET body = 'rewritten' WHERE id % 3 <> 0; \
         UPDATE customers SET name = 'renamed' WHERE id IN (5, 1500)",
    )
    .await
    .unwrap();
    let run = refresh_copy(&source_db, &target_db, serde_json::json!({})).await.unwrap();
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    let ledger = |table: &'static str| {
        let target = &target;
        let run_id = run.input.run_id.clone();
        async move {
            let rows = target
                .query(
                    "SELECT equal, proven FROM pgferry.copied_chunks WHERE run_id = $1 AND table_name = $2",
                    &[&run_id, &table],
                )
                .await
                .unwrap();
            rows.iter().map(|r| (r.get::<_, Option<bool>>(0), r.get::<_, Option<bool>>(1))).collect::<Vec<_>>()
        }
    };
    let notes = ledger("notes").await;
    assert!(notes.contains(&(Some(false), Some(false))), "notes reloaded, not proven: {notes:?}");
    // The unchanged keyless table was compared whole by content: proven by its first slice.
    let audit = ledger("audit_log").await;
    assert!(audit.contains(&(Some(true), Some(true))), "{audit:?}");
    assert!(audit.iter().all(|r| *r == (Some(true), Some(true)) || *r == (None, None)), "{audit:?}");
    let customers = ledger("customers").await;
    assert!(customers.iter().all(|(_, proven)| *proven == Some(true)), "{customers:?}");
    assert!(customers.contains(&(Some(false), Some(true))), "a repaired customers slice proved itself: {customers:?}");
    let report = refresh_verify(run).await.unwrap();
    assert!(report.equal, "{report:#?}");
    let r = refresh_of(&report);
    let of = |name: &str| r.verification.iter().find(|t| t.table.name == name).unwrap().clone();
    let (notes, customers) = (of("notes"), of("customers"));
    // notes: its chunk took the second pass, which hashed every row its reload wrote.
    assert_eq!((notes.rows_hashed, notes.rows_unchanged_by_refresh), (500, 0), "{notes:?}");
    assert_eq!((customers.rows_hashed, customers.rows_unchanged_by_refresh), (2, 1998), "{customers:?}");
    assert_eq!(of("audit_log").rows_hashed, 5000, "every row hashed by the refresh's comparison");
    assert!(r.summary.contains("merged by the refresh"), "{}", r.summary);
    assert!(verify_now(&source_db, &target_db).await.equal);
    drop((src, target));
    cleanup(&source_db, &target_db).await;
}

#[tokio::test]
async fn a_keyless_table_is_repaired_as_a_multiset_of_rows_and_proves_the_repair() {
    // Rows repeat (g and g + 2100 are the same row), NULL and '' both occur, and a few rows are
    // written out three and two times on purpose.
    const BAG: &str = r#"
        CREATE TABLE bag (n int, s text, j jsonb);
        INSERT INTO bag SELECT g % 100, CASE g % 3 WHEN 0 THEN NULL WHEN 1 THEN '' ELSE 'v' || g % 7 END,
                               jsonb_build_object('g', g % 50)
          FROM generate_series(1, 3000) g;
        INSERT INTO bag VALUES (1001, NULL, NULL), (1001, NULL, NULL), (1001, NULL, NULL), (1002, '', NULL), (1002, NULL, NULL);
        CREATE INDEX bag_n_idx ON bag (n);
    "#;
    let (source_db, target_db) = copied("rf_bag", BAG).await;
    let src = source(&source_db).await;
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    // Source: one of three equal rows deleted (1 surplus on the target), 30 rows updated (30
    // surplus, 30 missing), a duplicate of an existing row added (1 missing).
    src.batch_execute(
        "DELETE FROM bag WHERE ctid = (SELECT ctid FROM bag WHERE n = 1001 LIMIT 1);          UPDATE bag SET j = '{\"changed\": true}' WHERE n = 42;          INSERT INTO bag SELECT * FROM bag WHERE n = 5 LIMIT 1",
    )
    .await
    .unwrap();
    // Target: '' turned into NULL (1 surplus, 1 missing), ten rows deleted (10 missing).
    target
        .batch_execute("UPDATE bag SET s = NULL WHERE n = 1002 AND s = ''; DELETE FROM bag WHERE n = 7 AND s = ''")
        .await
        .unwrap();
    let run = refresh_copy(&source_db, &target_db, serde_json::json!({})).await.unwrap();
    let ledger: Vec<(i64, i64, Option<bool>)> = target
        .query(
            "SELECT rows, deleted, proven FROM pgferry.copied_chunks              WHERE run_id = $1 AND table_name = 'bag' AND compared IS NOT NULL",
            &[&run.input.run_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(ledger, [(42, 32, Some(true))], "matched, repaired and proven in one slice");
    let report = refresh_verify(run).await.unwrap();
    assert!(report.equal, "{report:#?}");
    assert_eq!(changed_rows(refresh_of(&report), "bag"), (42, 32));
    // The index was maintained row by row and finds the repaired rows.
    let (n42, n7): (i64, i64) = {
        let r = target
            .query_one(
                "SELECT count(*) FILTER (WHERE n = 42 AND j = '{\"changed\": true}'), count(*) FILTER (WHERE n = 7)                  FROM bag WHERE n IN (7, 42)",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((n42, n7), (30, 30));
    assert!(verify_now(&source_db, &target_db).await.equal);
    // Nothing changed since: the next refresh matches nothing and copies nothing.
    let report = refresh_steps(&source_db, &target_db, serde_json::json!({})).await.unwrap();
    assert!(report.equal && refresh_of(&report).counts.rows_reloaded == 0, "{report:#?}");
    drop((src, target));
    cleanup(&source_db, &target_db).await;
}

#[tokio::test]
async fn verify_rescan_compares_keys_again_after_the_refresh_and_catches_a_target_write_made_during_it() {
    let (source_db, target_db) = copied("rf_rescan", SHOP).await;
    let src = source(&source_db).await;
    src.batch_execute("UPDATE notes SET body = 'changed' WHERE id = 10; DELETE FROM notes WHERE id = 20")
        .await
        .unwrap();
    let run = refresh_copy(&source_db, &target_db, serde_json::json!({"refresh": {"verify": "rescan"}})).await.unwrap();
    // Someone writes to the target after its slices were refreshed.
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    target
        .batch_execute(
            "UPDATE notes SET body = 'during the refresh' WHERE id = 30; INSERT INTO notes VALUES (9002, 'x')",
        )
        .await
        .unwrap();
    let report = refresh_verify(run).await.unwrap();
    assert!(!report.equal, "{report:#?}");
    let notes = table(&report, "notes");
    assert_eq!(notes.differences.different, vec!["30"], "{notes:#?}");
    assert_eq!(notes.differences.extra_on_target, vec!["9002"], "{notes:#?}");
    let r = refresh_of(&report);
    assert!(r.verification.iter().all(|t| t.rows_unchanged_by_refresh == 0), "a second pass everywhere: {r:#?}");
    drop((src, target));
    cleanup(&source_db, &target_db).await;
}

#[tokio::test]
async fn a_refresh_finds_rows_written_since_the_last_verified_run_by_transaction_id_frozen_or_not() {
    let (source_db, target_db) = copied("rf_xid", SHOP).await;
    let src = source(&source_db).await;
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    // On the source: an update that changes nothing, a delete and re-insert of the same row, an
    // aborted update, a committed and a rolled-back subtransaction, a delete, and an update
    // frozen by VACUUM FREEZE right after.
    // (One transaction each: a multi-statement string is one implicit transaction.)
    for sql in [
        "UPDATE notes SET body = body WHERE id = 10",
        "DELETE FROM notes WHERE id = 20; INSERT INTO notes SELECT 20, repeat('n', 20)",
        "BEGIN; UPDATE notes SET body = 'aborted' WHERE id = 30; ROLLBACK",
        "BEGIN; SAVEPOINT a; UPDATE notes SET body = 'in a subtransaction' WHERE id = 40; RELEASE a; \
         SAVEPOINT b; UPDATE notes SET body = 'rolled back' WHERE id = 50; ROLLBACK TO b; COMMIT",
        "DELETE FROM notes WHERE id = 60",
        "UPDATE notes SET body = 'frozen' WHERE id = 70",
    ] {
        src.batch_execute(sql).await.unwrap();
    }
    let before = xmin_of(&src, 70).await;
    src.batch_execute("VACUUM (FREEZE) notes").await.unwrap();
    assert_eq!(xmin_of(&src, 70).await, before, "a frozen tuple keeps reporting its raw xmin");
    // On the target: an update by hand, frozen too. And in the keyless table one delete on each
    // side: equal counts, nothing written, yet different rows (matched as multisets: one row
    // copied, one deleted).
    target.batch_execute("UPDATE notes SET body = 'by hand' WHERE id = 80").await.unwrap();
    target.batch_execute("VACUUM (FREEZE) notes").await.unwrap();
    src.batch_execute("DELETE FROM audit_log WHERE line = 'event 100'").await.unwrap();
    target.batch_execute("DELETE FROM audit_log WHERE line = 'event 200'").await.unwrap();

    let report = refresh_steps(&source_db, &target_db, serde_json::json!({})).await.unwrap();
    assert!(report.equal, "{report:#?}");
    let r = refresh_of(&report);
    assert!(r.changes_since.is_some(), "the snapshot run's marks were used: {r:#?}");
    // Written since: 10, 20, 40, 70 on the source and 80 on the target; 60 is gone from the source.
    assert_eq!(changed_rows(r, "notes"), (5, 6), "{r:#?}");
    assert_eq!(changed_rows(r, "audit_log"), (1, 1), "{r:#?}");
    for unchanged in ["customers", "orders", "order_lines"] {
        assert_eq!(changed_rows(r, unchanged), (0, 0), "{unchanged}: {r:#?}");
    }
    // The verification hashed the rows written since and proved the rest by their keys.
    // The refresh's own comparison stands as the keys' verification (no second pass), the
    // copied rows hashed on both sides in each repair's transaction.
    let notes = r.verification.iter().find(|t| t.table.name == "notes").unwrap();
    assert_eq!((notes.rows_hashed, notes.rows_unchanged), (5, 494), "{notes:?}");
    assert_eq!(notes.rows_unchanged_by_refresh, 494, "{notes:?}");
    assert_eq!(notes.unchanged_since, r.changes_since);
    let orders = r.verification.iter().find(|t| t.table.name == "orders").unwrap();
    assert_eq!((orders.rows_hashed, orders.rows_unchanged, orders.rows_unchanged_by_refresh), (0, 20000, 20000));
    assert!(r.summary.contains("rows unchanged on both sides since verified run"), "{}", r.summary);
    assert!(r.summary.contains("(keys merged by the refresh, copied rows hashed after its repairs)"), "{}", r.summary);
    assert!(verify_now(&source_db, &target_db).await.equal);
    drop((src, target));
    cleanup(&source_db, &target_db).await;
}

#[tokio::test]
async fn without_marks_of_a_verified_run_a_refresh_compares_rows_by_content_and_records_marks_for_the_next_and_verify_full_hashes_all()
 {
    let (source_db, target_db) = copied("rf_nomark", SHOP).await;
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    // As an older pgferry left it: no mark columns.
    target
        .batch_execute(
            "ALTER TABLE pgferry.runs DROP COLUMN source_xmin, DROP COLUMN target_xmin, DROP COLUMN verified_at; \
             UPDATE customers SET name = 'changed by hand' WHERE id = 42",
        )
        .await
        .unwrap();
    let report = refresh_steps(&source_db, &target_db, serde_json::json!({})).await.unwrap();
    assert!(report.equal, "{report:#?}");
    let r = refresh_of(&report);
    assert_eq!(r.changes_since, None);
    assert!(r.notes.iter().any(|n| n.contains("rows compared by content")), "{r:#?}");
    assert_eq!(changed_rows(r, "customers"), (1, 1));
    assert!(r.verification.iter().all(|t| t.rows_unchanged == 0), "a full verification: {r:#?}");

    // That refresh recorded marks: the next one uses them.
    target.batch_execute("UPDATE customers SET name = 'again' WHERE id = 43").await.unwrap();
    let report = refresh_steps(&source_db, &target_db, serde_json::json!({})).await.unwrap();
    assert!(report.equal, "{report:#?}");
    let r = refresh_of(&report);
    assert!(r.changes_since.is_some(), "{r:#?}");
    assert_eq!(changed_rows(r, "customers"), (1, 1));
    assert!(r.verification.iter().any(|t| t.rows_unchanged > 0), "{r:#?}");

    // The job may demand that the verification hash every row all the same.
    let report =
        refresh_steps(&source_db, &target_db, serde_json::json!({"refresh": {"verify": "full"}})).await.unwrap();
    assert!(report.equal, "{report:#?}");
    let r = refresh_of(&report);
    assert!(r.changes_since.is_some(), "{r:#?}");
    assert!(r.verification.iter().all(|t| t.rows_unchanged == 0), "{r:#?}");
    assert_eq!(
        r.verification.iter().map(|t| t.rows_hashed).sum::<u64>(),
        2000 + 20000 + 40000 + 500 + 5000,
        "{:#?}",
        r.verification
    );

    // A source schema change outside table shapes (it could change rows' text without writing
    // them): one refresh by content, then marks again.
    let src = source(&source_db).await;
    src.batch_execute("CREATE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 42'").await.unwrap();
    let report = refresh_steps(&source_db, &target_db, serde_json::json!({})).await.unwrap();
    let r = refresh_of(&report);
    assert!(r.changes_since.is_none(), "{r:#?}");
    assert!(r.notes.iter().any(|n| n.contains("the source's schema changed since run")), "{r:#?}");
    // The function is reported (a refresh does not apply it), the rows are equal: their marks
    // serve the next refresh.
    assert!(!report.equal && report.tables.iter().all(|t| t.equal), "{report:#?}");
    let report = refresh_steps(&source_db, &target_db, serde_json::json!({})).await.unwrap();
    assert!(refresh_of(&report).changes_since.is_some(), "{report:#?}");
    drop((src, target));
    cleanup(&source_db, &target_db).await;
}

#[tokio::test]
async fn a_refresh_finds_changes_under_keys_of_every_kind_streamed_or_bucketed() {
    // Integer (negative, sparse and the extremes of bigint included), uuid and composite integer
    // keys are merged as ordered key streams; the text keys go through key hash buckets.
    let tables: [(&str, &str, &str); 6] = [
        ("k_small", "id smallint PRIMARY KEY", "(G - 1000)::smallint"),
        ("k_int", "id int PRIMARY KEY", "G * 7 - 7000"),
        ("k_big", "id bigint PRIMARY KEY", "(G - 1000) * 1000000000000000"),
        ("k_uuid", "id uuid PRIMARY KEY", "md5(G::text)::uuid"),
        ("k_pair", "a int, b bigint, PRIMARY KEY (a, b)", "G % 7 - 3, -G"),
        ("k_text", "id text PRIMARY KEY", "'key ' || G"),
    ];
    let key_of = |expr: &str, g: i64| expr.replace('G', &g.to_string());
    let ddl: String = tables
        .iter()
        .map(|(t, cols, key)| {
            format!(
                "CREATE TABLE {t} ({cols}, v text NOT NULL); \
                 INSERT INTO {t} SELECT {key}, 'value ' || G FROM generate_series(0, 1999) G;"
            )
        })
        .collect();
    let ddl = ddl + "INSERT INTO k_big VALUES (-9223372036854775808, 'min'), (9223372036854775807, 'max');";
    let (source_db, target_db) = copied("rf_keys", &ddl).await;
    let src = source(&source_db).await;
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    for (t, _, key) in &tables {
        let cols = if *t == "k_pair" { "(a, b)" } else { "(id)" };
        let change = |updated: i64, deleted: i64, inserted: i64, side: &str| {
            format!(
                "UPDATE {t} SET v = 'changed on the {side}' WHERE {cols} = ({}); \
                 DELETE FROM {t} WHERE {cols} = ({}); \
                 INSERT INTO {t} VALUES ({}, 'new on the {side}');",
                key_of(key, updated),
                key_of(key, deleted),
                key_of(key, inserted)
            )
        };
        src.batch_execute(&change(10, 20, 5000, "source")).await.unwrap();
        target.batch_execute(&change(30, 40, 6000, "target")).await.unwrap();
    }
    // At the extremes of bigint: the source updates the smallest key, the target deletes the
    // largest.
    src.batch_execute("UPDATE k_big SET v = 'min on the source' WHERE id = -9223372036854775808").await.unwrap();
    target.batch_execute("DELETE FROM k_big WHERE id = 9223372036854775807").await.unwrap();
    let report = refresh_steps(&source_db, &target_db, serde_json::json!({})).await.unwrap();
    assert!(report.equal, "{report:#?}");
    let r = refresh_of(&report);
    assert!(r.changes_since.is_some(), "the marks were used: {r:#?}");
    for (t, _, _) in &tables {
        // Copied: the two updated rows, the source's insert, the target's delete. Deleted: the
        // two updated rows, the target's insert, the source's delete.
        let extremes = if *t == "k_big" { (2, 1) } else { (0, 0) };
        assert_eq!(changed_rows(r, t), (4 + extremes.0, 4 + extremes.1), "{t}: {r:#?}");
    }
    assert!(verify_now(&source_db, &target_db).await.equal);
    drop((src, target));
    cleanup(&source_db, &target_db).await;
}
