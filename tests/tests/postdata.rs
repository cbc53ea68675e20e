//! Post-data items on the test bed: an index build that outlives its invocation keeps running on
//! the server, and the next invocation waits for it instead of building it twice (RDS-CASES T35
//! for post-data); a finished item is recognized from the catalog.

use std::time::{Duration, Instant};

use pgferry_core::pg::QualifiedName;
use pgferry_core::schema::postdata;
use pgferry_core::step::{PostDataItem, PostDataItemKind};
use pgferry_tests::{Server, connect, create_db, drop_db, testbed};

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
    assert_eq!(out.outcome, "finished by an earlier invocation", "{out:?}");
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
    };
    let out = postdata::run_item(&client, "run-t35", &validate, None).await.unwrap();
    assert_eq!((out.done, out.outcome.as_str()), (true, "validated"));
    let out = postdata::run_item(&client, "run-t35", &validate, None).await.unwrap();
    assert_eq!(out.outcome, "already done");

    drop(client);
    drop_db(Server::Target, &db).await;
}
