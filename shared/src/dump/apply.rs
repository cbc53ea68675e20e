//! Applies a plan one statement at a time; a failure names the statement, its line in the dump,
//! its SQLSTATE and advice.
//!
//! Globals and the database itself cannot share a transaction with anything (roles are
//! cluster-wide, `CREATE DATABASE` refuses transactions), so each of their statements is made
//! idempotent instead: roles and the database are created if missing, everything else converges
//! (attributes, settings, memberships, grants are the same when applied twice — RDS-CASES T9).
//! Pre-data and post-data are applied in one transaction each, with a marker row, so a retried
//! section finds either all of it or none of it (T60).
//!
//! A master that is not a superuser can only give an object to a role it can become, and the new
//! owner needs CREATE on the object's schema: the master is made a member of the roles it must act
//! as, through the run's own holder role ([`crate::roles`]; logged first in the artifact store,
//! dropped by [`super::release`] at the end of the run),
//! and a missing CREATE is granted for the one `ALTER … OWNER TO` and revoked right after it, so the
//! privileges end exactly as dumped (T23).

use tokio_postgres::{Client, GenericClient};

use super::sanitize::{ApplyAs, DEP_SKIPPED, Phase, Plan, Planned, TARGET_REFUSED, VERSION_OLDER_TARGET, Verdict};
use crate::error::{Error, Result};
use crate::pg::quote_ident;

use crate::roles::{MembershipLog, execute_alone};

/// SQLSTATEs a `Try` statement may end with, and what they mean for a role grant (T5).
fn classify_refusal(code: &str) -> Option<&'static str> {
    match code {
        "42501" => Some("refused: not grantable by the master on this target"),
        "42704" => Some("refused: the role does not exist on this target's version"),
        "0LP01" => Some("refused: invalid grant for this target"),
        _ => None,
    }
}

/// Whether an error is an older server not understanding a newer one's statement: a syntax error,
/// an object, function or type it lacks (class 42, privileges aside), a feature it does not
/// support or a parameter value it does not know.
fn older_server_refusal(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        let code = c.code();
        (code.starts_with("42") && code != "42501") || code == "0A000" || code == "22023"
    })
}

/// Records a statement an older target refused as skipped (`version.older-target`).
fn skipped_by_older_target(p: &mut Planned, major: i32, e: &tokio_postgres::Error) {
    p.verdict = Verdict::Skip;
    p.rule = Some(VERSION_OLDER_TARGET.id.to_string());
    p.reason = Some(format!("refused by PostgreSQL {major}: {}", pg_message(e)));
    p.after = None;
}

fn apply_error(phase: Phase, index: usize, line: usize, sql: &str, source: tokio_postgres::Error) -> Error {
    let first = sql.lines().next().unwrap_or("");
    let head = if first.chars().count() > 120 {
        format!("{}…", first.chars().take(120).collect::<String>())
    } else {
        first.to_string()
    };
    Error::Apply { section: phase.as_str().to_string(), index, line, head, source }
}

/// What applying a plan did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Applied {
    pub statements: usize,
    pub database_created: bool,
}

/// Applies a globals or database plan statement by statement, each on its own (autocommit).
pub async fn autocommit(
    client: &mut Client,
    plan: &mut Plan,
    log: &mut MembershipLog,
    target_database: &str,
) -> Result<Applied> {
    let mut applied = Applied::default();
    let phase = plan.phase;
    let older_target = plan.older_target;
    for p in &mut plan.statements {
        let Some(sql) = p.sql.clone() else { continue };
        let err = |e| apply_error(phase, p.index, p.line, &sql, e);
        match &p.apply {
            ApplyAs::CreateRole { .. } => match execute_alone(client, &sql).await {
                Ok(()) => p.outcome = Some("created".to_string()),
                // 23505: created at the same moment by another session (another run into a
                // database of the same cluster).
                Err(e) if e.code().is_some_and(|c| c.code() == "42710" || c.code() == "23505") => {
                    p.outcome = Some("existed already".to_string());
                }
                Err(e) => return Err(err(e)),
            },
            ApplyAs::CreateDatabase => match execute_alone(client, &sql).await {
                Ok(()) => {
                    applied.database_created = true;
                    p.outcome = Some("created".to_string());
                }
                Err(e) if e.code().is_some_and(|c| c.code() == "42P04") => {
                    p.outcome = Some("existed already".to_string());
                }
                Err(e) => return Err(err(e)),
            },
            ApplyAs::DatabaseOwner { owner } => {
                let tx = client.transaction().await.map_err(|e| Error::db("begin", e))?;
                log.ensure(&tx, owner).await?;
                let row = tx
                    .query_one(
                        "SELECT r.rolcreatedb OR me.rolsuper OR d.datdba = r.oid FROM pg_roles r, pg_roles me, pg_database d \
                         WHERE r.rolname = $1::text::name AND me.rolname = current_user AND d.datname = $2::text::name",
                        &[owner, &target_database],
                    )
                    .await
                    .map_err(|e| Error::db(format!("read attributes of {owner}"), e))?;
                let toggle = !row.get::<_, bool>(0);
                if toggle {
                    tx.batch_execute(&format!("ALTER ROLE {} CREATEDB", quote_ident(owner))).await.map_err(err)?;
                }
                tx.batch_execute(&sql).await.map_err(err)?;
                if toggle {
                    tx.batch_execute(&format!("ALTER ROLE {} NOCREATEDB", quote_ident(owner))).await.map_err(err)?;
                    p.outcome = Some(format!("CREATEDB granted to {owner} for the owner change and revoked"));
                }
                tx.commit().await.map_err(|e| Error::db("commit owner change", e))?;
            }
            ApplyAs::Try => match execute_alone(client, &sql).await {
                Ok(()) => p.outcome = Some("granted".to_string()),
                Err(e) => match e.code().and_then(|c| classify_refusal(c.code())) {
                    Some(why) => p.outcome = Some(format!("{why} ({})", pg_message(&e))),
                    None => return Err(err(e)),
                },
            },
            ApplyAs::Plain | ApplyAs::Owner { .. } => match execute_alone(client, &sql).await {
                Ok(()) => {}
                Err(e) if older_target.is_some() && older_server_refusal(&e) => {
                    skipped_by_older_target(p, older_target.unwrap_or_default(), &e);
                    continue;
                }
                // Roles are cluster-wide: one that existed when the plan was made may have been
                // dropped since by someone else. Said in the report, not hidden.
                Err(e) if phase == Phase::Globals && e.code().is_some_and(|c| c.code() == "42704") => {
                    p.outcome = Some(format!("refused: a role it names was dropped meanwhile ({})", pg_message(&e)));
                }
                Err(e) => return Err(err(e)),
            },
        }
        applied.statements += 1;
        if matches!(p.apply, ApplyAs::CreateDatabase) {
            ensure_database_owner(client, log, target_database).await?;
        }
    }
    Ok(applied)
}

/// Makes the master a member of the target database's owner, so that it may set the database's
/// ACL, settings and comment and create objects in its `public` schema.
pub async fn ensure_database_owner<C: GenericClient>(
    client: &C,
    log: &mut MembershipLog,
    database: &str,
) -> Result<()> {
    let owner: Option<String> = client
        .query_opt("SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1::text::name", &[&database])
        .await
        .map_err(|e| Error::db("read the target database's owner", e))?
        .map(|r| r.get(0));
    if let Some(owner) = owner {
        log.ensure(client, &owner).await?;
    }
    Ok(())
}

/// Applies a pre-data or post-data plan inside an open transaction.
///
/// Each statement is sent on its own with the extended protocol (Parse/Bind/Execute), which
/// accepts exactly one statement: should the splitting of the dump ever diverge from
/// PostgreSQL's, the step fails on that text instead of running statements nobody planned.
/// Each runs under a savepoint of its own (pipelined with it: one round trip), so that a statement
/// the target refuses for a privilege no RDS master has (42501) is skipped, reported by rule
/// `target.refused` with the server's message, and so is every later statement of its pg_dump
/// TOC entry or of an entry depending on it (`dep.skipped`). Any other failure fails the step.
pub async fn in_transaction<C: GenericClient>(client: &C, plan: &mut Plan, extra: &[String]) -> Result<usize> {
    let phase = plan.phase;
    let older_target = plan.older_target;
    let mut count = 0usize;
    // TOC entries refused by the target (or depending on one), with the label of the refused one.
    let mut refused: std::collections::BTreeMap<u32, String> = std::collections::BTreeMap::new();
    for p in &mut plan.statements {
        let Some(sql) = p.sql.clone() else { continue };
        let err = |e| apply_error(phase, p.index, p.line, &sql, e);
        if let Some((id, deps)) = &p.toc {
            let cause = refused.get(id).or_else(|| deps.iter().find_map(|d| refused.get(d))).cloned();
            if let Some(cause) = cause {
                refused.insert(*id, cause.clone());
                p.verdict = Verdict::Skip;
                p.rule = Some(DEP_SKIPPED.id.to_string());
                p.reason = Some(format!("depends on {cause} (refused by the target: {})", TARGET_REFUSED.id));
                p.after = None;
                continue;
            }
        }
        let result = match &p.apply {
            ApplyAs::Owner { owner, kind, schema } => {
                let shim = create_shim(client, owner, kind, schema.as_deref()).await?;
                if let Some((grant, _)) = &shim {
                    client.batch_execute(grant).await.map_err(err)?;
                }
                let result = under_savepoint(client, &sql).await.map_err(err)?;
                if let Some((grant, revoke)) = &shim {
                    client.batch_execute(revoke).await.map_err(err)?;
                    if result.is_ok() {
                        p.outcome = Some(format!("temporarily: {grant}"));
                    }
                }
                result
            }
            ApplyAs::Try => match under_savepoint(client, &sql).await.map_err(err)? {
                Ok(()) => {
                    p.outcome = Some("granted".to_string());
                    Ok(())
                }
                Err(e) => match e.code().and_then(|c| classify_refusal(c.code())) {
                    Some(why) => {
                        p.outcome = Some(format!("{why} ({})", pg_message(&e)));
                        Ok(())
                    }
                    None => Err(e),
                },
            },
            _ => under_savepoint(client, &sql).await.map_err(err)?,
        };
        match result {
            Ok(()) => count += 1,
            // Copying down, a statement the older target does not understand is skipped.
            Err(e) if older_target.is_some() && older_server_refusal(&e) => {
                skipped_by_older_target(p, older_target.unwrap_or_default(), &e);
            }
            Err(e) if e.code().is_some_and(|c| c.code() == "42501") => {
                let label = p.entry.clone().unwrap_or_else(|| format!("statement {}", p.index));
                if let Some((id, _)) = &p.toc {
                    refused.insert(*id, label);
                }
                p.verdict = Verdict::Skip;
                p.rule = Some(TARGET_REFUSED.id.to_string());
                p.reason = Some(format!("refused by the target: {}", pg_message(&e)));
                p.after = None;
                tracing::warn!(
                    section = phase.as_str(),
                    statement = p.index,
                    line = p.line,
                    entry = p.entry.as_deref().unwrap_or(""),
                    reason = p.reason.as_deref().unwrap_or(""),
                    "statement refused by the target; skipped with its dependents"
                );
            }
            Err(e) => return Err(err(e)),
        }
    }
    for (n, sql) in extra.iter().enumerate() {
        client.batch_execute(sql).await.map_err(|e| apply_error(phase, plan.statements.len() + n + 1, 0, sql, e))?;
        count += 1;
    }
    // A dump may leave a role set; bookkeeping after this runs as the master.
    client.batch_execute("RESET ROLE").await.map_err(|e| Error::db("reset role", e))?;
    Ok(count)
}

/// Runs one statement of a dump with the extended protocol: exactly one statement, or an error.
async fn one_statement<C: GenericClient>(client: &C, sql: &str) -> std::result::Result<(), tokio_postgres::Error> {
    client.query_typed(sql, &[]).await.map(|_| ())
}

/// Runs one dump statement under a savepoint of its own, so that its failure leaves the
/// transaction usable: the inner result is the statement's, already rolled back to the savepoint
/// when it failed; the outer error is the savepoint bookkeeping's. The savepoint, the statement
/// and the release are pipelined (sent together, answered in order).
async fn under_savepoint<C: GenericClient>(
    client: &C,
    sql: &str,
) -> std::result::Result<std::result::Result<(), tokio_postgres::Error>, tokio_postgres::Error> {
    let (open, run, release) = tokio::join!(
        client.batch_execute("SAVEPOINT pgferry_statement"),
        one_statement(client, sql),
        client.batch_execute("RELEASE SAVEPOINT pgferry_statement"),
    );
    open?;
    match run {
        Ok(()) => release.map(Ok),
        Err(e) => {
            client
                .batch_execute("ROLLBACK TO SAVEPOINT pgferry_statement; RELEASE SAVEPOINT pgferry_statement")
                .await?;
            Ok(Err(e))
        }
    }
}

/// The grant (and its revoke) of CREATE that the new owner of an object needs, if it lacks it.
async fn create_shim<C: GenericClient>(
    client: &C,
    owner: &str,
    kind: &str,
    schema: Option<&str>,
) -> Result<Option<(String, String)>> {
    let (check, object) = match (kind, schema) {
        ("SCHEMA", _) => (
            "SELECT has_database_privilege($1::text::name, current_database()::text, 'CREATE'), current_database()::text",
            None,
        ),
        (
            "EVENT TRIGGER" | "SERVER" | "FOREIGN DATA WRAPPER" | "LANGUAGE" | "PROCEDURAL LANGUAGE" | "LARGE OBJECT",
            _,
        ) => {
            return Ok(None);
        }
        (_, Some(schema)) => {
            ("SELECT has_schema_privilege($1::text::name, $2::text, 'CREATE'), $2::text", Some(schema))
        }
        (_, None) => return Ok(None),
    };
    let row = match object {
        Some(schema) => client.query_one(check, &[&owner, &schema]).await,
        None => client.query_one(check, &[&owner]).await,
    }
    .map_err(|e| Error::db(format!("check CREATE privilege of {owner}"), e))?;
    if row.get::<_, bool>(0) {
        return Ok(None);
    }
    let target: String = row.get(1);
    let on = if kind == "SCHEMA" { "DATABASE" } else { "SCHEMA" };
    Ok(Some((
        format!("GRANT CREATE ON {on} {} TO {}", quote_ident(&target), quote_ident(owner)),
        format!("REVOKE CREATE ON {on} {} FROM {}", quote_ident(&target), quote_ident(owner)),
    )))
}

fn pg_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_string())
}

/// Counts for reports and step outputs.
pub fn counts(plan: &Plan) -> (usize, usize, usize, usize) {
    (plan.count(Verdict::Keep), plan.count(Verdict::Rewrite), plan.count(Verdict::Skip), plan.count(Verdict::Try))
}
