//! The schema and globals inventory (RDS-CASES T56) against the test bed: after a copy, a change
//! made on the target to a default, an index, a grant, an owner, a role, a database setting, a
//! function or a large object is named; what the sanitizer changed on purpose (attributes RDS
//! refuses, a parameter only the parameter group may set) is explained by its rule and leaves
//! the report equal.
//!
//! Roles are cluster-wide and the globals step converges every role of the source cluster, so
//! the tests take one lock (a concurrent copy would undo a role change injected on the target),
//! use roles with a unique suffix and drop them when done.

use pgferry_core::pg::quote_ident;
use pgferry_core::step::StepInput;
use pgferry_core::verify::inventory::{InventoryDifference, InventoryReport};
use pgferry_tests::copied::{Copied, copy_with_steps};
use pgferry_tests::{Server, connect, create_db, testbed, unique_name};
use tokio::sync::Mutex;

/// Serializes the tests of this file (see the module doc).
static ROLES: Mutex<()> = Mutex::const_new(());

async fn copy_all(source_db: &str) -> Copied {
    copy_with_steps(source_db, &unique_name("inv_dst"), None).await
}

async fn drop_roles(roles: &[String]) {
    for server in [Server::Source, Server::Target] {
        let boot = connect(&testbed().admin_url(server, "postgres")).await;
        for role in roles {
            boot.batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(role))).await.unwrap();
        }
    }
}

/// The difference on `object` (a substring of the object's name) and `aspect`, if any.
fn find<'a>(list: &'a [InventoryDifference], object: &str, aspect: &str) -> Option<&'a InventoryDifference> {
    list.iter().find(|d| d.object.contains(object) && d.aspect == aspect)
}

fn explained<'a>(inv: &'a InventoryReport, object: &str, aspect: &str) -> &'a InventoryDifference {
    find(&inv.explained, object, aspect)
        .unwrap_or_else(|| panic!("{object} {aspect} is not among the explained differences:\n{}", inv.summary()))
}

fn unexplained<'a>(inv: &'a InventoryReport, object: &str, aspect: &str) -> &'a InventoryDifference {
    find(&inv.unexplained, object, aspect)
        .unwrap_or_else(|| panic!("{object} {aspect} is not among the unexplained differences:\n{}", inv.summary()))
}

#[tokio::test]
async fn t56_changes_made_on_the_target_are_each_named_by_the_inventory() {
    let _lock = ROLES.lock().await;
    let reader = unique_name("inv_reader");
    let source_db = create_db(Server::Source, "inv_src").await;
    let source = connect(&testbed().url(Server::Source, &source_db)).await;
    source
        .batch_execute(&format!(
            "CREATE ROLE {reader} NOLOGIN; \
             CREATE TABLE items (id int PRIMARY KEY, name text DEFAULT 'none', qty int NOT NULL DEFAULT 0); \
             CREATE INDEX items_name ON items (name); \
             INSERT INTO items SELECT g, 'item ' || g, g FROM generate_series(1, 100) g; \
             GRANT SELECT ON items TO {reader}; \
             CREATE TABLE notes (id int PRIMARY KEY, body text); \
             CREATE FUNCTION add_one(i int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT i + 1 $$; \
             CREATE FUNCTION twice(i int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT i * 2 $$; \
             SELECT lo_from_bytea(424242, 'hello, large object'); \
             ANALYZE;",
            reader = quote_ident(&reader)
        ))
        .await
        .unwrap();
    let c = copy_all(&source_db).await;

    // A clean copy: nothing unexplained; the source master's objects explained by the mapping.
    let report = c.verify_all().await;
    assert!(report.equal(), "{}", report.inventory.summary());
    let inv = &report.inventory;
    assert_eq!(inv.schema_run.as_deref(), Some(c.input.run_id.as_str()));
    assert!(inv.source_objects > 10, "{inv:#?}");
    let owner = explained(inv, "table public.items", "owner");
    assert_eq!((owner.source.as_deref(), owner.target.as_deref()), (Some("postgres"), Some("dbadmin")));
    assert!(!owner.rules.is_empty());
    explained(inv, "schema pgferry", "object");

    let target = c.target_admin().await;
    target
        .batch_execute(&format!(
            "ALTER TABLE items ALTER COLUMN qty SET DEFAULT 1; \
             DROP INDEX items_name; \
             REVOKE SELECT ON items FROM {reader}; \
             ALTER TABLE notes OWNER TO {reader}; GRANT SELECT ON notes TO dbadmin; \
             ALTER ROLE {reader} CREATEDB; \
             ALTER DATABASE {db} SET work_mem = '7MB'; \
             CREATE OR REPLACE FUNCTION add_one(i int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT i + 2 $$; \
             DROP FUNCTION twice(int); \
             CREATE FUNCTION twice(i bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT i * 2 $$; \
             SELECT lo_put(424242, 0, 'J');",
            reader = quote_ident(&reader),
            db = quote_ident(&c.target_db)
        ))
        .await
        .unwrap();
    let report = c.verify_all().await;
    assert!(!report.equal());
    assert!(report.tables.iter().all(|t| t.equal), "only the schema changed, not the rows");
    let inv = &report.inventory;
    let d = unexplained(inv, "table public.items", "column qty");
    assert_eq!(d.source.as_deref(), Some("integer NOT NULL DEFAULT 0"));
    assert_eq!(d.target.as_deref(), Some("integer NOT NULL DEFAULT 1"));
    assert!(unexplained(inv, "index public.items_name", "object").target.is_none());
    let acl = unexplained(inv, "table public.items", "acl");
    assert!(acl.source.as_deref().unwrap().contains(&format!("{reader}=r/")), "{acl:?}");
    let owner = unexplained(inv, "table public.notes", "owner");
    assert_eq!(owner.target.as_deref(), Some(reader.as_str()));
    let createdb = unexplained(inv, &format!("role {reader}"), "CREATEDB");
    assert_eq!((createdb.source.as_deref(), createdb.target.as_deref()), (Some("false"), Some("true")));
    assert_eq!(unexplained(inv, "database", "setting work_mem").target.as_deref(), Some("7MB"));
    unexplained(inv, "function public.add_one(i integer)", "body");
    assert!(unexplained(inv, "function public.twice(i integer)", "object").target.is_none());
    assert!(unexplained(inv, "function public.twice(i bigint)", "object").source.is_none());
    let lo = unexplained(inv, "large object 424242", "content");
    assert_ne!(lo.source, lo.target);
    // Nothing else: every change above (the new owner of notes also holds its default
    // privileges) and no false alarm.
    let named: std::collections::BTreeSet<String> =
        inv.unexplained.iter().map(|d| format!("{} / {}", d.object, d.aspect)).collect();
    let expected: std::collections::BTreeSet<String> = [
        "table public.items / column qty".to_string(),
        "index public.items_name / object".to_string(),
        "table public.items / acl".to_string(),
        "table public.notes / owner".to_string(),
        "table public.notes / acl".to_string(),
        format!("role {reader} / CREATEDB"),
        "database / setting work_mem".to_string(),
        "function public.add_one(i integer) / body".to_string(),
        "function public.twice(i integer) / object".to_string(),
        "function public.twice(i bigint) / object".to_string(),
        "large object 424242 / content".to_string(),
    ]
    .into_iter()
    .collect();
    assert_eq!(named, expected, "{}", inv.summary());
    // The readable summary names them.
    let summary = inv.summary();
    assert!(
        summary.contains("UNEXPLAINED") && summary.contains("index public.items_name: missing on the target"),
        "{summary}"
    );

    drop((source, target));
    c.cleanup().await;
    drop_roles(&[reader]).await;
}

#[tokio::test]
async fn t56_what_the_sanitizer_changed_on_purpose_is_explained_by_its_rule_and_the_copy_is_equal() {
    let _lock = ROLES.lock().await;
    let sfx = format!("{:08x}", rand::random::<u32>());
    let (su, repl) = (format!("inv_su_{sfx}"), format!("inv_repl_{sfx}"));
    let boot = connect(&testbed().admin_url(Server::Source, "postgres")).await;
    // Only the bootstrap superuser can make these; the target's master cannot carry them (T1, T3).
    boot.batch_execute(&format!(
        "CREATE ROLE {su} SUPERUSER LOGIN; CREATE ROLE {repl} LOGIN REPLICATION; \
         ALTER ROLE {repl} SET log_min_error_statement = 'error'; ALTER ROLE {repl} SET search_path = app, public;",
        su = quote_ident(&su),
        repl = quote_ident(&repl)
    ))
    .await
    .unwrap();
    let source_db = create_db(Server::Source, "inv_rules").await;
    let source = connect(&testbed().url(Server::Source, &source_db)).await;
    source
        .batch_execute(&format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, NULL); \
             GRANT SELECT ON t TO {su}, {repl}; ANALYZE;",
            su = quote_ident(&su),
            repl = quote_ident(&repl)
        ))
        .await
        .unwrap();
    let c = copy_all(&source_db).await;
    let report = c.verify_all().await;
    let inv = &report.inventory;
    assert!(report.equal(), "{}", inv.summary());
    assert!(inv.unexplained.is_empty());

    let superuser = explained(inv, &format!("role {su}"), "SUPERUSER");
    assert_eq!((superuser.source.as_deref(), superuser.target.as_deref()), (Some("true"), Some("false")));
    assert_eq!(superuser.rules, vec!["role.attributes"]);
    let replication = explained(inv, &format!("role {repl}"), "REPLICATION");
    assert_eq!(replication.rules, vec!["role.replication-membership"]);
    let membership = explained(inv, &format!("role {repl}"), "member of rds_replication");
    assert_eq!(membership.rules, vec!["role.replication-membership"]);
    assert!(membership.source.is_none());
    let guc = explained(inv, &format!("role {repl}"), "setting log_min_error_statement");
    assert_eq!(guc.rules, vec!["setting.context"]);
    // What the target may carry arrived: no difference at all.
    assert!(find(&inv.explained, &repl, "setting search_path").is_none());
    assert!(find(&inv.explained, &repl, "LOGIN").is_none());
    assert!(inv.summary().contains("none unexplained"), "{}", inv.summary());

    drop((source, boot));
    c.cleanup().await;
    drop_roles(&[su, repl]).await;
}

#[tokio::test]
async fn t56_a_standalone_verify_explains_with_the_report_of_the_run_that_applied_the_schema() {
    let _lock = ROLES.lock().await;
    let source_db = create_db(Server::Source, "inv_again").await;
    let source = connect(&testbed().url(Server::Source, &source_db)).await;
    source.batch_execute("CREATE TABLE t (id int PRIMARY KEY); ANALYZE").await.unwrap();
    let c = copy_all(&source_db).await;
    // A later verify (a new run id, same artifact store) finds the run in pgferry's bookkeeping.
    let input = StepInput { job: c.input.job.clone(), run_id: unique_name("verify") };
    let inv = pgferry_core::verify::inventory::inventory(&c.ctx, &input).await.unwrap();
    assert_eq!(inv.schema_run.as_deref(), Some(c.input.run_id.as_str()));
    assert!(inv.equal(), "{}", inv.summary());
    assert!(!inv.explained.is_empty());
    drop(source);
    c.cleanup().await;
}
