//! Read access on the source for the duration of one run (RDS-CASES T38, T39), obtained only
//! with the job's consent (`obtainSourceAccess`).
//!
//! A copy must never return a silent subset: a table the source user cannot read stops `pg_dump`
//! and the copy half-way, and row-level security silently hides rows from `COPY … TO`. With
//! consent, before the schema is dumped, the source user is made a member of the owners of such
//! tables (an owner reads its tables and bypasses their policies), through the run's own holder
//! role as on the target ([`crate::roles::holder_role`]: two consenting runs from one
//! source do not take each other's access away), and `FORCE ROW LEVEL SECURITY`, which subjects
//! even the owner to the policies, is turned off. Every change is logged in the artifact store
//! *before* it is made; the release step (on success and on the failure path) restores `FORCE`
//! and drops the holder role, so the source ends as it began. `FORCE` is a table's flag, not a
//! run's: two consenting runs over a forced table should not overlap (the second would fail,
//! never read a subset: sessions run with `row_security = off`).
//!
//! The target has the mirror problem, without any consent needed since pgferry made those tables:
//! `FORCE ROW LEVEL SECURITY` comes with the schema's pre-data and `ENABLE ROW LEVEL SECURITY`
//! with its post-data, after which the policies would hide rows from verification. Post-data
//! turns `FORCE` off again (logged first) and the release step turns it back on.

use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, GenericClient};

use crate::context::StepContext;
use crate::error::{Error, Result};
use crate::job::Side;
use crate::pg::{QualifiedName, quote_ident};
use crate::roles::{HOLDER_PREFIX, REACH_CTE, drop_holder, hold, holder_role, privileges_holder_sql};
use crate::step::Check;
use crate::step::{StepInput, keys};
use crate::step::{fail, pass, warn};
use crate::store::ArtifactStore;

/// User relations as the copy sees them (system schemas and pgferry's own excluded).
const USER_RELATION: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgferry') \
     AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp'";

/// What the run changed on the source, in the order it changed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessLog {
    /// Roles the source user was made a member of.
    pub memberships: Vec<String>,
    /// Tables whose `FORCE ROW LEVEL SECURITY` was turned off.
    pub unforced: Vec<QualifiedName>,
}

impl AccessLog {
    pub fn is_empty(&self) -> bool {
        self.memberships.is_empty() && self.unforced.is_empty()
    }
}

/// Owners of relations the current user cannot read or whose policies apply to it, that it is not
/// already a member of; and the tables with `FORCE ROW LEVEL SECURITY` that hide rows from it.
/// A membership held only through another run's holder role does not count (that run may end
/// first, see [`crate::roles::holder_role`]): the owner is listed when the user reads
/// the table as its member at all, so that this run holds the membership itself. `run` names this
/// run (empty for preflight, which has none yet).
async fn needs(client: &Client, run: &str) -> Result<(Vec<(String, Option<&'static str>)>, Vec<QualifiedName>)> {
    let hidden = "c.relkind IN ('r', 'p') AND c.relrowsecurity \
         AND NOT (SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = current_user)";
    // An owner that cannot have members (pg_database_owner, T65) is read through the role it
    // stands for: the database's owner. The user may join an owner that is no superuser when it
    // holds ADMIN on it, or (before PostgreSQL 16) has CREATEROLE.
    let grantable = "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \
         OR pg_has_role(current_user, r.oid, 'MEMBER WITH ADMIN OPTION') \
         OR (current_setting('server_version_num')::int < 160000 \
             AND (SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user))";
    let owners = client
        .query(
            &format!(
                "WITH RECURSIVE {REACH_CTE} \
                 SELECT DISTINCT r.rolname::text, r.rolsuper, {grantable} \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_roles r ON r.rolname = ({holder}) \
                 WHERE c.relkind IN ('r', 'p', 'm', 'S') AND {USER_RELATION} \
                   AND NOT (pg_has_role(r.oid, 'USAGE') AND r.oid IN (SELECT oid FROM reach)) \
                   AND (NOT (has_schema_privilege(n.oid, 'USAGE') AND CASE WHEN c.relkind = 'S' \
                             THEN has_sequence_privilege(c.oid, 'SELECT') ELSE has_table_privilege(c.oid, 'SELECT') END) \
                        OR ({hidden}) OR pg_has_role(r.oid, 'USAGE')) \
                 ORDER BY 1",
                holder = privileges_holder_sql("pg_get_userbyid(c.relowner)::text")
            ),
            &[&holder_role(run), &HOLDER_PREFIX],
        )
        .await
        .map_err(|e| Error::db("list the owners of tables the source user cannot read", e))?;
    let forced = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE {hidden} AND c.relforcerowsecurity AND {USER_RELATION} ORDER BY 1, 2"
            ),
            &[],
        )
        .await
        .map_err(|e| Error::db("list tables with FORCE ROW LEVEL SECURITY", e))?;
    let why = |superuser: bool, grantable: bool| match (superuser, grantable) {
        (true, _) => Some(UNOBTAINABLE_SUPERUSER),
        (false, false) => Some(UNOBTAINABLE_ADMIN),
        (false, true) => None,
    };
    Ok((
        owners.iter().map(|r| (r.get(0), why(r.get(1), r.get(2)))).collect(),
        forced.iter().map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1))).collect(),
    ))
}

/// Why an owner cannot be joined: a superuser.
const UNOBTAINABLE_SUPERUSER: &str = "superuser";
/// Why an owner cannot be joined: PostgreSQL 16+ lets a CREATEROLE role grant only the roles it
/// holds ADMIN on (those it created, or was given WITH ADMIN OPTION).
const UNOBTAINABLE_ADMIN: &str = "no ADMIN";

/// What obtaining access would change: `(roles to join, tables to unforce)`, and the owners that
/// cannot be joined with the reason (superusers; on PostgreSQL 16+ roles the user holds no ADMIN
/// on).
pub async fn would_obtain(
    client: &Client,
    run: &str,
) -> Result<(Vec<String>, Vec<QualifiedName>, Vec<(String, &'static str)>)> {
    let (owners, forced) = needs(client, run).await?;
    let (blocked, roles): (Vec<_>, Vec<_>) = owners.into_iter().partition(|(_, why)| why.is_some());
    Ok((
        roles.into_iter().map(|(r, _)| r).collect(),
        forced,
        blocked.into_iter().map(|(r, why)| (r, why.unwrap_or_default())).collect(),
    ))
}

/// Why the owners in `blocked` cannot be joined, and what to do.
async fn blocked_advice(client: &Client, blocked: &[(String, &'static str)]) -> Result<(String, String)> {
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(|e| Error::db("read the current user", e))?
        .get(0);
    let of =
        |kind: &str| -> Vec<&str> { blocked.iter().filter(|(_, w)| *w == kind).map(|(r, _)| r.as_str()).collect() };
    let (superusers, no_admin) = (of(UNOBTAINABLE_SUPERUSER), of(UNOBTAINABLE_ADMIN));
    let mut detail = Vec::new();
    let mut advice = Vec::new();
    if !superusers.is_empty() {
        detail
            .push(format!("tables owned by superuser(s) {} cannot be read by the source user", superusers.join(", ")));
        advice.push(
            "grant SELECT on them to the source user as their owner, or change their owner: a member of rds_superuser \
             cannot become a superuser"
                .to_string(),
        );
    }
    if !no_admin.is_empty() {
        detail.push(format!(
            "the source user may not join owner role(s) {}: PostgreSQL 16+ lets a CREATEROLE role grant only roles \
             it holds ADMIN on",
            no_admin.join(", ")
        ));
        advice.push(format!(
            "as the role that created them (or a superuser), run {}",
            no_admin
                .iter()
                .map(|r| format!("GRANT {} TO {} WITH ADMIN OPTION", quote_ident(r), quote_ident(&user)))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    Ok((detail.join("; "), advice.join("; ")))
}

/// The preflight check of a job that consents: what the run will change, or why it cannot.
pub async fn preflight_check(client: &Client) -> Result<Check> {
    let name = "source-access";
    let (roles, forced, blocked) = would_obtain(client, "").await?;
    if !blocked.is_empty() {
        let (detail, advice) = blocked_advice(client, &blocked).await?;
        return Ok(fail(name, detail, &advice));
    }
    if roles.is_empty() && forced.is_empty() {
        return Ok(pass(name, "the source user can read every row of every table; nothing to obtain".to_string()));
    }
    let mut changes: Vec<String> = roles.iter().map(|r| format!("membership in {r}")).collect();
    changes.extend(forced.iter().map(|t| format!("NO FORCE ROW LEVEL SECURITY on {t}")));
    Ok(warn(
        name,
        format!("with the job's consent the run obtains, and undoes at its end: {}", changes.join(", ")),
        "nothing to do: this is what obtainSourceAccess asked for",
    ))
}

/// What [`obtain`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Obtain {
    /// Membership in the owners: before the schema dump, which locks every table it dumps.
    Memberships,
    /// `NO FORCE ROW LEVEL SECURITY`: after the schema dump, which must record `FORCE` as it was.
    Unforce,
}

/// Obtains read access on the source if the job consents; a no-op otherwise. Idempotent.
pub async fn obtain(ctx: &StepContext, input: &StepInput, what: Obtain) -> Result<AccessLog> {
    let key = keys::source_access(&input.run_id);
    let mut log: AccessLog = ctx.store.get_json_opt(&key).await?.unwrap_or_default();
    if !input.job.obtain_source_access {
        return Ok(log);
    }
    let source = ctx.connect(&input.job, Side::Source, "access", &input.run_id).await?;
    let (roles, forced, blocked) = would_obtain(&source, &input.run_id).await?;
    if !blocked.is_empty() {
        let (detail, advice) = blocked_advice(&source, &blocked).await?;
        return Err(Error::PreflightFailed { failures: vec![format!("{detail}: {advice}")] });
    }
    if what == Obtain::Memberships {
        for role in roles {
            if !log.memberships.contains(&role) {
                log.memberships.push(role.clone());
                ctx.store.put_json(&key, &log).await?;
            }
            hold(&source, &holder_role(&input.run_id), &role).await?;
            tracing::info!(role = %role, "source access: joined the owner role for the run");
        }
        return Ok(log);
    }
    for table in forced {
        if !log.unforced.contains(&table) {
            log.unforced.push(table.clone());
            ctx.store.put_json(&key, &log).await?;
        }
        source
            .batch_execute(&format!("ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY"))
            .await
            .map_err(|e| Error::db(format!("turn FORCE ROW LEVEL SECURITY off on {table} for the run"), e))?;
        tracing::info!(table = %table, "source access: FORCE ROW LEVEL SECURITY off for the run");
    }
    Ok(log)
}

/// Undoes what [`obtain`] logged: `FORCE ROW LEVEL SECURITY` back on (while still a member of the
/// owner), then the memberships revoked. Idempotent; returns what it restored.
pub async fn restore(ctx: &StepContext, input: &StepInput) -> Result<Vec<String>> {
    let key = keys::source_access(&input.run_id);
    let log: AccessLog = ctx.store.get_json_opt(&key).await?.unwrap_or_default();
    if log.is_empty() {
        return Ok(Vec::new());
    }
    let source = ctx.connect(&input.job, Side::Source, "release", &input.run_id).await?;
    let mut restored = Vec::new();
    for table in &log.unforced {
        if force_again(&source, table).await? {
            restored.push(format!("FORCE ROW LEVEL SECURITY on {table}"));
        }
    }
    // The memberships go with the run's holder role; other runs' stay.
    if drop_holder(&source, &input.run_id).await? {
        restored.extend(log.memberships.iter().map(|role| format!("source membership in {role} revoked")));
    }
    Ok(restored)
}

/// Turns `FORCE ROW LEVEL SECURITY` off on the target's tables whose policies would apply to the
/// connecting user (logged first, see the module documentation).
pub async fn unforce_target<C: GenericClient>(client: &C, store: &ArtifactStore, run: &str) -> Result<()> {
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p') AND c.relrowsecurity AND c.relforcerowsecurity AND {USER_RELATION} \
                   AND NOT (SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = current_user) ORDER BY 1, 2"
            ),
            &[],
        )
        .await
        .map_err(|e| Error::db("list target tables with FORCE ROW LEVEL SECURITY", e))?;
    if rows.is_empty() {
        return Ok(());
    }
    let key = keys::target_access(run);
    let mut log: Vec<QualifiedName> = store.get_json_opt(&key).await?.unwrap_or_default();
    let tables: Vec<QualifiedName> =
        rows.iter().map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1))).collect();
    for t in &tables {
        if !log.contains(t) {
            log.push(t.clone());
        }
    }
    store.put_json(&key, &log).await?;
    for table in tables {
        client
            .batch_execute(&format!("ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY"))
            .await
            .map_err(|e| Error::db(format!("turn FORCE ROW LEVEL SECURITY off on target {table} until release"), e))?;
    }
    Ok(())
}

/// Turns `FORCE ROW LEVEL SECURITY` back on where [`unforce_target`] turned it off. Idempotent.
pub async fn restore_target(ctx: &StepContext, input: &StepInput) -> Result<Vec<String>> {
    let log: Vec<QualifiedName> =
        ctx.store.get_json_opt(&keys::target_access(&input.run_id)).await?.unwrap_or_default();
    if log.is_empty() {
        return Ok(Vec::new());
    }
    let target = ctx.connect(&input.job, Side::Target, "release", &input.run_id).await?;
    let mut restored = Vec::new();
    for table in &log {
        if force_again(&target, table).await? {
            restored.push(format!("FORCE ROW LEVEL SECURITY on target {table}"));
        }
    }
    Ok(restored)
}

/// Turns `FORCE ROW LEVEL SECURITY` back on for `table` when it still exists with it off; true if
/// it did.
async fn force_again(client: &Client, table: &QualifiedName) -> Result<bool> {
    let text = table.to_string();
    let row = client
        .query_opt("SELECT relforcerowsecurity FROM pg_class WHERE oid = to_regclass($1)", &[&text])
        .await
        .map_err(|e| Error::db(format!("look for {table}"), e))?;
    if row.is_none_or(|r| r.get::<_, bool>(0)) {
        return Ok(false);
    }
    client
        .batch_execute(&format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY"))
        .await
        .map_err(|e| Error::db(format!("turn FORCE ROW LEVEL SECURITY back on for {table}"), e))?;
    Ok(true)
}
