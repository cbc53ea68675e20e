//! Post-data items on the test bed: an index build that outlives its invocation keeps running on
//! the server, and the next invocation waits for it instead of building it twice (RDS-CASES T35
//! for post-data); a finished item is recognized from the catalog.

use std::time::{Duration, Instant};

use pgferry_core::copy;
use pgferry_core::dump::postdata;
use pgferry_core::pg::QualifiedName;
use pgferry_core::plan::{self, PlanOptions};
use pgferry_core::schema;
use pgferry_core::step::{ChunkInput, PostDataItem, PostDataItemKind, keys};
use pgferry_tests::{Server, connect, create_db, drop_db, source_with, step_setup, strings, testbed};

#[tokio::test]
async fn t35_an_index_build_out_of_time_finishes_on_the_server_and_is_waited_for() {
    let db = create_db(Server::Target, "postdata").await;
    let client = connect(&testbed().url(Server::Target, &db)).await;
    client
        .batch_execute(
            "CREATE TABLE big (id bigint NOT NULL, v text);
             INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 1500000) g;
             CREATE TABLE parent (id int PRIMARY KEY); CREATE TABLE child (id int, p int);
             INSERT INTO parent SELECT generate_series(1, 1000); INSERT INTO child SELECT g, g FROM generate_series(1, 1000) g;
             ALTER TABLE child ADD CONSTRAINT child_p_fkey FOREIGN KEY (p) REFERENCES parent NOT VALID;",
        )
        .await
        .unwrap();
    let item = PostDataItem {
        id: "index-0001".into(),
        kind: PostDataItemKind::BuildIndex,
        table: QualifiedName::new("public", "big"),
        names: vec!["big_v".into()],
        sql: "CREATE INDEX big_v ON public.big USING btree (v)".into(),
        seal: None,
    };

    // An invocation whose time is up as soon as the build starts: it returns, the build goes on.
    let first = connect(&testbed().url(Server::Target, &db)).await;
    let deadline = Instant::now() + Duration::from_millis(20_300);
    let out = postdata::run_item(&first, "run-t35", &item, Some(deadline)).await.unwrap();
    assert!(!out.done, "{out:?}");
    assert_eq!(out.outcome, "still running");
    drop(first);

    // The next invocation finds the build running under its tag and waits for it.
    let out = postdata::run_item(&client, "run-t35", &item, None).await.unwrap();
    assert!(out.done);
    // (Should the build end between this invocation's first look and its claim, it never had
    // to wait: "another invocation". Either way it built nothing itself.)
    assert!(
        matches!(out.outcome.as_str(), "finished by an earlier invocation" | "finished by another invocation"),
        "{out:?}"
    );
    let valid: bool = client
        .query_one("SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.big_v'::regclass", &[])
        .await
        .unwrap()
        .get(0);
    assert!(valid);
    let builds: i64 =
        client.query_one("SELECT count(*) FROM pg_class WHERE relname LIKE 'big_v%'", &[]).await.unwrap().get(0);
    assert_eq!(builds, 1, "built once");

    // Once done, an item is recognized without running anything.
    let out = postdata::run_item(&client, "run-t35", &item, None).await.unwrap();
    assert_eq!((out.done, out.outcome.as_str()), (true, "already done"));

    // Validation: NOT VALID foreign keys become valid; a second run finds them valid.
    let validate = PostDataItem {
        id: "validate-0001".into(),
        kind: PostDataItemKind::ValidateConstraints,
        table: QualifiedName::new("public", "child"),
        names: vec!["child_p_fkey".into()],
        sql: "ALTER TABLE public.child VALIDATE CONSTRAINT child_p_fkey".into(),
        seal: None,
    };
    let out = postdata::run_item(&client, "run-t35", &validate, None).await.unwrap();
    assert_eq!((out.done, out.outcome.as_str()), (true, "validated"));
    let out = postdata::run_item(&client, "run-t35", &validate, None).await.unwrap();
    assert_eq!(out.outcome, "already done");

    drop(client);
    drop_db(Server::Target, &db).await;
}

#[tokio::test]
async fn the_chunk_that_completes_a_table_builds_its_indexes_and_post_data_attaches_them() {
    let (source_db, target_db, source) = source_with(
        "overlap",
        "CREATE TABLE big (id int PRIMARY KEY, v text NOT NULL);
         INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 60000) g;
         CREATE INDEX big_v ON big (v);
         CREATE TABLE other (id int PRIMARY KEY, big_id int REFERENCES big);
         INSERT INTO other SELECT g, g FROM generate_series(1, 1000) g;",
    )
    .await;
    let (ctx, input) = step_setup(&source_db, &target_db, serde_json::json!({}));
    schema::globals(&ctx, &input).await.unwrap();
    schema::pre_data(&ctx, &input).await.unwrap();
    let plan = plan::build(&ctx, &input, PlanOptions { slice_bytes: 512 * 1024, slices_per_chunk: 1 }).await.unwrap();
    ctx.store.put_json(&keys::plan(&input.run_id), &plan).await.unwrap();
    ctx.store.put_json(&keys::chunks(&input.run_id), &plan.chunks).await.unwrap();
    let items = schema::post_data_plan(&ctx, &input).await.unwrap();
    assert_eq!((items.indexes, items.validations), (3, 1), "{items:?}");

    let big: Vec<_> = plan.chunks.iter().filter(|c| c.table.name == "big").cloned().collect();
    assert!(big.len() >= 3, "{} chunks", big.len());
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    let built = || async {
        let row = target
            .query_one(
                "SELECT to_regclass('public.big_pkey') IS NOT NULL, to_regclass('public.big_v') IS NOT NULL",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, bool>(0), row.get::<_, bool>(1))
    };
    let copy_one = |chunk: pgferry_core::step::Chunk| {
        let input = ChunkInput { job: input.job.clone(), run_id: input.run_id.clone(), chunk };
        let ctx = &ctx;
        async move { copy::copy_chunk(ctx, &input, None).await.unwrap() }
    };
    // The last chunk of `big` is copied last: until then its indexes do not exist.
    for chunk in &big[..big.len() - 1] {
        assert!(copy_one(chunk.clone()).await.done);
        assert_eq!(built().await, (false, false), "no index before the table's last slice");
    }
    assert!(copy_one(big[big.len() - 1].clone()).await.done);
    assert_eq!(built().await, (true, true), "the completing chunk built the table's indexes");
    for chunk in plan.chunks.iter().filter(|c| c.table.name != "big") {
        assert!(copy_one(chunk.clone()).await.done);
    }

    // Post-data attaches the prebuilt index to the key and validates the foreign key.
    let out = schema::post_data_complete(&ctx, &input).await.unwrap();
    assert!(out.statements > 0);
    let keys = strings(
        &target,
        "SELECT format('%s %s %s', conname, pg_get_constraintdef(oid), convalidated) FROM pg_constraint \
         WHERE connamespace = 'public'::regnamespace ORDER BY 1",
    )
    .await;
    assert_eq!(
        keys,
        vec![
            "big_pkey PRIMARY KEY (id) t".to_string(),
            "other_big_id_fkey FOREIGN KEY (big_id) REFERENCES big(id) t".to_string(),
            "other_pkey PRIMARY KEY (id) t".to_string(),
        ]
    );
    drop((target, source));
    drop_db(Server::Target, &target_db).await;
    drop_db(Server::Source, &source_db).await;
}
