//! The job: what to copy where. The one input a user writes.
//!
//! A side is named by a libpq URL (local runs) or, in AWS, by an RDS instance or Aurora cluster
//! and a database; endpoints, ports and RDS-managed master secrets are then looked up. The job is
//! checked twice before anything connects: against the published JSON Schema
//! (`schema/job.schema.json`, which the console user reads) and by serde with
//! `deny_unknown_fields` plus [`Job::validate`]. A typo'd field is refused with its name, and
//! a test keeps the schema and the types in agreement.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::pg::{ConnSpec, SslMode};

/// The JSON Schema of a job, as published in `schema/job.schema.json`.
pub const JOB_SCHEMA: &str = include_str!("../../schema/job.schema.json");

/// A replication job, as started from the console, a schedule or `pgferry run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Job {
    pub source: Endpoint,
    pub target: Endpoint,
    #[serde(default)]
    pub mode: Mode,
    /// How many chunks are copied or verified at once (the Map states' `MaxConcurrency`).
    /// Default: [`Job::effective_max_concurrency`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// The source role that is the RDS master user, mapped to the target's connecting user
    /// (RDS-CASES T8). Default: the source's connecting user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_master_user: Option<String>,
    /// Consent to obtain read access on the source for the run (RDS-CASES T38, T39): the source
    /// user is made a member of the owners of tables it cannot read, and `FORCE ROW LEVEL
    /// SECURITY` is turned off on tables whose policies would hide rows from it; both are undone
    /// by the release step, on success and on failure. Without it, preflight fails listing them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub obtain_source_access: bool,
    /// Consent to copy into an older PostgreSQL major than the source's: what
    /// the older target refuses is skipped and reported statement by statement. Without it,
    /// preflight refuses such a pair.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_older_target: bool,
    /// The run to continue instead of starting a new one (issue 24): the state machine takes it
    /// as the run id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    /// Where the functions run, for the network-path checks of local runs and tests; in AWS the
    /// deployment says it (see [`Network::from_env`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// What a `refresh` may do besides reloading rows; only with `"mode": "refresh"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshOptions>,
    /// How mode `continuous` subscribes, waits and decides it has caught up; only with
    /// `"mode": "continuous"` (all fields have defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuous: Option<ContinuousOptions>,
}

/// Options of mode `continuous` (native logical replication, then `cutover`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContinuousOptions {
    /// Caught up when the source's WAL is at most this many bytes ahead of what the target
    /// confirmed. Default [`ContinuousOptions::DEFAULT_MAX_LAG_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_bytes: Option<u64>,
    /// …and the walsender's `replay_lag` is at most this many seconds. Default
    /// [`ContinuousOptions::DEFAULT_MAX_LAG_SECONDS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_seconds: Option<u64>,
    /// Seconds between two lag checks (the state machine's Wait). Default
    /// [`ContinuousOptions::DEFAULT_WAIT_SECONDS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_seconds: Option<u64>,
    /// Give up waiting for the lag to drop this many seconds after the subscription was created
    /// (replication keeps running; `cutover` or a failure cleanup ends it). Default
    /// [`ContinuousOptions::DEFAULT_DEADLINE_SECONDS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_seconds: Option<u64>,
    /// Name of the dedicated replication user created on the source (with a random password,
    /// dropped at cutover). Default `pgferry_repl_<run>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_user: Option<String>,
    /// Host and port the *target server* dials to reach the source (default: the source's
    /// endpoint as pgferry reaches it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher_port: Option<u16>,
    /// `sslmode` of the subscription's connection. Default `require` (an RDS target server has
    /// no file with the RDS CA bundle to verify against), `verify-full` with `sslRootCert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_mode: Option<SslMode>,
    /// CA file **on the target server's file system** for the subscription's connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_root_cert: Option<String>,
    /// What to do with tables that have no replica identity (RDS-CASES T42). Default: refuse.
    #[serde(default)]
    pub keyless_tables: KeylessTables,
}

impl ContinuousOptions {
    /// 1 MiB: a few seconds of apply on a busy source; small enough that cutover waits briefly.
    pub const DEFAULT_MAX_LAG_BYTES: u64 = 1 << 20;
    /// 10 s of replay lag.
    pub const DEFAULT_MAX_LAG_SECONDS: u64 = 10;
    /// A lag check every 45 s (each one a Lambda invocation and ~9 history events): the default
    /// deadline then takes 1,920 passes, within [`WAIT_LOOP_PASSES_MAX`].
    pub const DEFAULT_WAIT_SECONDS: u64 = 45;
    /// One day to catch up, then the loop stops (Step Functions allows a year per execution).
    pub const DEFAULT_DEADLINE_SECONDS: u64 = 86_400;

    pub fn max_lag_bytes(&self) -> u64 {
        self.max_lag_bytes.unwrap_or(Self::DEFAULT_MAX_LAG_BYTES)
    }
    pub fn max_lag_seconds(&self) -> u64 {
        self.max_lag_seconds.unwrap_or(Self::DEFAULT_MAX_LAG_SECONDS)
    }
    pub fn wait_seconds(&self) -> u64 {
        self.wait_seconds.unwrap_or(Self::DEFAULT_WAIT_SECONDS)
    }
    pub fn deadline_seconds(&self) -> u64 {
        self.deadline_seconds.unwrap_or(Self::DEFAULT_DEADLINE_SECONDS)
    }
    /// How long the lag loop waits: `deadlineSeconds`, but at most [`WAIT_LOOP_PASSES_MAX`] lag
    /// checks (`waitSeconds` apart), which keeps the loop within an execution's history.
    pub fn effective_deadline_seconds(&self) -> u64 {
        self.deadline_seconds().min(self.wait_seconds().saturating_mul(WAIT_LOOP_PASSES_MAX))
    }
}

/// Tables without a replica identity (no primary key, no `REPLICA IDENTITY USING INDEX/FULL`):
/// published, their UPDATEs and DELETEs would fail **on the source** (RDS-CASES T42).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KeylessTables {
    /// Preflight fails and lists them (add a primary key, or choose one of the others).
    #[default]
    Refuse,
    /// Consent to `ALTER TABLE … REPLICA IDENTITY FULL` on the source (more WAL per change).
    ReplicaIdentityFull,
    /// Leave them out of the publication: they are neither copied nor kept in sync.
    Exclude,
}

/// Options of mode `refresh`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshOptions {
    /// Consent to drop and recreate (then reload) target tables whose shape differs from the
    /// source's (columns, types, nullability, generated columns, key), and to drop target tables
    /// the source no longer has. Without it such a refresh stops with an error naming each table
    /// and change, and changes nothing (RDS-CASES T57: never drop without explicit consent).
    #[serde(default)]
    pub rebuild_changed_tables: bool,
    /// What the verification after a refresh hashes (see [`RefreshVerify`]).
    #[serde(default, skip_serializing_if = "RefreshVerify::is_changed")]
    pub verify: RefreshVerify,
    /// Tables without a key of at most this many rows (on each side) are repaired by matching
    /// their rows as multisets in the copy function's memory (16 bytes per row and side); larger
    /// ones, and all with `0`, are reloaded whole. Default [`KEYLESS_MATCH_ROWS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_keyless_rows_up_to: Option<u64>,
    /// The run id of a refresh that holds the target but will never end (its execution was
    /// stopped by hand or its process killed before its release step): this run takes the
    /// target over from it. Without it a refresh into a target held by another run stops
    /// (two refreshes at once would repair the same rows twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub take_over_from: Option<String>,
}

/// Default of `refresh.matchKeylessRowsUpTo`: 2 Mi rows, 64 MiB of row lists at most.
pub const KEYLESS_MATCH_ROWS: u64 = 1 << 21;

/// What the verification after a refresh hashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RefreshVerify {
    /// Rows written on neither side since the last verified run are proven equal by that run.
    /// A slice the refresh compared by transaction ids and keys is verified by that comparison:
    /// every key merged on both sides, then in the repair's transaction the rows it copied hashed
    /// on both sides and the counts checked. Any other keyed slice gets `rescan`, and `full`
    /// where that run's transaction-id marks cannot be used.
    #[default]
    Changed,
    /// After the refresh, a second pass over every keyed slice: key count and key hash on both
    /// sides, and the rows written since the last verified run hashed on both sides (also
    /// catches writes to either side during the refresh).
    Rescan,
    /// Every row on both sides, as `pgferry verify` does.
    Full,
}

impl RefreshVerify {
    fn is_changed(&self) -> bool {
        *self == RefreshVerify::Changed
    }
}

/// Default number of chunks in flight per core of the machine that runs the steps: enough to
/// keep both servers busy while one chunk waits on the other, without crowding
/// `max_connections` (each chunk holds one connection per side).
pub const DEFAULT_CONCURRENCY_PER_CORE: u32 = 2;

/// One side of the job: exactly one of `url`, `rds_instance`, `rds_cluster`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// libpq URL or key/value string, naming the database. Accepted with a password by the local
    /// CLI only; in AWS the password comes from Secrets Manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `DBInstanceIdentifier` of an RDS for PostgreSQL instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rds_instance: Option<String>,
    /// `DBClusterIdentifier` of an Aurora PostgreSQL cluster (its writer endpoint is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rds_cluster: Option<String>,
    /// Database name (required with `rds_instance` / `rds_cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Secrets Manager secret (ARN or name) with `username` and `password`; default: the
    /// instance's RDS-managed master secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_arn: Option<String>,
    /// Authenticate with an RDS IAM auth token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub iam_auth: bool,
    /// Host to dial instead of the looked-up endpoint (RDS Proxy, tunnel, test server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port to dial instead of the looked-up one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// libpq `sslmode`; default `verify-full` against the embedded RDS bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_mode: Option<SslMode>,
    /// Trusted roots replacing the embedded RDS bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_root_cert: Option<PathBuf>,
    /// Database user; default: the secret's `username`, else the master user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Source only: how consistent the copy is (DESIGN 11). Default [`Consistency::Snapshot`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    /// Source only, with `"consistency": "clone"`: how the temporary clone is made and awaited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone: Option<CloneOptions>,
}

/// How consistent a copy of the source is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Consistency {
    /// Read the live source chunk by chunk: consistent only if the source is quiet during the run
    /// (no PostgreSQL snapshot survives across Lambda invocations).
    #[default]
    Snapshot,
    /// Restore a temporary point-in-time clone of the source (RDS PITR, or an Aurora
    /// copy-on-write clone), copy from it, and delete it on every path: the target equals the
    /// source as of the clone's point in time, whatever is written meanwhile.
    Clone,
}

/// Options of `"consistency": "clone"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloneOptions {
    /// Seconds between two looks at a clone being created. Default [`DEFAULT_CLONE_POLL_SECONDS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_seconds: Option<u32>,
    /// Minutes to wait for the clone to become available before giving up (and deleting it).
    /// Default [`DEFAULT_CLONE_WAIT_MINUTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_minutes: Option<u32>,
    /// DB instance class of the clone (e.g. `db.r6g.large`); default: the source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_class: Option<String>,
    /// Local runs only: host to dial instead of the clone's endpoint (a tunnel, or a stand-in
    /// server in tests). Refused in AWS, where the clone is reached at its own endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Local runs only: port to dial with `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// Default seconds between two `Describe*` calls on a clone being created: a PITR restore takes
/// 10-30 minutes, an Aurora clone 5-15, so polling faster buys nothing.
pub const DEFAULT_CLONE_POLL_SECONDS: u32 = 30;

/// Passes a waiting loop of the state machine (the lag loop of mode `continuous`, the wait for a
/// clone) may make within its deadline. Each pass writes about 9 history events (a Wait, a Task,
/// a Choice) and an execution may hold 25,000: 2,000 passes leave the rest of the run room. A
/// job whose deadline and interval would need more is refused, not failed after a day.
pub const WAIT_LOOP_PASSES_MAX: u64 = 2_000;
/// Default minutes to wait for a clone: a large RDS restore replays a lot of WAL.
pub const DEFAULT_CLONE_WAIT_MINUTES: u32 = 180;

impl CloneOptions {
    /// Seconds between two looks at the clone.
    pub fn effective_poll_seconds(&self) -> u32 {
        self.poll_seconds.unwrap_or(DEFAULT_CLONE_POLL_SECONDS)
    }

    /// Minutes to wait for the clone.
    pub fn effective_max_wait_minutes(&self) -> u32 {
        self.max_wait_minutes.unwrap_or(DEFAULT_CLONE_WAIT_MINUTES)
    }
}

impl Endpoint {
    /// An endpoint given by a libpq URL.
    pub fn from_url(url: impl Into<String>) -> Self {
        Self { url: Some(url.into()), ..Self::default() }
    }

    /// Whether this side is copied from a temporary clone.
    pub fn uses_clone(&self) -> bool {
        self.consistency == Some(Consistency::Clone)
    }

    /// The RDS resource named, as `(kind, identifier)`.
    pub fn rds_resource(&self) -> Option<(crate::aws::rds::ResourceKind, &str)> {
        use crate::aws::rds::ResourceKind;
        match (&self.rds_instance, &self.rds_cluster) {
            (Some(id), _) => Some((ResourceKind::Instance, id.as_str())),
            (None, Some(id)) => Some((ResourceKind::Cluster, id.as_str())),
            (None, None) => None,
        }
    }

    /// Checks the combinations serde cannot express.
    fn validate(&self, side: Side) -> Result<()> {
        let name = side.as_str();
        let err = |msg: String| Err(Error::job(format!("{name}: {msg}")));
        let given = [self.url.is_some(), self.rds_instance.is_some(), self.rds_cluster.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return err("give exactly one of `url`, `rdsInstance`, `rdsCluster`".to_string());
        }
        if let Some(url) = &self.url {
            ConnSpec::parse(url).map_err(|e| Error::job(format!("{name}.url: {e}")))?;
            let named_in_url = [
                ("database", self.database.is_some()),
                ("iamAuth", self.iam_auth),
                ("host", self.host.is_some()),
                ("port", self.port.is_some()),
                ("sslMode", self.ssl_mode.is_some()),
                ("sslRootCert", self.ssl_root_cert.is_some()),
                ("user", self.user.is_some()),
            ];
            if let Some((field, _)) = named_in_url.iter().find(|(_, set)| *set) {
                return err(format!("`{field}` goes into the url (or name the server with `rdsInstance`)"));
            }
        } else if self.database.as_deref().is_none_or(str::is_empty) {
            return err("`database` is required with `rdsInstance` / `rdsCluster`".to_string());
        }
        if let Some((_, id)) = self.rds_resource() {
            let valid = id.len() <= 63
                && id.starts_with(|c: char| c.is_ascii_alphabetic())
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !valid {
                return err(format!(
                    "`{id}` is not an RDS identifier (letters, digits, hyphens; starts with a letter)"
                ));
            }
        }
        if self.secret_arn.is_some() && self.iam_auth {
            return err("give `secretArn` or `iamAuth`, not both".to_string());
        }
        if self.port == Some(0) {
            return err("`port` must be 1-65535".to_string());
        }
        if side == Side::Target && (self.consistency.is_some() || self.clone.is_some()) {
            return err("`consistency` and `clone` belong to the source".to_string());
        }
        if self.clone.is_some() && !self.uses_clone() {
            return err("`clone` options need `\"consistency\": \"clone\"`".to_string());
        }
        if self.uses_clone() {
            if self.rds_resource().is_none() {
                return err(
                    "`\"consistency\": \"clone\"` needs the source named as `rdsInstance` or `rdsCluster`: the clone \
                     is restored from its automated backups"
                        .to_string(),
                );
            }
            if self.iam_auth {
                return err(
                    "`iamAuth` with `\"consistency\": \"clone\"` is not supported: IAM auth tokens are signed for \
                     the source's endpoint, not the clone's; give `secretArn` or use the RDS-managed master secret"
                        .to_string(),
                );
            }
            let options = self.clone.clone().unwrap_or_default();
            if !(1..=600).contains(&options.effective_poll_seconds()) {
                return err("`clone.pollSeconds` must be 1-600".to_string());
            }
            if options.effective_max_wait_minutes() == 0 {
                return err("`clone.maxWaitMinutes` must be at least 1".to_string());
            }
            let wait = u64::from(options.effective_max_wait_minutes()) * 60;
            let poll = u64::from(options.effective_poll_seconds());
            if wait.div_ceil(poll) > WAIT_LOOP_PASSES_MAX {
                return err(format!(
                    "`clone.maxWaitMinutes` / `clone.pollSeconds` makes {} looks at the clone, more than the \
                     {WAIT_LOOP_PASSES_MAX} an execution's history holds: set pollSeconds to at least {}",
                    wait.div_ceil(poll),
                    wait.div_ceil(WAIT_LOOP_PASSES_MAX)
                ));
            }
            if options.port == Some(0) {
                return err("`clone.port` must be 1-65535".to_string());
            }
            if options.port.is_some() && options.host.is_none() {
                return err("`clone.port` needs `clone.host`".to_string());
            }
        }
        Ok(())
    }
}

/// Where the pgferry functions run: the VPC configuration of the Lambda functions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    pub security_group_ids: Vec<String>,
    pub subnet_ids: Vec<String>,
}

impl Network {
    /// The deployment's network, from `PGFERRY_SECURITY_GROUP_IDS` and `PGFERRY_SUBNET_IDS`
    /// (comma-separated; the SAM template sets them from the functions' `VpcConfig`).
    pub fn from_env() -> Option<Self> {
        let list = |key: &str| -> Vec<String> {
            std::env::var(key)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let network =
            Self { security_group_ids: list("PGFERRY_SECURITY_GROUP_IDS"), subnet_ids: list("PGFERRY_SUBNET_IDS") };
        (!network.security_group_ids.is_empty() || !network.subnet_ids.is_empty()).then_some(network)
    }

    fn validate(&self) -> Result<()> {
        let check = |field: &str, ids: &[String], prefix: &str| -> Result<()> {
            if ids.is_empty() {
                return Err(Error::job(format!("network.{field}: give at least one")));
            }
            if let Some(bad) = ids.iter().find(|id| !id.starts_with(prefix)) {
                return Err(Error::job(format!("network.{field}: `{bad}` does not start with `{prefix}`")));
            }
            Ok(())
        };
        check("securityGroupIds", &self.security_group_ids, "sg-")?;
        check("subnetIds", &self.subnet_ids, "subnet-")
    }
}

/// How the target is brought in line with the source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// One-off copy into an empty or missing database.
    #[default]
    Snapshot,
    /// Bring an earlier pgferry copy of the same source up to date: chunks are hashed on both
    /// sides and only differing rows are re-copied; new tables are created and copied. A target
    /// that is not an earlier pgferry copy is refused (RDS-CASES T57).
    Refresh,
    /// Native logical replication: schema, then a subscription whose initial sync copies the
    /// data and whose apply keeps the target in sync until `cutover` (docs/continuous.md).
    Continuous,
}

/// Which side of the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Side {
    Source,
    Target,
}

impl Side {
    /// `source` / `target`, as in the job's field names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Target => "target",
        }
    }
}

/// The compiled job schema.
fn schema_validator() -> &'static std::result::Result<jsonschema::Validator, String> {
    static VALIDATOR: OnceLock<std::result::Result<jsonschema::Validator, String>> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value = serde_json::from_str(JOB_SCHEMA).map_err(|e| format!("job schema: {e}"))?;
        jsonschema::validator_for(&schema).map_err(|e| format!("job schema: {e}"))
    })
}

/// What the schema says about a document: every violation, unknown fields first (the most
/// useful thing to report), each with where it is.
struct SchemaFindings {
    unknown_fields: Vec<String>,
    other: Vec<String>,
}

impl SchemaFindings {
    fn is_empty(&self) -> bool {
        self.unknown_fields.is_empty() && self.other.is_empty()
    }

    /// One message: the only finding, or each on a line of its own.
    fn message(&self) -> String {
        let all: Vec<&String> = self.unknown_fields.iter().chain(&self.other).collect();
        match all.as_slice() {
            [one] => (*one).clone(),
            many => format!(
                "{} problems:\n{}",
                many.len(),
                many.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n")
            ),
        }
    }
}

/// The schema node at a JSON pointer into the schema, following `$ref`s on the way (a
/// validation error's schema path runs through them).
fn schema_node<'a>(schema: &'a Value, path: &str) -> Option<&'a Value> {
    let mut node = schema;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if segment == "$ref" {
            let target = node.get("$ref")?.as_str()?.strip_prefix('#')?;
            node = schema.pointer(target)?;
        } else {
            node = node.get(segment.replace("~1", "/").replace("~0", "~"))?;
        }
    }
    Some(node)
}

/// Levenshtein distance, case-insensitive (`subnetIDs` is one edit from `subnetIds` too).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.to_lowercase().chars().collect(), b.to_lowercase().chars().collect());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The known field closest to a misspelt one, when it is close enough to be meant.
fn suggestion<'a>(known: impl Iterator<Item = &'a String>, name: &str) -> Option<&'a String> {
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, k)| *d <= (k.chars().count() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn schema_findings(value: &Value) -> Result<SchemaFindings> {
    let validator = schema_validator().as_ref().map_err(|e| Error::Internal(e.clone()))?;
    let schema: Value = serde_json::from_str(JOB_SCHEMA).map_err(|e| Error::Internal(format!("job schema: {e}")))?;
    let mut findings = SchemaFindings { unknown_fields: vec![], other: vec![] };
    for error in validator.iter_errors(value) {
        let at = error.instance_path().to_string();
        if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } = error.kind() {
            let place = if at.is_empty() { String::new() } else { format!(" in {}", at.trim_start_matches('/')) };
            let schema_path = error.schema_path().to_string();
            let parent = schema_path.strip_suffix("/additionalProperties").unwrap_or(&schema_path);
            let known: Vec<String> = schema_node(&schema, parent)
                .and_then(|n| n.get("properties"))
                .and_then(Value::as_object)
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            for name in unexpected {
                let hint =
                    suggestion(known.iter(), name).map(|k| format!(" (did you mean `{k}`?)")).unwrap_or_default();
                findings.unknown_fields.push(format!("unknown field `{name}`{place}{hint}"));
            }
            continue;
        }
        let at = if at.is_empty() { "job".to_string() } else { at };
        findings.other.push(format!("does not match schema/job.schema.json at {at}: {error}"));
    }
    Ok(findings)
}

/// Validates a job document against the published JSON Schema. An unknown field is reported as
/// serde reports it (``unknown field `x` ``), with where it is.
pub fn check_schema(value: &Value) -> Result<()> {
    let findings = schema_findings(value)?;
    if findings.is_empty() { Ok(()) } else { Err(Error::job(findings.message())) }
}

impl Job {
    /// Chunks in flight: the job's `maxConcurrency`, or two per core of this process.
    pub fn effective_max_concurrency(&self) -> u32 {
        self.max_concurrency.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
            u32::try_from(cores).unwrap_or(2).saturating_mul(DEFAULT_CONCURRENCY_PER_CORE)
        })
    }

    /// Parses and validates a job document: JSON syntax, the published schema, serde's types and
    /// [`Job::validate`]. Unknown fields are refused with their name.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::job(e.to_string()))?;
        Self::from_value(value)
    }

    /// As [`Job::from_json`], from a parsed document.
    pub fn from_value(value: Value) -> Result<Self> {
        // Every problem at once: unknown fields (with what was probably meant) and every other
        // schema violation, each with its place.
        let mut findings = schema_findings(&value)?;
        if !findings.unknown_fields.is_empty() {
            // Other findings are mostly what the misspelt fields cause (a required field
            // "missing"): the misspellings alone say what to fix.
            findings.other.clear();
            return Err(Error::job(findings.message()));
        }
        // Other schema findings come second to the typed validation, whose messages name the
        // rule broken; the schema has the last word.
        let job: Job = serde_json::from_value(value).map_err(|e| Error::job(e.to_string()))?;
        job.validate()?;
        if findings.is_empty() { Ok(job) } else { Err(Error::job(findings.message())) }
    }

    /// Checks what serde cannot: one way to name each side, parseable URLs, identifiers.
    pub fn validate(&self) -> Result<()> {
        for side in [Side::Source, Side::Target] {
            self.endpoint(side).validate(side)?;
        }
        if let Some(network) = &self.network {
            network.validate()?;
        }
        if self.max_concurrency == Some(0) {
            return Err(Error::job("maxConcurrency must be at least 1"));
        }
        if self.refresh.is_some() && self.mode != Mode::Refresh {
            return Err(Error::job("`refresh` options need `\"mode\": \"refresh\"`"));
        }
        if self.refresh_take_over_from().is_some_and(|r| r.trim().is_empty()) {
            return Err(Error::job("refresh.takeOverFrom must name the run id of the stopped refresh"));
        }
        if self.continuous.is_some() && self.mode != Mode::Continuous {
            return Err(Error::job("`continuous` options need `\"mode\": \"continuous\"`"));
        }
        if self.mode == Mode::Continuous && self.source.consistency == Some(Consistency::Clone) {
            return Err(Error::job(
                "`\"consistency\": \"clone\"` cannot be combined with `\"mode\": \"continuous\"`: a point-in-time \
                 clone receives no further writes, so there would be nothing to replicate; continuous mode already \
                 starts from a consistent snapshot of the live source",
            ));
        }
        if let Some(c) = &self.continuous {
            if c.wait_seconds == Some(0) {
                return Err(Error::job("continuous.waitSeconds must be at least 1"));
            }
            if c.publisher_port == Some(0) {
                return Err(Error::job("continuous.publisherPort must be 1-65535"));
            }
            if c.replication_user.as_deref().is_some_and(|u| u.is_empty() || u.len() > 63) {
                return Err(Error::job("continuous.replicationUser must be 1-63 bytes"));
            }
        }
        Ok(())
    }

    /// One side of the job.
    pub fn endpoint(&self, side: Side) -> &Endpoint {
        match side {
            Side::Source => &self.source,
            Side::Target => &self.target,
        }
    }

    /// Whether a refresh may drop and recreate tables whose shape changed.
    pub fn rebuild_changed_tables(&self) -> bool {
        self.refresh.as_ref().is_some_and(|r| r.rebuild_changed_tables)
    }

    /// What the verification after a refresh hashes (`refresh.verify`).
    pub fn refresh_verify(&self) -> RefreshVerify {
        self.refresh.as_ref().map_or(RefreshVerify::Changed, |r| r.verify)
    }

    /// Rows up to which a keyless table is repaired by matching rows instead of reloaded
    /// (`refresh.matchKeylessRowsUpTo`).
    pub fn keyless_match_rows(&self) -> u64 {
        self.refresh.as_ref().and_then(|r| r.match_keyless_rows_up_to).unwrap_or(KEYLESS_MATCH_ROWS)
    }

    /// The stopped refresh run this run may take the target over from (`refresh.takeOverFrom`).
    pub fn refresh_take_over_from(&self) -> Option<&str> {
        self.refresh.as_ref().and_then(|r| r.take_over_from.as_deref())
    }

    /// Whether the verification after a refresh must hash every row (`refresh.verify: full`).
    pub fn full_verify_after_refresh(&self) -> bool {
        self.refresh_verify() == RefreshVerify::Full
    }

    /// The continuous-mode options (defaults when the job gives none).
    pub fn continuous_options(&self) -> ContinuousOptions {
        self.continuous.clone().unwrap_or_default()
    }

    /// Whether any side is named through the RDS API.
    pub fn uses_aws(&self) -> bool {
        [&self.source, &self.target].iter().any(|e| e.rds_resource().is_some() || e.secret_arn.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 24: a waiting loop never passes Step Functions' 25,000 history events: the lag loop
    /// stops after 2,000 checks at the latest, a clone wait that would need more is refused.
    #[test]
    fn waiting_loops_that_would_outgrow_an_execution_history_are_refused() {
        let job = |extra: &str| {
            Job::from_json(&format!(
                r#"{{"source":{{"url":"postgresql://u@a/d"}},"target":{{"url":"postgresql://u@b/d"}},{extra}}}"#
            ))
        };
        let continuous = |options: &str| {
            job(&format!(r#""mode":"continuous","continuous":{options}"#)).unwrap().continuous_options()
        };
        assert_eq!(continuous("{}").effective_deadline_seconds(), 86_400, "the default deadline fits");
        assert_eq!(continuous(r#"{"waitSeconds":1}"#).effective_deadline_seconds(), 2_000);
        assert_eq!(continuous(r#"{"waitSeconds":30,"deadlineSeconds":600}"#).effective_deadline_seconds(), 600);
        let clone = |options: &str| {
            Job::from_json(&format!(
                r#"{{"source":{{"rdsInstance":"p","database":"d","consistency":"clone","clone":{options}}},
                    "target":{{"url":"postgresql://u@b/d"}}}}"#
            ))
        };
        clone("{}").unwrap();
        let err = clone(r#"{"pollSeconds":1}"#).unwrap_err().to_string();
        assert!(err.contains("10800 looks at the clone") && err.contains("pollSeconds to at least 6"), "{err}");
    }

    #[test]
    fn a_minimal_job_defaults_to_snapshot() {
        let job = Job::from_json(r#"{"source":{"url":"postgresql://u@a/db"},"target":{"url":"postgresql://u@b/db"}}"#)
            .unwrap();
        assert_eq!(job.mode, Mode::Snapshot);
        assert!(!job.uses_aws());
    }

    #[test]
    fn unknown_fields_are_named_in_the_error() {
        let err = Job::from_json(
            r#"{"source":{"url":"postgresql://u@a/db"},"target":{"url":"postgresql://u@b/db"},"mdoe":"snapshot"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `mdoe`"), "{err}");
        let err = Job::from_json(r#"{"source":{"url":"postgresql://u@a/db","pasword":"x"},"target":{"url":"x"}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `pasword`"), "{err}");
    }

    #[test]
    fn malformed_urls_name_the_side() {
        let err = Job::from_json(
            r#"{"source":{"url":"postgresql://u@a/db?bogus=1"},"target":{"url":"postgresql://u@b/db"}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("source.url"), "{err}");
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
    }

    #[test]
    fn every_unknown_field_is_reported_at_once_with_what_was_meant() {
        let err = Job::from_json(
            r#"{"sorce":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d","secretArm":"x"},"maxConcurency":4,"zzzz":1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("4 problems") && !err.contains("required property"), "{err}");
        assert!(err.contains("unknown field `sorce` (did you mean `source`?)"), "{err}");
        assert!(err.contains("unknown field `maxConcurency` (did you mean `maxConcurrency`?)"), "{err}");
        assert!(err.contains("unknown field `secretArm` in target (did you mean `secretArn`?)"), "{err}");
        assert!(err.contains("unknown field `zzzz`") && !err.contains("`zzzz` (did you mean"), "{err}");
        assert_eq!(edit_distance("subnetIDs", "subnetIds"), 0);
    }

    #[test]
    fn a_job_by_instance_names_round_trips() {
        let text = r#"{"source":{"rdsInstance":"prod-db","database":"shop"},
                       "target":{"rdsCluster":"staging","database":"shop","iamAuth":true,"host":"127.0.0.1",
                                 "port":55433,"sslMode":"verify-ca","sslRootCert":"/tmp/ca.pem","user":"dbadmin"},
                       "network":{"securityGroupIds":["sg-0abc"],"subnetIds":["subnet-01","subnet-02"]}}"#;
        let job = Job::from_json(text).unwrap();
        assert_eq!(job.source.rds_instance.as_deref(), Some("prod-db"));
        assert_eq!(job.target.ssl_mode, Some(SslMode::VerifyCa));
        assert!(job.uses_aws());
        let again = Job::from_value(serde_json::to_value(&job).unwrap()).unwrap();
        assert_eq!(again, job);
    }

    /// Sample jobs that the schema and the serde types must judge alike: `Some(needle)` names the
    /// text the refusal must contain.
    const SAMPLES: &[(&str, Option<&str>)] = &[
        (r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"}}"#, None),
        (
            r#"{"source":{"rdsInstance":"prod-db","database":"shop"},"target":{"rdsInstance":"stage","database":"shop"}}"#,
            None,
        ),
        (
            r#"{"source":{"rdsInstance":"p","database":"s","secretArn":"arn:aws:secretsmanager:us-east-1:1:secret:x"},"target":{"rdsCluster":"c","database":"s","iamAuth":true}}"#,
            None,
        ),
        (
            r#"{"source":{"url":"postgresql://u@a/d","secretArn":"s"},"target":{"url":"postgresql://u@b/d"},"maxConcurrency":8,"mode":"snapshot"}"#,
            None,
        ),
        (
            r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"network":{"securityGroupIds":["sg-1"],"subnetIds":["subnet-1"]}}"#,
            None,
        ),
        (
            r#"{"source":{"rdsInstance":"prod-db","databse":"shop"},"target":{"rdsInstance":"stage","database":"shop"}}"#,
            Some("unknown field `databse`"),
        ),
        (
            r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"netwrok":{}}"#,
            Some("unknown field `netwrok`"),
        ),
        (
            r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"network":{"securityGroupIds":["sg-1"],"subnetIDs":["subnet-1"]}}"#,
            Some("unknown field `subnetIDs`"),
        ),
        (
            r#"{"source":{"rdsInstance":"prod-db"},"target":{"rdsInstance":"stage","database":"shop"}}"#,
            Some("database"),
        ),
        (
            r#"{"source":{"rdsInstance":"a","rdsCluster":"b","database":"d"},"target":{"url":"postgresql://u@b/d"}}"#,
            Some("exactly one"),
        ),
        (r#"{"source":{},"target":{"url":"postgresql://u@b/d"}}"#, Some("exactly one")),
        (
            r#"{"source":{"url":"postgresql://u@a/d","database":"x"},"target":{"url":"postgresql://u@b/d"}}"#,
            Some("`database` goes into the url"),
        ),
        (
            r#"{"source":{"rdsInstance":"p","database":"s","secretArn":"x","iamAuth":true},"target":{"url":"postgresql://u@b/d"}}"#,
            Some("not both"),
        ),
        (
            r#"{"source":{"rdsInstance":"p","database":"s","sslMode":"verify_full"},"target":{"url":"postgresql://u@b/d"}}"#,
            Some("verify_full"),
        ),
        (
            r#"{"source":{"rdsInstance":"p","database":"s","port":70000},"target":{"url":"postgresql://u@b/d"}}"#,
            Some("70000"),
        ),
        (r#"{"source":{"rdsInstance":"1db","database":"s"},"target":{"url":"postgresql://u@b/d"}}"#, Some("1db")),
        (
            r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"mode":"mirror"}"#,
            Some("mirror"),
        ),
        (r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"mode":"refresh"}"#, None),
        (
            r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"mode":"refresh","refresh":{"rebuildChangedTables":true}}"#,
            None,
        ),
        (
            r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"mode":"refresh","refresh":{"rebuildTables":true}}"#,
            Some("unknown field `rebuildTables`"),
        ),
        (
            r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"mode":"refresh","refresh":{"takeOverFrom":"run-20261127T010000Z-1a2b"}}"#,
            None,
        ),
        (
            r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"mode":"refresh","refresh":{"takeOverFrom":" "}}"#,
            Some("takeOverFrom"),
        ),
        (
            r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"refresh":{"rebuildChangedTables":true}}"#,
            Some("refresh"),
        ),
        (r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"mode":"continuous"}"#, None),
        (
            r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"mode":"continuous","continuous":{"maxLagBytes":0,"maxLagSeconds":5,"waitSeconds":1,"deadlineSeconds":60,"replicationUser":"repl","publisherHost":"db.internal","publisherPort":5432,"sslMode":"verify-full","sslRootCert":"/etc/ca.pem","keylessTables":"replicaIdentityFull"}}"#,
            None,
        ),
        (
            r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"continuous":{}}"#,
            Some("continuous"),
        ),
        (
            r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"mode":"continuous","continuous":{"maxLag":1}}"#,
            Some("unknown field `maxLag`"),
        ),
        (
            r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"mode":"continuous","continuous":{"keylessTables":"ignore"}}"#,
            Some("ignore"),
        ),
        (
            r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"mode":"continuous","continuous":{"waitSeconds":0}}"#,
            Some("waitSeconds"),
        ),
        (
            r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"maxConcurrency":0}"#,
            Some("maxConcurrency"),
        ),
        (
            r#"{"source":{"url":"postgresql://u@a/d"},"target":{"url":"postgresql://u@b/d"},"network":{"securityGroupIds":["vpc-1"],"subnetIds":["subnet-1"]}}"#,
            Some("vpc-1"),
        ),
        (
            r#"{"source":{"rdsInstance":"prod-db","database":"shop","consistency":"clone"},"target":{"rdsInstance":"stage","database":"shop"}}"#,
            None,
        ),
        (
            r#"{"source":{"rdsCluster":"prod","database":"shop","consistency":"clone","clone":{"pollSeconds":5,"maxWaitMinutes":60,"instanceClass":"db.r6g.large","host":"127.0.0.1","port":5999}},"target":{"url":"postgresql://u@b/d"},"mode":"refresh"}"#,
            None,
        ),
        (
            r#"{"source":{"url":"postgresql://u@a/d","consistency":"snapshot"},"target":{"url":"postgresql://u@b/d"}}"#,
            None,
        ),
        (
            r#"{"source":{"url":"postgresql://u@a/d","consistency":"clone"},"target":{"url":"postgresql://u@b/d"}}"#,
            Some("rdsInstance"),
        ),
        (
            r#"{"source":{"rdsInstance":"p","database":"s","consistency":"clone","clone":{"port":5999}},"target":{"url":"postgresql://u@b/d"}}"#,
            Some("clone.host"),
        ),
        (
            r#"{"source":{"rdsInstance":"p","database":"s","clone":{"pollSeconds":5}},"target":{"url":"postgresql://u@b/d"}}"#,
            Some("consistency"),
        ),
        (
            r#"{"source":{"url":"postgresql://u@a/d"},"target":{"rdsInstance":"p","database":"s","consistency":"clone"}}"#,
            Some("belong to the source"),
        ),
        (
            r#"{"source":{"rdsInstance":"p","database":"s","consistency":"clone","clone":{"pollSeconds":0}},"target":{"url":"postgresql://u@b/d"}}"#,
            Some("pollSeconds"),
        ),
        (
            r#"{"source":{"rdsInstance":"p","database":"s","consistency":"clone","clone":{"polSeconds":5}},"target":{"url":"postgresql://u@b/d"}}"#,
            Some("unknown field `polSeconds`"),
        ),
        (
            r#"{"source":{"rdsInstance":"p","database":"s","consistency":"copy"},"target":{"url":"postgresql://u@b/d"}}"#,
            Some("copy"),
        ),
        (
            r#"{"source":{"rdsInstance":"p","database":"s","consistency":"clone","iamAuth":true},"target":{"url":"postgresql://u@b/d"}}"#,
            Some("iamAuth"),
        ),
        (
            r#"{"source":{"rdsInstance":"p","database":"s","consistency":"clone"},"target":{"url":"postgresql://u@b/d"},"mode":"continuous"}"#,
            Some("continuous"),
        ),
    ];

    #[test]
    fn the_schema_and_the_serde_types_agree_on_sample_jobs() {
        for (text, refusal) in SAMPLES {
            let value: Value = serde_json::from_str(text).unwrap();
            let by_schema = check_schema(&value).is_ok();
            let by_types = serde_json::from_value::<Job>(value.clone())
                .map_err(|e| e.to_string())
                .and_then(|j| j.validate().map_err(|e| e.to_string()));
            assert_eq!(by_schema, by_types.is_ok(), "schema and types disagree on {text}: {by_types:?}");
            match (refusal, Job::from_value(value)) {
                (None, Ok(_)) => {}
                (Some(needle), Err(e)) => assert!(e.to_string().contains(needle), "{text}: {e}"),
                (expected, got) => panic!("{text}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn the_published_schema_is_the_compiled_one() {
        assert!(schema_validator().is_ok());
        let on_disk =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../schema/job.schema.json")).unwrap();
        assert_eq!(on_disk, JOB_SCHEMA);
    }
}
