//! One error type for every step, classified by SQLSTATE and I/O error kind, never by message text.
//!
//! The classification ([`ErrorKind`]) drives two things: the advice a user reads (AWS-specific,
//! because that is where these errors come from — RDS-CASES T54) and the stable Step Functions
//! error name that the state machine's `Retry` and `Catch` blocks match on.

use std::error::Error as StdError;
use std::io;

use tokio_postgres::error::SqlState;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of AWS failure an [`Error::Aws`] is, from the SDK's error variant and the service's
/// error code (never from message text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsFailure {
    /// The API endpoint did not answer: no route, no NAT gateway or VPC endpoint, or a timeout.
    Unreachable,
    /// The caller's IAM identity may not do this.
    AccessDenied,
    /// The named resource does not exist (in this account and region).
    NotFound,
    /// Throttling or a server-side error: worth retrying.
    Transient,
    /// Anything else the service refused.
    Other,
}

/// Everything that can go wrong in pgferry. Messages are lowercase and never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid connection string: {reason}")]
    ConnString { reason: String },

    #[error("invalid job: {reason}")]
    Job { reason: String },

    #[error("{side} {endpoint} is not allowed by this deployment ({variable} = {allowed})")]
    NotAllowed { side: String, endpoint: String, variable: String, allowed: String },

    #[error("cannot resolve host `{host}`")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },

    #[error("cannot connect to {endpoint}: {}", pg_message(source))]
    Connect {
        endpoint: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("{context}: {}", pg_message(source))]
    Db {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("tls configuration: {reason}")]
    TlsConfig { reason: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    #[error("{tool} failed ({status}): {stderr}")]
    Tool { tool: String, status: String, stderr: String },

    #[error(
        "{section} statement {index} (line {line} of the dump) failed ({}) at `{head}`: {}{}",
        sqlstate_of(source),
        pg_message(source),
        apply_hint(source)
    )]
    Apply {
        section: String,
        /// Position among the section's statements, 1-based.
        index: usize,
        /// Line of the statement in the stored dump text.
        line: usize,
        head: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("target database `{database}` is not empty: {}", objects.join(", "))]
    TargetNotEmpty { database: String, objects: Vec<String> },

    /// Another refresh run holds the target database (one refresh at a time writes to it).
    /// `note` (may be empty) follows the sentence, e.g. that the holder took over from this run.
    #[error("target database `{database}` is held by refresh run {holder}, started {since}{note}")]
    TargetBusy { database: String, holder: String, since: String, note: String },

    #[error("preflight found {} problem(s): {}", failures.len(), failures.join("; "))]
    PreflightFailed { failures: Vec<String> },

    #[error("verification found differences in {}", tables.join(", "))]
    VerifyMismatch { tables: Vec<String> },

    #[error("artifact `{key}`: {reason}")]
    Store { key: String, reason: String },

    /// An artifact or a Map item whose seal does not match: written by someone other than the
    /// deployment's functions (see `seal`). Nothing of it was used.
    #[error("artifact `{key}` was changed outside pgferry ({reason}); nothing of it was used")]
    Tampered { key: String, reason: String },

    /// Logical replication (mode `continuous`) is broken: an apply or table-sync error on the
    /// target, a lost slot, a run that cannot be found. The message carries the advice.
    #[error("replication: {reason}")]
    Replication { reason: String },

    /// An AWS API call failed; `failure` is classified from the SDK error and the service's code.
    #[error("{operation} {resource}: {}{message}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
    Aws { operation: String, resource: String, failure: AwsFailure, code: Option<String>, message: String },

    /// A connection failure explained with what preflight learned about that side (network path,
    /// parameters, credentials); classified as the failure itself.
    #[error("{source}; preflight found: {explanation}")]
    Explained {
        #[source]
        source: Box<Error>,
        explanation: String,
    },

    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn conn_string(reason: String) -> Self {
        Self::ConnString { reason }
    }
    pub fn job(reason: impl Into<String>) -> Self {
        Self::Job { reason: reason.into() }
    }
    pub fn db(context: impl Into<String>, source: tokio_postgres::Error) -> Self {
        Self::Db { context: context.into(), source }
    }
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }

    /// The SQLSTATE of the server error behind this error, if there is one.
    pub fn sqlstate(&self) -> Option<&SqlState> {
        match self {
            Self::Connect { source, .. } | Self::Db { source, .. } | Self::Apply { source, .. } => source.code(),
            Self::Explained { source, .. } => source.sqlstate(),
            _ => None,
        }
    }

    /// Classifies the error from SQLSTATE codes, I/O error kinds and TLS error variants.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::ConnString { .. } | Self::Job { .. } => ErrorKind::InvalidInput,
            Self::NotAllowed { .. } => ErrorKind::NotAllowed,
            Self::Resolve { .. } => ErrorKind::HostNotFound,
            Self::Connect { source, .. } => classify_pg(source, true),
            Self::Db { source, .. } => classify_pg(source, false),
            Self::Apply { source, .. } => match classify_pg(source, false) {
                ErrorKind::Other => ErrorKind::SchemaApply,
                k => k,
            },
            Self::TlsConfig { .. } => ErrorKind::InvalidInput,
            Self::Io { source, .. } => classify_io(source).unwrap_or(ErrorKind::Other),
            Self::Tool { .. } => ErrorKind::ToolFailed,
            Self::TargetNotEmpty { .. } => ErrorKind::TargetNotEmpty,
            Self::TargetBusy { .. } => ErrorKind::TargetBusy,
            Self::PreflightFailed { .. } => ErrorKind::PreflightFailed,
            Self::VerifyMismatch { .. } => ErrorKind::VerifyMismatch,
            Self::Store { .. } => ErrorKind::Other,
            Self::Tampered { .. } => ErrorKind::Tampered,
            Self::Replication { .. } => ErrorKind::ReplicationFailed,
            Self::Aws { failure, .. } => match failure {
                AwsFailure::Unreachable => ErrorKind::AwsUnreachable,
                AwsFailure::AccessDenied => ErrorKind::AwsAccessDenied,
                AwsFailure::NotFound => ErrorKind::AwsNotFound,
                AwsFailure::Transient => ErrorKind::Transient,
                AwsFailure::Other => ErrorKind::Other,
            },
            Self::Explained { source, .. } => source.kind(),
            Self::Internal(_) => ErrorKind::Other,
        }
    }

    /// The message followed by the advice of its kind, on one line.
    pub fn with_advice(&self) -> String {
        match self.kind().advice() {
            Some(advice) => format!("{self} — {advice}"),
            None => self.to_string(),
        }
    }
}

/// The server's own message (any language), or the driver's description.
fn pg_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    // Walk to the innermost cause: tokio-postgres wraps I/O and TLS errors one or two levels deep.
    let mut msg = e.to_string();
    let mut cur: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(err) = cur {
        msg = err.to_string();
        cur = err.source();
    }
    msg
}

/// What a failed schema statement's SQLSTATE usually means on a restore (RDS-CASES T60).
fn apply_hint(e: &tokio_postgres::Error) -> &'static str {
    match e.code().map(|c| c.code()) {
        Some("42704" | "42883" | "42P01" | "3F000" | "42P17") => {
            " (an object it needs is missing on the target: see the skipped statements in the schema report)"
        }
        Some("42P07" | "42710" | "42P06" | "42723") => {
            " (the object exists on the target already: pgferry never overwrites; use an empty target database)"
        }
        _ => "",
    }
}

fn sqlstate_of(e: &tokio_postgres::Error) -> &str {
    e.code().map(|c| c.code()).unwrap_or("no sqlstate")
}

/// What went wrong, in categories a user (and a retry policy) can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The TCP connect timed out: packets are dropped on the way.
    ConnectTimeout,
    /// Nothing listens on the port.
    ConnectionRefused,
    /// The host name does not resolve.
    HostNotFound,
    /// 57P03: the server is starting up or shutting down.
    StartingUp,
    /// 28P01: wrong password.
    AuthFailed,
    /// 28000: no pg_hba entry; on RDS this means an unencrypted connection with `rds.force_ssl=1`.
    EncryptionRequired,
    /// 3D000.
    DatabaseMissing,
    /// 53300.
    TooManyConnections,
    /// 42501.
    PermissionDenied,
    /// 55000: object not in prerequisite state (e.g. `wal_level` not logical).
    PrerequisiteState,
    /// The server's certificate does not chain to a trusted root.
    CertificateUntrusted,
    /// The certificate is valid but not for the host name connected to.
    HostnameMismatch,
    /// Another certificate problem (expired, wrong usage…).
    CertificateInvalid,
    /// The connection broke mid-session (reset, closed, admin shutdown).
    ConnectionLost,
    /// 57014: statement timeout or cancel.
    QueryCanceled,
    /// 40001, 40P01, 55P03: retry the transaction.
    Transient,
    /// Input the user must fix: job JSON, connection string, TLS files.
    InvalidInput,
    /// The job names a database the deployment's allow-lists do not (PGFERRY_ALLOWED_SOURCES,
    /// PGFERRY_ALLOWED_TARGETS).
    NotAllowed,
    /// An artifact of the run was changed outside pgferry (its seal does not match).
    Tampered,
    /// The target already holds data.
    TargetNotEmpty,
    /// Another run is writing to the target database.
    TargetBusy,
    /// Preflight checks failed.
    PreflightFailed,
    /// Verification found differences.
    VerifyMismatch,
    /// A schema statement failed to apply.
    SchemaApply,
    /// `pg_dump` or another external tool failed.
    ToolFailed,
    /// Logical replication failed (apply or sync errors, a lost slot).
    ReplicationFailed,
    /// An AWS API endpoint did not answer (no NAT gateway or VPC endpoint on the way, or a timeout).
    AwsUnreachable,
    /// The function's IAM role may not make an AWS call.
    AwsAccessDenied,
    /// An RDS instance, cluster, secret, security group or subnet named by the job does not exist.
    AwsNotFound,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Every kind, for tests that check the mapping is total.
    pub const ALL: [ErrorKind; 30] = [
        Self::ConnectTimeout,
        Self::ConnectionRefused,
        Self::HostNotFound,
        Self::StartingUp,
        Self::AuthFailed,
        Self::EncryptionRequired,
        Self::DatabaseMissing,
        Self::TooManyConnections,
        Self::PermissionDenied,
        Self::PrerequisiteState,
        Self::CertificateUntrusted,
        Self::HostnameMismatch,
        Self::CertificateInvalid,
        Self::ConnectionLost,
        Self::QueryCanceled,
        Self::Transient,
        Self::InvalidInput,
        Self::NotAllowed,
        Self::Tampered,
        Self::TargetNotEmpty,
        Self::TargetBusy,
        Self::PreflightFailed,
        Self::VerifyMismatch,
        Self::SchemaApply,
        Self::ToolFailed,
        Self::ReplicationFailed,
        Self::AwsUnreachable,
        Self::AwsAccessDenied,
        Self::AwsNotFound,
        Self::Other,
    ];

    /// The Step Functions error name that `Retry`/`Catch` in the state machine match on.
    pub fn step_error_name(self) -> &'static str {
        match self {
            Self::StartingUp | Self::TooManyConnections | Self::ConnectionLost | Self::Transient => {
                STEP_ERROR_RETRYABLE
            }
            Self::ConnectTimeout | Self::ConnectionRefused | Self::HostNotFound | Self::AwsUnreachable => {
                "Pgferry.ConnectionFailed"
            }
            Self::AuthFailed => "Pgferry.AuthFailed",
            Self::EncryptionRequired
            | Self::CertificateUntrusted
            | Self::HostnameMismatch
            | Self::CertificateInvalid => "Pgferry.TlsFailed",
            Self::DatabaseMissing => "Pgferry.DatabaseMissing",
            Self::PermissionDenied | Self::PrerequisiteState | Self::AwsAccessDenied => "Pgferry.NotPermitted",
            Self::QueryCanceled => "Pgferry.Timeout",
            Self::InvalidInput | Self::AwsNotFound => "Pgferry.InvalidJob",
            Self::TargetNotEmpty => "Pgferry.TargetNotEmpty",
            Self::NotAllowed => "Pgferry.NotAllowed",
            Self::Tampered => "Pgferry.Tampered",
            Self::TargetBusy => "Pgferry.TargetBusy",
            Self::PreflightFailed => "Pgferry.PreflightFailed",
            Self::VerifyMismatch => "Pgferry.VerifyMismatch",
            Self::SchemaApply | Self::ToolFailed => "Pgferry.SchemaFailed",
            Self::ReplicationFailed => "Pgferry.ReplicationFailed",
            Self::Other => "Pgferry.Internal",
        }
    }

    /// What the user should do, phrased for RDS.
    pub fn advice(self) -> Option<&'static str> {
        Some(match self {
            Self::ConnectTimeout => {
                "packets are dropped on the way: check the instance's security group allows the function's \
                 security group (or CIDR) on the port, the subnet's NACL and route table, and that the Lambda \
                 function runs in the instance's VPC"
            }
            Self::ConnectionRefused => {
                "nothing listens there: check the port (RDS default 5432) and that the instance is not stopped \
                 or rebooting"
            }
            Self::HostNotFound => {
                "the endpoint does not resolve: check the instance endpoint (was the instance renamed or deleted?) \
                 and that the function can use the VPC's DNS"
            }
            Self::StartingUp => {
                "the instance is starting or rebooting (often after a parameter-group change); retry shortly"
            }
            Self::AuthFailed => {
                "password authentication failed: check the user and the secret (RDS-managed secrets rotate; the \
                 secret is re-read once) or generate a fresh IAM auth token"
            }
            Self::EncryptionRequired => {
                "SSL is required (rds.force_ssl): connect with sslmode=verify-full; pg_hba.conf cannot be edited on RDS"
            }
            Self::DatabaseMissing => "the database does not exist on that instance: check the database name in the job",
            Self::TooManyConnections => {
                "the instance is at max_connections: lower the state machine's MaxConcurrency or raise \
                 max_connections in the parameter group"
            }
            Self::PermissionDenied => {
                "the connecting user lacks a privilege: on RDS use the master user (member of rds_superuser) or \
                 grant the owner role; publications and subscriptions need rds_superuser or rds_replication"
            }
            Self::PrerequisiteState => {
                "the server is not configured for this: for logical replication set rds.logical_replication=1 in \
                 the parameter group and reboot the instance"
            }
            Self::CertificateUntrusted => {
                "the server certificate is not signed by a trusted CA: RDS endpoints chain to the Amazon RDS \
                 global bundle (embedded); for other servers pass sslrootcert=<ca file>"
            }
            Self::HostnameMismatch => {
                "the certificate is not valid for this host name: connect to the RDS endpoint name itself, not an \
                 IP address or a CNAME, or use sslmode=verify-ca"
            }
            Self::CertificateInvalid => "the server certificate is not acceptable (expired or wrong usage)",
            Self::ConnectionLost => {
                "the connection was cut: a NAT gateway or load balancer may drop idle flows after 350 s (keepalives \
                 are on), or the instance restarted; the step is retried"
            }
            Self::QueryCanceled => "a statement hit its timeout or was canceled; raise the step's statement timeout",
            Self::Transient => "a transient conflict (serialization, deadlock or lock timeout); the step is retried",
            Self::InvalidInput => "fix the job and start it again; nothing was written",
            Self::NotAllowed => {
                "nothing was read or written: name an allowed database, or add this one to the deployment's \
                 AllowedSources / AllowedTargets parameters (PGFERRY_ALLOWED_SOURCES / PGFERRY_ALLOWED_TARGETS)"
            }
            Self::Tampered => {
                "a plan, dump or work item of this run in the artifact bucket was rewritten by someone other than \
                 the deployment's functions: find who may write to the bucket (its policy, CloudTrail data events), \
                 then start a new run; nothing of the rewritten artifact was run"
            }
            Self::TargetNotEmpty => {
                "pgferry never overwrites data: point the job at an empty or missing database, or use mode `refresh`"
            }
            Self::TargetBusy => {
                "one refresh at a time writes to a target database (two would repair the same rows twice): \
                 wait for that run to end; if it never will (its execution was stopped by hand or its process \
                 killed before its release step), start this job with \"refresh\": {\"takeOverFrom\": \"<that \
                 run id>\"}"
            }
            Self::SchemaApply => "the target refused a schema statement; the schema report names it",
            Self::ToolFailed => "pg_dump must be at least as new as the source server's major version",
            Self::AwsUnreachable => {
                "the AWS API did not answer: functions in a VPC reach AWS APIs only through a NAT gateway or \
                 interface VPC endpoints (rds, secretsmanager, ec2) with private DNS; run `pgferry preflight`"
            }
            Self::AwsAccessDenied => {
                "the IAM role may not make this call: pgferry needs rds:DescribeDBInstances, rds:DescribeDBClusters, \
                 rds:DescribeDBSubnetGroups, rds:DescribeDBParameters, rds:DescribeDBClusterParameters, \
                 ec2:Describe*, secretsmanager:GetSecretValue (plus kms:Decrypt for customer-managed keys) and \
                 rds-db:connect for IAM database authentication"
            }
            Self::AwsNotFound => {
                "the AWS resource does not exist in this account and region: check the name in the job and \
                 AWS_REGION"
            }
            Self::PreflightFailed | Self::VerifyMismatch | Self::ReplicationFailed | Self::Other => return None,
        })
    }
}

/// The name used for errors the state machine retries with backoff.
pub const STEP_ERROR_RETRYABLE: &str = "Pgferry.Retryable";

fn classify_pg(e: &tokio_postgres::Error, connecting: bool) -> ErrorKind {
    if let Some(code) = e.code() {
        return classify_sqlstate(code);
    }
    let mut cur: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return classify_tls(tls);
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                return classify_tls(tls);
            }
            if let Some(kind) = classify_io(io) {
                return kind;
            }
        }
        cur = err.source();
    }
    if e.is_closed() || !connecting { ErrorKind::ConnectionLost } else { ErrorKind::Other }
}

/// SQLSTATE → kind. The list of transient codes is short and deliberate.
pub fn classify_sqlstate(code: &SqlState) -> ErrorKind {
    match code.code() {
        "57P03" => ErrorKind::StartingUp,
        "28P01" => ErrorKind::AuthFailed,
        "28000" => ErrorKind::EncryptionRequired,
        "3D000" => ErrorKind::DatabaseMissing,
        "53300" => ErrorKind::TooManyConnections,
        "42501" => ErrorKind::PermissionDenied,
        "55000" => ErrorKind::PrerequisiteState,
        "57014" => ErrorKind::QueryCanceled,
        "40001" | "40P01" | "55P03" => ErrorKind::Transient,
        "57P01" | "57P02" | "08000" | "08003" | "08006" => ErrorKind::ConnectionLost,
        _ => ErrorKind::Other,
    }
}

fn classify_io(e: &io::Error) -> Option<ErrorKind> {
    Some(match e.kind() {
        io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
        io::ErrorKind::ConnectionRefused => ErrorKind::ConnectionRefused,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof
        | io::ErrorKind::NotConnected => ErrorKind::ConnectionLost,
        _ => return None,
    })
}

fn classify_tls(e: &rustls::Error) -> ErrorKind {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature | C::UnknownRevocationStatus => ErrorKind::CertificateUntrusted,
            C::NotValidForName | C::NotValidForNameContext { .. } => ErrorKind::HostnameMismatch,
            _ => ErrorKind::CertificateInvalid,
        },
        _ => ErrorKind::CertificateInvalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t54_sqlstates_map_to_the_advice_table() {
        let cases = [
            ("57P03", ErrorKind::StartingUp, "reboot"),
            ("28P01", ErrorKind::AuthFailed, "secret"),
            ("28000", ErrorKind::EncryptionRequired, "SSL is required (rds.force_ssl)"),
            ("3D000", ErrorKind::DatabaseMissing, "database"),
            ("53300", ErrorKind::TooManyConnections, "MaxConcurrency"),
            ("42501", ErrorKind::PermissionDenied, "rds_superuser"),
            ("55000", ErrorKind::PrerequisiteState, "rds.logical_replication"),
        ];
        for (code, kind, advice) in cases {
            let got = classify_sqlstate(&SqlState::from_code(code));
            assert_eq!(got, kind, "{code}");
            assert!(got.advice().unwrap().contains(advice), "{code}: {:?}", got.advice());
        }
    }

    #[test]
    fn t54_io_errors_map_to_network_advice() {
        let timeout = io::Error::new(io::ErrorKind::TimedOut, "x");
        assert_eq!(classify_io(&timeout), Some(ErrorKind::ConnectTimeout));
        assert!(ErrorKind::ConnectTimeout.advice().unwrap().contains("security group"));
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(classify_io(&refused), Some(ErrorKind::ConnectionRefused));
        assert!(ErrorKind::ConnectionRefused.advice().unwrap().contains("port"));
        assert!(ErrorKind::HostNotFound.advice().unwrap().contains("endpoint"));
    }

    #[test]
    fn every_kind_has_a_pgferry_step_error_name() {
        for kind in ErrorKind::ALL {
            assert!(kind.step_error_name().starts_with("Pgferry."), "{kind:?}");
        }
    }
}
