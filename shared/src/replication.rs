//! Logical replication facts and probes shared by the steps that set it up (continuous), check it
//! (preflight) and compare what it left behind (the inventory): the subscription's connection
//! string to the source, whether the target server can reach the source at all, and the
//! replication users pgferry made.

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::job::ContinuousOptions;
use crate::pg::{ConnSpec, SslMode, quote_literal};

/// Schema-qualified name of the target table that records each run's replication objects.
pub(crate) const RECORD_TABLE: &str = "pgferry.replication";

pub(crate) fn db_err(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error {
    let context = context.into();
    move |e| Error::db(context, e)
}

/// Why a job naming an existing role as replication user is refused.
pub fn existing_replication_user(user: &str) -> String {
    format!(
        "role {user} exists on the source; pgferry creates, uses and drops a replication user of \
         its own and never takes over a role: name one that does not exist (continuous.replicationUser) or leave it \
         out"
    )
}

/// Whether the target has the table recording continuous runs ([`RECORD_TABLE`]).
pub(crate) async fn record_table_exists(target: &Client) -> Result<bool> {
    Ok(target
        .query_one(&format!("SELECT to_regclass('{RECORD_TABLE}') IS NOT NULL"), &[])
        .await
        .map_err(db_err("look for the replication record table"))?
        .get(0))
}

/// Replication users of the unfinished continuous runs recorded in the target database (the
/// verification leaves them and their grants on the source out of the comparison).
pub async fn replication_users(target: &Client) -> Result<std::collections::BTreeSet<String>> {
    if !record_table_exists(target).await? {
        return Ok(Default::default());
    }
    let rows = target
        .query(&format!("SELECT replication_user FROM {RECORD_TABLE} WHERE finished_at IS NULL"), &[])
        .await
        .map_err(db_err("read the replication users"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A libpq connection-string value, quoted: `'…'` with `\` and `'` escaped by a backslash.
pub fn conninfo_value(value: &str) -> String {
    crate::pg::conninfo_quote(value)
}

/// Step `subscribe`: gives the replication user a fresh random password and creates the
/// subscription on the target on the prepared slot, with `copy_data = true`. Idempotent.
/// The connection string the target's subscription dials the source with: the job's
/// `publisherHost`/`publisherPort` or the source's endpoint, TLS as `continuous.sslMode`.
pub fn publisher_conninfo(spec: &ConnSpec, options: &ContinuousOptions, user: &str, password: &str) -> String {
    let ssl_mode = options.ssl_mode.unwrap_or(if options.ssl_root_cert.is_some() {
        SslMode::VerifyFull
    } else {
        SslMode::Require
    });
    let mut conninfo = vec![
        format!("host={}", conninfo_value(options.publisher_host.as_deref().unwrap_or(&spec.host))),
        format!("port={}", options.publisher_port.unwrap_or(spec.port)),
        format!("dbname={}", conninfo_value(&spec.dbname)),
        format!("user={}", conninfo_value(user)),
        format!("sslmode={}", ssl_mode.as_str()),
    ];
    if let (None, Some(addr)) = (&options.publisher_host, spec.hostaddr) {
        conninfo.push(format!("hostaddr={}", conninfo_value(&addr.to_string())));
    }
    if let Some(root) = &options.ssl_root_cert {
        conninfo.push(format!("sslrootcert={}", conninfo_value(root)));
    }
    conninfo.push(format!("password={}", conninfo_value(password)));
    conninfo.join(" ")
}

/// The role the reachability probe logs in as: it does not exist, so the source refuses the
/// login — proof that the target reached it — and the probe's password is no secret.
const PROBE_ROLE: &str = "pgferry_reach_probe";

/// How a server-to-server connection attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Reach {
    /// The source answered (it refused the probe's login, as intended).
    Reached,
    /// The target could not open a connection to the source: the server's message.
    Unreachable(String),
    /// TCP worked but TLS did not: the server's message.
    Tls(String),
    /// The target user may not create subscriptions.
    NotPermitted(String),
}

/// Whether the *target server* can open the subscription's connection to the source (continuous
/// mode preflight): a subscription without slot is created in a transaction that is rolled back,
/// connecting as a role that does not exist. Nothing is left on either side; the statement holds
/// no secret.
pub async fn probe_publisher(target: &Client, spec: &ConnSpec, options: &ContinuousOptions) -> Result<Reach> {
    let conninfo = format!("{} connect_timeout=10", publisher_conninfo(spec, options, PROBE_ROLE, "not-a-secret"));
    let sql = format!(
        "CREATE SUBSCRIPTION {PROBE_ROLE} CONNECTION {} PUBLICATION {PROBE_ROLE} \
         WITH (connect = true, create_slot = false, slot_name = NONE, enabled = false, copy_data = false)",
        quote_literal(&conninfo)
    );
    let outcome = async {
        target.batch_execute("BEGIN").await?;
        let r = target.batch_execute(&sql).await;
        target.batch_execute("ROLLBACK").await?;
        Ok::<_, tokio_postgres::Error>(r)
    }
    .await
    .map_err(db_err("probe the source from the target"))?;
    Ok(match outcome {
        // Only a server that lets anyone in gets here; it was reached all the same.
        Ok(()) => Reach::Reached,
        Err(e) => match e.as_db_error() {
            Some(db) => classify_probe(db),
            None => return Err(Error::db("probe the source from the target", e)),
        },
    })
}

fn classify_probe(db: &tokio_postgres::error::DbError) -> Reach {
    let message = db.message().to_string();
    let lower = message.to_lowercase();
    if db.code() == &tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE {
        return Reach::NotPermitted(message);
    }
    // libpq prefixes what the server sent with its severity: the source answered.
    if message.contains("FATAL:") {
        Reach::Reached
    } else if ["ssl", "certificate", "tls"].iter().any(|m| lower.contains(m))
        && !["timeout", "refused", "translate host", "unreachable", "no route"].iter().any(|m| lower.contains(m))
    {
        Reach::Tls(message)
    } else {
        Reach::Unreachable(message)
    }
}
