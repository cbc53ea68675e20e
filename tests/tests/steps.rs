//! Steps called directly, as a retrying state machine would call them: a retried step must never
//! duplicate or lose anything (RDS-CASES T40, T60).

use pgferry_core::access::{self, Obtain};
use pgferry_core::context::StepContext;
use pgferry_core::dump::report::SchemaReport;
use pgferry_core::dump::sanitize::Verdict;
use pgferry_core::roles::{MembershipLog, holder_role};
use pgferry_core::step::{ChunkInput, SchemaRequest, StepInput, keys};
use pgferry_core::{copy, plan, schema};
use pgferry_tests::{Server, connect, create_db, drop_db, step_setup, testbed, unique_name};

async fn setup(prefix: &str) -> (StepContext, StepInput, String, String) {
    let source_db = create_db(Server::Source, prefix).await;
    let source = connect(&testbed().url(Server::Source, &source_db)).await;
    source
        .batch_execute(
            "CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text, \
                                 price numeric, total numeric GENERATED ALWAYS AS (price * 2) STORED); \
             INSERT INTO items (name, price) SELECT 'item ' || g, g FROM generate_series(1, 1000) g; \
             INSERT INTO items (name, price) VALUES (NULL, 0), ('', 0);",
        )
        .await
        .unwrap();
    let target_db = unique_name(&format!("{prefix}_dst"));
    let (ctx, input) = step_setup(&source_db, &target_db, serde_json::json!({}));
    (ctx, input, source_db, target_db)
}

async fn cleanup(source_db: &str, target_db: &str) {
    drop_db(Server::Target, target_db).await;
    drop_db(Server::Source, source_db).await;
}

#[tokio::test]
async fn t40_retried_chunk_is_committed_exactly_once() {
    let (ctx, input, source_db, target_db) = setup("t40").await;
    pgferry_core::dispatch::schema(&ctx, SchemaRequest::Globals(input.clone())).await.unwrap();
    pgferry_core::dispatch::schema(&ctx, SchemaRequest::PreData(input.clone())).await.unwrap();
    let plan = plan::build(&ctx, &input, plan::PlanOptions::default()).await.unwrap();
    assert_eq!(plan.chunks.len(), 1);
    assert_eq!(plan.chunks[0].columns, vec!["id", "name", "price"], "generated columns are not copied (T30)");
    let chunk = ChunkInput { job: input.job.clone(), run_id: input.run_id.clone(), chunk: plan.chunks[0].clone() };

    let first = copy::copy_chunk(&ctx, &chunk, None).await.unwrap();
    assert_eq!(first.rows, 1002);
    assert!(!first.already_committed);
    let again = copy::copy_chunk(&ctx, &chunk, None).await.unwrap();
    assert!(again.already_committed, "the ledger must stop a second copy");
    assert_eq!(again.rows, 1002);

    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    let row = target
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE name IS NULL), count(*) FILTER (WHERE name = ''), \
                    sum(total)::text FROM items",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1002);
    assert_eq!(row.get::<_, i64>(1), 1, "NULL stays NULL");
    assert_eq!(row.get::<_, i64>(2), 1, "'' stays ''");
    assert_eq!(row.get::<_, String>(3), "1001000", "generated columns are computed again on the target");
    drop(target);
    cleanup(&source_db, &target_db).await;
}

/// Issue 23: the Map states hand chunks and post-data statements to the functions as read from
/// the artifact store. A chunk narrowed (copy and verify would both skip rows and still say
/// "equal") or a statement rewritten there is refused before anything is read or run; the items
/// as the plan steps sealed them run.
#[tokio::test]
async fn map_items_changed_in_the_store_are_refused_as_tampered() {
    use pgferry_core::runner::{self, Function};
    use pgferry_core::step::{Chunk, PostDataItem};
    let (ctx, input, source_db, target_db) = setup("tampered").await;
    pgferry_core::dispatch::schema(&ctx, SchemaRequest::Globals(input.clone())).await.unwrap();
    pgferry_core::dispatch::schema(&ctx, SchemaRequest::PreData(input.clone())).await.unwrap();
    plan::run(&ctx, &input).await.unwrap();
    schema::post_data_plan(&ctx, &input).await.unwrap();
    let chunks: Vec<Chunk> = ctx.store.get_json(&keys::chunks(&input.run_id)).await.unwrap();
    let items: Vec<PostDataItem> = ctx.store.get_json(&keys::post_data_items(&input.run_id, "indexes")).await.unwrap();
    assert!(chunks[0].seal.is_some() && items[0].seal.is_some(), "stored items are sealed");

    let invoke = |function: Function, payload: serde_json::Value| runner::invoke(&ctx, function, payload, None);
    let chunk_payload = |action: &str, chunk: &Chunk| serde_json::json!({"action": action, "job": input.job, "runId": input.run_id, "chunk": chunk});
    let mut narrowed = chunks[0].clone();
    narrowed.slices = vec![pgferry_core::step::Slice::KeyRange { lower: None, upper: Some(vec!["10".into()]) }];
    for (function, action) in [(Function::Copy, "copyChunk"), (Function::Verify, "verifyChunk")] {
        let err = invoke(function, chunk_payload(action, &narrowed)).await.unwrap_err();
        assert_eq!(runner::task_failure(&err).error, "Pgferry.Tampered", "{action}: {err}");
    }
    let mut rewritten = items[0].clone();
    rewritten.sql = "DROP TABLE public.items".into();
    let payload =
        serde_json::json!({"action": "postDataItem", "job": input.job, "runId": input.run_id, "item": rewritten});
    let err = invoke(Function::Schema, payload).await.unwrap_err();
    assert_eq!(runner::task_failure(&err).error, "Pgferry.Tampered", "{err}");
    // Another run's items do not pass for this run's either.
    let other = serde_json::json!({"action": "copyChunk", "job": input.job, "runId": "run-other", "chunk": chunks[0]});
    assert!(invoke(Function::Copy, other).await.is_err());

    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    let rows: i64 = target.query_one("SELECT count(*) FROM items", &[]).await.unwrap().get(0);
    assert_eq!(rows, 0, "nothing was copied by a refused item");
    // As sealed, they run.
    let out = invoke(Function::Copy, chunk_payload("copyChunk", &chunks[0])).await.unwrap();
    assert_eq!(out["rows"], 1002, "{out}");
    let payload =
        serde_json::json!({"action": "postDataItem", "job": input.job, "runId": input.run_id, "item": items[0]});
    invoke(Function::Schema, payload).await.unwrap();
    let out = invoke(Function::Verify, chunk_payload("verifyChunk", &chunks[0])).await.unwrap();
    assert_eq!(out["equal"], true, "{out}");
    drop(target);
    cleanup(&source_db, &target_db).await;
}

/// Roles are cluster-wide: runs into two databases of one target cluster (nightly refreshes
/// scheduled together), or a DBA altering a role meanwhile, update the same role at the same
/// moment, and PostgreSQL fails the later of two updates with "tuple concurrently updated" instead
/// of waiting. The globals step applies such a statement again; every run succeeds.
#[tokio::test]
async fn globals_applied_while_the_same_role_is_altered_elsewhere_succeed() {
    let role = unique_name("globals_race_role");
    let source_admin = connect(&testbed().admin_url(Server::Source, "postgres")).await;
    source_admin.batch_execute(&format!("CREATE ROLE {role} NOLOGIN")).await.unwrap();
    let source_db = create_db(Server::Source, "globals_race").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Two sessions altering the role on the target as fast as they can.
    let mut hammers = Vec::new();
    for _ in 0..2 {
        let (stop, sql) = (stop.clone(), format!("ALTER ROLE {role} CONNECTION LIMIT -1"));
        let admin = connect(&testbed().admin_url(Server::Target, "postgres")).await;
        hammers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Fails while the role does not exist yet, or on the same race: not the point.
                let _ = admin.batch_execute(&sql).await;
            }
        }));
    }
    let mut targets = Vec::new();
    for _ in 0..4 {
        let (a, b) = (unique_name("globals_race_a"), unique_name("globals_race_b"));
        let (ctx_a, input_a) = step_setup(&source_db, &a, serde_json::json!({}));
        let (ctx_b, input_b) = step_setup(&source_db, &b, serde_json::json!({}));
        let (ra, rb) = tokio::join!(
            pgferry_core::dispatch::schema(&ctx_a, SchemaRequest::Globals(input_a)),
            pgferry_core::dispatch::schema(&ctx_b, SchemaRequest::Globals(input_b))
        );
        targets.extend([a, b]);
        ra.unwrap();
        rb.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hammers {
        h.await.unwrap();
    }
    for t in &targets {
        drop_db(Server::Target, t).await;
    }
    drop_db(Server::Source, &source_db).await;
    source_admin.batch_execute(&format!("DROP ROLE {role}")).await.unwrap();
    let target_admin = connect(&testbed().admin_url(Server::Target, "postgres")).await;
    target_admin.batch_execute(&format!("DROP ROLE IF EXISTS {role}")).await.unwrap();
}

/// Whether `member` is a member of `role` on the target (directly or not), as the server sees it.
async fn member_of(admin: &tokio_postgres::Client, member: &str, role: &str) -> bool {
    admin
        .query_one("SELECT pg_has_role($1::text::name, $2::text::name, 'USAGE')", &[&member, &role])
        .await
        .unwrap()
        .get(0)
}

/// Two runs into databases of one cluster need the master to act as the same owner role. Each
/// holds that membership through its own holder role: the first to end drops only its own, so
/// the other keeps copying; a membership the master had before any run is left alone.
#[tokio::test]
async fn concurrent_runs_in_one_cluster_hold_their_own_memberships_and_release_only_those() {
    let owner = unique_name("shared_owner");
    let already = unique_name("granted_by_a_dba");
    let admin = connect(&testbed().admin_url(Server::Target, "postgres")).await;
    let master: String = connect(&testbed().url(Server::Target, "postgres"))
        .await
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    // The owner comes from the globals step, made by the master (which may then grant it: CREATEROLE,
    // or from PostgreSQL 16 the ADMIN option it receives); a DBA made the other and granted it.
    connect(&testbed().url(Server::Target, "postgres"))
        .await
        .batch_execute(&format!("CREATE ROLE {owner} NOLOGIN"))
        .await
        .unwrap();
    admin.batch_execute(&format!("CREATE ROLE {already} NOLOGIN; GRANT {already} TO {master}")).await.unwrap();
    let source_db = create_db(Server::Source, "holders").await;
    let (ctx_a, a) = step_setup(&source_db, &unique_name("holders_a"), serde_json::json!({}));
    let (ctx_b, b) = step_setup(&source_db, &unique_name("holders_b"), serde_json::json!({}));
    let target = connect(&testbed().url(Server::Target, "postgres")).await;
    let mut log_a = MembershipLog::open(&ctx_a.store, &a.run_id, pgferry_core::dump::PRE_DATA).await.unwrap();
    let mut log_b = MembershipLog::open(&ctx_b.store, &b.run_id, pgferry_core::dump::PRE_DATA).await.unwrap();

    assert!(log_a.ensure(&target, &owner).await.unwrap(), "A needs the membership and takes it");
    assert!(member_of(&admin, &master, &owner).await);
    assert!(log_b.ensure(&target, &owner).await.unwrap(), "B does not count on A's, which A will drop");
    assert!(!log_b.ensure(&target, &already).await.unwrap(), "a membership the master had is used as is");
    let holders: Vec<String> = admin
        .query(
            // The ADMIN-only membership of the role's creator (PostgreSQL 16+) acts as nothing.
            "SELECT m.rolname::text FROM pg_auth_members am JOIN pg_roles g ON g.oid = am.roleid \
             JOIN pg_roles m ON m.oid = am.member WHERE g.rolname = $1 \
               AND coalesce((to_jsonb(am) ->> 'set_option')::boolean, true) ORDER BY 1",
            &[&owner],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut expected = vec![holder_role(&a.run_id), holder_role(&b.run_id)];
    expected.sort();
    assert_eq!(holders, expected, "each run through its own holder, the master not directly");

    let out = pgferry_core::dispatch::schema(&ctx_a, SchemaRequest::Release(a.clone())).await.unwrap();
    assert_eq!(out["revoked"], serde_json::json!([owner]), "{out}");
    assert!(member_of(&admin, &master, &owner).await, "B still acts as the owner after A ended");
    pgferry_core::dispatch::schema(&ctx_b, SchemaRequest::Release(b.clone())).await.unwrap();
    assert!(!member_of(&admin, &master, &owner).await, "the last run to end leaves nothing granted");
    assert!(member_of(&admin, &master, &already).await, "the DBA's grant stays");
    let left: i64 =
        admin.query_one("SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)", &[&expected]).await.unwrap().get(0);
    assert_eq!(left, 0, "both holder roles dropped");
    drop(target);
    drop_db(Server::Source, &source_db).await;
    admin.batch_execute(&format!("DROP ROLE {owner}; DROP ROLE {already}")).await.unwrap();
}

/// Two runs from one source with `obtainSourceAccess`, a table the source master cannot read:
/// each reads through its own holder role on the source, so the first to end does not take the
/// other's access away.
#[tokio::test]
async fn consenting_runs_from_one_source_read_through_their_own_memberships() {
    let owner = unique_name("secret_keeper");
    let source_db = create_db(Server::Source, "access_holders").await;
    // Made by the master, as roles are on RDS (it may grant it: CREATEROLE, or ADMIN from 16 on).
    let master = connect(&testbed().url(Server::Source, &source_db)).await;
    master.batch_execute(&format!("CREATE ROLE {owner} NOLOGIN")).await.unwrap();
    let admin = connect(&testbed().admin_url(Server::Source, &source_db)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE vault (id int PRIMARY KEY); \
             INSERT INTO vault SELECT generate_series(1, 10); ALTER TABLE vault OWNER TO {owner}"
        ))
        .await
        .unwrap();
    let master = connect(&testbed().url(Server::Source, &source_db)).await;
    let readable = || async {
        // Err: the SQLSTATE (42501: permission denied).
        master
            .query_one("SELECT count(*) FROM vault", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .map_err(|e| e.code().map(|c| c.code().to_string()).unwrap_or_default())
    };
    assert_eq!(readable().await, Err("42501".to_string()));
    let consent = serde_json::json!({"obtainSourceAccess": true});
    let (ctx_a, a) = step_setup(&source_db, &unique_name("access_a"), consent.clone());
    let (ctx_b, b) = step_setup(&source_db, &unique_name("access_b"), consent);

    let log = access::obtain(&ctx_a, &a, Obtain::Memberships).await.unwrap();
    assert_eq!(log.memberships, vec![owner.clone()]);
    assert_eq!(readable().await, Ok(10));
    let log = access::obtain(&ctx_b, &b, Obtain::Memberships).await.unwrap();
    assert_eq!(log.memberships, vec![owner.clone()], "B does not count on A's membership, which A will drop");

    let restored = access::restore(&ctx_a, &a).await.unwrap();
    assert_eq!(restored, vec![format!("source membership in {owner} revoked")]);
    assert_eq!(readable().await, Ok(10), "B still reads after A ended");
    access::restore(&ctx_b, &b).await.unwrap();
    assert_eq!(readable().await, Err("42501".to_string()), "the source ends as it began");
    drop((admin, master));
    drop_db(Server::Source, &source_db).await;
    let admin = connect(&testbed().admin_url(Server::Source, "postgres")).await;
    admin.batch_execute(&format!("DROP ROLE {owner}")).await.unwrap();
}

#[tokio::test]
async fn t60_a_retried_schema_section_is_applied_once() {
    let (ctx, input, source_db, target_db) = setup("t60").await;
    pgferry_core::dispatch::schema(&ctx, SchemaRequest::Globals(input.clone())).await.unwrap();
    let first = schema::pre_data(&ctx, &input).await.unwrap();
    let second = schema::pre_data(&ctx, &input).await.unwrap();
    assert_eq!(first, second, "the retry finds the section applied and changes nothing");
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    let n: i64 = target
        .query_one("SELECT count(*) FROM pgferry.applied_sections WHERE run_id = $1", &[&input.run_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    drop(target);
    cleanup(&source_db, &target_db).await;
}

#[tokio::test]
async fn a_failing_schema_statement_is_named_and_leaves_nothing_applied() {
    let (ctx, input, source_db, target_db) = setup("applyfail").await;
    pgferry_core::dispatch::schema(&ctx, SchemaRequest::Globals(input.clone())).await.unwrap();
    // A table of the same name in the target makes the dump's CREATE TABLE fail half-way.
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    target.batch_execute("CREATE TABLE items (x int)").await.unwrap();
    let err = schema::pre_data(&ctx, &input).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("pre-data statement") && msg.contains("42P07") && msg.contains("CREATE TABLE"), "{msg}");
    assert_eq!(err.kind().step_error_name(), "Pgferry.SchemaFailed");
    let bookkeeping: bool =
        target.query_one("SELECT to_regclass('pgferry.applied_sections') IS NULL", &[]).await.unwrap().get(0);
    assert!(bookkeeping, "the failed section rolled back entirely, bookkeeping included");
    drop(target);
    cleanup(&source_db, &target_db).await;
}

#[tokio::test]
async fn t8_a_configured_source_master_maps_to_the_target_master() {
    let role = unique_name("corp_master");
    let source_db = create_db(Server::Source, "t8").await;
    let admin = connect(&testbed().admin_url(Server::Source, &source_db)).await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT CREATE ON SCHEMA public TO {role}; \
             CREATE TABLE owned_by_master (id int PRIMARY KEY); ALTER TABLE owned_by_master OWNER TO {role}; \
             GRANT SELECT ON owned_by_master TO postgres"
        ))
        .await
        .unwrap();
    let target_db = unique_name("t8_dst");
    let (ctx, input) = step_setup(&source_db, &target_db, serde_json::json!({"sourceMasterUser": role.clone()}));
    pgferry_core::dispatch::schema(&ctx, SchemaRequest::Globals(input.clone())).await.unwrap();
    pgferry_core::dispatch::schema(&ctx, SchemaRequest::PreData(input.clone())).await.unwrap();
    pgferry_core::dispatch::schema(&ctx, SchemaRequest::Release(input.clone())).await.unwrap();

    let target_admin = connect(&testbed().admin_url(Server::Target, &target_db)).await;
    let owner: String = target_admin
        .query_one("SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE relname = 'owned_by_master'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "dbadmin", "the source master's objects go to the target master");
    // Roles are cluster-wide: another test's globals step, running at the same time against the
    // same source cluster, may create this role on the target. What this run did is in its
    // report: every statement about the role skipped, by the source-master rule.
    let report: SchemaReport = ctx.store.get_json(&keys::schema_report(&input.run_id, "globals")).await.unwrap();
    let about_role: Vec<_> = report
        .plans
        .iter()
        .flat_map(|p| &p.statements)
        .filter(|st| st.before.contains(role.as_str()) && st.before.starts_with("CREATE ROLE"))
        .collect();
    assert!(!about_role.is_empty(), "the dump holds the source master's CREATE ROLE");
    assert!(
        about_role.iter().all(|st| st.verdict == Verdict::Skip && st.rule.as_deref() == Some("role.source-master")),
        "the source master is never created on the target: {about_role:#?}"
    );
    drop((admin, target_admin));
    cleanup(&source_db, &target_db).await;
    let admin = connect(&testbed().admin_url(Server::Source, "postgres")).await;
    admin.batch_execute(&format!("DROP ROLE {role}")).await.unwrap();
}
