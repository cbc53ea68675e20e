//! Issue 23 end to end, as non-superuser masters on the test bed: a SQL-standard function body
//! reading a column named `begin` (RDS-CASES T68) followed by more tables, and a user mapping with
//! a password (T70), copied by `pgferry run` with the source's password given as `?password=` in
//! its URL. Function and tables arrive, tables equal; neither password appears in any artifact,
//! report or output.

mod common;

use std::path::Path;

use common::{libpq_tool, pgferry, scratch};
use pgferry_tests::{Server, connect, create_db, drop_db, fingerprint, testbed, unique_name};

const MAPPING_PASSWORD: &str = "Mapping-S3cret-7Q";

/// `%XX` escapes decoded (the test bed's URLs percent-encode the master password).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// Every file under `dir` whose content contains `needle`.
fn files_containing(dir: &Path, needle: &str, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_containing(&path, needle, found);
        } else if String::from_utf8_lossy(&std::fs::read(&path).unwrap()).contains(needle) {
            found.push(path.display().to_string());
        }
    }
}

#[tokio::test]
async fn t68_t70_a_begin_atomic_body_and_a_user_mapping_password_arrive_right_and_no_secret_is_kept() {
    let src = create_db(Server::Source, "cli_secret").await;
    let dst = unique_name("cli_secret_dst");
    let source = connect(&testbed().url(Server::Source, &src)).await;
    source
        .batch_execute(
            r#"CREATE TABLE t (id int PRIMARY KEY, "begin" int);
               INSERT INTO t SELECT g, g * 2 FROM generate_series(1, 500) g;
               CREATE FUNCTION total() RETURNS bigint LANGUAGE sql
                 BEGIN ATOMIC SELECT sum(t.begin) FROM t; END;
               CREATE TABLE after_one (id int PRIMARY KEY, note text);
               INSERT INTO after_one SELECT g, 'note ' || g FROM generate_series(1, 300) g;
               CREATE TABLE after_two (id bigint PRIMARY KEY);
               INSERT INTO after_two SELECT generate_series(1, 200);"#,
        )
        .await
        .unwrap();
    // A wrapper needs a superuser (as RDS' own postgres_fdw extension is installed by RDS); the
    // server and the mapping with its password are the master's.
    connect(&testbed().admin_url(Server::Source, &src))
        .await
        .batch_execute(&format!(
            "CREATE FOREIGN DATA WRAPPER secret_fdw; \
             CREATE SERVER remote FOREIGN DATA WRAPPER secret_fdw OPTIONS (host 'db.example.com'); \
             ALTER SERVER remote OWNER TO postgres; \
             CREATE USER MAPPING FOR postgres SERVER remote OPTIONS (user 'remote', password '{MAPPING_PASSWORD}')"
        ))
        .await
        .unwrap();

    // The source URL with the password moved from the userinfo into `?password=`.
    let url = testbed().url(Server::Source, &src);
    let rest = url.strip_prefix("postgresql://").unwrap();
    let (userinfo, after) = rest.split_once('@').unwrap();
    let (user, encoded) = userinfo.split_once(':').unwrap();
    let source_url = format!("postgresql://{user}@{after}&password={encoded}");
    let master_password = percent_decode(encoded);

    let dir = scratch("secret");
    let job_dir = scratch("secret-job");
    let job = job_dir.join("job.json");
    std::fs::write(
        &job,
        serde_json::json!({"source": {"url": source_url}, "target": {"url": testbed().url(Server::Target, &dst)}})
            .to_string(),
    )
    .unwrap();
    let report = dir.join("report.json");
    let out = pgferry(&["run", job.to_str().unwrap(), "--report", report.to_str().unwrap()], &dir);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");

    let target = connect(&testbed().admin_url(Server::Target, &dst)).await;
    let total = "SELECT total()";
    assert_eq!(
        source.query_one(total, &[]).await.unwrap().get::<_, i64>(0),
        target.query_one(total, &[]).await.unwrap().get::<_, i64>(0),
        "T68: the function arrives and reads the same column"
    );
    for table in ["t", "after_one", "after_two"] {
        assert_eq!(fingerprint(&source, table, "id").await, fingerprint(&target, table, "id").await, "{table}");
    }
    for secret in [MAPPING_PASSWORD, master_password.as_str(), encoded] {
        let mut found = Vec::new();
        files_containing(&dir, secret, &mut found);
        assert!(found.is_empty(), "a password is kept in {found:?}");
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "a password is in the output");
    }
    // The target's own schema holds the function and no password either.
    let target_dump = job_dir.join("target-schema.sql");
    libpq_tool("pg_dump", &["--schema-only", "-f", target_dump.to_str().unwrap()], Server::Target, &dst);
    let target_schema = std::fs::read_to_string(&target_dump).unwrap();
    assert!(target_schema.contains("FUNCTION public.total()") && !target_schema.contains(MAPPING_PASSWORD));
    // The mapping itself is explained, not silently gone: its password was removed by rule.
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(text.contains("<redacted>") || text.contains("fdw.user-mapping-password") || text.contains("dep.skipped"));
    drop_db(Server::Source, &src).await;
    drop_db(Server::Target, &dst).await;
}
