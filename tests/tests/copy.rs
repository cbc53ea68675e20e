//! The chunked copy against the test bed: slices cut at key quantiles or page ranges, binary or
//! text COPY, exactly once under kills and deadlines (RDS-CASES T30–T37, T40).

use std::time::{Duration, Instant};

use pgferry_core::context::StepContext;
use pgferry_core::plan::{self, Plan, PlanOptions};
use pgferry_core::step::{ChunkInput, CopyFormat, SchemaRequest, Slice, StepInput};
use pgferry_core::{ErrorKind, copy};
use pgferry_tests::{Server, connect, drop_db, source_with, step_setup, testbed, unique_name};
use tokio_postgres::Client;

struct Pair {
    ctx: StepContext,
    input: StepInput,
    source_db: String,
    target_db: String,
    source: Client,
}

/// A source database built by `ddl`, an empty target, and the schema's pre-data applied.
async fn pair(prefix: &str, ddl: &str) -> Pair {
    let (source_db, target_db, source) = source_with(prefix, ddl).await;
    let (ctx, input) = step_setup(&source_db, &target_db, serde_json::json!({}));
    pgferry_core::dispatch::schema(&ctx, SchemaRequest::Globals(input.clone())).await.unwrap();
    pgferry_core::dispatch::schema(&ctx, SchemaRequest::PreData(input.clone())).await.unwrap();
    Pair { ctx, input, source_db, target_db, source }
}

impl Pair {
    async fn plan(&self, slice_bytes: u64, slices_per_chunk: usize) -> Plan {
        plan::build(&self.ctx, &self.input, PlanOptions { slice_bytes, slices_per_chunk }).await.unwrap()
    }

    fn chunk_input(&self, plan: &Plan, table: &str) -> ChunkInput {
        let chunk = plan.chunks.iter().find(|c| c.table.name == table).unwrap().clone();
        ChunkInput { job: self.input.job.clone(), run_id: self.input.run_id.clone(), chunk }
    }

    async fn target(&self) -> Client {
        connect(&testbed().url(Server::Target, &self.target_db)).await
    }

    async fn cleanup(self) {
        drop(self.source);
        drop_db(Server::Target, &self.target_db).await;
        drop_db(Server::Source, &self.source_db).await;
    }
}

/// Count, distinct keys and an md5 over the rows in key order: equal on both sides means no row
/// is missing, duplicated or different.
async fn fingerprint(client: &Client, table: &str, key: &str) -> (i64, i64, String) {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT ({key})), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY {key}, t::text)), '') \
                 FROM {table} t"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

const BIG: &str = "CREATE TABLE big (id bigint PRIMARY KEY, body text NOT NULL); \
    INSERT INTO big SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 200000) g;";

/// Terminates the target backend of `run_id`'s copy as soon as it is loading rows.
async fn kill_copy_when_loading(run_id: &str, after_slices: i64, target_db: &str) {
    let admin = connect(&testbed().admin_url(Server::Target, "postgres")).await;
    let app = format!("pgferry:copy:{run_id}");
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(60), "the copy never started loading");
        let ledger: i64 = if after_slices > 0 {
            let target = connect(&testbed().admin_url(Server::Target, target_db)).await;
            target
                .query_one("SELECT count(*) FROM pgferry.copied_chunks WHERE run_id = $1", &[&run_id])
                .await
                .unwrap()
                .get(0)
        } else {
            0
        };
        if ledger >= after_slices {
            let killed: i64 = admin
                .query_one(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE application_name = $1 AND state = 'active' AND query LIKE 'COPY%FROM STDIN%'",
                    &[&app],
                )
                .await
                .unwrap()
                .get(0);
            if killed > 0 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn t40_a_key_range_chunk_killed_mid_slice_and_retried_has_no_missing_or_duplicate_rows() {
    let p = pair("t40k", BIG).await;
    let plan = p.plan(2 * 1024 * 1024, 64).await;
    let input = p.chunk_input(&plan, "big");
    assert!(input.chunk.slices.len() >= 8, "expected key-range slices: {:?}", input.chunk.slices.len());
    assert!(matches!(input.chunk.slices[0], Slice::KeyRange { .. }));

    let (copy, ()) =
        tokio::join!(copy::copy_chunk(&p.ctx, &input, None), kill_copy_when_loading(&input.run_id, 2, &p.target_db));
    let err = copy.unwrap_err();
    assert_eq!(err.kind().step_error_name(), "Pgferry.Retryable", "{err}");

    let retried = copy::copy_chunk(&p.ctx, &input, None).await.unwrap();
    assert!(retried.done);
    assert_eq!(retried.rows, 200_000);
    let target = p.target().await;
    assert_eq!(fingerprint(&p.source, "big", "id").await, fingerprint(&target, "big", "id").await);
    drop(target);
    p.cleanup().await;
}

/// Issue 23: two invocations of one chunk at once (a retry racing a Lambda that did not die):
/// both end well, each slice is committed by exactly one of them, the rows arrive once.
#[tokio::test]
async fn two_invocations_of_one_chunk_at_once_both_succeed_and_copy_each_row_once() {
    let p = pair("twice", BIG).await;
    let plan = p.plan(2 * 1024 * 1024, 64).await;
    let input = p.chunk_input(&plan, "big");
    assert!(input.chunk.slices.len() >= 4, "expected several slices: {}", input.chunk.slices.len());
    let (a, b) = tokio::join!(copy::copy_chunk(&p.ctx, &input, None), copy::copy_chunk(&p.ctx, &input, None));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.done && b.done);
    assert_eq!((a.rows, b.rows), (200_000, 200_000), "each reports the whole chunk");
    let target = p.target().await;
    assert_eq!(fingerprint(&p.source, "big", "id").await, fingerprint(&target, "big", "id").await);
    drop(target);
    p.cleanup().await;
}

#[tokio::test]
async fn t40_a_whole_table_chunk_killed_mid_copy_and_retried_has_no_missing_or_duplicate_rows() {
    let p = pair("t40w", BIG).await;
    let plan = p.plan(u64::MAX / 2, 1).await;
    let input = p.chunk_input(&plan, "big");
    assert_eq!(input.chunk.slices, vec![Slice::Whole]);

    let (copy, ()) =
        tokio::join!(copy::copy_chunk(&p.ctx, &input, None), kill_copy_when_loading(&input.run_id, 0, &p.target_db));
    assert_eq!(copy.unwrap_err().kind(), ErrorKind::ConnectionLost);
    let retried = copy::copy_chunk(&p.ctx, &input, None).await.unwrap();
    assert_eq!((retried.done, retried.rows), (true, 200_000));
    let target = p.target().await;
    assert_eq!(fingerprint(&p.source, "big", "id").await, fingerprint(&target, "big", "id").await);
    drop(target);
    p.cleanup().await;
}

#[tokio::test]
async fn t35_a_chunk_out_of_time_commits_whole_slices_and_resumes_where_it_stopped() {
    let p = pair("t35", BIG).await;
    let plan = p.plan(4 * 1024 * 1024, 64).await;
    let input = p.chunk_input(&plan, "big");
    let slices = input.chunk.slices.len();
    let mut invocations = 0;
    loop {
        invocations += 1;
        // Far too little time for more than the one slice every invocation is allowed.
        let out = copy::copy_chunk(&p.ctx, &input, Some(Instant::now() + Duration::from_millis(10))).await.unwrap();
        assert_eq!(out.slices_done, invocations.min(slices), "one slice per invocation");
        if out.done {
            assert_eq!(out.rows, 200_000);
            break;
        }
        assert!(invocations < 1000);
    }
    assert_eq!(invocations, slices);
    let target = p.target().await;
    assert_eq!(fingerprint(&p.source, "big", "id").await, fingerprint(&target, "big", "id").await);
    drop(target);
    p.cleanup().await;
}

const SHAPES: &str = "
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
    CREATE TYPE pair AS (a int, b text);
    CREATE DOMAIN moods AS mood[];
    CREATE TABLE typed (id int PRIMARY KEY, m mood, ms mood[], p pair, d moods);
    INSERT INTO typed SELECT g, 'ok', ARRAY['sad','happy']::mood[], ROW(g, 'x' || g)::pair, ARRAY['ok']::mood[]
      FROM generate_series(1, 3000) g;
    CREATE TABLE plain (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, n numeric, t timestamptz, b bytea,
                        j jsonb, total numeric GENERATED ALWAYS AS (n * 2) STORED);
    INSERT INTO plain (n, t, b, j) SELECT g / 3.0, now() - g * interval '1 min', decode(md5(g::text), 'hex'),
      jsonb_build_object('g', g) FROM generate_series(1, 30000) g;
    CREATE TABLE keyless (ts timestamptz, msg text);
    INSERT INTO keyless SELECT now() - g * interval '1 s', repeat('m', 200) FROM generate_series(1, 40000) g;
    CREATE TABLE multi (tenant text NOT NULL, id int NOT NULL, v text, PRIMARY KEY (tenant, id));
    INSERT INTO multi SELECT 't' || (g % 7), g, repeat('v', 100) FROM generate_series(1, 40000) g;
    CREATE TABLE events (id int, at date NOT NULL, payload text) PARTITION BY RANGE (at);
    CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
    CREATE TABLE events_rest PARTITION OF events DEFAULT;
    INSERT INTO events SELECT g, date '2024-06-01' + g, 'e' FROM generate_series(1, 1000) g;
    CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY, v text);
    INSERT INTO scratch SELECT g, 'v' FROM generate_series(1, 100) g;
    CREATE MATERIALIZED VIEW typed_count AS SELECT count(*) AS n FROM typed;
";

#[tokio::test]
async fn t30_to_t37_table_shapes_are_planned_and_copied_equal() {
    let p = pair("shapes", SHAPES).await;
    let plan = p.plan(1024 * 1024, 2).await;
    let chunk = |name: &str| plan.chunks.iter().find(|c| c.table.name == name).unwrap();
    assert_eq!(chunk("typed").format, CopyFormat::Text, "user-defined types embed OIDs in binary COPY (T32)");
    assert_eq!(chunk("plain").format, CopyFormat::Binary);
    assert!(!chunk("plain").columns.contains(&"total".to_string()), "generated columns are not copied (T30)");
    assert!(matches!(chunk("keyless").slices[0], Slice::Pages { .. }), "{:?}", chunk("keyless").slices);
    assert_eq!(chunk("multi").key.len(), 2);
    assert!(plan.chunks.iter().filter(|c| c.table.name == "multi").count() >= 2);
    assert!(plan.chunks.iter().all(|c| c.table.name != "events"), "partitions are copied per leaf (T36)");
    assert!(plan.skipped.iter().any(|(t, _)| t.name == "events"));
    assert!(plan.unlogged.iter().any(|t| t.name == "scratch"));
    assert!(plan.materialized_views.iter().any(|t| t.name == "typed_count"));
    assert_eq!(plan.verify_items.iter().filter(|c| c.table.name == "keyless").count(), 1);

    for chunk in &plan.chunks {
        let input = ChunkInput { job: p.input.job.clone(), run_id: p.input.run_id.clone(), chunk: chunk.clone() };
        let out = copy::copy_chunk(&p.ctx, &input, None).await.unwrap();
        assert!(out.done);
    }
    let target = p.target().await;
    for (table, key) in [
        ("typed", "id"),
        ("plain", "id"),
        ("keyless", "ts, msg"),
        ("multi", "tenant, id"),
        ("events", "id"),
        ("scratch", "id"),
    ] {
        assert_eq!(fingerprint(&p.source, table, key).await, fingerprint(&target, table, key).await, "{table}");
    }
    drop(target);
    p.cleanup().await;
}

#[tokio::test]
async fn t34_large_objects_keep_their_oids_owners_grants_comments_and_bytes() {
    let owner = unique_name("lo_owner");
    // A name with `=` and `/`, which an aclitem's text quotes (and a parser splitting it breaks on).
    let reader_name = unique_name("lo=reader/x");
    let reader = pgferry_core::pg::quote_ident(&reader_name);
    // On the target the roles come from the globals step, made by the master (which then holds
    // ADMIN on them: PostgreSQL 16+ lets it act as no other role).
    for url in [testbed().admin_url(Server::Source, "postgres"), testbed().url(Server::Target, "postgres")] {
        let client = connect(&url).await;
        client.batch_execute(&format!("CREATE ROLE {owner} NOLOGIN; CREATE ROLE {reader} NOLOGIN")).await.unwrap();
    }
    let p = pair(
        "t34",
        "CREATE TABLE docs (id int PRIMARY KEY, body oid);
         SELECT lo_from_bytea(424242, decode(repeat('ab', 3000000), 'hex'));
         INSERT INTO docs SELECT g, lo_from_bytea(0, convert_to(repeat('doc ' || g, 100), 'UTF8'))
           FROM generate_series(1, 20) g;
         INSERT INTO docs VALUES (0, 424242);",
    )
    .await;
    let admin = connect(&testbed().admin_url(Server::Source, &p.source_db)).await;
    admin
        .batch_execute(&format!(
            "ALTER LARGE OBJECT 424242 OWNER TO {owner}; GRANT SELECT ON LARGE OBJECT 424242 TO {reader}; \
             COMMENT ON LARGE OBJECT 424242 IS 'the big one'"
        ))
        .await
        .unwrap();
    // The master user reads the object it no longer owns through a grant, as on RDS.
    admin.batch_execute("GRANT SELECT ON LARGE OBJECT 424242 TO postgres").await.unwrap();

    let out = pgferry_core::lobs::copy_all(&p.ctx, &p.input).await.unwrap();
    assert_eq!(out.objects, 21);
    assert!(out.bytes >= 3_000_000);
    let again = pgferry_core::lobs::copy_all(&p.ctx, &p.input).await.unwrap();
    assert_eq!(again.already_present, 21, "a retried step leaves equal objects alone");

    // Read back as the superuser: the master user is no longer a member of the new owner.
    let target = connect(&testbed().admin_url(Server::Target, &p.target_db)).await;
    let row = target
        .query_one(
            "SELECT pg_get_userbyid(lomowner)::text, \
                    EXISTS (SELECT 1 FROM aclexplode(lomacl) e \
                            WHERE pg_get_userbyid(e.grantee) = $1 AND e.privilege_type = 'SELECT'), \
                    obj_description(oid, 'pg_largeobject'), md5(lo_get(oid)) \
             FROM pg_largeobject_metadata WHERE oid = 424242",
            &[&reader_name],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), owner);
    assert!(row.get::<_, bool>(1), "SELECT granted to {reader}");
    assert!(reader.starts_with('"'), "the name needs quoting: {reader}");
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("the big one"));
    let source_md5: String = admin.query_one("SELECT md5(lo_get(424242))", &[]).await.unwrap().get(0);
    assert_eq!(row.get::<_, String>(3), source_md5);
    let all = "SELECT string_agg(oid::text || ':' || md5(lo_get(oid)), ',' ORDER BY oid) FROM pg_largeobject_metadata";
    let source_all: String = admin.query_one(all, &[]).await.unwrap().get(0);
    let target_all: String = target.query_one(all, &[]).await.unwrap().get(0);
    assert_eq!(source_all, target_all, "every object keeps its OID and bytes");
    drop((target, admin));
    p.cleanup().await;
    for server in [Server::Source, Server::Target] {
        let admin = connect(&testbed().admin_url(server, "postgres")).await;
        admin.batch_execute(&format!("DROP ROLE {owner}; DROP ROLE {reader}")).await.unwrap();
    }
}
