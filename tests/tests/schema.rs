//! The schema step on the RDS-like test bed, as the non-superuser master users: a source database
//! holding the shapes of RDS-CASES A and B arrives with zero failed statements, owners, grants,
//! default privileges and settings as on the source except what the report lists as impossible,
//! and the same job applied twice succeeds both times (T9, T60).
//!
//! Roles are cluster-wide and the globals step carries every role of the source cluster, so the
//! tests that create roles take one lock and drop their roles (on both clusters) when done.

use std::collections::BTreeSet;

use pgferry_core::context::{Credentials, StepContext};
use pgferry_core::dump::report::SchemaReport;
use pgferry_core::dump::sanitize::Verdict;
use pgferry_core::job::Job;
use pgferry_core::pg::quote_ident;
use pgferry_core::step::StepInput;
use pgferry_core::store::ArtifactStore;
use pgferry_core::{plan, schema};
use pgferry_tests::{Server, connect, drop_db, source_with, testbed, unique_name};
use tokio::sync::Mutex;
use tokio_postgres::Client;

/// Serializes the tests that create cluster-wide roles.
static ROLES: Mutex<()> = Mutex::const_new(());

/// The roles of one test, by their part in the shapes.
struct Shapes {
    sfx: String,
    db: String,
    tablespace: Option<(String, std::path::PathBuf)>,
}

impl Shapes {
    fn r(&self, base: &str) -> String {
        format!("{base}_{}", self.sfx)
    }
    fn q(&self, base: &str) -> String {
        quote_ident(&self.r(base))
    }
    /// Every role the test creates.
    fn roles(&self) -> Vec<String> {
        [
            "app",
            "asset_reader",
            "reset_job",
            "superuser tool",
            "we;ird",
            "su",
            "repl",
            "rls",
            "app_owner",
            "reader",
            "dba",
            "analyst",
            "mon",
            "ops",
            "grp",
            "u",
            "auditor",
            "rds_ad",
        ]
        .iter()
        .map(|b| if *b == "rds_ad" { format!("rds_ad_{}", self.sfx) } else { self.r(b) })
        .collect()
    }
}

async fn admin(server: Server, db: &str) -> Client {
    connect(&testbed().admin_url(server, db)).await
}

/// Creates the roles (some by the bootstrap superuser, some by the master) and the source
/// database with the shapes of T1–T6, T8, T11, T14, T15, T17, T20–T24.
async fn create_shapes() -> Shapes {
    let sfx = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let db = format!("shop_{sfx}");
    let mut s = Shapes { sfx, db, tablespace: None };
    let boot = admin(Server::Source, "postgres").await;
    let master = connect(&testbed().url(Server::Source, "postgres")).await;
    // Made by the bootstrap superuser: attributes the master could not give.
    boot.batch_execute(&format!(
        "CREATE ROLE {su} SUPERUSER LOGIN; CREATE ROLE {repl} LOGIN REPLICATION; CREATE ROLE {rls} BYPASSRLS LOGIN; \
         CREATE ROLE {rds_ad} NOLOGIN; CREATE ROLE {app_owner} NOLOGIN; CREATE ROLE {dba} LOGIN; \
         GRANT rds_superuser TO {dba} GRANTED BY rdsadmin; \
         ALTER ROLE {auditor_missing} SET log_min_error_statement = 'error';",
        su = s.q("su"),
        repl = s.q("repl"),
        rls = s.q("rls"),
        rds_ad = quote_ident(&format!("rds_ad_{}", s.sfx)),
        app_owner = s.q("app_owner"),
        dba = s.q("dba"),
        auditor_missing = s.q("app_owner"),
    ))
    .await
    .unwrap();
    // Made by the master (T1, T2, T3, T5, T6, T8).
    master
        .batch_execute(&format!(
            "CREATE ROLE {app} LOGIN CREATEDB CONNECTION LIMIT 20 VALID UNTIL '2030-01-01'; \
             CREATE ROLE {asset_reader} LOGIN; CREATE ROLE {reset_job} LOGIN; CREATE ROLE {tool} LOGIN; \
             CREATE ROLE {weird} NOLOGIN; CREATE ROLE {reader} NOLOGIN; CREATE ROLE {analyst} LOGIN; \
             CREATE ROLE {mon} LOGIN; CREATE ROLE {ops} LOGIN; CREATE ROLE {grp} NOLOGIN; CREATE ROLE {u} LOGIN; \
             CREATE ROLE {auditor} LOGIN; \
             ALTER ROLE {app} SET search_path = app, public; \
             ALTER ROLE {app} SET temp_tablespaces = 'rds_temp_tablespace'; \
             ALTER ROLE {auditor} SET log_statement = 'all'; \
             GRANT pg_monitor TO {mon}; GRANT pg_checkpoint TO {ops}; \
             GRANT {reader} TO {app};",
            app = s.q("app"),
            asset_reader = s.q("asset_reader"),
            reset_job = s.q("reset_job"),
            tool = s.q("superuser tool"),
            weird = s.q("we;ird"),
            reader = s.q("reader"),
            analyst = s.q("analyst"),
            mon = s.q("mon"),
            ops = s.q("ops"),
            grp = s.q("grp"),
            u = s.q("u"),
            auditor = s.q("auditor"),
        ))
        .await
        .unwrap();
    // T14: an ICU locale (C.UTF-8 as the libc locale exists on every Debian machine), or a libc
    // one on servers built without ICU.
    let locale = if pgferry_tests::icu_available().await {
        "LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"
    } else {
        "LOCALE_PROVIDER libc LC_COLLATE 'de_DE.UTF-8' LC_CTYPE 'de_DE.UTF-8'"
    };
    boot.batch_execute(&format!(
        "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' {locale} OWNER {}",
        quote_ident(&s.db),
        s.q("app_owner")
    ))
    .await
    .unwrap();
    // From PostgreSQL 16 a grantor must hold ADMIN on the role it grants: app_owner is given it
    // (ADMIN only) before granting grp in its name.
    let version: i32 = boot.query_one("SELECT current_setting('server_version_num')::int", &[]).await.unwrap().get(0);
    if version >= 160000 {
        boot.batch_execute(&format!(
            "GRANT {grp} TO {app_owner} WITH ADMIN OPTION, INHERIT FALSE, SET FALSE",
            grp = s.q("grp"),
            app_owner = s.q("app_owner")
        ))
        .await
        .unwrap();
    }
    // pg_read_all_data is not RDS's to pass on: from PostgreSQL 16 only a superuser grants it (T5).
    boot.batch_execute(&format!(
        "GRANT pg_read_all_data TO {analyst}; GRANT {app_owner} TO postgres; \
         GRANT {grp} TO {u} WITH ADMIN OPTION GRANTED BY {app_owner}; \
         ALTER DATABASE {db} SET timezone = 'Europe/Berlin'; \
         ALTER DATABASE {db} SET log_statement = 'ddl'; \
         COMMENT ON DATABASE {db} IS 'the shop'; \
         REVOKE CONNECT ON DATABASE {db} FROM PUBLIC; \
         GRANT CONNECT ON DATABASE {db} TO {app}; GRANT CONNECT ON DATABASE {db} TO postgres; \
         ALTER ROLE {app} IN DATABASE {db} SET statement_timeout = '5s'; \
         ALTER ROLE rdsadmin IN DATABASE {db} SET work_mem = '8MB';",
        analyst = s.q("analyst"),
        grp = s.q("grp"),
        u = s.q("u"),
        app_owner = s.q("app_owner"),
        app = s.q("app"),
        db = quote_ident(&s.db),
    ))
    .await
    .unwrap();

    // T11: a tablespace, when the test can give the server a directory (it runs as root in CI).
    let dir = std::env::temp_dir().join(format!("pgferry-ts-{}", s.sfx));
    let bed = std::env::var("PGFERRY_TESTBED_DIR").unwrap_or_else(|_| "/tmp/pgferry-testbed".into());
    if let Ok(meta) = std::fs::metadata(format!("{bed}/source")) {
        use std::os::unix::fs::MetadataExt;
        std::fs::create_dir_all(&dir).unwrap();
        if std::os::unix::fs::chown(&dir, Some(meta.uid()), Some(meta.gid())).is_ok() {
            let ts = s.r("fast");
            boot.batch_execute(&format!("CREATE TABLESPACE {} LOCATION '{}'", quote_ident(&ts), dir.display()))
                .await
                .unwrap();
            s.tablespace = Some((ts, dir));
        }
    }

    let shop = admin(Server::Source, &s.db).await;
    shop.batch_execute(&format!(
        "CREATE SCHEMA app AUTHORIZATION {app_owner}; CREATE SCHEMA \"Tenant A\"; \
         SET ROLE {app_owner}; CREATE EXTENSION hstore; COMMENT ON EXTENSION hstore IS 'key/value'; RESET ROLE; \
         CREATE EXTENSION pageinspect; \
         CREATE TYPE app.order_status AS ENUM ('new', 'paid'); ALTER TYPE app.order_status OWNER TO {app_owner}; \
         CREATE TABLE app.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, status app.order_status, \
                                  attrs public.hstore, \"select\" int); \
         ALTER TABLE app.orders OWNER TO {app_owner}; \
         CREATE TABLE \"Tenant A\".\"Order.Items\" (id int PRIMARY KEY, order_id bigint REFERENCES app.orders(id)); \
         GRANT USAGE ON SCHEMA \"Tenant A\" TO postgres; GRANT SELECT ON \"Tenant A\".\"Order.Items\" TO postgres; \
         CREATE FUNCTION app.secret() RETURNS int LANGUAGE sql SECURITY DEFINER AS $$ SELECT 42 $$; \
         ALTER FUNCTION app.secret() OWNER TO {app_owner}; \
         CREATE FUNCTION public.c_handler() RETURNS language_handler AS '$libdir/plpgsql', 'plpgsql_call_handler' LANGUAGE C; \
         CREATE FUNCTION public.add_int(int, int) RETURNS int LANGUAGE internal IMMUTABLE AS 'int4pl'; \
         CREATE LANGUAGE plunsafe HANDLER public.c_handler; \
         CREATE FUNCTION public.unsafe_fn() RETURNS int LANGUAGE plunsafe AS $$ begin return 1; end $$; \
         CREATE VIEW app.v_orders AS SELECT id, status FROM app.orders; ALTER VIEW app.v_orders OWNER TO {reader}; \
         CREATE FUNCTION public.audit_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN NULL; END $$; \
         CREATE EVENT TRIGGER audit_ddl ON ddl_command_end EXECUTE FUNCTION public.audit_ddl(); \
         CREATE PUBLICATION p1 FOR TABLE app.orders; \
         CREATE SUBSCRIPTION s1 CONNECTION 'host=127.0.0.1 dbname=none' PUBLICATION p1 \
             WITH (connect = false, enabled = false, create_slot = false, slot_name = NONE); \
         GRANT USAGE ON SCHEMA app TO {reader}, {asset_reader}; \
         GRANT SELECT ON ALL TABLES IN SCHEMA app TO {reader}; \
         ALTER DEFAULT PRIVILEGES FOR ROLE {app_owner} IN SCHEMA app GRANT SELECT ON TABLES TO {reader}; \
         GRANT SELECT (id) ON app.orders TO {weird}; \
         GRANT SELECT ON app.orders TO {asset_reader} WITH GRANT OPTION; \
         SET ROLE {asset_reader}; GRANT SELECT ON app.orders TO {tool}; RESET ROLE; \
         CREATE INDEX orders_status ON app.orders (status); \
         CREATE TABLE public.owned_by_master (id int); ALTER TABLE public.owned_by_master OWNER TO postgres; \
         GRANT ALL ON public.owned_by_master TO {app}; \
         CREATE POLICY p ON app.orders TO {reader} USING (true); \
         GRANT EXECUTE ON FUNCTION app.secret() TO {reset_job};",
        app_owner = s.q("app_owner"),
        reader = s.q("reader"),
        asset_reader = s.q("asset_reader"),
        weird = s.q("we;ird"),
        tool = s.q("superuser tool"),
        app = s.q("app"),
        reset_job = s.q("reset_job"),
    ))
    .await
    .unwrap();
    if let Some((ts, _)) = &s.tablespace {
        shop.batch_execute(&format!(
            "CREATE TABLE public.fast_table (id int) TABLESPACE {}; ALTER TABLE public.fast_table OWNER TO postgres",
            quote_ident(ts)
        ))
        .await
        .unwrap();
    }
    s
}

async fn drop_shapes(s: &Shapes, target_db: &str) {
    drop_db(Server::Target, target_db).await;
    let shop = admin(Server::Source, &s.db).await;
    shop.batch_execute("DROP EVENT TRIGGER IF EXISTS audit_ddl; ALTER SUBSCRIPTION s1 SET (slot_name = NONE); DROP SUBSCRIPTION IF EXISTS s1")
        .await
        .unwrap();
    drop(shop);
    drop_db(Server::Source, &s.db).await;
    if let Some((ts, dir)) = &s.tablespace {
        admin(Server::Source, "postgres")
            .await
            .batch_execute(&format!("DROP TABLESPACE {}", quote_ident(ts)))
            .await
            .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
    for server in [Server::Source, Server::Target] {
        let boot = admin(server, "postgres").await;
        for role in s.roles() {
            let exists = boot.query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role]).await.unwrap().is_some();
            if exists {
                boot.batch_execute(&format!("DROP OWNED BY {0}; DROP ROLE {0}", quote_ident(&role))).await.unwrap();
            }
        }
    }
}

fn context_and_input(source_db: &str, target_db: &str) -> (StepContext, StepInput) {
    let job = Job::from_json(
        &serde_json::json!({
            "source": {"url": testbed().url(Server::Source, source_db)},
            "target": {"url": testbed().url(Server::Target, target_db)}
        })
        .to_string(),
    )
    .unwrap();
    let mut credentials = Credentials::default();
    let job = credentials.take_from(&job).unwrap();
    let store = ArtifactStore::local(std::env::temp_dir().join(unique_name("pgferry-schema")));
    (StepContext::new(store, credentials), StepInput { job, run_id: unique_name("run") })
}

/// Runs globals, pre-data, plan, post-data and release as the state machine would.
async fn run_schema_steps(ctx: &StepContext, input: &StepInput) -> Vec<SchemaReport> {
    let g = schema::globals(ctx, input).await.unwrap_or_else(|e| panic!("globals: {}", e.with_advice()));
    let pre = schema::pre_data(ctx, input).await.unwrap_or_else(|e| panic!("pre-data: {}", e.with_advice()));
    plan::run(ctx, input).await.unwrap();
    let post =
        schema::post_data_complete(ctx, input).await.unwrap_or_else(|e| panic!("post-data: {}", e.with_advice()));
    schema::release(ctx, input).await.unwrap();
    let mut reports = Vec::new();
    for key in [g.report_key, pre.report_key, post.report_key] {
        reports.push(ctx.store.get_json::<SchemaReport>(&key).await.unwrap());
    }
    reports
}

/// Maps the source's master and bootstrap superuser to the target master.
fn map_role(name: &str) -> String {
    match name {
        "postgres" | "rdsadmin" => "dbadmin".to_string(),
        other => other.to_string(),
    }
}

/// Owners and exploded ACLs of the database's user objects, default ACLs, the database's own
/// owner, ACL, settings and comment — with roles mapped, as comparable strings.
async fn security_facts(client: &Client, skip: &[&str]) -> BTreeSet<String> {
    let rows = client
        .query(
            "WITH objs AS ( \
               SELECT 'rel' AS k, format('%I.%I', n.nspname, c.relname) AS id, c.relowner AS owner, \
                      coalesce(c.relacl, acldefault((CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::\"char\", c.relowner)) AS acl \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgferry', 'pg_toast') \
                  AND c.relkind IN ('r', 'v', 'm', 'S', 'p', 'f') \
               UNION ALL SELECT 'col', format('%I.%I.%I', n.nspname, c.relname, a.attname), c.relowner, a.attacl \
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                WHERE a.attacl IS NOT NULL AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               UNION ALL SELECT 'schema', quote_ident(nspname), nspowner, coalesce(nspacl, acldefault('n', nspowner)) \
                 FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema', 'pgferry') \
               UNION ALL SELECT 'func', p.oid::regprocedure::text, p.proowner, coalesce(p.proacl, acldefault('f', p.proowner)) \
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') \
               UNION ALL SELECT 'type', t.oid::regtype::text, t.typowner, coalesce(t.typacl, acldefault('T', t.typowner)) \
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
                WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND t.typtype = 'e' \
               UNION ALL SELECT 'database', '', datdba, coalesce(datacl, acldefault('d', datdba)) \
                 FROM pg_database WHERE datname = current_database() \
               UNION ALL SELECT 'defacl', format('%s/%s/%s', pg_get_userbyid(defaclrole), defaclnamespace::regnamespace, defaclobjtype), \
                      defaclrole, defaclacl FROM pg_default_acl) \
             SELECT k, id, pg_get_userbyid(owner)::text, \
                    coalesce((SELECT array_agg(format('%s|%s|%s|%s', \
                        CASE WHEN a.grantor = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantor) END, \
                        CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, \
                        a.privilege_type, a.is_grantable)) FROM aclexplode(acl) a), '{}') \
             FROM objs",
            &[],
        )
        .await
        .unwrap();
    let mut out = BTreeSet::new();
    for r in rows {
        let (kind, id, owner, acl): (String, String, String, Vec<String>) = (r.get(0), r.get(1), r.get(2), r.get(3));
        if skip.iter().any(|s| id.contains(s)) {
            continue;
        }
        let id = id.replace("postgres/", "dbadmin/");
        out.insert(format!("{kind} {id} owner {}", map_role(&owner)));
        for a in acl {
            let parts: Vec<String> = a.split('|').map(map_role).collect();
            out.insert(format!("{kind} {id} acl {}", parts.join("|")));
        }
    }
    let db = client
        .query_one(
            "SELECT coalesce(shobj_description(d.oid, 'pg_database'), ''), \
                    coalesce((SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting \
                               WHERE setdatabase = d.oid AND setrole = 0), '') \
             FROM pg_database d WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    out.insert(format!("database comment {}", db.get::<_, String>(0)));
    out.insert(format!("database settings {}", db.get::<_, String>(1)));
    out
}

/// Attributes, memberships and settings of the test's roles.
async fn role_facts(client: &Client, s: &Shapes) -> BTreeSet<String> {
    let roles = s.roles();
    let mut out = BTreeSet::new();
    for r in client
        .query(
            "SELECT rolname::text, rolcanlogin, rolcreatedb, rolcreaterole, rolinherit, rolconnlimit, \
                    coalesce(rolvaliduntil::text, ''), rolsuper, rolreplication, rolbypassrls \
             FROM pg_roles WHERE rolname = ANY($1)",
            &[&roles],
        )
        .await
        .unwrap()
    {
        out.insert(format!(
            "role {} login={} createdb={} createrole={} inherit={} connlimit={} until={}",
            r.get::<_, String>(0),
            r.get::<_, bool>(1),
            r.get::<_, bool>(2),
            r.get::<_, bool>(3),
            r.get::<_, bool>(4),
            r.get::<_, i32>(5),
            r.get::<_, String>(6)
        ));
        for (attr, idx) in [("superuser", 7), ("replication", 8), ("bypassrls", 9)] {
            if r.get::<_, bool>(idx) {
                out.insert(format!("role {} {attr}", r.get::<_, String>(0)));
            }
        }
    }
    for r in client
        .query(
            // Left out: the ADMIN-only membership a CREATEROLE master (the test bed's postgres and
            // dbadmin) receives in each role it creates (PostgreSQL 16+, T62), the platform's on
            // either side.
            "SELECT g.rolname::text, m.rolname::text, am.admin_option FROM pg_auth_members am \
             JOIN pg_roles g ON g.oid = am.roleid JOIN pg_roles m ON m.oid = am.member \
             WHERE (g.rolname = ANY($1) OR m.rolname = ANY($1)) \
               AND NOT (m.rolname IN ('postgres', 'dbadmin') AND am.admin_option \
                        AND (to_jsonb(am) ->> 'inherit_option') = 'false' AND (to_jsonb(am) ->> 'set_option') = 'false')",
            &[&roles],
        )
        .await
        .unwrap()
    {
        out.insert(format!(
            "member {} of {} admin={}",
            map_role(&r.get::<_, String>(1)),
            r.get::<_, String>(0),
            r.get::<_, bool>(2)
        ));
    }
    for r in client
        .query(
            "SELECT pg_get_userbyid(setrole)::text, coalesce(d.datname::text, '*'), array_to_string(setconfig, ',') \
             FROM pg_db_role_setting s LEFT JOIN pg_database d ON d.oid = s.setdatabase \
             WHERE pg_get_userbyid(setrole) = ANY($1)",
            &[&roles],
        )
        .await
        .unwrap()
    {
        let db: String = r.get(1);
        let db = if db == "*" { db } else { "db".to_string() };
        out.insert(format!("setting {} in {db}: {}", r.get::<_, String>(0), r.get::<_, String>(2)));
    }
    out
}

fn statements(reports: &[SchemaReport]) -> impl Iterator<Item = &pgferry_core::dump::sanitize::Planned> {
    reports.iter().flat_map(|r| r.plans.iter().flat_map(|p| &p.statements))
}

fn skipped_by(reports: &[SchemaReport], rule: &str, needle: &str) -> bool {
    statements(reports)
        .any(|s| s.verdict == Verdict::Skip && s.rule.as_deref() == Some(rule) && s.before.contains(needle))
}

#[tokio::test]
async fn rds_shapes_arrive_with_zero_failed_statements_and_match_the_source_except_reported_items() {
    let _lock = ROLES.lock().await;
    let s = create_shapes().await;
    let target_db = format!("{}_dst", s.db);
    let (ctx, input) = context_and_input(&s.db, &target_db);
    let reports = run_schema_steps(&ctx, &input).await;

    // Nothing failed, and everything that was not applied as dumped is in the report with a rule.
    for st in statements(&reports) {
        if st.verdict != Verdict::Keep {
            assert!(st.rule.is_some() && st.reason.is_some(), "{st:?}");
        }
        if st.verdict == Verdict::Rewrite {
            assert!(st.after.is_some(), "{st:?}");
        }
    }
    // T1: tokenized attributes; the superuser attributes are dropped, LOGIN is kept.
    let rewrite = statements(&reports)
        .find(|st| st.before.starts_with(&format!("ALTER ROLE {} WITH", s.r("su"))))
        .expect("su's attributes");
    assert_eq!(rewrite.rule.as_deref(), Some("role.attributes"));
    assert!(rewrite.after.as_deref().unwrap().contains(" LOGIN"), "{rewrite:?}");
    assert!(skipped_by(&reports, "role.internal", &format!("rds_ad_{}", s.sfx)), "T4 internal role");
    assert!(skipped_by(&reports, "role.internal", "CREATE ROLE rdsadmin"), "T4 rdsadmin");
    assert!(skipped_by(&reports, "role.source-master", "CREATE ROLE postgres"), "T8");
    assert!(skipped_by(&reports, "setting.context", "log_min_error_statement"), "T3 superuser-only GUC");
    assert!(skipped_by(&reports, "setting.tablespace", "temp_tablespaces"), "T11 tablespace GUC");
    assert!(skipped_by(&reports, "ext.not-permitted", "pageinspect"), "T17 untrusted extension");
    assert!(skipped_by(&reports, "routine.untrusted-language", "c_handler"), "T17 C function");
    assert!(skipped_by(&reports, "routine.untrusted-language", "add_int"), "T17 internal function");
    assert!(skipped_by(&reports, "dep.skipped", "plunsafe"), "T17 language on a skipped handler");
    assert!(skipped_by(&reports, "dep.skipped", "unsafe_fn"), "T17 function in a skipped language");
    assert!(skipped_by(&reports, "evt.needs-superuser", "audit_ddl"), "T21");
    assert!(skipped_by(&reports, "meta.psql-only", "\\restrict"), "T10");
    if s.tablespace.is_some() {
        assert!(skipped_by(&reports, "tablespace.skip", "CREATE TABLESPACE"), "T11");
    }
    let predefined: Vec<_> = statements(&reports).filter(|st| st.verdict == Verdict::Try).collect();
    assert!(predefined.len() >= 3 && predefined.iter().all(|st| st.outcome.is_some()), "T5: {predefined:?}");
    // T67: publications are part of the schema (they hold no slot); T22: subscriptions are not.
    assert!(!reports[1].not_recreated.iter().any(|n| n.contains("publication p1")), "T67");
    assert!(reports[1].not_recreated.iter().any(|n| n.contains("subscription s1")), "T22");
    assert!(reports[0].login_roles_without_password.contains(&s.r("app")), "T7");

    let source = admin(Server::Source, &s.db).await;
    let target = admin(Server::Target, &target_db).await;
    // T67: the publication arrives with its table, owned as on the source (the source master's
    // by the target master).
    let publication = "SELECT pg_get_userbyid(p.pubowner)::text, \
                       (SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') FROM pg_publication_tables \
                        WHERE pubname = p.pubname) FROM pg_publication p WHERE p.pubname = 'p1'";
    let (a, b) = (source.query_one(publication, &[]).await.unwrap(), target.query_one(publication, &[]).await.unwrap());
    assert_eq!(b.get::<_, String>(1), a.get::<_, String>(1), "T67 tables");
    let owner: String = a.get(0);
    let expected_owner = if owner == "postgres" || owner == "rdsadmin" { "dbadmin".to_string() } else { owner };
    assert_eq!(b.get::<_, String>(0), expected_owner, "T67 owner");
    // T14: encoding and locale.
    // daticulocale is datlocale from PostgreSQL 17 on (T64).
    let locale = "SELECT pg_encoding_to_char(encoding)::text, datlocprovider::text, \
                  coalesce(to_jsonb(d) ->> 'daticulocale', to_jsonb(d) ->> 'datlocale', ''), \
                  datcollate::text FROM pg_database d WHERE datname = current_database()";
    let (a, b) = (source.query_one(locale, &[]).await.unwrap(), target.query_one(locale, &[]).await.unwrap());
    for i in 0..4 {
        assert_eq!(a.get::<_, String>(i), b.get::<_, String>(i), "T14 column {i}");
    }
    // T15, T23, T24: owners, ACLs, default privileges, database settings and comment.
    let skipped_objects = ["c_handler", "add_int", "unsafe_fn"];
    let (src, dst) = (security_facts(&source, &skipped_objects).await, security_facts(&target, &skipped_objects).await);
    for expected in [
        format!("rel app.orders owner {}", s.r("app_owner")),
        format!("rel app.v_orders owner {}", s.r("reader")),
        format!("rel app.orders acl {}|{}|SELECT|f", s.r("asset_reader"), s.r("superuser tool")),
        format!("rel app.orders acl {}|{}|SELECT|t", s.r("app_owner"), s.r("asset_reader")),
        format!("col app.orders.id acl {}|{}|SELECT|f", s.r("app_owner"), s.r("we;ird")),
        format!("func app.secret() owner {}", s.r("app_owner")),
        format!("func app.secret() acl {}|{}|EXECUTE|f", s.r("app_owner"), s.r("reset_job")),
        "rel public.owned_by_master owner dbadmin".to_string(),
        "rel \"Tenant A\".\"Order.Items\" owner dbadmin".to_string(),
        format!("schema app owner {}", s.r("app_owner")),
        format!("defacl {}/app/r acl {}|{}|SELECT|f", s.r("app_owner"), s.r("app_owner"), s.r("reader")),
        format!("database  owner {}", s.r("app_owner")),
        format!("database  acl {}|{}|CONNECT|f", s.r("app_owner"), s.r("app")),
        format!("database  acl {}|dbadmin|CONNECT|f", s.r("app_owner")),
        "database comment the shop".to_string(),
        "database settings TimeZone=Europe/Berlin,log_statement=ddl".to_string(),
    ] {
        assert!(dst.contains(&expected), "{expected} is missing on the target: {dst:#?}");
    }
    // T63: MAINTAIN (17+) is in every owner's default privileges of a newer target and cannot be
    // on an older source; it is no difference.
    let source_version: i32 = admin(Server::Source, "postgres")
        .await
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    let comparable = |f: &&String| !(source_version < 170000 && f.contains("|MAINTAIN|"));
    let missing: Vec<_> = src.difference(&dst).filter(comparable).collect();
    let extra: Vec<_> = dst.difference(&src).filter(comparable).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing on target: {missing:#?}\nextra on target: {extra:#?}");
    // T1–T6: roles, memberships and settings, except what the report lists as impossible.
    let (src_roles, dst_roles) = (
        role_facts(&admin(Server::Source, "postgres").await, &s).await,
        role_facts(&admin(Server::Target, "postgres").await, &s).await,
    );
    let expected_loss = [
        format!("role {} superuser", s.r("su")),
        format!("role {} replication", s.r("repl")),
        format!("role {} bypassrls", s.r("rls")),
    ];
    // T5: a predefined role's grant the target refused (PostgreSQL 16+ wants ADMIN on it, which RDS
    // gives the master for some only) is tried, classified and reported, not carried.
    let refused: Vec<&str> = statements(&reports)
        .filter(|st| st.verdict == Verdict::Try && st.outcome.as_deref().is_some_and(|o| o.starts_with("refused")))
        .map(|st| st.before.as_str())
        .collect();
    let reported_refused = |fact: &str| {
        let Some((member, group)) = fact.strip_prefix("member ").and_then(|r| r.split_once(" of ")) else {
            return false;
        };
        let group = group.split(' ').next().unwrap_or_default();
        refused.iter().any(|st| st.starts_with(&format!("GRANT {group} TO {member}")))
    };
    let missing: Vec<_> = src_roles
        .difference(&dst_roles)
        .filter(|f| {
            !expected_loss.contains(f) && !f.contains("rds_ad_") && !f.starts_with("setting ") && !reported_refused(f)
        })
        .collect();
    assert!(missing.is_empty(), "role facts missing on target: {missing:#?}\ntarget: {dst_roles:#?}");
    assert!(dst_roles.contains(&format!("member {} of rds_replication admin=false", s.r("repl"))), "T1 REPLICATION");
    assert!(dst_roles.contains(&format!("member {} of rds_superuser admin=false", s.r("dba"))), "T4 on RDS");
    for login in ["app", "asset_reader", "reset_job", "superuser tool", "su", "repl", "analyst", "u"] {
        assert!(
            dst_roles.iter().any(|f| f.starts_with(&format!("role {} login=true", s.r(login)))),
            "T1 {login} keeps LOGIN"
        );
    }
    let settings = |facts: &BTreeSet<String>| -> BTreeSet<String> {
        facts.iter().filter(|f| f.starts_with("setting ")).cloned().collect()
    };
    let expected_settings: BTreeSet<String> = [
        format!("setting {} in *: search_path=app, public", s.r("app")),
        format!("setting {} in db: statement_timeout=5s", s.r("app")),
        format!("setting {} in *: log_statement=all", s.r("auditor")),
    ]
    .into_iter()
    .collect();
    assert_eq!(settings(&dst_roles), expected_settings, "T3 settings; source had {:#?}", settings(&src_roles));
    let master_members: Vec<_> = dst_roles.iter().filter(|f| f.starts_with("member dbadmin of ")).collect();
    assert_eq!(master_members, vec![&format!("member dbadmin of {} admin=false", s.r("app_owner"))], "T8 and release");

    // Running the same job again (a new run) succeeds: globals converge, sections are found applied.
    let (ctx2, mut input2) = context_and_input(&s.db, &target_db);
    input2.run_id = unique_name("run2");
    let again = run_schema_steps(&ctx2, &input2).await;
    assert_eq!(again[1].already_applied_by.as_deref(), Some(input.run_id.as_str()));
    assert_eq!(again[2].already_applied_by.as_deref(), Some(input.run_id.as_str()));
    let dst2 = security_facts(&target, &skipped_objects).await;
    assert_eq!(dst, dst2, "a second run changes nothing");

    drop((source, target));
    drop_shapes(&s, &target_db).await;
}

/// A source database without roles of its own, created by the master.
async fn plain_source(prefix: &str, create: &str, setup: &str) -> (String, String) {
    let db = unique_name(prefix);
    let master = connect(&testbed().url(Server::Source, "postgres")).await;
    master.batch_execute(&format!("CREATE DATABASE {} {create}", quote_ident(&db))).await.unwrap();
    connect(&testbed().url(Server::Source, &db)).await.batch_execute(setup).await.unwrap();
    (db.clone(), format!("{db}_dst"))
}

#[tokio::test]
async fn t60_a_rerun_after_a_failure_at_statement_n_neither_fails_on_existing_objects_nor_skips_any() {
    let _lock = ROLES.lock().await;
    let (source_db, target_db) = plain_source(
        "t60n",
        "",
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int); CREATE TABLE c (id int); \
         CREATE VIEW v AS SELECT a.id FROM a JOIN b USING (id);",
    )
    .await;
    let (ctx, input) = context_and_input(&source_db, &target_db);
    let first = schema::globals(&ctx, &input).await.unwrap();
    assert!(first.database_created);
    let again = schema::globals(&ctx, &input).await.unwrap();
    assert!(!again.database_created && again.roles_created.is_empty(), "T9: the second globals converges only");

    // Statement N fails: an object of that name is already there.
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    target.batch_execute("CREATE TABLE public.c (other text)").await.unwrap();
    let err = schema::pre_data(&ctx, &input).await.unwrap_err();
    let msg = err.with_advice();
    assert!(msg.contains("pre-data statement") && msg.contains("42P07") && msg.contains("line"), "{msg}");
    assert!(msg.contains("CREATE TABLE public.c"), "{msg}");
    let a_exists: bool = target.query_one("SELECT to_regclass('public.a') IS NOT NULL", &[]).await.unwrap().get(0);
    assert!(!a_exists, "statements before N were rolled back with the section");

    // The retry of the same run applies everything, once.
    target.batch_execute("DROP TABLE public.c").await.unwrap();
    let applied = schema::pre_data(&ctx, &input).await.unwrap();
    let retried = schema::pre_data(&ctx, &input).await.unwrap();
    assert_eq!(applied, retried);
    let n: i64 = target
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relname IN ('a', 'b', 'c', 'v')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4);
    drop(target);
    drop_db(Server::Target, &target_db).await;
    drop_db(Server::Source, &source_db).await;
}

#[tokio::test]
async fn t14_the_target_database_gets_the_source_encoding_and_collation() {
    let _lock = ROLES.lock().await;
    let (source_db, target_db) = plain_source(
        "t14latin1",
        "TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'",
        "CREATE TABLE menu (dish text); COMMENT ON TABLE menu IS 'café crème';",
    )
    .await;
    let (ctx, input) = context_and_input(&source_db, &target_db);
    assert!(schema::globals(&ctx, &input).await.unwrap().database_created);
    schema::pre_data(&ctx, &input).await.unwrap();
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    let row = target
        .query_one(
            "SELECT pg_encoding_to_char(encoding)::text, datcollate::text, obj_description('public.menu'::regclass) \
             FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1), row.get::<_, String>(2)),
        ("LATIN1".to_string(), "C".to_string(), "café crème".to_string())
    );
    drop(target);
    drop_db(Server::Target, &target_db).await;
    drop_db(Server::Source, &source_db).await;
}

/// T68 against the server: SQL-standard bodies and rules whose text holds keyword-named columns
/// (`begin`, `atomic`, `"end"`, `"case"`) in every position, as pg_dump prints them, arrive
/// whole: each statement is sent alone with the extended protocol (which runs exactly one), and
/// every routine and rule is defined on the target exactly as on the source.
#[tokio::test]
async fn t68_bodies_with_keyword_named_columns_arrive_statement_by_statement() {
    let _lock = ROLES.lock().await;
    let columns = ["begin", "atomic", "\"end\"", "\"case\""];
    let mut ddl = format!(
        "CREATE TABLE t (id int PRIMARY KEY, {}); CREATE TABLE a (LIKE t); CREATE TABLE b (LIKE t);",
        columns.iter().map(|c| format!("{c} integer")).collect::<Vec<_>>().join(", ")
    );
    for (i, c) in columns.iter().enumerate() {
        ddl += &format!(
            "CREATE FUNCTION sum_{i}() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT sum(t.{c}) FROM t; END;
             CREATE FUNCTION pick_{i}(x integer) RETURNS integer LANGUAGE sql
               BEGIN ATOMIC SELECT CASE WHEN x > 0 THEN (SELECT t.{c} FROM t LIMIT 1) ELSE 0 END; END;
             CREATE PROCEDURE bump_{i}() LANGUAGE sql
               BEGIN ATOMIC UPDATE t SET {c} = {c} + 1; INSERT INTO a (id, {c}) VALUES (1, 1); END;
             CREATE RULE keep_{i} AS ON DELETE TO t DO ALSO
               (DELETE FROM a WHERE a.{c} = old.{c}; DELETE FROM b WHERE b.{c} = old.{c});
             CREATE TABLE after_{i} (id int PRIMARY KEY);"
        );
    }
    let (source_db, target_db, source) = source_with("t68", &ddl).await;
    let (ctx, input) = context_and_input(&source_db, &target_db);
    run_schema_steps(&ctx, &input).await;
    let target = connect(&testbed().url(Server::Target, &target_db)).await;
    let definitions = "SELECT p.proname::text, pg_get_functiondef(p.oid) FROM pg_proc p \
                       JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' \
                       UNION ALL SELECT r.rulename::text, pg_get_ruledef(r.oid) FROM pg_rewrite r \
                       WHERE r.rulename LIKE 'keep\\_%' UNION ALL \
                       SELECT c.relname::text, '' FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE 'after\\_%' ORDER BY 1";
    let rows = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, String)> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    };
    let on_source = rows(source.query(definitions, &[]).await.unwrap());
    let on_target = rows(target.query(definitions, &[]).await.unwrap());
    assert_eq!(on_source.len(), 4 * 5, "{on_source:?}");
    assert_eq!(on_target, on_source);
    drop(target);
    drop(source);
    drop_db(Server::Target, &target_db).await;
    drop_db(Server::Source, &source_db).await;
}
