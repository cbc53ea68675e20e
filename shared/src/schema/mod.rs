//! The schema step: target database and roles, schema dump, pre-data and post-data, sequences.
//!
//! The dump is taken once (both sections, by `pg_dump`) and kept in the artifact store, so the
//! post-data applied after the copy belongs to the same schema as the pre-data applied before it.
//! Each section is applied statement by statement inside one transaction together with a marker
//! row in pgferry's bookkeeping schema: a retried step either finds the marker and does nothing,
//! or finds nothing applied at all (RDS-CASES T60). A failing statement is named with its SQLSTATE.

pub mod lex;

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::catalog::{self, PGFERRY_SCHEMA};
use crate::context::StepContext;
use crate::error::{Error, Result};
use crate::job::Side;
use crate::pg::{self, LibpqInvocation, Session, quote_ident, quote_literal};
use crate::step::{GlobalsOutput, SchemaOutput, SchemaRequest, SequencesOutput, StepInput, keys};

/// Dump sections, in the order they are applied.
pub const PRE_DATA: &str = "pre-data";
pub const POST_DATA: &str = "post-data";

/// Entry point of the schema function.
pub async fn handle(ctx: &StepContext, request: SchemaRequest) -> Result<serde_json::Value> {
    let value = match request {
        SchemaRequest::Globals(input) => to_value(globals(ctx, &input).await?),
        SchemaRequest::PreData(input) => to_value(pre_data(ctx, &input).await?),
        SchemaRequest::PostData(input) => to_value(post_data(ctx, &input).await?),
        SchemaRequest::Sequences(input) => to_value(sequences(ctx, &input).await?),
    };
    Ok(value)
}

pub(crate) fn to_value<T: Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).expect("step outputs serialize")
}

/// What the globals step did, kept as an artifact.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GlobalsReport {
    database: String,
    database_created: bool,
    roles_created: Vec<String>,
    roles_existing: Vec<String>,
    /// Roles not carried, with the reason (RDS-internal, the source's own master user…).
    roles_skipped: Vec<(String, String)>,
    /// Role attributes the target does not let the connecting user grant.
    attributes_dropped: Vec<(String, String)>,
    memberships_granted: Vec<(String, String)>,
    /// LOGIN roles created without a password: passwords cannot be read from RDS (T7).
    login_roles_without_password: Vec<String>,
}

/// Creates the target database if missing (with the source's encoding and locale) and the
/// source's roles that the target lacks.
pub async fn globals(ctx: &StepContext, input: &StepInput) -> Result<GlobalsOutput> {
    let job = &input.job;
    let source = ctx.connect(job, Side::Source, "globals", &input.run_id).await?;
    let target_spec = ctx.conn_spec(job, Side::Target)?;
    let session = Session::new("globals", &input.run_id);
    let admin = pg::connect(&target_spec.with_dbname("postgres"), &session).await?;
    let database_created = ensure_database(&source, &admin, &target_spec.dbname).await?;

    let mut report = GlobalsReport {
        database: target_spec.dbname.clone(),
        database_created,
        roles_created: vec![],
        roles_existing: vec![],
        roles_skipped: vec![],
        attributes_dropped: vec![],
        memberships_granted: vec![],
        login_roles_without_password: vec![],
    };
    carry_roles(&source, &admin, &mut report).await?;
    let report_key = keys::globals(&input.run_id);
    ctx.store.put_json(&report_key, &report).await?;
    Ok(GlobalsOutput { database_created, roles_created: report.roles_created, report_key })
}

async fn ensure_database(source: &Client, admin: &Client, name: &str) -> Result<bool> {
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(|e| Error::db("look up target database", e))?
        .is_some();
    if exists {
        return Ok(false);
    }
    let row = source
        .query_one(
            "SELECT pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text \
             FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .map_err(|e| Error::db("read source database encoding", e))?;
    let (encoding, collate, ctype): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    let sql = format!(
        "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
        quote_ident(name),
        quote_literal(&encoding),
        quote_literal(&collate),
        quote_literal(&ctype)
    );
    match admin.batch_execute(&sql).await {
        Ok(()) => Ok(true),
        // A retried step may find the database created by its first attempt.
        Err(e) if e.code().is_some_and(|c| c.code() == "42P04") => Ok(false),
        Err(e) => Err(Error::db(format!("create target database {name} ({encoding}, {collate})"), e)),
    }
}

/// RDS-internal roles are never created or altered (RDS-CASES T4).
fn is_rds_internal(role: &str) -> bool {
    role.starts_with("rds") || role.starts_with("pg_")
}

async fn carry_roles(source: &Client, target: &Client, report: &mut GlobalsReport) -> Result<()> {
    const ROLES: &str = "SELECT rolname::text, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, \
                         rolreplication, rolbypassrls, rolconnlimit, rolvaliduntil::text, \
                         rolname = current_user FROM pg_roles ORDER BY rolname";
    let source_roles = source.query(ROLES, &[]).await.map_err(|e| Error::db("list source roles", e))?;
    let target_row = target
        .query_one("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .map_err(|e| Error::db("read target role", e))?;
    let (target_super, target_bypass): (bool, bool) = (target_row.get(0), target_row.get(1));
    let existing: Vec<String> = target
        .query("SELECT rolname::text FROM pg_roles", &[])
        .await
        .map_err(|e| Error::db("list target roles", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();

    let mut carried = Vec::new();
    for row in &source_roles {
        let name: String = row.get(0);
        if is_rds_internal(&name) {
            report.roles_skipped.push((name, "RDS-internal or predefined role".to_string()));
            continue;
        }
        if row.get::<_, bool>(10) {
            // The source's master user maps to the target's connecting user (RDS-CASES T8).
            report.roles_skipped.push((name, "the source's connecting (master) user".to_string()));
            continue;
        }
        if existing.contains(&name) {
            report.roles_existing.push(name.clone());
            carried.push(name);
            continue;
        }
        let mut attrs = vec![
            if row.get::<_, bool>(5) { "LOGIN" } else { "NOLOGIN" },
            if row.get::<_, bool>(2) { "INHERIT" } else { "NOINHERIT" },
            if row.get::<_, bool>(3) { "CREATEROLE" } else { "NOCREATEROLE" },
            if row.get::<_, bool>(4) { "CREATEDB" } else { "NOCREATEDB" },
        ]
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
        for (idx, attr, allowed) in [
            (1, "SUPERUSER", target_super),
            (6, "REPLICATION", target_super),
            (7, "BYPASSRLS", target_super || target_bypass),
        ] {
            if row.get::<_, bool>(idx) {
                if allowed {
                    attrs.push(attr.to_string());
                } else {
                    report.attributes_dropped.push((name.clone(), attr.to_string()));
                }
            }
        }
        let connlimit: i32 = row.get(8);
        if connlimit >= 0 {
            attrs.push(format!("CONNECTION LIMIT {connlimit}"));
        }
        if let Some(until) = row.get::<_, Option<String>>(9) {
            attrs.push(format!("VALID UNTIL {}", quote_literal(&until)));
        }
        let sql = format!("CREATE ROLE {} WITH {}", quote_ident(&name), attrs.join(" "));
        target.batch_execute(&sql).await.map_err(|e| Error::db(format!("create role {name}"), e))?;
        if row.get::<_, bool>(5) {
            report.login_roles_without_password.push(name.clone());
        }
        report.roles_created.push(name.clone());
        carried.push(name);
    }

    let memberships = source
        .query(
            "SELECT r.rolname::text, m.rolname::text, am.admin_option FROM pg_auth_members am \
             JOIN pg_roles r ON r.oid = am.roleid JOIN pg_roles m ON m.oid = am.member ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(|e| Error::db("list source memberships", e))?;
    for row in memberships {
        let (role, member, admin): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
        if !carried.contains(&role) || !carried.contains(&member) {
            continue;
        }
        let has = target
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid \
                 JOIN pg_roles m ON m.oid = am.member WHERE r.rolname = $1 AND m.rolname = $2)",
                &[&role, &member],
            )
            .await
            .map_err(|e| Error::db("read target memberships", e))?
            .get::<_, bool>(0);
        if has {
            continue;
        }
        let sql = format!(
            "GRANT {} TO {}{}",
            quote_ident(&role),
            quote_ident(&member),
            if admin { " WITH ADMIN OPTION" } else { "" }
        );
        target.batch_execute(&sql).await.map_err(|e| Error::db(format!("grant {role} to {member}"), e))?;
        report.memberships_granted.push((role, member));
    }
    Ok(())
}

/// Runs `pg_dump` and returns its stdout.
async fn dump(ctx: &StepContext, input: &StepInput, section: &str) -> Result<String> {
    let spec = ctx.conn_spec(&input.job, Side::Source)?;
    let libpq = LibpqInvocation::new(&spec, &Session::new("schema", &input.run_id), &ctx.scratch)?;
    let tool = ctx.pg_tool("pg_dump");
    let output = tokio::process::Command::new(&tool)
        .args([
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--no-tablespaces",
            "--no-publications",
            "--no-subscriptions",
            "--exclude-schema",
            PGFERRY_SCHEMA,
            "--section",
            section,
            "--dbname",
            &libpq.conninfo,
        ])
        .env_clear()
        .envs(libpq.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C.UTF-8")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::io(format!("run {}", tool.display()), e))?;
    if !output.status.success() {
        return Err(Error::Tool {
            tool: "pg_dump".to_string(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    String::from_utf8(output.stdout).map_err(|_| Error::Internal("pg_dump wrote invalid UTF-8".to_string()))
}

/// DDL of pgferry's bookkeeping on the target: applied sections and the chunk ledger.
const BOOKKEEPING_DDL: &str = "CREATE SCHEMA IF NOT EXISTS pgferry; \
     CREATE TABLE IF NOT EXISTS pgferry.applied_sections (run_id text NOT NULL, section text NOT NULL, \
        statements integer NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (run_id, section))";

/// Dumps both sections (one schema for the whole run) and applies pre-data.
pub async fn pre_data(ctx: &StepContext, input: &StepInput) -> Result<SchemaOutput> {
    let pre_key = keys::dump(&input.run_id, PRE_DATA);
    let post_key = keys::dump(&input.run_id, POST_DATA);
    let mut target = ctx.connect(&input.job, Side::Target, "schema", &input.run_id).await?;
    if let Some(done) = applied(&target, &input.run_id, PRE_DATA).await? {
        return Ok(SchemaOutput { section: PRE_DATA.to_string(), statements: done, dump_key: pre_key });
    }
    let pre = dump(ctx, input, PRE_DATA).await?;
    let post = dump(ctx, input, POST_DATA).await?;
    ctx.store.put_bytes(&pre_key, pre.as_bytes()).await?;
    ctx.store.put_bytes(&post_key, post.as_bytes()).await?;
    let statements = apply(&mut target, &input.run_id, PRE_DATA, &pre, &[]).await?;
    Ok(SchemaOutput { section: PRE_DATA.to_string(), statements, dump_key: pre_key })
}

/// Applies post-data from the stored dump, then refreshes materialized views.
pub async fn post_data(ctx: &StepContext, input: &StepInput) -> Result<SchemaOutput> {
    let key = keys::dump(&input.run_id, POST_DATA);
    let mut target = ctx.connect(&input.job, Side::Target, "schema", &input.run_id).await?;
    if let Some(done) = applied(&target, &input.run_id, POST_DATA).await? {
        return Ok(SchemaOutput { section: POST_DATA.to_string(), statements: done, dump_key: key });
    }
    let post = String::from_utf8(ctx.store.get_bytes(&key).await?)
        .map_err(|_| Error::Store { key: key.clone(), reason: "not UTF-8".to_string() })?;
    let plan: crate::plan::Plan = ctx.store.get_json(&keys::plan(&input.run_id)).await?;
    let refreshes: Vec<String> =
        plan.materialized_views.iter().map(|m| format!("REFRESH MATERIALIZED VIEW {m}")).collect();
    let statements = apply(&mut target, &input.run_id, POST_DATA, &post, &refreshes).await?;
    Ok(SchemaOutput { section: POST_DATA.to_string(), statements, dump_key: key })
}

async fn applied(target: &Client, run_id: &str, section: &str) -> Result<Option<usize>> {
    let exists: bool = target
        .query_one("SELECT to_regclass('pgferry.applied_sections') IS NOT NULL", &[])
        .await
        .map_err(|e| Error::db("look for pgferry bookkeeping", e))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = target
        .query_opt(
            "SELECT statements FROM pgferry.applied_sections WHERE run_id = $1 AND section = $2",
            &[&run_id, &section],
        )
        .await
        .map_err(|e| Error::db("read applied sections", e))?;
    Ok(row.map(|r| usize::try_from(r.get::<_, i32>(0)).unwrap_or(0)))
}

/// Applies one section statement by statement in one transaction, with its marker row.
async fn apply(target: &mut Client, run_id: &str, section: &str, dump: &str, extra: &[String]) -> Result<usize> {
    let started = Instant::now();
    let tx = target.transaction().await.map_err(|e| Error::db("begin schema transaction", e))?;
    tx.batch_execute(BOOKKEEPING_DDL).await.map_err(|e| Error::db("create pgferry bookkeeping schema", e))?;
    tx.batch_execute(crate::copy::LEDGER_DDL).await.map_err(|e| Error::db("create the chunk ledger", e))?;
    let mut count = 0usize;
    let items = lex::split(dump);
    let statements = items
        .iter()
        .filter(|i| i.kind == lex::ItemKind::Statement && !i.is_empty())
        .map(|i| (i.text, i.head()))
        .chain(extra.iter().map(|s| (s.as_str(), s.clone())));
    for (index, (text, head)) in statements.enumerate() {
        tx.batch_execute(text).await.map_err(|source| Error::Apply {
            section: section.to_string(),
            index: index + 1,
            head,
            source,
        })?;
        count += 1;
    }
    // The dump's own header resets the search path; the marker is schema-qualified anyway.
    let n = i32::try_from(count).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO pgferry.applied_sections (run_id, section, statements) VALUES ($1, $2, $3)",
        &[&run_id, &section, &n],
    )
    .await
    .map_err(|e| Error::db("record applied section", e))?;
    tx.commit().await.map_err(|e| Error::db(format!("commit {section}"), e))?;
    tracing::info!(
        section,
        statements = count,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "schema section applied"
    );
    Ok(count)
}

/// Sets every target sequence to the source's value (`setval` with `is_called`).
pub async fn sequences(ctx: &StepContext, input: &StepInput) -> Result<SequencesOutput> {
    let source = ctx.connect(&input.job, Side::Source, "sequences", &input.run_id).await?;
    let target = ctx.connect(&input.job, Side::Target, "sequences", &input.run_id).await?;
    let names = catalog::sequences(&source).await?;
    for name in &names {
        let row = source
            .query_one(&format!("SELECT last_value, is_called FROM {name}"), &[])
            .await
            .map_err(|e| Error::db(format!("read sequence {name}"), e))?;
        let (value, called): (i64, bool) = (row.get(0), row.get(1));
        target
            .execute("SELECT pg_catalog.setval($1::text::regclass, $2, $3)", &[&name.to_string(), &value, &called])
            .await
            .map_err(|e| Error::db(format!("set sequence {name}"), e))?;
    }
    Ok(SequencesOutput { sequences: names.len() })
}
