//! Mode `continuous`: native logical replication from the source into the target, a lag check
//! for the state machine's loop, the cutover and the cleanup of everything it created.
//!
//! Route (RDS-CASES T41, docs/continuous.md): after the schema (pre-data, then post-data so that
//! the replica identity indexes exist before changes stream), pgferry creates on the source a
//! dedicated replication user, a publication of the replicated tables and the logical slot, in
//! that order; then on the target a subscription on that slot with `copy_data = true`. The
//! subscription's table sync copies each table at a snapshot of its own and catches up to the
//! slot's stream before the apply takes over that table, which is how PostgreSQL makes the
//! initial copy and the change stream meet without a lost or doubled row. No snapshot has to
//! outlive a Lambda invocation, and pgferry's chunked copy is not used.
//!
//! Every object's name is derived from the run id and recorded on the target (table
//! `pgferry.replication`) *before* the object is created, so that the failure path of the same
//! execution and a later `cutover` execution find them (T43). The replication user's password
//! is generated at subscribe time, sent to the source as a SCRAM verifier (so it is in no source
//! log) and otherwise exists only inside the subscription's connection string, which PostgreSQL
//! stores in the target's `pg_subscription` (T47); the user is dropped at cutover.

use std::time::{Duration, Instant};

use rand::Rng;
use tokio_postgres::Client;

use crate::context::StepContext;
use crate::error::{Error, Result};
use crate::job::{Job, KeylessTables, Mode, Side};
use crate::pg::{QualifiedName, quote_ident, quote_literal};
use crate::replication::{RECORD_TABLE, db_err, existing_replication_user, publisher_conninfo, record_table_exists};
use crate::step::{CatchUpOutput, DropOutput, LagOutput, ReplicationOutput, StepInput};

/// How long one cutover catch-up invocation polls before handing back to the state machine
/// (well inside the functions' 300 s timeout).
pub const CATCH_UP_POLL_LIMIT: Duration = Duration::from_secs(60);

/// Pause between two polls inside one invocation.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How long dropping a slot waits for its walsender to go away after the subscription stopped.
const SLOT_RELEASE_WAIT: Duration = Duration::from_secs(30);

/// The names of one run's replication objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub publication: String,
    pub slot: String,
    pub subscription: String,
    pub user: String,
}

impl Names {
    /// Names derived from the run id: `pgferry_<16 hex digits>` (slot names allow only lower
    /// case letters, digits and `_`, up to 63 bytes; run ids may hold anything).
    pub fn for_run(run_id: &str, job: &Job) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(run_id.as_bytes());
        let tag: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let base = format!("{}{tag}", crate::catalog::REPLICATION_OBJECT_PREFIX);
        let user = job.continuous.as_ref().and_then(|c| c.replication_user.clone());
        Self {
            publication: base.clone(),
            slot: base.clone(),
            subscription: base.clone(),
            user: user.unwrap_or_else(|| format!("pgferry_repl_{tag}")),
        }
    }
}

/// The comment that marks a replication user as the one run `run` created.
fn replication_user_mark(run: &str) -> String {
    format!("pgferry: replication user of run {run}; dropped when the run ends")
}

/// Whether the replication user exists already as this run's own (a retried step); an error when
/// a role of that name exists that this run did not create (`continuous.replicationUser` naming
/// an existing role): its password would be reset and the run's end would drop it.
async fn own_replication_user(source: &Client, user: &str, run: &str) -> Result<bool> {
    let row = source
        .query_opt("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1", &[&user])
        .await
        .map_err(db_err("look for the replication user"))?;
    match row.map(|r| r.get::<_, Option<String>>(0)) {
        None => Ok(false),
        Some(Some(mark)) if mark == replication_user_mark(run) => Ok(true),
        Some(_) => Err(Error::PreflightFailed {
            failures: vec![format!("replication-user: {}", existing_replication_user(user))],
        }),
    }
}

/// A run's record on the target.
#[derive(Debug, Clone)]
struct Record {
    run_id: String,
    names: Names,
}

async fn ensure_record_table(target: &Client) -> Result<()> {
    target
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS pgferry;
             CREATE TABLE IF NOT EXISTS pgferry.replication (
                 run_id text PRIMARY KEY,
                 publication text NOT NULL,
                 slot text NOT NULL,
                 subscription text NOT NULL,
                 replication_user text NOT NULL,
                 created_at timestamptz NOT NULL DEFAULT now(),
                 subscribed_at timestamptz,
                 cutover_run text,
                 cutover_lsn pg_lsn,
                 cutover_started_at timestamptz,
                 finished_at timestamptz,
                 outcome text);
             CREATE TABLE IF NOT EXISTS pgferry.replication_identity (
                 run_id text NOT NULL,
                 table_oid text NOT NULL,
                 table_name text NOT NULL,
                 original text NOT NULL,
                 PRIMARY KEY (run_id, table_oid))",
        )
        .await
        .map_err(db_err("create the replication record table on the target"))
}

async fn record_of(target: &Client, run_id: &str) -> Result<Option<Record>> {
    if !record_table_exists(target).await? {
        return Ok(None);
    }
    let row = target
        .query_opt(
            &format!(
                "SELECT run_id, publication, slot, subscription, replication_user FROM {RECORD_TABLE}
                  WHERE run_id = $1 AND finished_at IS NULL"
            ),
            &[&run_id],
        )
        .await
        .map_err(db_err("read the replication record"))?;
    Ok(row.map(|r| Record {
        run_id: r.get(0),
        names: Names { publication: r.get(1), slot: r.get(2), subscription: r.get(3), user: r.get(4) },
    }))
}

/// The one unfinished continuous run recorded on the target (what a cutover acts on).
async fn active_record(target: &Client) -> Result<Record> {
    let none = || Error::Replication {
        reason: "no running continuous replication is recorded in the target database (pgferry.replication): \
                 start one with \"mode\": \"continuous\" first"
            .to_string(),
    };
    if !record_table_exists(target).await? {
        return Err(none());
    }
    let rows = target
        .query(&format!("SELECT run_id FROM {RECORD_TABLE} WHERE finished_at IS NULL ORDER BY created_at"), &[])
        .await
        .map_err(db_err("read the replication records"))?;
    match rows.as_slice() {
        [] => Err(none()),
        [row] => {
            let run: String = row.get(0);
            record_of(target, &run).await?.ok_or_else(none)
        }
        many => Err(Error::Replication {
            reason: format!(
                "{} unfinished continuous runs are recorded in the target database ({}): clean up all but one",
                many.len(),
                many.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

/// Tables to publish and the keyless ones (RDS-CASES T42): ordinary permanent tables (partitions
/// included, partitioned parents not: changes are published per leaf, and the schema step made
/// the same leaves on the target) outside the system schemas and pgferry's own, not owned by an
/// extension.
pub async fn replicated_tables(source: &Client) -> Result<(Vec<QualifiedName>, Vec<QualifiedName>)> {
    let rows = source
        .query(
            "SELECT n.nspname, c.relname,
                    (c.relreplident = 'n'
                      OR (c.relreplident = 'd' AND NOT EXISTS
                            (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
                      OR (c.relreplident = 'i' AND NOT EXISTS
                            (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'r' AND c.relpersistence = 'p'
                AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgferry')
                AND n.nspname NOT LIKE 'pg\\_%'
                AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
              ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(db_err("list the tables to replicate"))?;
    let mut all = Vec::new();
    let mut keyless = Vec::new();
    for row in rows {
        let name = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
        if row.get::<_, bool>(2) {
            keyless.push(name.clone());
        }
        all.push(name);
    }
    Ok((all, keyless))
}

/// Step `prepareReplication`: records the names on the target, then creates on the source the
/// replication user (no password yet), the publication and the slot. Idempotent.
pub async fn prepare(ctx: &StepContext, input: &StepInput) -> Result<ReplicationOutput> {
    let job = &input.job;
    let run = &input.run_id;
    require_continuous(job)?;
    let options = job.continuous_options();
    let names = Names::for_run(run, job);
    // Before anything records the user as the run's (every end of the run drops it): a role that
    // exists and is not this run's own is never reused.
    let source = ctx.connect(job, Side::Source, "replication", run).await?;
    let exists = own_replication_user(&source, &names.user, run).await?;
    let target = ctx.connect(job, Side::Target, "replication", run).await?;
    ensure_record_table(&target).await?;
    target
        .execute(
            &format!(
                "INSERT INTO {RECORD_TABLE} (run_id, publication, slot, subscription, replication_user)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (run_id) DO NOTHING"
            ),
            &[run, &names.publication, &names.slot, &names.subscription, &names.user],
        )
        .await
        .map_err(db_err("record the replication objects on the target"))?;

    let (tables, keyless) = replicated_tables(&source).await?;
    let mut excluded = Vec::new();
    let published: Vec<&QualifiedName> = match options.keyless_tables {
        KeylessTables::Exclude => {
            excluded = keyless.iter().map(ToString::to_string).collect();
            tables.iter().filter(|t| !keyless.contains(t)).collect()
        }
        KeylessTables::ReplicaIdentityFull => {
            for table in &keyless {
                // Recorded before the change, so that every end of the run (cutover, abandon,
                // cleanup) puts the production table back as it was.
                let row = source
                    .query_one(
                        "SELECT oid::text, relreplident::text FROM pg_class WHERE oid = $1::text::regclass",
                        &[&table.to_string()],
                    )
                    .await
                    .map_err(db_err(format!("read the replica identity of {table}")))?;
                let (oid, original): (String, String) = (row.get(0), row.get(1));
                target
                    .execute(
                        "INSERT INTO pgferry.replication_identity (run_id, table_oid, table_name, original)
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        &[run, &oid, &table.to_string(), &original],
                    )
                    .await
                    .map_err(db_err("record a replica identity change on the target"))?;
                source
                    .batch_execute(&format!("ALTER TABLE {table} REPLICA IDENTITY FULL"))
                    .await
                    .map_err(db_err(format!("set REPLICA IDENTITY FULL on {table} (the job consented)")))?;
            }
            tables.iter().collect()
        }
        KeylessTables::Refuse if !keyless.is_empty() => {
            return Err(Error::PreflightFailed { failures: vec![keyless_failure(&keyless)] });
        }
        KeylessTables::Refuse => tables.iter().collect(),
    };
    if published.is_empty() {
        return Err(Error::Replication { reason: "the source database has no table to replicate".to_string() });
    }

    // The user: LOGIN without a password until the subscription is created, marked as the run's.
    let user = quote_ident(&names.user);
    if !exists {
        source
            .batch_execute(&format!(
                "CREATE ROLE {user} LOGIN NOINHERIT; COMMENT ON ROLE {user} IS {}",
                quote_literal(&replication_user_mark(run))
            ))
            .await
            .map_err(db_err(format!("create the replication user {user} on the source")))?;
    }
    // RDS grants replication through membership in rds_replication (RDS-CASES T46); a
    // self-managed server has no such role and needs the attribute.
    let rds: bool = source
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_replication')", &[])
        .await
        .map_err(db_err("look for role rds_replication"))?
        .get(0);
    let grant = if rds { format!("GRANT rds_replication TO {user}") } else { format!("ALTER ROLE {user} REPLICATION") };
    source.batch_execute(&grant).await.map_err(db_err(format!("let {user} replicate on the source")))?;
    // A hardened database revokes CONNECT from PUBLIC: the subscription's walsender connects to it.
    let connect: bool = source
        .query_one("SELECT has_database_privilege($1::text::name, current_database(), 'CONNECT')", &[&names.user])
        .await
        .map_err(db_err("look at the replication user's CONNECT privilege"))?
        .get(0);
    if !connect {
        let database: String = source
            .query_one("SELECT current_database()::text", &[])
            .await
            .map_err(db_err("read the source database's name"))?
            .get(0);
        source
            .batch_execute(&format!("GRANT CONNECT ON DATABASE {} TO {user}", quote_ident(&database)))
            .await
            .map_err(db_err(format!("grant CONNECT on the source database to {user}")))?;
    }
    let mut schemas: Vec<&str> = published.iter().map(|t| t.schema.as_str()).collect();
    schemas.dedup();
    for schema in schemas {
        source
            .batch_execute(&format!("GRANT USAGE ON SCHEMA {} TO {user}", quote_ident(schema)))
            .await
            .map_err(db_err(format!("grant usage on schema {schema} to the replication user")))?;
    }
    let list = published.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    source
        .batch_execute(&format!("GRANT SELECT ON TABLE {list} TO {user}"))
        .await
        .map_err(db_err("grant SELECT on the published tables to the replication user"))?;

    let publication_exists: bool = source
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", &[&names.publication])
        .await
        .map_err(db_err("look for the publication"))?
        .get(0);
    if !publication_exists {
        source
            .batch_execute(&format!("CREATE PUBLICATION {} FOR TABLE {list}", quote_ident(&names.publication)))
            .await
            .map_err(db_err("create the publication on the source"))?;
    }
    let slot_exists: bool = source
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", &[&names.slot])
        .await
        .map_err(db_err("look for the replication slot"))?
        .get(0);
    if !slot_exists {
        source
            .execute("SELECT pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')", &[&names.slot])
            .await
            .map_err(db_err("create the logical replication slot on the source"))?;
    }
    tracing::info!(slot = %names.slot, publication = %names.publication, tables = published.len(), "replication prepared");
    Ok(ReplicationOutput {
        run_id: run.clone(),
        publication: names.publication,
        slot: names.slot,
        subscription: names.subscription,
        replication_user: names.user,
        tables: published.len(),
        excluded,
        wait_seconds: options.wait_seconds(),
    })
}

/// The preflight/prepare failure for tables without a replica identity.
pub fn keyless_failure(keyless: &[QualifiedName]) -> String {
    format!(
        "{} table(s) have no replica identity: {} — published, their UPDATEs and DELETEs would fail on the \
         source; add a primary key, or set \"continuous\": {{\"keylessTables\": \"replicaIdentityFull\"}} \
         (consent to ALTER TABLE … REPLICA IDENTITY FULL on the source) or \"exclude\" (they are then \
         neither copied nor kept in sync)",
        keyless.len(),
        keyless.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )
}

fn require_continuous(job: &Job) -> Result<()> {
    if job.mode == Mode::Continuous { Ok(()) } else { Err(Error::job("this step belongs to \"mode\": \"continuous\"")) }
}

/// A random password for the replication user: 32 letters and digits (~190 bits).
fn random_password() -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(32).map(char::from).collect()
}

pub async fn subscribe(ctx: &StepContext, input: &StepInput) -> Result<ReplicationOutput> {
    let job = &input.job;
    let run = &input.run_id;
    require_continuous(job)?;
    let options = job.continuous_options();
    let mut target = ctx.connect(job, Side::Target, "subscribe", run).await?;
    let record = record_of(&target, run).await?.ok_or_else(|| Error::Replication {
        reason: format!("run {run} has no replication record on the target: prepareReplication did not run"),
    })?;
    let names = record.names;
    let exists: bool = target
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid
                             WHERE s.subname = $1 AND d.datname = current_database())",
            &[&names.subscription],
        )
        .await
        .map_err(db_err("look for the subscription"))?
        .get(0);
    if !exists {
        let spec = ctx.resolve(job, Side::Source).await?.spec;
        let password = crate::pg::Secret::new(random_password());
        let source = ctx.connect(job, Side::Source, "subscribe", run).await?;
        // A SCRAM verifier, not the password: nothing on the source (logs included) sees it.
        let verifier = postgres_protocol::password::scram_sha_256(password.expose().as_bytes());
        source
            .batch_execute(&format!("ALTER ROLE {} PASSWORD {}", quote_ident(&names.user), quote_literal(&verifier)))
            .await
            .map_err(db_err("set the replication user's password on the source"))?;
        let conninfo = publisher_conninfo(&spec, &options, &names.user, password.expose());
        let sql = format!(
            "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} \
             WITH (create_slot = false, slot_name = {}, copy_data = true, enabled = true)",
            quote_ident(&names.subscription),
            quote_literal(&conninfo),
            quote_ident(&names.publication),
            quote_literal(&names.slot),
        );
        // The statement holds the password: its error is reported without it (the server's
        // message never repeats the connection string), and it is kept out of the target's
        // statement log where the master may say so (RDS-CASES T70): in a transaction of its own
        // (a subscription without a new slot may be created in one), with statement logging
        // off for it. Where the master may not set those parameters (and for extensions such as
        // pgaudit, whose settings need rds_superuser's grant), docs/continuous.md says what shows.
        let mut tx = target.transaction().await.map_err(db_err("begin the subscription's transaction"))?;
        let quiet = quiet_statement_logging(&mut tx).await?;
        tx.batch_execute(&sql).await.map_err(db_err(format!(
            "create subscription {} on the target (connecting to the source as {})",
            names.subscription, names.user
        )))?;
        tx.commit().await.map_err(db_err("commit the subscription"))?;
        tracing::info!(
            subscription = %names.subscription,
            statement_logging_off = %quiet.join(", "),
            "subscription created"
        );
    }
    target
        .execute(
            &format!("UPDATE {RECORD_TABLE} SET subscribed_at = coalesce(subscribed_at, now()) WHERE run_id = $1"),
            &[run],
        )
        .await
        .map_err(db_err("record the subscription"))?;
    let tables: i64 = target
        .query_one(
            "SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = $1",
            &[&names.subscription],
        )
        .await
        .map_err(db_err("count the subscribed tables"))?
        .get(0);
    Ok(ReplicationOutput {
        run_id: run.clone(),
        publication: names.publication,
        slot: names.slot,
        subscription: names.subscription,
        replication_user: names.user,
        tables: usize::try_from(tables).unwrap_or(0),
        excluded: vec![],
        wait_seconds: options.wait_seconds(),
    })
}

/// Turns statement logging off for the rest of the transaction, each parameter where the
/// connecting role may set it; returns those it could.
async fn quiet_statement_logging(tx: &mut tokio_postgres::Transaction<'_>) -> Result<Vec<&'static str>> {
    let mut quiet = Vec::new();
    for (param, value) in
        [("log_statement", "none"), ("log_min_error_statement", "panic"), ("log_min_duration_statement", "-1")]
    {
        let sp = tx.savepoint("pgferry_quiet").await.map_err(db_err("savepoint"))?;
        match sp.batch_execute(&format!("SET LOCAL {param} = {}", quote_literal(value))).await {
            Ok(()) => {
                sp.commit().await.map_err(db_err("release savepoint"))?;
                quiet.push(param);
            }
            Err(_) => sp.rollback().await.map_err(db_err("roll back to savepoint"))?,
        }
    }
    Ok(quiet)
}

/// What one look at both sides found.
struct Status {
    tables: u64,
    tables_syncing: u64,
    apply_errors: u64,
    sync_errors: u64,
    lag_bytes: Option<u64>,
    replay_lag_ms: Option<u64>,
    wal_status: Option<String>,
    safe_wal_size: Option<i64>,
    confirmed_lsn: Option<String>,
}

async fn status(source: &Client, target: &Client, names: &Names) -> Result<Status> {
    let row = target
        .query_one(
            "SELECT count(r.srrelid), count(r.srrelid) FILTER (WHERE r.srsubstate <> 'r'),
                    coalesce(max(st.apply_error_count), 0), coalesce(max(st.sync_error_count), 0)
               FROM pg_subscription s
               LEFT JOIN pg_subscription_rel r ON r.srsubid = s.oid
               LEFT JOIN pg_stat_subscription_stats st ON st.subid = s.oid
              WHERE s.subname = $1",
            &[&names.subscription],
        )
        .await
        .map_err(db_err("read the subscription's state on the target"))?;
    let count = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
    let (tables, tables_syncing, apply_errors, sync_errors) = (count(0), count(1), count(2), count(3));
    let slot = source
        .query_opt(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, wal_status, safe_wal_size,
                    confirmed_flush_lsn::text
               FROM pg_replication_slots WHERE slot_name = $1",
            &[&names.slot],
        )
        .await
        .map_err(db_err("read the replication slot on the source"))?;
    let Some(slot) = slot else {
        return Err(Error::Replication {
            reason: format!(
                "the replication slot {} is gone from the source: it was dropped by hand or the run was cleaned up; \
                 start the continuous run again",
                names.slot
            ),
        });
    };
    let replay_lag_ms: Option<i64> = source
        .query_opt(
            "SELECT (extract(epoch FROM replay_lag) * 1000)::bigint FROM pg_stat_replication
              WHERE application_name = $1 AND replay_lag IS NOT NULL LIMIT 1",
            &[&names.subscription],
        )
        .await
        .map_err(db_err("read the walsender's replay lag on the source"))?
        .and_then(|r| r.get(0));
    Ok(Status {
        tables,
        tables_syncing,
        apply_errors,
        sync_errors,
        lag_bytes: slot.get::<_, Option<i64>>(0).map(|b| u64::try_from(b).unwrap_or(0)),
        replay_lag_ms: replay_lag_ms.map(|ms| u64::try_from(ms).unwrap_or(0)),
        wal_status: slot.get(1),
        safe_wal_size: slot.get(2),
        confirmed_lsn: slot.get(3),
    })
}

/// Apply and sync errors, and a lost slot, as an error with advice (RDS-CASES T48, T43).
fn health_error(status: &Status, names: &Names) -> Option<Error> {
    if status.apply_errors > 0 {
        return Some(Error::Replication {
            reason: format!(
                "subscription {} reports {} apply error(s) on the target: most often DDL ran on the source (for \
                 example ALTER TABLE … ADD COLUMN) and the target's table no longer matches the changes — apply the \
                 DDL on the target first, then on the source; the target server's log names the table and the \
                 error (pg_stat_subscription_stats counts them)",
                names.subscription, status.apply_errors
            ),
        });
    }
    if status.sync_errors > 0 {
        return Some(Error::Replication {
            reason: format!(
                "subscription {} reports {} initial-sync error(s) on the target: the target server's log names \
                 the table (missing or different on the target, a unique violation from rows already there, or \
                 the replication user lacking SELECT or row-level-security bypass on the source)",
                names.subscription, status.sync_errors
            ),
        });
    }
    if status.wal_status.as_deref() == Some("lost") {
        return Some(Error::Replication {
            reason: format!(
                "the source removed WAL that slot {} still needed (wal_status = lost, max_slot_wal_keep_size): the \
                 subscription cannot continue — start the continuous run again",
                names.slot
            ),
        });
    }
    None
}

/// Step `checkLag`: one look at both sides; an apply or sync error fails it with advice.
pub async fn check_lag(ctx: &StepContext, input: &StepInput) -> Result<LagOutput> {
    let job = &input.job;
    let run = &input.run_id;
    require_continuous(job)?;
    let options = job.continuous_options();
    let target = ctx.connect(job, Side::Target, "check-lag", run).await?;
    let record = record_of(&target, run)
        .await?
        .ok_or_else(|| Error::Replication { reason: format!("run {run} has no replication record on the target") })?;
    let source = ctx.connect(job, Side::Source, "check-lag", run).await?;
    let status = status(&source, &target, &record.names).await?;
    if let Some(err) = health_error(&status, &record.names) {
        return Err(err);
    }
    let deadline_passed: bool = target
        .query_one(
            &format!(
                "SELECT now() > coalesce(subscribed_at, created_at) + make_interval(secs => $2::float8)
                   FROM {RECORD_TABLE} WHERE run_id = $1"
            ),
            &[run, &(options.effective_deadline_seconds() as f64)],
        )
        .await
        .map_err(db_err("read the replication record"))?
        .get(0);
    let caught_up = status.tables > 0
        && status.tables_syncing == 0
        && status.lag_bytes.is_some_and(|b| b <= options.max_lag_bytes())
        && status.replay_lag_ms.is_none_or(|ms| ms <= options.max_lag_seconds().saturating_mul(1000));
    let summary = format!(
        "{} of {} table(s) synced, lag {} byte(s){}, slot wal_status {}{}",
        status.tables - status.tables_syncing,
        status.tables,
        status.lag_bytes.map_or_else(|| "?".to_string(), |b| b.to_string()),
        status.replay_lag_ms.map(|ms| format!(" / {ms} ms")).unwrap_or_default(),
        status.wal_status.as_deref().unwrap_or("?"),
        status.safe_wal_size.map(|s| format!(" (safe_wal_size {s})")).unwrap_or_default(),
    );
    tracing::info!(caught_up, %summary, "lag check");
    Ok(LagOutput {
        caught_up,
        deadline_passed: deadline_passed && !caught_up,
        tables: status.tables,
        tables_syncing: status.tables_syncing,
        lag_bytes: status.lag_bytes,
        replay_lag_ms: status.replay_lag_ms,
        wal_status: status.wal_status,
        safe_wal_size: status.safe_wal_size,
        apply_errors: status.apply_errors,
        sync_errors: status.sync_errors,
        wait_seconds: options.wait_seconds(),
        summary,
    })
}

/// Step `cutoverCatchUp`: the first invocation of a cutover notes the source's WAL position
/// (writes are expected to have stopped); this and later invocations wait until the target has
/// confirmed everything up to it and every table is synced.
pub async fn catch_up(ctx: &StepContext, input: &StepInput, deadline: Option<Instant>) -> Result<CatchUpOutput> {
    let job = &input.job;
    let run = &input.run_id;
    require_continuous(job)?;
    let target = ctx.connect(job, Side::Target, "cutover", run).await?;
    let record = active_record(&target).await?;
    let source = ctx.connect(job, Side::Source, "cutover", run).await?;
    let current: String = source
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(db_err("read the source's WAL position"))?
        .get(0);
    let row = target
        .query_one(
            &format!(
                "UPDATE {RECORD_TABLE}
                    SET cutover_lsn = CASE WHEN cutover_run IS DISTINCT FROM $2 THEN $3::text::pg_lsn ELSE cutover_lsn END,
                        cutover_started_at = CASE WHEN cutover_run IS DISTINCT FROM $2 THEN now() ELSE cutover_started_at END,
                        cutover_run = $2
                  WHERE run_id = $1
              RETURNING cutover_lsn::text, now() > cutover_started_at + make_interval(secs => $4::float8)"
            ),
            &[&record.run_id, run, &current, &(job.continuous_options().deadline_seconds() as f64)],
        )
        .await
        .map_err(db_err("record the cutover position"))?;
    let cutover_lsn: String = row.get(0);
    let expired: bool = row.get(1);
    let limit = Instant::now() + CATCH_UP_POLL_LIMIT;
    let until = deadline.map_or(limit, |d| d.checked_sub(Duration::from_secs(5)).unwrap_or(d).min(limit));
    loop {
        let status = status(&source, &target, &record.names).await?;
        if let Some(err) = health_error(&status, &record.names) {
            return Err(err);
        }
        let confirmed: bool = match &status.confirmed_lsn {
            Some(lsn) => source
                .query_one("SELECT $1::text::pg_lsn >= $2::text::pg_lsn", &[lsn, &cutover_lsn])
                .await
                .map_err(db_err("compare WAL positions"))?
                .get(0),
            None => false,
        };
        let caught_up = confirmed && status.tables_syncing == 0;
        if caught_up || Instant::now() + POLL_INTERVAL >= until {
            if !caught_up && expired {
                return Err(Error::Replication {
                    reason: format!(
                        "the target has not confirmed the source's WAL up to {cutover_lsn} within the deadline \
                         ({} of {} table(s) still syncing): are writes on the source stopped?",
                        status.tables_syncing, status.tables
                    ),
                });
            }
            return Ok(CatchUpOutput {
                caught_up,
                cutover_lsn,
                confirmed_lsn: status.confirmed_lsn,
                run_id: record.run_id,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Step `finishCutover`: drops the subscription, the slots, the publication and the
/// replication user of the running continuous replication, and marks it finished.
pub async fn finish_cutover(ctx: &StepContext, input: &StepInput) -> Result<DropOutput> {
    drop_running(ctx, input, "cutover", "cut over").await
}

/// Step `abandonReplication`: drops the running continuous replication recorded on the target
/// without cutting over; the target keeps the rows it has.
pub async fn abandon(ctx: &StepContext, input: &StepInput) -> Result<DropOutput> {
    drop_running(ctx, input, "abandon", "abandoned").await
}

/// Drops the running replication recorded on the target and marks it finished with `outcome`.
async fn drop_running(ctx: &StepContext, input: &StepInput, purpose: &str, outcome: &str) -> Result<DropOutput> {
    let job = &input.job;
    let run = &input.run_id;
    require_continuous(job)?;
    let target = ctx.connect(job, Side::Target, purpose, run).await?;
    let record = active_record(&target).await?;
    let source = ctx.connect(job, Side::Source, purpose, run).await?;
    let dropped = drop_objects(&source, &target, &record).await?;
    mark_finished(&target, &record.run_id, outcome).await?;
    Ok(DropOutput { dropped })
}

/// Step `cleanupReplication` (failure path): drops what this run created for replication. A
/// run of another mode, or one that created nothing, has nothing to drop and connects nowhere.
pub async fn cleanup(ctx: &StepContext, input: &StepInput) -> Result<DropOutput> {
    let job = &input.job;
    let run = &input.run_id;
    if job.mode != Mode::Continuous {
        return Ok(DropOutput { dropped: vec![] });
    }
    let target = match ctx.connect(job, Side::Target, "cleanup", run).await {
        Ok(target) => target,
        Err(e) if e.kind().step_error_name() == "Pgferry.ConnectionFailed" => {
            // The target is unreachable: production must not keep the run's slot (WAL piles up
            // behind it), publication and user meanwhile. What the run created on the source is
            // dropped now, by its names (the user only if it carries this run's mark); the
            // error then makes the state machine retry, and a later attempt that reaches the
            // target drops the subscription and finds the source clean.
            if let Ok(source) = ctx.connect(job, Side::Source, "cleanup", run).await {
                let names = Names::for_run(run, job);
                let mut dropped = Vec::new();
                match drop_source_objects(&source, None, &names, run, &mut dropped).await {
                    Ok(()) => tracing::warn!(run, dropped = ?dropped, "target unreachable: the source is cleaned up"),
                    Err(err) => tracing::warn!(run, error = %err, "target unreachable: cleaning up the source failed"),
                }
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let Some(record) = record_of(&target, run).await? else {
        return Ok(DropOutput { dropped: vec![] });
    };
    let source = ctx.connect(job, Side::Source, "cleanup", run).await?;
    let dropped = drop_objects(&source, &target, &record).await?;
    mark_finished(&target, run, "cleaned up after a failure").await?;
    tracing::info!(run, dropped = ?dropped, "replication cleaned up");
    Ok(DropOutput { dropped })
}

async fn mark_finished(target: &Client, run_id: &str, outcome: &str) -> Result<()> {
    target
        .execute(
            &format!("UPDATE {RECORD_TABLE} SET finished_at = now(), outcome = $2 WHERE run_id = $1"),
            &[&run_id, &outcome],
        )
        .await
        .map_err(db_err("mark the replication record finished"))?;
    Ok(())
}

/// Drops, in order: the subscription on the target (detached from its slot first, so dropping
/// it needs no connection to the source), then on the source the slot and the subscription's
/// table-sync slots (`pg_<subscription oid>_sync_…`), the publication and the replication user.
/// Everything is looked up first, so a repeated call drops only what is left.
/// Puts back the replica identity of the tables this run set to FULL (`keylessTables:
/// replicaIdentityFull`), unless someone changed it since; forgets them once done.
async fn restore_replica_identities(
    source: &Client,
    target: &Client,
    run_id: &str,
    done: &mut Vec<String>,
) -> Result<()> {
    let changed = target
        .query("SELECT table_oid, table_name, original FROM pgferry.replication_identity WHERE run_id = $1", &[&run_id])
        .await
        .map_err(db_err("read the replica identity changes of the run"))?;
    for row in changed {
        let (oid, recorded, original): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        // By OID (a renamed table is still found; a dropped one is left alone), quoted by the
        // helper, and only if it is still FULL (a change made since by someone else stays).
        let current = source
            .query_opt(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = $1::text::oid AND c.relreplident = 'f'",
                &[&oid],
            )
            .await
            .map_err(db_err(format!("read the replica identity of {recorded}")))?;
        if let Some(row) = current {
            let name = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
            let identity = if original == "d" { "DEFAULT" } else { "NOTHING" };
            source
                .batch_execute(&format!("ALTER TABLE {name} REPLICA IDENTITY {identity}"))
                .await
                .map_err(db_err(format!("restore the replica identity of {name}")))?;
            done.push(format!("replica identity of {name} back to {identity}"));
        }
        target
            .execute("DELETE FROM pgferry.replication_identity WHERE run_id = $1 AND table_oid = $2", &[&run_id, &oid])
            .await
            .map_err(db_err("forget a restored replica identity"))?;
    }
    Ok(())
}

async fn drop_objects(source: &Client, target: &Client, record: &Record) -> Result<Vec<String>> {
    let names = &record.names;
    let mut dropped = Vec::new();
    let sub = quote_ident(&names.subscription);
    let sub_oid: Option<u32> = target
        .query_opt(
            "SELECT s.oid FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid
              WHERE s.subname = $1 AND d.datname = current_database()",
            &[&names.subscription],
        )
        .await
        .map_err(db_err("look for the subscription"))?
        .map(|r| r.get(0));
    if let Some(oid) = sub_oid {
        for sql in [
            format!("ALTER SUBSCRIPTION {sub} DISABLE"),
            format!("ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)"),
            format!("DROP SUBSCRIPTION {sub}"),
        ] {
            target.batch_execute(&sql).await.map_err(db_err(format!("{sql} on the target")))?;
        }
        dropped.push(format!("subscription {}", names.subscription));
        let pattern = format!("pg\\_{oid}\\_sync\\_%");
        drop_slots(source, "slot_name LIKE $1", &pattern, &mut dropped).await?;
    }
    drop_source_objects(source, Some(target), names, &record.run_id, &mut dropped).await?;
    Ok(dropped)
}

/// The source's part of [`drop_objects`]: the slot, the publication, the replica identities the
/// run changed (known from the target's record: skipped without a target) and the replication
/// user. Without a target (unreachable), the user is dropped only if it carries this run's mark.
async fn drop_source_objects(
    source: &Client,
    target: Option<&Client>,
    names: &Names,
    run_id: &str,
    dropped: &mut Vec<String>,
) -> Result<()> {
    drop_slots(source, "slot_name = $1", &names.slot, dropped).await?;

    let publication: bool = source
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", &[&names.publication])
        .await
        .map_err(db_err("look for the publication"))?
        .get(0);
    if publication {
        source
            .batch_execute(&format!("DROP PUBLICATION {}", quote_ident(&names.publication)))
            .await
            .map_err(db_err("drop the publication on the source"))?;
        dropped.push(format!("publication {}", names.publication));
    }
    if let Some(target) = target {
        restore_replica_identities(source, target, run_id, dropped).await?;
    } else if !own_replication_user(source, &names.user, run_id).await.unwrap_or(false) {
        return Ok(());
    }

    let user_exists: bool = source
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", &[&names.user])
        .await
        .map_err(db_err("look for the replication user"))?
        .get(0);
    if user_exists {
        let user = quote_ident(&names.user);
        // Its grants, one by one: DROP OWNED needs membership in the role.
        let granted = source
            .query(
                "SELECT DISTINCT c.oid::regclass::text FROM pg_class c, aclexplode(c.relacl) a
                  WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1)",
                &[&names.user],
            )
            .await
            .map_err(db_err("list the replication user's grants"))?;
        for row in granted {
            let table: String = row.get(0);
            source
                .batch_execute(&format!("REVOKE ALL ON TABLE {table} FROM {user}"))
                .await
                .map_err(db_err(format!("revoke the replication user's grant on {table}")))?;
        }
        let schemas = source
            .query(
                "SELECT DISTINCT n.nspname FROM pg_namespace n, aclexplode(n.nspacl) a
                  WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1)",
                &[&names.user],
            )
            .await
            .map_err(db_err("list the replication user's schema grants"))?;
        for row in schemas {
            let schema: String = row.get(0);
            source
                .batch_execute(&format!("REVOKE ALL ON SCHEMA {} FROM {user}", quote_ident(&schema)))
                .await
                .map_err(db_err(format!("revoke the replication user's usage of schema {schema}")))?;
        }
        let connect: Option<String> = source
            .query_opt(
                "SELECT current_database()::text FROM pg_database d, aclexplode(d.datacl) a
                  WHERE d.datname = current_database() AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1)
                  LIMIT 1",
                &[&names.user],
            )
            .await
            .map_err(db_err("look at the replication user's database grant"))?
            .map(|r| r.get(0));
        if let Some(database) = connect {
            source
                .batch_execute(&format!("REVOKE ALL ON DATABASE {} FROM {user}", quote_ident(&database)))
                .await
                .map_err(db_err(format!("revoke the replication user's CONNECT on {database}")))?;
        }
        source
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()",
                &[&names.user],
            )
            .await
            .map_err(db_err("end the replication user's sessions"))?;
        // Its replication right first (on a self-managed server the attribute goes with the role).
        let member: bool = source
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_replication')
                        AND pg_has_role($1::text::name, 'rds_replication', 'MEMBER')",
                &[&names.user],
            )
            .await
            .map_err(db_err("look at the replication user's memberships"))?
            .get(0);
        if member {
            source
                .batch_execute(&format!("REVOKE rds_replication FROM {user}"))
                .await
                .map_err(db_err(format!("revoke rds_replication from {user}")))?;
        }
        source
            .batch_execute(&format!("DROP ROLE {user}"))
            .await
            .map_err(db_err(format!("drop the replication user {user} on the source")))?;
        dropped.push(format!("role {}", names.user));
    }
    Ok(())
}

/// Drops the slots matching `condition` (on `$1`), waiting for their walsenders to exit.
async fn drop_slots(source: &Client, condition: &str, arg: &str, dropped: &mut Vec<String>) -> Result<()> {
    let give_up = Instant::now() + SLOT_RELEASE_WAIT;
    loop {
        let slots = source
            .query(&format!("SELECT slot_name::text, active_pid FROM pg_replication_slots WHERE {condition}"), &[&arg])
            .await
            .map_err(db_err("list replication slots"))?;
        if slots.is_empty() {
            return Ok(());
        }
        let mut busy = false;
        for slot in slots {
            let name: String = slot.get(0);
            let active: Option<i32> = slot.get(1);
            if let Some(pid) = active {
                busy = true;
                if Instant::now() >= give_up {
                    return Err(Error::Replication {
                        reason: format!("replication slot {name} on the source is still in use by process {pid}"),
                    });
                }
                // The walsender of a disabled subscription exits by itself; help it along.
                let _ = source.execute("SELECT pg_terminate_backend($1)", &[&pid]).await;
                continue;
            }
            match source.execute("SELECT pg_catalog.pg_drop_replication_slot($1)", &[&name]).await {
                Ok(_) => dropped.push(format!("slot {name}")),
                // 55006 object in use: taken again between the two queries; try again.
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => busy = true,
                // 42704 undefined object: dropped meanwhile.
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) => {}
                Err(e) => return Err(Error::db(format!("drop replication slot {name} on the source"), e)),
            }
        }
        if busy {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::conninfo_value;

    fn job() -> Job {
        Job::from_json(
            r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"mode":"continuous"}"#,
        )
        .unwrap()
    }

    #[test]
    fn names_are_valid_slot_names_stable_per_run_and_distinct_between_runs() {
        let a = Names::for_run("run-20261126T120000Z-1a2b", &job());
        let again = Names::for_run("run-20261126T120000Z-1a2b", &job());
        let b = Names::for_run("Run With \"odd\" chars; 'x'", &job());
        assert_eq!(a, again);
        assert_ne!(a.slot, b.slot);
        for name in [&a.slot, &b.slot, &a.user, &b.user] {
            assert!(name.len() <= 63, "{name}");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{name}");
        }
    }

    #[test]
    fn the_job_may_name_the_replication_user() {
        let mut job = job();
        job.continuous = Some(crate::job::ContinuousOptions {
            replication_user: Some("Repl User".to_string()),
            ..Default::default()
        });
        assert_eq!(Names::for_run("r", &job).user, "Repl User");
    }

    #[test]
    fn t47_conninfo_values_escape_quotes_and_backslashes() {
        assert_eq!(conninfo_value(r"p@ss:w/rd#%\' x"), r"'p@ss:w/rd#%\\\' x'");
        // …and the whole string is then a SQL literal, with its quotes doubled.
        assert_eq!(quote_literal(&format!("password={}", conninfo_value("a'b"))), r"'password=''a\''b'''");
    }

    #[test]
    fn passwords_are_long_and_random() {
        let (a, b) = (random_password(), random_password());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn t48_an_apply_error_fails_with_advice_to_apply_the_ddl_on_the_target_first() {
        let names = Names::for_run("r", &job());
        let mut status = Status {
            tables: 2,
            tables_syncing: 0,
            apply_errors: 0,
            sync_errors: 0,
            lag_bytes: Some(0),
            replay_lag_ms: None,
            wal_status: Some("reserved".to_string()),
            safe_wal_size: None,
            confirmed_lsn: None,
        };
        assert!(health_error(&status, &names).is_none());
        status.apply_errors = 3;
        let err = health_error(&status, &names).unwrap();
        assert_eq!(err.kind(), crate::ErrorKind::ReplicationFailed);
        assert!(err.to_string().contains("apply the DDL on the target first"), "{err}");
        status.apply_errors = 0;
        status.wal_status = Some("lost".to_string());
        assert!(health_error(&status, &names).unwrap().to_string().contains("wal_status = lost"));
    }
}
