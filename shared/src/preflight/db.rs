//! Preflight checks inside the databases: versions, privileges, what the copy cannot carry or
//! would silently get wrong, and whether the target can take it.
//!
//! Each check is a function of one or two connected clients (plus a few facts), public so that
//! tests can drive it directly. They only read: the one statement that is not a plain `SELECT`
//! is `current_setting`, which changes nothing.

use std::time::Duration;

use tokio_postgres::Client;

use crate::aws::rds::{DbFacts, Parameters, split_libraries};
use crate::catalog;
use crate::context::StepContext;
use crate::error::{Error, ErrorKind, Result};
use crate::job::Side;
use crate::pg::{self, ConnSpec, Session, quote_ident};
use crate::step::{Check, StepInput};

use super::{MIN_SERVER_VERSION_NUM, Requirements, SideState, cloud, fail, fail_from, pass, warn};

/// A transaction open longer than this on the source is reported: it pins the xmin horizon and
/// may hold locks the copy would wait for.
pub const LONG_TRANSACTION: Duration = Duration::from_secs(15 * 60);

/// Target storage wanted per byte of source database: indexes are rebuilt and WAL is written
/// while loading, so a target just as large as the source runs out of space.
pub const STORAGE_HEADROOM: f64 = 1.3;

/// Connections the run needs besides one per chunk in flight: the schema and sequence steps.
pub const EXTRA_CONNECTIONS: i64 = 2;

/// Most objects named in one finding; the count says how many there are.
const LIST_LIMIT: usize = 8;

/// Same condition as the catalog's user relations: not system, not pgferry's, not an extension's.
const USER_RELATION: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgferry') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                     AND d.objid = c.oid AND d.deptype = 'e')";

fn listed(names: &[String]) -> String {
    let mut out = names.iter().take(LIST_LIMIT).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > LIST_LIMIT {
        out.push_str(&format!(" and {} more", names.len() - LIST_LIMIT));
    }
    out
}

async fn strings(client: &Client, sql: &str, what: &str) -> Result<Vec<String>> {
    let rows = client.query(sql, &[]).await.map_err(|e| Error::db(what, e))?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// What one connected side looks like.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version_num: i32,
    pub database: String,
    pub user: String,
    /// `pg_postmaster_start_time`, port and (where readable) the system identifier.
    pub identity: String,
}

/// Reads version, identity, database and user.
pub async fn server_info(client: &Client) -> Result<ServerInfo> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_database()::text, current_user::text, \
                    pg_postmaster_start_time()::text || ':' || coalesce(inet_server_port(), 0)::text",
            &[],
        )
        .await
        .map_err(|e| Error::db("read server identity", e))?;
    let mut identity: String = row.get(3);
    // The system identifier tells two servers apart even if they started in the same microsecond;
    // RDS may not let the master read it, so it is optional.
    if let Ok(r) = client
        .query_one(
            "SELECT CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE') \
                    THEN (SELECT system_identifier::text FROM pg_control_system()) END",
            &[],
        )
        .await
    {
        if let Some(sysid) = r.get::<_, Option<String>>(0) {
            identity.push_str(&format!(":{sysid}"));
        }
    }
    Ok(ServerInfo { version_num: row.get(0), database: row.get(1), user: row.get(2), identity })
}

async fn describe(client: &Client) -> Result<String> {
    let row = client
        .query_one("SELECT version(), current_user::text, current_database()::text", &[])
        .await
        .map_err(|e| Error::db("describe server", e))?;
    let version: String = row.get(0);
    let short = version.split(" on ").next().unwrap_or(&version).to_string();
    Ok(format!("{short}, user {}, database {}", row.get::<_, String>(1), row.get::<_, String>(2)))
}

/// All database checks, in order; connections are closed when it returns.
pub(crate) async fn run(
    ctx: &StepContext,
    input: &StepInput,
    req: &Requirements,
    sides: &mut [SideState],
    checks: &mut Vec<Check>,
) -> Result<()> {
    let job = &input.job;
    let session = Session::new("preflight", &input.run_id);
    let (source_side, target_side) = sides.split_at_mut(1);
    let (source_side, target_side) = (&mut source_side[0], &mut target_side[0]);

    let mut source = None;
    if let Some(spec) = &source_side.spec {
        match pg::connect(spec, &session).await {
            Ok(client) => {
                checks.push(pass("source-connect", describe(&client).await?));
                source = Some(client);
            }
            Err(e) => checks.push(connect_failure("source-connect", &e, source_side)),
        }
    }
    let mut source_info = None;
    if let Some(client) = &source {
        let info = server_info(client).await?;
        let v = info.version_num;
        checks.push(if v >= MIN_SERVER_VERSION_NUM {
            pass("source-version", format!("server_version_num {v}"))
        } else {
            fail(
                "source-version",
                format!("server_version_num {v}"),
                "pgferry supports PostgreSQL 12 and newer sources",
            )
        });
        if let Some(spec) = &source_side.spec {
            checks.push(source_database_check(client, spec, &session).await?);
        }
        source_info = Some(info);
    }

    // The target database may be missing: the globals step creates it, if the user may.
    let mut target = None;
    let mut target_db_exists = false;
    if let Some(spec) = &target_side.spec {
        match pg::connect(spec, &session).await {
            Ok(client) => {
                checks.push(pass("target-connect", describe(&client).await?));
                let (count, names) = catalog::some_user_relations(&client, 5).await?;
                checks.push(if job.mode == crate::job::Mode::Refresh {
                    refresh_target_check(source.as_ref(), &client, job).await?
                } else if count == 0 {
                    pass("target-empty", format!("database {} holds no user relations", spec.dbname))
                } else {
                    match pgferry_runs(&client).await?.as_slice() {
                        // The target holds this very run's partial copy: it resumes (issue 24).
                        [only] if *only == input.run_id => pass(
                            "target-empty",
                            format!(
                                "database {} holds the partial copy of run {}: resuming it (committed slices are kept)",
                                spec.dbname, input.run_id
                            ),
                        ),
                        runs => {
                            let err = Error::TargetNotEmpty { database: spec.dbname.clone(), objects: names };
                            let advice = match runs.last() {
                                Some(run) => format!(
                                    "it holds what pgferry run {run} left: continue that run with `pgferry run JOB \
                                     --resume {run}` (in AWS: start the job with \"resume\": \"{run}\"), or drop \
                                     the database to start over"
                                ),
                                None => ErrorKind::TargetNotEmpty.advice().unwrap_or_default().to_string(),
                            };
                            fail("target-empty", format!("{err} ({count} relations)"), &advice)
                        }
                    }
                });
                target_db_exists = true;
                target = Some(client);
            }
            Err(e) if e.kind() == ErrorKind::DatabaseMissing && job.mode == crate::job::Mode::Refresh => {
                checks.push(fail(
                    "refresh-target",
                    format!("database {} does not exist: there is no earlier pgferry copy to refresh", spec.dbname),
                    "copy the database with mode snapshot first; a refresh updates an earlier copy",
                ));
            }
            Err(e) if e.kind() == ErrorKind::DatabaseMissing => {
                match pg::connect(&spec.with_dbname("postgres"), &session).await {
                    Ok(client) => {
                        let row = client
                            .query_one("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user", &[])
                            .await
                            .map_err(|e| Error::db("read role attributes", e))?;
                        let can_create: bool = row.get(0);
                        checks.push(if can_create {
                            pass("target-connect", format!("database {} is missing and will be created", spec.dbname))
                        } else {
                            fail(
                                "target-connect",
                                format!("database {} is missing and {} may not create it", spec.dbname, spec.user),
                                "create the database first, or connect as the RDS master user (CREATEDB)",
                            )
                        });
                        target = Some(client);
                    }
                    Err(e) => checks.push(connect_failure("target-connect", &e, target_side)),
                }
            }
            Err(e) => checks.push(connect_failure("target-connect", &e, target_side)),
        }
    }
    let target_info = match &target {
        Some(client) => Some(server_info(client).await?),
        None => None,
    };

    // Same server under different names (T59): decided before any other finding about the pair.
    match (&source_info, &target_info) {
        (Some(s), Some(t)) => checks.push(if s.identity == t.identity {
            fail(
                "distinct-servers",
                format!(
                    "source and target are the same server (database {} and {}), reached under different names",
                    s.database,
                    target_side.spec.as_ref().map_or("?", |spec| spec.dbname.as_str())
                ),
                "check the target endpoint: a CNAME, an IP address or a proxy leads to the source. Roles are shared by \
                 every database of a server, so pgferry never copies within one server",
            )
        } else {
            pass("distinct-servers", "source and target are different servers".to_string())
        }),
        _ => {
            if let Some(check) = address_overlap_check(source_side.spec.as_ref(), target_side.spec.as_ref()).await {
                checks.push(check);
            }
        }
    }

    if let Some(client) = &source {
        if input.job.obtain_source_access {
            checks.push(crate::access::preflight_check(client).await?);
        } else {
            checks.push(readable_tables_check(client).await?);
            checks.push(rls_check(client).await?);
        }
        checks.push(keyless_tables_check(client).await?);
        checks.push(large_objects_check(client, req.logical_replication).await?);
        checks.push(unlogged_tables_check(client, req).await?);
        checks.push(source_activity_check(client, LONG_TRANSACTION).await?);
        if req.logical_replication {
            checks.extend(replication_checks_with(client, job.continuous_options().keyless_tables).await?);
            if let Some(user) = job.continuous_options().replication_user {
                checks.push(replication_user_check(client, &user).await?);
            }
        }
    }
    let concurrency = i64::from(job.effective_max_concurrency());
    for (side, client) in [(Side::Source, &source), (Side::Target, &target)] {
        if let Some(client) = client {
            checks.push(connections_check(client, side, concurrency).await?);
        }
    }
    if let Some(client) = &target {
        checks.push(target_privileges_check(client, target_db_exists).await?);
        if req.logical_replication {
            if let Some(spec) = source_side.spec.as_ref() {
                checks.push(publisher_reach_check(client, spec, &job.continuous_options()).await?);
            }
        }
    }
    for (state, client) in [(&*source_side, &source), (&*target_side, &target)] {
        if let (true, Some(client)) = (job.endpoint(state.side).iam_auth, client) {
            checks.push(rds_iam_member_check(client, state.side).await?);
        }
    }

    if let Some(si) = &source_info {
        checks.push(
            pg_dump_check(ctx, si.version_num / 10000, target_info.as_ref().map(|t| t.version_num / 10000)).await,
        );
    }
    if let (Some(s), Some(t), Some(si), Some(ti)) = (&source, &target, &source_info, &target_info) {
        let (sm, tm) = (si.version_num / 10000, ti.version_num / 10000);
        checks.push(if tm >= sm {
            pass("target-version", format!("server_version_num {}", ti.version_num))
        } else if job.allow_older_target {
            warn(
                "target-version",
                format!("target major {tm} is older than source major {sm} (allowOlderTarget)"),
                &format!(
                    "what PostgreSQL {tm} refuses is skipped and listed in the schema report; upgrading the target \
                     instance first keeps everything"
                ),
            )
        } else {
            fail(
                "target-version",
                format!("target major {tm} is older than source major {sm}"),
                "upgrade the target instance to the source's major first, or set \"allowOlderTarget\": true to \
                 copy down (what the older target refuses is then skipped and listed in the schema report)",
            )
        });
        checks.push(encoding_check(s, t, target_db_exists).await?);
        let source_extensions = extensions(s).await?;
        checks.push(extensions_check(&source_extensions, t).await?);
        checks.push(preload_check(&source_extensions, t, target_side.rds.as_ref(), target_side.params.as_ref()).await?);
        if let Some(db) = &target_side.rds {
            let size: i64 = s
                .query_one("SELECT pg_database_size(current_database())", &[])
                .await
                .map_err(|e| Error::db("read source database size", e))?
                .get(0);
            checks.push(storage_check(db, u64::try_from(size).unwrap_or(0)));
        }
    }
    Ok(())
}

/// Mode refresh (RDS-CASES T57): the target must hold a finished pgferry copy of this source
/// database (`pgferry.runs`); anything else would be overwritten.
/// The pgferry runs whose bookkeeping the target database holds (schema sections applied, slices
/// copied), oldest first; none when it has no `pgferry` schema.
async fn pgferry_runs(client: &Client) -> Result<Vec<String>> {
    let has: bool = client
        .query_one(
            "SELECT to_regclass('pgferry.applied_sections') IS NOT NULL AND to_regclass('pgferry.copied_chunks') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| Error::db("look for pgferry's bookkeeping on the target", e))?
        .get(0);
    if !has {
        return Ok(vec![]);
    }
    let rows = client
        .query(
            "SELECT run_id FROM (SELECT run_id, min(applied_at) AS at FROM pgferry.applied_sections GROUP BY run_id \
             UNION ALL SELECT run_id, NULL FROM pgferry.copied_chunks GROUP BY run_id) r \
             GROUP BY run_id ORDER BY min(at) NULLS LAST, run_id",
            &[],
        )
        .await
        .map_err(|e| Error::db("read pgferry's bookkeeping on the target", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn refresh_target_check(source: Option<&Client>, target: &Client, job: &crate::job::Job) -> Result<Check> {
    match source {
        Some(source) => crate::refresh::target_check(source, target, job).await,
        None => Ok(warn(
            "refresh-target",
            "the source is unreachable, so whether the target is an earlier copy of it is unknown".to_string(),
            "fix the source connection; a refresh updates only an earlier pgferry copy of the same source",
        )),
    }
}

/// A failed connection as a check, explained with what the AWS checks just found about that side.
fn connect_failure(name: &str, err: &Error, state: &SideState) -> Check {
    let mut check = fail_from(name, err);
    if let Some(explanation) = super::explain(&state.facts, err.kind()) {
        check.detail.push_str(&format!("; preflight found: {explanation}"));
    }
    check
}

/// pg_dump refuses servers of a newer major version than itself, and writes its dump for its own
/// major: an upgrade copy wants the pg_dump of the target's (newer) major, as pg_upgrade does.
async fn pg_dump_check(ctx: &StepContext, source_major: i32, target_major: Option<i32>) -> Check {
    let tool = ctx.pg_tool("pg_dump");
    match tokio::process::Command::new(&tool).arg("--version").output().await {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let major = text
                .split_whitespace()
                .find_map(|w| w.split('.').next().and_then(|m| m.parse::<i32>().ok()))
                .unwrap_or(0);
            if major < source_major {
                fail(
                    "pg-dump-version",
                    format!("{text} is older than the source's major version {source_major}"),
                    "install a pg_dump at least as new as the source (set PGFERRY_PG_BIN to its directory)",
                )
            } else if let Some(target_major) = target_major.filter(|t| major < *t) {
                warn(
                    "pg-dump-version",
                    format!("{text} is older than the target's major version {target_major}"),
                    "the dump of an upgrade copy is best taken by the target's pg_dump (set PGFERRY_PG_BIN to its \
                     directory)",
                )
            } else {
                pass("pg-dump-version", text)
            }
        }
        Ok(out) => fail(
            "pg-dump-version",
            format!("{} --version failed: {}", tool.display(), String::from_utf8_lossy(&out.stderr).trim()),
            "install the PostgreSQL client programs",
        ),
        Err(e) => fail(
            "pg-dump-version",
            format!("cannot run {}: {e}", tool.display()),
            "install the PostgreSQL client programs or set PGFERRY_PG_BIN to their directory",
        ),
    }
}

/// The job's database among the server's (RDS-CASES T12, T13): `postgres` is copied like any
/// other; `rdsadmin` and databases that refuse connections are never copied; data left in
/// `postgres` while the job names another database is pointed out.
pub async fn source_database_check(client: &Client, spec: &ConnSpec, session: &Session) -> Result<Check> {
    let rows = client
        .query("SELECT datname::text, datallowconn FROM pg_database WHERE NOT datistemplate ORDER BY 1", &[])
        .await
        .map_err(|e| Error::db("list databases", e))?;
    let current = spec.dbname.as_str();
    let mut others = Vec::new();
    let mut skipped = Vec::new();
    for r in &rows {
        let (name, allowed): (String, bool) = (r.get(0), r.get(1));
        if name == current {
            continue;
        }
        if name == "rdsadmin" || !allowed {
            skipped.push(name);
        } else {
            others.push(name);
        }
    }
    let mut detail = if current == "postgres" {
        "copying database postgres like any other database".to_string()
    } else {
        format!("copying database {current}")
    };
    if !others.is_empty() {
        detail.push_str(&format!("; not copied (other jobs): {}", listed(&others)));
    }
    if !skipped.is_empty() {
        detail.push_str(&format!("; never copied: {} (RDS-internal or not accepting connections)", listed(&skipped)));
    }
    if current != "postgres" && others.iter().any(|d| d == "postgres") {
        // Best effort: the master may connect to `postgres` on RDS; if not, nothing to say.
        if let Ok(pg_db) = pg::connect(&spec.with_dbname("postgres"), session).await {
            let (count, names) = catalog::some_user_relations(&pg_db, 5).await?;
            if count > 0 {
                return Ok(warn(
                    "source-database",
                    format!("{detail}; database postgres also holds {count} relations (e.g. {})", names.join(", ")),
                    "data in `postgres` (common when the instance was created without a DBName) is not part of this \
                     job: run another job with \"database\": \"postgres\" to copy it",
                ));
            }
        }
    }
    Ok(pass("source-database", detail))
}

/// Tables, views and sequences the source user cannot read (RDS-CASES T39): the copy would stop
/// with "permission denied" half-way.
pub async fn readable_tables_check(client: &Client) -> Result<Check> {
    let sql = format!(
        "SELECT format('%I.%I', n.nspname, c.relname), pg_get_userbyid(c.relowner)::text \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'm', 'S') AND {USER_RELATION} \
           AND NOT (has_schema_privilege(n.oid, 'USAGE') AND CASE WHEN c.relkind = 'S' \
                    THEN has_sequence_privilege(c.oid, 'SELECT') ELSE has_table_privilege(c.oid, 'SELECT') END) \
         ORDER BY 1"
    );
    let rows = client.query(&sql, &[]).await.map_err(|e| Error::db("check table privileges", e))?;
    if rows.is_empty() {
        return Ok(pass("source-privileges", "the source user can read every table and sequence".to_string()));
    }
    let tables: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let mut owners: Vec<String> = rows.iter().map(|r| r.get::<_, String>(1)).collect();
    owners.sort();
    owners.dedup();
    let user: String =
        client.query_one("SELECT current_user::text", &[]).await.map_err(|e| Error::db("read current user", e))?.get(0);
    let grants: Vec<String> =
        owners.iter().map(|o| format!("GRANT {} TO {}", quote_ident(o), quote_ident(&user))).collect();
    Ok(fail(
        "source-privileges",
        format!("{user} cannot read {} relation(s): {}", tables.len(), listed(&tables)),
        &format!(
            "make the source user a member of the owners (as the RDS master): {}, or consent in the job with \
             \"obtainSourceAccess\": true and pgferry does it for the run and undoes it afterwards",
            grants.join("; ")
        ),
    ))
}

/// Tables whose row-level security would hide rows from the copy (RDS-CASES T38): RLS applies
/// unless the user has BYPASSRLS or owns the table without FORCE ROW LEVEL SECURITY.
pub async fn rls_check(client: &Client) -> Result<Check> {
    let sql = format!(
        "SELECT format('%I.%I', n.nspname, c.relname), c.relforcerowsecurity \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND c.relrowsecurity AND {USER_RELATION} \
           AND NOT (SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = current_user) \
           AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE')) \
         ORDER BY 1"
    );
    let rows = client.query(&sql, &[]).await.map_err(|e| Error::db("check row-level security", e))?;
    if rows.is_empty() {
        return Ok(pass("source-row-security", "no row-level security hides rows from the source user".to_string()));
    }
    let tables: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(fail(
        "source-row-security",
        format!("row-level security would hide rows of {} table(s) from the copy: {}", tables.len(), listed(&tables)),
        "copy as a role with BYPASSRLS, or as the tables' owner with FORCE ROW LEVEL SECURITY off \
         (ALTER TABLE … NO FORCE ROW LEVEL SECURITY) for the duration of the copy, or consent in the job with \
         \"obtainSourceAccess\": true and pgferry does it for the run and undoes it afterwards; otherwise rows are silently lost",
    ))
}

/// Tables without a primary key or a unique NOT NULL key: copied by page ranges, verified as a
/// whole, and duplicates cannot be told apart.
pub async fn keyless_tables_check(client: &Client) -> Result<Check> {
    let sql = format!(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND {USER_RELATION} AND NOT EXISTS ( \
           SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisvalid AND (i.indisprimary OR ( \
             i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL AND NOT EXISTS ( \
               SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum = ANY (i.indkey) AND NOT a.attnotnull)))) \
         ORDER BY 1"
    );
    let tables = strings(client, &sql, "find tables without a key").await?;
    if tables.is_empty() {
        return Ok(pass("keyless-tables", "every table has a primary key or a unique NOT NULL key".to_string()));
    }
    Ok(warn(
        "keyless-tables",
        format!("{} table(s) have no primary key or unique NOT NULL key: {}", tables.len(), listed(&tables)),
        "they are copied by page ranges and verified as whole tables; add a primary key where you can (logical \
         replication needs one, or REPLICA IDENTITY FULL)",
    ))
}

/// A replication user the job names must not exist: pgferry creates, uses and drops its own.
async fn replication_user_check(client: &Client, user: &str) -> Result<Check> {
    let exists: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", &[&user])
        .await
        .map_err(|e| Error::db("look for the replication user", e))?
        .get(0);
    Ok(if exists {
        fail(
            "replication-user",
            crate::replication::existing_replication_user(user),
            "name a role that does not exist in continuous.replicationUser, or leave it out",
        )
    } else {
        pass("replication-user", format!("role {user} does not exist yet; the run creates and drops it"))
    })
}

/// Large objects are copied by their own step (RDS-CASES T34), once: logical replication does not
/// carry them, so in mode continuous later changes to them do not arrive.
pub async fn large_objects_check(client: &Client, continuous: bool) -> Result<Check> {
    let n: i64 = client
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .map_err(|e| Error::db("count large objects", e))?
        .get(0);
    Ok(if n == 0 {
        pass("large-objects", "no large objects".to_string())
    } else if continuous {
        warn(
            "large-objects",
            format!(
                "the source holds {n} large object(s) (pg_largeobject): copied once with their OIDs, owners and \
                 grants, but logical replication does not carry later changes to them"
            ),
            "stop writing large objects before the cutover, or copy them again with a refresh after it; bytea \
             columns replicate",
        )
    } else {
        warn(
            "large-objects",
            format!(
                "the source holds {n} large object(s) (pg_largeobject): copied with their OIDs, owners, grants and \
                 comments by the CopyLargeObjects step, one transaction each"
            ),
            "nothing to do; many large objects make that step long (each is a transaction)",
        )
    })
}

/// Unlogged tables: copied by a snapshot, but not replicated and emptied by a crash (T37).
pub async fn unlogged_tables_check(client: &Client, req: &Requirements) -> Result<Check> {
    let sql = format!(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'u' AND {USER_RELATION} ORDER BY 1"
    );
    let tables = strings(client, &sql, "find unlogged tables").await?;
    Ok(match (tables.is_empty(), req.logical_replication) {
        (true, _) => pass("unlogged-tables", "no unlogged tables".to_string()),
        (false, false) => pass(
            "unlogged-tables",
            format!("{} unlogged table(s), copied as unlogged: {}", tables.len(), listed(&tables)),
        ),
        (false, true) => warn(
            "unlogged-tables",
            format!("{} unlogged table(s) are not carried by logical replication: {}", tables.len(), listed(&tables)),
            "their rows are copied once and then drift; make them logged (ALTER TABLE … SET LOGGED) if they matter",
        ),
    })
}

/// Long-running and prepared transactions on the source.
pub async fn source_activity_check(client: &Client, older_than: Duration) -> Result<Check> {
    let secs = older_than.as_secs_f64();
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE xact_start < now() - make_interval(secs => $1) \
                     AND pid <> pg_backend_pid())::bigint, \
                    (SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0) FROM pg_stat_activity \
                     WHERE xact_start < now() - make_interval(secs => $1) AND pid <> pg_backend_pid())::bigint, \
                    (SELECT count(*) FROM pg_prepared_xacts)::bigint",
            &[&secs],
        )
        .await
        .map_err(|e| Error::db("read source activity", e))?;
    let (long, oldest, prepared): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    if long == 0 && prepared == 0 {
        return Ok(pass("source-activity", "no long-running or prepared transactions".to_string()));
    }
    let mut parts = Vec::new();
    if long > 0 {
        parts.push(format!("{long} transaction(s) open for more than {}s (oldest {oldest}s)", older_than.as_secs()));
    }
    if prepared > 0 {
        parts.push(format!("{prepared} prepared transaction(s) (pg_prepared_xacts)"));
    }
    Ok(warn(
        "source-activity",
        parts.join(", "),
        "they hold back vacuum and may hold locks the copy waits for: finish them (COMMIT PREPARED / ROLLBACK \
         PREPARED for prepared ones) or run the job when the source is quiet",
    ))
}

/// Free connection slots for the planned concurrency.
pub async fn connections_check(client: &Client, side: Side, concurrency: i64) -> Result<Check> {
    let row = client
        .query_one(
            "SELECT current_setting('max_connections')::bigint, current_setting('superuser_reserved_connections')::bigint, \
                    coalesce(nullif(current_setting('rds.rds_superuser_reserved_connections', true), ''), '0')::bigint, \
                    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::bigint",
            &[],
        )
        .await
        .map_err(|e| Error::db("read connection limits", e))?;
    let (max, reserved, rds_reserved, used): (i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
    let free = max - reserved - rds_reserved - used;
    let needed = concurrency + EXTRA_CONNECTIONS;
    let name = format!("{}-connections", side.as_str());
    let detail = format!(
        "max_connections {max}, {} reserved, {used} in use: {free} free; the run needs {needed} ({concurrency} chunks in \
         flight + {EXTRA_CONNECTIONS})",
        reserved + rds_reserved
    );
    Ok(if free >= needed {
        pass(&name, detail)
    } else {
        fail(
            &name,
            detail,
            "lower the job's maxConcurrency, close idle sessions, or raise max_connections in the parameter group \
             (static: needs a reboot)",
        )
    })
}

/// The target user can create what the schema and globals steps create. When the target
/// database is missing, the user creates it and owns it, so only roles are in question.
pub async fn target_privileges_check(client: &Client, database_exists: bool) -> Result<Check> {
    let row = client
        .query_one(
            "SELECT current_user::text, has_database_privilege(current_database(), 'CREATE'), \
                    r.rolsuper OR r.rolcreaterole, \
                    EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_superuser') \
                      AND pg_has_role(current_user, 'rds_superuser', 'MEMBER') \
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| Error::db("read target privileges", e))?;
    let (user, create, roles, rds_superuser): (String, bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let create = create || !database_exists;
    let mut detail = format!("{user}:");
    detail.push_str(if rds_superuser { " member of rds_superuser," } else { "" });
    detail.push_str(if roles { " may create roles," } else { " may not create roles," });
    detail.push_str(match (database_exists, create) {
        (false, _) => " will own the database it creates",
        (true, true) => " may create schemas",
        (true, false) => " may not create schemas",
    });
    // A missing target database is created by this user and owned by it: CREATE follows.
    Ok(if !roles {
        warn(
            "target-privileges",
            detail,
            "roles of the source cannot be created on the target: connect as the RDS master user (rds_superuser) or \
             create the roles first",
        )
    } else if !create {
        fail(
            "target-privileges",
            detail,
            "the schema cannot be created: GRANT CREATE ON DATABASE … TO the target user, or connect as the database's owner",
        )
    } else {
        pass("target-privileges", detail)
    })
}

/// An IAM-authenticated user must be a member of `rds_iam`.
pub async fn rds_iam_member_check(client: &Client, side: Side) -> Result<Check> {
    let row = client
        .query_one(
            "SELECT current_user::text, EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam') \
                    AND pg_has_role(current_user, 'rds_iam', 'MEMBER')",
            &[],
        )
        .await
        .map_err(|e| Error::db("read rds_iam membership", e))?;
    let (user, member): (String, bool) = (row.get(0), row.get(1));
    let name = format!("{}-rds-iam", side.as_str());
    Ok(if member {
        pass(&name, format!("{user} is a member of rds_iam"))
    } else {
        fail(&name, format!("{user} is not a member of rds_iam"), &format!("GRANT rds_iam TO {};", quote_ident(&user)))
    })
}

/// Continuous mode: the subscription connects from the *target server* to the source, a path
/// the functions' own connections say nothing about (another VPC, security groups that admit
/// the functions but not the target instance). Probed from the target itself.
pub async fn publisher_reach_check(
    target: &Client,
    source: &ConnSpec,
    options: &crate::job::ContinuousOptions,
) -> Result<Check> {
    use crate::replication::Reach;
    let name = "target-reaches-source";
    let host = options.publisher_host.as_deref().unwrap_or(&source.host);
    let port = options.publisher_port.unwrap_or(source.port);
    Ok(match crate::replication::probe_publisher(target, source, options).await? {
        Reach::Reached => pass(name, format!("the target server reaches the source at {host}:{port}")),
        Reach::Unreachable(message) => fail(
            name,
            format!("the target server cannot connect to the source at {host}:{port}: {message}"),
            "on AWS: allow the target instance's security group inbound on the source's security group (tcp \
             {port}), and route between their VPCs (same VPC, peering or a transit gateway); the address must resolve \
             from the target's VPC. Or set continuous.publisherHost/publisherPort to the address the target uses",
        ),
        Reach::Tls(message) => fail(
            name,
            format!("the target server reaches {host}:{port} but TLS fails: {message}"),
            "continuous.sslMode require encrypts without checking the certificate (the target cannot hold the RDS CA \
             bundle on RDS); verify-full needs continuous.sslRootCert naming a file on the target server",
        ),
        Reach::NotPermitted(message) => fail(
            name,
            format!("the target user may not create subscriptions: {message}"),
            "on RDS the master user (a member of rds_superuser) may; GRANT rds_superuser TO the target user",
        ),
    })
}

/// What logical replication from the source needs (continuous mode; RDS-CASES T42, T44, T46),
/// for a job without consent about keyless tables.
pub async fn replication_checks(client: &Client) -> Result<Vec<Check>> {
    replication_checks_with(client, crate::job::KeylessTables::Refuse).await
}

/// As [`replication_checks`], with the job's choice for tables without a replica identity
/// (`continuous.keylessTables`, RDS-CASES T42): listed and refused, or listed with what will
/// be done to them.
pub async fn replication_checks_with(client: &Client, keyless: crate::job::KeylessTables) -> Result<Vec<Check>> {
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), \
                    current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)::int, \
                    current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication)::int, \
                    current_setting('max_slot_wal_keep_size'), \
                    (SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user) \
                      OR (EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_replication') \
                          AND pg_has_role(current_user, 'rds_replication', 'MEMBER')), \
                    current_user::text",
            &[],
        )
        .await
        .map_err(|e| Error::db("read replication settings", e))?;
    let (wal_level, free_slots, free_senders, keep, may_replicate, user): (String, i32, i32, String, bool, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
    let mut checks = Vec::new();
    checks.push(if wal_level == "logical" {
        pass("source-wal-level", "wal_level logical".to_string())
    } else {
        fail(
            "source-wal-level",
            format!("wal_level is {wal_level}: the source cannot publish changes"),
            "on RDS set rds.logical_replication=1 in the instance's parameter group and reboot (drops connections); \
             elsewhere ALTER SYSTEM SET wal_level = logical and restart",
        )
    });
    if keep == "-1" {
        // RDS-CASES T43: nothing bounds the WAL a forgotten slot keeps.
        checks.push(warn(
            "source-slot-wal-limit",
            "max_slot_wal_keep_size is -1: a stuck or forgotten replication slot keeps WAL until the disk is full"
                .to_string(),
            "set max_slot_wal_keep_size in the parameter group (dynamic) to what the storage can spare, and watch \
             the slot's wal_status / safe_wal_size (reported by every lag check)",
        ));
    }
    checks.push(if free_slots >= 1 && free_senders >= 1 {
        pass("source-replication-slots", format!("{free_slots} free replication slot(s), {free_senders} free WAL sender(s)"))
    } else {
        fail(
            "source-replication-slots",
            format!("{free_slots} free replication slot(s), {free_senders} free WAL sender(s)"),
            "drop unused slots (SELECT pg_drop_replication_slot(…)) or raise max_replication_slots / max_wal_senders in \
             the parameter group (static: reboot)",
        )
    });
    checks.push(if may_replicate {
        pass("source-replication-role", format!("{user} may replicate (superuser, REPLICATION or rds_replication)"))
    } else {
        fail(
            "source-replication-role",
            format!("{user} has neither REPLICATION nor membership in rds_replication"),
            &format!("GRANT rds_replication TO {}; (on RDS, as the master user)", quote_ident(&user)),
        )
    });
    let sql = format!(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND {USER_RELATION} AND (c.relreplident = 'n' OR \
               (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)) \
               OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident))) \
         ORDER BY 1"
    );
    let tables = strings(client, &sql, "find tables without replica identity").await?;
    let found = || {
        format!(
            "{} table(s) have no replica identity: once published, UPDATE and DELETE on them fail on the \
             production source: {}",
            tables.len(),
            listed(&tables)
        )
    };
    checks.push(if tables.is_empty() {
        pass("source-replica-identity", "every table has a replica identity".to_string())
    } else if keyless == crate::job::KeylessTables::ReplicaIdentityFull {
        warn(
            "source-replica-identity",
            found(),
            "the job consents (keylessTables: replicaIdentityFull): they are set REPLICA IDENTITY FULL on the \
             source, which logs whole old rows for each UPDATE and DELETE",
        )
    } else if keyless == crate::job::KeylessTables::Exclude {
        warn(
            "source-replica-identity",
            found(),
            "the job says keylessTables: exclude: they are left out of the publication, so they are neither copied \
             nor kept in sync",
        )
    } else {
        fail(
            "source-replica-identity",
            found(),
            "add a primary key, or consent in the job: \"continuous\": {\"keylessTables\": \"replicaIdentityFull\"} \
             (ALTER TABLE … REPLICA IDENTITY FULL on the source: more WAL) or \"exclude\" (left out of the \
             publication: neither copied nor synced)",
        )
    });
    Ok(checks)
}

/// Encoding, collation and locale provider (RDS-CASES T14): an existing target database must
/// match the source; a missing one must be creatable with the source's locale.
pub async fn encoding_check(source: &Client, target: &Client, target_db_exists: bool) -> Result<Check> {
    let s = locale_of(source).await?;
    let t = locale_of(target).await?;
    let describe = |l: &Locale| {
        let icu = l.icu_locale.as_deref().map(|i| format!(", ICU locale {i}")).unwrap_or_default();
        format!("{} / collate {} / ctype {} / provider {}{icu}", l.encoding, l.collate, l.ctype, l.provider)
    };
    let sql_ascii = s.encoding == "SQL_ASCII";
    if target_db_exists {
        if s.encoding != t.encoding
            || s.collate != t.collate
            || s.ctype != t.ctype
            || s.provider != t.provider
            || s.icu_locale != t.icu_locale
        {
            return Ok(fail(
                "encoding",
                format!("the target database exists with {}; the source has {}", describe(&t), describe(&s)),
                &format!(
                    "text would not fit or would sort differently: drop the empty target database and let pgferry create \
                     it, or create it yourself: CREATE DATABASE … TEMPLATE template0 ENCODING '{}' LC_COLLATE '{}' LC_CTYPE '{}'",
                    s.encoding, s.collate, s.ctype
                ),
            ));
        }
    } else {
        // The database will be created with the source's settings: the target must know them.
        if s.provider == "icu" {
            let icu: i64 = target
                .query_one("SELECT count(*) FROM pg_collation WHERE collprovider = 'i'", &[])
                .await
                .map_err(|e| Error::db("look for ICU collations", e))?
                .get(0);
            if icu == 0 {
                return Ok(fail(
                    "encoding",
                    format!("the source uses ICU ({}) and the target has no ICU collations", describe(&s)),
                    "use a target built with ICU (RDS has it), or accept a libc locale by creating the database yourself",
                ));
            }
        }
        for locale in [&s.collate, &s.ctype] {
            if !locale_known(target, locale).await? {
                return Ok(fail(
                    "encoding",
                    format!("the target does not know the source's locale `{locale}` ({})", describe(&s)),
                    "create the target database yourself with a locale the target has (ordering of text may change), or \
                     use a target whose operating system has the locale",
                ));
            }
        }
    }
    let detail = format!("source {}", describe(&s));
    Ok(if sql_ascii {
        warn(
            "encoding",
            detail,
            "SQL_ASCII stores any bytes: they are copied as they are, and text functions treat them as unknown bytes",
        )
    } else {
        pass("encoding", detail)
    })
}

#[derive(Debug)]
struct Locale {
    encoding: String,
    collate: String,
    ctype: String,
    provider: String,
    icu_locale: Option<String>,
}

async fn locale_of(client: &Client) -> Result<Locale> {
    let v = catalog::server_version_num(client).await?;
    let (provider, icu) = match v {
        v if v >= 170000 => ("datlocprovider::text", "datlocale::text"),
        v if v >= 150000 => ("datlocprovider::text", "daticulocale::text"),
        _ => ("'c'::text", "NULL::text"),
    };
    let sql = format!(
        "SELECT pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text, {provider}, {icu} \
         FROM pg_database WHERE datname = current_database()"
    );
    let row = client.query_one(&sql, &[]).await.map_err(|e| Error::db("read database locale", e))?;
    let provider: String = row.get(3);
    Ok(Locale {
        encoding: row.get(0),
        collate: row.get(1),
        ctype: row.get(2),
        provider: match provider.as_str() {
            "i" => "icu",
            "b" => "builtin",
            _ => "libc",
        }
        .to_string(),
        icu_locale: row.get(4),
    })
}

/// `en_US.UTF-8` and `en_US.utf8` are the same locale.
fn normalize_locale(locale: &str) -> String {
    locale.to_ascii_lowercase().replace(['-', '_'], "")
}

async fn locale_known(client: &Client, locale: &str) -> Result<bool> {
    if matches!(locale, "C" | "POSIX" | "C.UTF-8" | "C.utf8" | "ucs_basic") {
        return Ok(true);
    }
    let names = strings(
        client,
        "SELECT DISTINCT collcollate::text FROM pg_collation WHERE collprovider = 'c' AND collcollate IS NOT NULL \
         UNION SELECT datcollate::text FROM pg_database",
        "list target locales",
    )
    .await?;
    let wanted = normalize_locale(locale);
    Ok(names.iter().any(|n| normalize_locale(n) == wanted))
}

/// Extensions of a database (without plpgsql), with versions.
pub async fn extensions(client: &Client) -> Result<Vec<(String, String)>> {
    let rows = client
        .query("SELECT extname::text, extversion::text FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1", &[])
        .await
        .map_err(|e| Error::db("list extensions", e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Extensions that exist only on Amazon RDS / Aurora (RDS-CASES T19).
pub const RDS_ONLY_EXTENSIONS: &[&str] =
    &["aws_commons", "aws_s3", "aws_lambda", "aws_ml", "rds_tools", "rds_activity_stream", "apg_plan_mgmt"];

/// Every source extension must be creatable on the target by the target user (RDS-CASES T17,
/// T19): available, allowed by `rds.allowed_extensions`, and trusted or created by someone who may.
pub async fn extensions_check(source_extensions: &[(String, String)], target: &Client) -> Result<Check> {
    if source_extensions.is_empty() {
        return Ok(pass("extensions", "the source uses no extensions besides plpgsql".to_string()));
    }
    let row = target
        .query_one(
            "SELECT r.rolsuper, current_setting('rds.extensions', true), current_setting('rds.allowed_extensions', true) \
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| Error::db("read target extension settings", e))?;
    let (superuser, rds_extensions, allowed): (bool, Option<String>, Option<String>) =
        (row.get(0), row.get(1), row.get(2));
    let is_rds = rds_extensions.as_deref().is_some_and(|s| !s.is_empty());
    let available = target
        .query(
            "SELECT name::text, bool_or(trusted), bool_or(superuser) FROM pg_available_extension_versions GROUP BY name",
            &[],
        )
        .await
        .map_err(|e| Error::db("list target extensions", e))?;
    let mut problems = Vec::new();
    for (name, version) in source_extensions {
        let found = available.iter().find(|r| r.get::<_, String>(0) == *name);
        let Some(row) = found else {
            let why =
                if RDS_ONLY_EXTENSIONS.contains(&name.as_str()) { "an RDS-only extension" } else { "not available" };
            problems.push(format!("{name} {version} ({why} on the target)"));
            continue;
        };
        let (trusted, needs_superuser): (bool, bool) = (row.get(1), row.get(2));
        if let Some(list) = allowed.as_deref().filter(|a| !a.trim().is_empty() && a.trim() != "*") {
            if !split_libraries(list).contains(&name.to_ascii_lowercase()) {
                problems.push(format!("{name} (not in the target's rds.allowed_extensions)"));
                continue;
            }
        }
        // On RDS, rds_superuser may create every extension RDS supports; elsewhere an untrusted
        // extension needs a superuser.
        if !is_rds && needs_superuser && !trusted && !superuser {
            problems.push(format!("{name} (needs a superuser on the target)"));
        }
    }
    let names: Vec<String> = source_extensions.iter().map(|(n, v)| format!("{n} {v}")).collect();
    Ok(if problems.is_empty() {
        pass("extensions", format!("the target can create {}", listed(&names)))
    } else {
        fail(
            "extensions",
            format!("the target cannot create {} of the source's extensions: {}", problems.len(), problems.join(", ")),
            "install them on the target (on RDS: add them to rds.allowed_extensions), or remove them and the objects \
             using them from the source; a restore fails at the first object that needs one",
        )
    })
}

/// How an extension fails without its library in `shared_preload_libraries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreloadNeed {
    /// `CREATE EXTENSION` itself fails.
    Required,
    /// The extension is created but does not work (views error, hints ignored).
    Functional,
}

/// Extensions that need their library preloaded (RDS-CASES T18).
pub fn preload_need(extension: &str) -> Option<(&'static str, PreloadNeed)> {
    Some(match extension {
        "pg_cron" => ("pg_cron", PreloadNeed::Required),
        "timescaledb" => ("timescaledb", PreloadNeed::Required),
        "pglogical" => ("pglogical", PreloadNeed::Required),
        "pgaudit" => ("pgaudit", PreloadNeed::Required),
        "pg_tle" => ("pg_tle", PreloadNeed::Required),
        "pg_squeeze" => ("pg_squeeze", PreloadNeed::Required),
        "pg_stat_statements" => ("pg_stat_statements", PreloadNeed::Functional),
        "pg_hint_plan" => ("pg_hint_plan", PreloadNeed::Functional),
        "pg_partman" => ("pg_partman_bgw", PreloadNeed::Functional),
        "pg_prewarm" => ("pg_prewarm", PreloadNeed::Functional),
        "pg_stat_kcache" => ("pg_stat_kcache", PreloadNeed::Required),
        _ => return None,
    })
}

/// Decides the preload check from the libraries the target loads (`None`: unknown).
pub fn preload_verdict(
    source_extensions: &[(String, String)],
    target_libraries: Option<&[String]>,
    advice_for: impl Fn(&[String]) -> String,
) -> Check {
    let needed: Vec<(String, &str, PreloadNeed)> = source_extensions
        .iter()
        .filter_map(|(ext, _)| preload_need(ext).map(|(lib, need)| (ext.clone(), lib, need)))
        .collect();
    if needed.is_empty() {
        return pass("shared-preload", "no source extension needs a preloaded library".to_string());
    }
    let Some(libraries) = target_libraries else {
        return warn(
            "shared-preload",
            format!(
                "the source uses {} and the target's shared_preload_libraries cannot be read",
                needed.iter().map(|(e, _, _)| e.as_str()).collect::<Vec<_>>().join(", ")
            ),
            "make sure the target preloads them (parameter group shared_preload_libraries)",
        );
    };
    let missing: Vec<&(String, &str, PreloadNeed)> =
        needed.iter().filter(|(_, lib, _)| !libraries.iter().any(|l| l == lib)).collect();
    if missing.is_empty() {
        return pass("shared-preload", format!("the target preloads {}", libraries.join(", ")));
    }
    let mut wanted: Vec<String> = libraries.to_vec();
    wanted.extend(missing.iter().map(|(_, lib, _)| lib.to_string()));
    let advice = advice_for(&wanted);
    let detail = format!(
        "the target's shared_preload_libraries ({}) lacks {}",
        if libraries.is_empty() { "empty".to_string() } else { libraries.join(",") },
        missing
            .iter()
            .map(|(ext, lib, need)| match need {
                PreloadNeed::Required => format!("{lib} (CREATE EXTENSION {ext} fails without it)"),
                PreloadNeed::Functional => format!("{lib} ({ext} is created but does not work without it)"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    if missing.iter().any(|(_, _, need)| *need == PreloadNeed::Required) {
        fail("shared-preload", detail, &advice)
    } else {
        warn("shared-preload", detail, &advice)
    }
}

/// Source extensions against the target's `shared_preload_libraries`: from its RDS parameter
/// group when the target is an RDS resource, else as the server reports it.
pub async fn preload_check(
    source_extensions: &[(String, String)],
    target: &Client,
    target_rds: Option<&DbFacts>,
    target_params: Option<&Parameters>,
) -> Result<Check> {
    let libraries: Option<Vec<String>> = match (target_rds, target_params) {
        (Some(_), Some(params)) => Some(params.shared_preload_libraries.clone()),
        _ => match target.query_one("SELECT current_setting('shared_preload_libraries')", &[]).await {
            Ok(row) => Some(split_libraries(&row.get::<_, String>(0))),
            Err(e) if e.code().is_some() => None,
            Err(e) => return Err(Error::db("read shared_preload_libraries", e)),
        },
    };
    Ok(preload_verdict(source_extensions, libraries.as_deref(), |wanted| match target_rds {
        Some(db) => cloud::parameter_change_advice(db, "shared_preload_libraries", &wanted.join(",")),
        None => format!("ALTER SYSTEM SET shared_preload_libraries = '{}' and restart the target", wanted.join(",")),
    }))
}

/// Target storage for the source's size (RDS; Aurora storage grows by itself).
pub fn storage_check(target: &DbFacts, source_bytes: u64) -> Check {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    let source_gib = source_bytes as f64 / GIB;
    let want_gib = source_gib * STORAGE_HEADROOM;
    let kind = target.storage_type.as_deref().unwrap_or("unknown");
    let Some(allocated) = target.allocated_storage_gib else {
        return pass(
            "target-storage",
            format!("{}: storage grows with the data (source {source_gib:.1} GiB)", target.label()),
        );
    };
    let limit = target.max_allocated_storage_gib.unwrap_or(allocated).max(allocated);
    let autoscaling = if limit > allocated { format!(", autoscaling to {limit} GiB") } else { String::new() };
    let detail = format!(
        "{}: {kind} {allocated} GiB allocated{autoscaling}; source database {source_gib:.2} GiB",
        target.label()
    );
    let grow = format!(
        "aws rds modify-db-instance {} --allocated-storage {} --apply-immediately (or turn on storage autoscaling with \
         --max-allocated-storage); free space itself is the FreeStorageSpace metric",
        target.cli_identifier(),
        (want_gib.ceil() as i64).max(allocated + 1)
    );
    if (limit as f64) < source_gib {
        return fail("target-storage", format!("{detail}: the data does not fit"), &grow);
    }
    if (limit as f64) < want_gib {
        return warn(
            "target-storage",
            format!("{detail}: less than {STORAGE_HEADROOM}× the source, tight for indexes and WAL"),
            &grow,
        );
    }
    if kind == "standard" {
        return warn("target-storage", detail, "magnetic storage makes the copy slow: gp3 is faster and cheaper");
    }
    pass("target-storage", detail)
}

/// Before connecting, or when a side could not be reached: two specs that dial the same address
/// and port lead to the same server.
async fn address_overlap_check(source: Option<&ConnSpec>, target: Option<&ConnSpec>) -> Option<Check> {
    let (s, t) = (source?, target?);
    if s.port != t.port || s.host.starts_with('/') || t.host.starts_with('/') {
        return None;
    }
    let (sa, ta) = (pg::resolve(s).await.ok()?, pg::resolve(t).await.ok()?);
    let shared = sa.iter().find(|a| ta.contains(a))?;
    Some(fail(
        "distinct-servers",
        format!("source {} and target {} both dial {shared}:{}", s.host, t.host, s.port),
        "source and target must be different servers: check the target endpoint",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(names: &[&str]) -> Vec<(String, String)> {
        names.iter().map(|n| (n.to_string(), "1.0".to_string())).collect()
    }

    #[test]
    fn t18_a_missing_preloaded_library_fails_or_warns_by_what_breaks() {
        let advice = |w: &[String]| format!("set {}", w.join(","));
        let libs = vec!["pg_stat_statements".to_string()];
        let c = preload_verdict(&ext(&["pg_cron", "hstore"]), Some(&libs), advice);
        assert_eq!(c.status, crate::step::CheckStatus::Fail);
        assert!(c.detail.contains("pg_cron (CREATE EXTENSION pg_cron fails without it)"), "{}", c.detail);
        assert_eq!(c.advice.as_deref(), Some("set pg_stat_statements,pg_cron"));
        let c = preload_verdict(&ext(&["pg_hint_plan"]), Some(&libs), advice);
        assert_eq!(c.status, crate::step::CheckStatus::Warn);
        let c = preload_verdict(&ext(&["pg_stat_statements"]), Some(&libs), advice);
        assert_eq!(c.status, crate::step::CheckStatus::Pass);
        let c = preload_verdict(&ext(&["hstore"]), None, advice);
        assert_eq!(c.status, crate::step::CheckStatus::Pass);
    }

    #[test]
    fn target_storage_fails_below_the_source_size_and_warns_below_the_headroom() {
        let db: DbFacts = serde_json::from_value(serde_json::json!({
            "kind": "instance", "identifier": "staging", "arn": null, "region": "us-east-1", "status": "available",
            "engine": "postgres", "engineVersion": "15.4", "address": null, "port": null, "masterUsername": null,
            "masterSecretArn": null, "masterSecretStatus": null, "securityGroupIds": [], "vpcId": null,
            "subnetIds": [], "publiclyAccessible": null, "caCertificate": null, "iamAuthEnabled": false,
            "storageType": "gp3", "allocatedStorageGib": 100, "maxAllocatedStorageGib": null,
            "parameterGroup": null, "parameterApplyStatus": null, "pendingModifications": [], "resourceId": null
        }))
        .unwrap();
        let gib = 1024 * 1024 * 1024;
        let c = storage_check(&db, 150 * gib);
        assert_eq!(c.status, crate::step::CheckStatus::Fail, "{c:?}");
        assert!(c.advice.unwrap().contains("--allocated-storage 195"));
        assert_eq!(storage_check(&db, 90 * gib).status, crate::step::CheckStatus::Warn);
        assert_eq!(storage_check(&db, 10 * gib).status, crate::step::CheckStatus::Pass);
        let autoscaling = DbFacts { max_allocated_storage_gib: Some(1000), ..db };
        assert_eq!(storage_check(&autoscaling, 150 * gib).status, crate::step::CheckStatus::Pass);
    }

    #[test]
    fn locales_compare_without_spelling_differences() {
        assert_eq!(normalize_locale("en_US.UTF-8"), normalize_locale("en_US.utf8"));
        assert_ne!(normalize_locale("de_DE.ISO-8859-1"), normalize_locale("de_DE.utf8"));
    }
}
