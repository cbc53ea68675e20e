//! `pgferry run` end to end on the RDS-like test bed as non-superuser masters: pgbench at scale 20
//! with foreign keys plus the table shapes of RDS-CASES T29–T39 arrive equal — rows and content
//! (checked independently of pgferry's hashes), sequences, large objects, indexes, constraints
//! (validated), triggers — and read access obtained on the source with the job's consent is undone.

mod common;

use std::path::{Path, PathBuf};

use common::{libpq_tool, pgferry, scratch};
use pgferry_tests::{Server, connect, create_db, drop_db, fingerprint, strings, testbed, unique_name};

fn write_job(dir: &Path, name: &str, job: serde_json::Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, job.to_string()).unwrap();
    path
}

/// Shapes beside pgbench (the source master `postgres` owns them unless said otherwise).
fn shapes(secret_owner: &str) -> String {
    format!(
        "
    SET ROLE postgres;
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
    CREATE TYPE pair AS (a int, b text);
    -- T32: user-defined types embed OIDs in binary COPY.
    CREATE TABLE typed (id int PRIMARY KEY, m mood, ms mood[], p pair);
    INSERT INTO typed SELECT g, 'ok', ARRAY['sad','happy']::mood[], ROW(g, 'x' || g)::pair FROM generate_series(1, 2000) g;
    -- T30 generated column, T31 identity kept as is.
    CREATE TABLE plain (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, n numeric, b bytea,
                        total numeric GENERATED ALWAYS AS (n * 2) STORED, UNIQUE NULLS NOT DISTINCT (n));
    INSERT INTO plain (n, b) SELECT g / 3.0, decode(md5(g::text), 'hex') FROM generate_series(1, 20000) g;
    CREATE INDEX plain_b ON plain (b) WHERE n > 10;
    -- T29: a trigger that must not fire on copied rows.
    CREATE TABLE audit (id serial PRIMARY KEY, note text);
    CREATE TABLE watched (id int PRIMARY KEY, v text);
    CREATE FUNCTION audit_it() RETURNS trigger LANGUAGE plpgsql AS
      $$ BEGIN INSERT INTO audit (note) VALUES ('fired ' || NEW.id); RETURN NEW; END $$;
    INSERT INTO watched SELECT g, 'w' FROM generate_series(1, 500) g;
    CREATE TRIGGER watched_audit AFTER INSERT ON watched FOR EACH ROW EXECUTE FUNCTION audit_it();
    INSERT INTO watched VALUES (501, 'w');
    -- T33: sequences, used and unused.
    CREATE SEQUENCE used_seq START 100; SELECT nextval('used_seq'), nextval('used_seq');
    CREATE SEQUENCE unused_seq;
    -- Keyless, multi-column key, deferrable key, foreign keys to a multi-column key.
    CREATE TABLE keyless (ts timestamptz, msg text);
    INSERT INTO keyless SELECT timestamptz '2024-01-01' + g * interval '1 s', repeat('m', 100) FROM generate_series(1, 20000) g;
    CREATE TABLE multi (tenant text NOT NULL, id int NOT NULL, v text,
                        CONSTRAINT multi_pk PRIMARY KEY (tenant, id),
                        CONSTRAINT multi_id_key UNIQUE (id) DEFERRABLE INITIALLY DEFERRED);
    INSERT INTO multi SELECT 't' || (g % 7), g, repeat('v', 50) FROM generate_series(1, 20000) g;
    CREATE TABLE multi_ref (id int PRIMARY KEY, tenant text, mid int, FOREIGN KEY (tenant, mid) REFERENCES multi);
    INSERT INTO multi_ref SELECT g, 't' || (g % 7), g FROM generate_series(1, 5000) g;
    -- T36: partitions, with a key and a foreign key on the partitioned table.
    CREATE TABLE events (id int, at date NOT NULL, account int REFERENCES pgbench_accounts (aid),
                         PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
    CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
    CREATE TABLE events_rest PARTITION OF events DEFAULT;
    CREATE INDEX events_account ON events (account);
    INSERT INTO events SELECT g, date '2024-06-01' + g, g FROM generate_series(1, 1000) g;
    -- Unlogged table; materialized view with an index (refreshed in post-data).
    CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY, v text);
    INSERT INTO scratch SELECT g, 'v' FROM generate_series(1, 100) g;
    CREATE MATERIALIZED VIEW typed_count AS SELECT m, count(*) AS n FROM typed GROUP BY m;
    CREATE UNIQUE INDEX typed_count_m ON typed_count (m);
    -- T34: large objects.
    SELECT lo_from_bytea(0, convert_to(repeat('large object ', 1000), 'UTF8'));
    -- T38: row-level security forced on the owner hides rows from the master.
    CREATE TABLE tenant_rows (id int PRIMARY KEY, tenant text NOT NULL);
    INSERT INTO tenant_rows SELECT g, 'tenant' || (g % 3) FROM generate_series(1, 300) g;
    ALTER TABLE tenant_rows ENABLE ROW LEVEL SECURITY;
    CREATE POLICY only_mine ON tenant_rows USING (tenant = current_user);
    ALTER TABLE tenant_rows FORCE ROW LEVEL SECURITY;
    -- T39: a table the master cannot read.
    CREATE TABLE secret (id int PRIMARY KEY, v text);
    INSERT INTO secret SELECT g, 's' || g FROM generate_series(1, 50) g;
    RESET ROLE;
    ALTER TABLE secret OWNER TO {secret_owner};
    ANALYZE;
    "
    )
}

/// NOT NULL constraints are in pg_constraint from PostgreSQL 18 on only (T64): compared as the
/// columns' NOT NULL by COLUMNS.
const CONSTRAINTS: &str = "SELECT format('%s %s %s valid=%s', conrelid::regclass, conname, pg_get_constraintdef(oid), convalidated) \
     FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND contype <> 'n' ORDER BY 1";
const COLUMNS: &str = "SELECT format('%s.%s %s notnull=%s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod), \
     a.attnotnull) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
     WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped \
     ORDER BY 1";
const INDEXES: &str = "SELECT format('%s valid=%s', pg_get_indexdef(indexrelid), indisvalid) FROM pg_index i \
     JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1";
const TRIGGERS: &str = "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1";
const SEQUENCES: &str = "SELECT format('%s %s %s', sequencename, last_value, start_value) FROM pg_sequences \
     WHERE schemaname = 'public' ORDER BY 1";
const LARGE_OBJECTS: &str = "SELECT format('%s %s', oid, md5(lo_get(oid))) FROM pg_largeobject_metadata ORDER BY 1";
const ACCESS: &str = "SELECT format('force=%s member=%s', \
     (SELECT relforcerowsecurity FROM pg_class WHERE oid = 'public.tenant_rows'::regclass), \
     (SELECT pg_has_role('postgres', (SELECT relowner FROM pg_class WHERE oid = 'public.secret'::regclass), 'USAGE')))";

#[tokio::test]
async fn pgbench_scale_20_with_foreign_keys_and_t29_to_t39_shapes_arrive_equal() {
    let secret_owner = unique_name("secret_owner");
    // Made by the master, as roles are on RDS: it may then make itself a member (CREATEROLE before
    // PostgreSQL 16, the ADMIN option it receives from 16 on) without being one.
    let source_master = connect(&testbed().url(Server::Source, "postgres")).await;
    source_master.batch_execute(&format!("CREATE ROLE {secret_owner} NOLOGIN")).await.unwrap();
    // The owner exists on the target too: roles are carried by globals, but the test's cleanup
    // must be able to drop it on both sides.
    let source_db = create_db(Server::Source, "e2e_src").await;
    libpq_tool("pgbench", &["-q", "-i", "-s", "20", "--foreign-keys"], Server::Source, &source_db);
    let admin_source = connect(&testbed().admin_url(Server::Source, &source_db)).await;
    admin_source.batch_execute(&shapes(&secret_owner)).await.unwrap();
    let target_db = unique_name("e2e_dst");
    let dir = scratch("run");
    let base = serde_json::json!({
        "source": {"url": testbed().url(Server::Source, &source_db)},
        "target": {"url": testbed().url(Server::Target, &target_db)},
        "maxConcurrency": 4
    });

    // Without consent: preflight names both tables and nothing is written.
    let job = write_job(&dir, "job.json", base.clone());
    let out = pgferry(&["run", job.to_str().unwrap()], &dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let said = format!("{stdout}{stderr}");
    assert!(said.contains("source-privileges") && said.contains("public.secret"), "{said}");
    assert!(said.contains("source-row-security") && said.contains("public.tenant_rows"), "{said}");
    assert!(said.contains("obtainSourceAccess"), "`run` shows each failing check's advice: {said}");
    assert!(said.contains("✗ Preflight"), "the failed phase is shown failed: {said}");
    let out = pgferry(&["preflight", job.to_str().unwrap()], &dir);
    let checks = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{checks}");
    assert!(checks.contains("obtainSourceAccess"), "the advice names the consent flag: {checks}");
    let target_admin = connect(&testbed().admin_url(Server::Target, "postgres")).await;
    let exists =
        !target_admin.query("SELECT 1 FROM pg_database WHERE datname = $1", &[&target_db]).await.unwrap().is_empty();
    assert!(!exists, "a failed preflight writes nothing");

    // With consent: the run obtains access, copies everything, and undoes what it obtained.
    let before = strings(&admin_source, ACCESS).await;
    let mut consenting = base.clone();
    consenting["obtainSourceAccess"] = serde_json::json!(true);
    let job = write_job(&dir, "job-consent.json", consenting);
    let report = dir.join("report.json");
    let out = pgferry(&["run", job.to_str().unwrap(), "--report", report.to_str().unwrap()], &dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgferry run failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!format!("{stdout}{stderr}").contains("p@ss"), "no secret may reach the output");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["verification"]["equal"], true, "{report:#}");
    assert_eq!(strings(&admin_source, ACCESS).await, before, "FORCE RLS and memberships restored on the source");
    assert_eq!(before, vec!["force=t member=f".to_string()]);

    let admin_target = connect(&testbed().admin_url(Server::Target, &target_db)).await;
    for (table, key) in [
        ("pgbench_accounts", "aid"),
        ("pgbench_branches", "bid"),
        ("pgbench_tellers", "tid"),
        ("pgbench_history", "tid, bid, aid, mtime, delta"),
        ("typed", "id"),
        ("plain", "id"),
        ("audit", "id"),
        ("watched", "id"),
        ("keyless", "ts, msg"),
        ("multi", "tenant, id"),
        ("multi_ref", "id"),
        ("events", "id"),
        ("scratch", "id"),
        ("typed_count", "m"),
        ("tenant_rows", "id"),
        ("secret", "id"),
    ] {
        assert_eq!(
            fingerprint(&admin_source, table, key).await,
            fingerprint(&admin_target, table, key).await,
            "{table}"
        );
    }
    assert_eq!(fingerprint(&admin_target, "pgbench_accounts", "aid").await.0, 2_000_000);
    assert_eq!(fingerprint(&admin_target, "audit", "id").await.0, 1, "T29: the trigger never fired on copied rows");
    assert_eq!(fingerprint(&admin_target, "tenant_rows", "id").await.0, 300, "T38: no row hidden");
    for (what, sql) in [
        ("constraints", CONSTRAINTS),
        ("columns", COLUMNS),
        ("indexes", INDEXES),
        ("triggers", TRIGGERS),
        ("sequences", SEQUENCES),
    ] {
        let (s, t) = (strings(&admin_source, sql).await, strings(&admin_target, sql).await);
        assert_eq!(s, t, "{what} differ");
        assert!(!s.is_empty(), "{what}");
    }
    let constraints = strings(&admin_target, CONSTRAINTS).await;
    assert!(constraints.iter().all(|c| c.ends_with("valid=t")), "every constraint validated: {constraints:#?}");
    assert!(constraints.iter().filter(|c| c.contains("FOREIGN KEY")).count() >= 6, "{constraints:#?}");
    assert_eq!(strings(&admin_source, LARGE_OBJECTS).await, strings(&admin_target, LARGE_OBJECTS).await);
    let rls = strings(
        &admin_target,
        "SELECT format('%s %s', relrowsecurity, relforcerowsecurity) FROM pg_class WHERE oid = 'public.tenant_rows'::regclass",
    )
    .await;
    assert_eq!(rls, vec!["t t".to_string()], "row-level security as on the source");
    let carried =
        strings(&admin_target, &format!("SELECT format('%s', pg_has_role('dbadmin', '{secret_owner}', 'USAGE'))"))
            .await;
    assert_eq!(carried, vec!["f".to_string()], "the run's temporary source membership is not carried");

    // The post-data report says what ran as parallel items.
    let run_dir = std::fs::read_dir(dir.join("artifacts").join("runs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.join("schema").join("post-data-indexes.json").exists())
        .expect("the run's artifacts");
    let items: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("schema/post-data-indexes.json")).unwrap()).unwrap();
    assert!(items.iter().any(|i| i["names"][0] == "pgbench_accounts_pkey"), "{items:#?}");
    let validations: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("schema/post-data-validations.json")).unwrap())
            .unwrap();
    assert!(validations.iter().any(|i| i["table"]["name"] == "pgbench_history"), "{validations:#?}");

    drop((admin_target, target_admin, admin_source));
    drop_db(Server::Target, &target_db).await;
    drop_db(Server::Source, &source_db).await;
}
