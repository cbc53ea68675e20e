//! What a step needs besides its input: the artifact store, credentials, AWS clients and scratch
//! space — and how a side of the job becomes a connection.
//!
//! Built once per process (per Lambda cold start, or per CLI run) and borrowed by every
//! invocation. Credentials are kept here, outside the state machine's state, so that passwords
//! never travel through step inputs and outputs.
//!
//! A side named by URL connects as written (a password in it is accepted only by the local CLI,
//! which takes it out of the job first). A side named by RDS instance or cluster is resolved
//! through the RDS API: endpoint and port (unless `host`/`port` override them), then the
//! password: `secretArn`, else an IAM auth token when `iamAuth` is set, else the instance's
//! RDS-managed master secret. Lookups and secrets are cached for the life of the process; a
//! secret is re-read once when the server rejects the password, because managed secrets rotate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::aws::rds::{DbFacts, ResourceKind};
use crate::aws::secrets::DbSecret;
use crate::aws::{AwsFailure, Clients};
use crate::error::{Error, ErrorKind, Result};
use crate::job::{Endpoint, Job, Network, Side};
use crate::pg::{self, ConnSpec, Secret, Session, SslMode};
use crate::step::{PreflightOutput, keys};
use crate::store::ArtifactStore;

/// The environment variable naming the artifact bucket (set by `infra/template.yaml`).
pub const ARTIFACT_BUCKET_VAR: &str = "PGFERRY_ARTIFACT_BUCKET";
pub use crate::seal::SEAL_SECRET_VAR;

/// Passwords for the job's endpoints, by side.
///
/// The CLI takes them out of the job's URLs before the state machine starts (so the state holds
/// URLs without passwords); in AWS they come from Secrets Manager.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    passwords: HashMap<Side, Secret>,
}

impl Credentials {
    /// Keeps the password of one side.
    pub fn set(&mut self, side: Side, password: Secret) {
        self.passwords.insert(side, password);
    }

    /// Removes the passwords from a job's URLs and keeps them here; returns the cleaned job.
    pub fn take_from(&mut self, job: &Job) -> Result<Job> {
        let mut clean = job.clone();
        for side in [Side::Source, Side::Target] {
            let Some(url) = &job.endpoint(side).url else { continue };
            let spec = ConnSpec::parse(url).map_err(|e| Error::job(format!("{}.url: {e}", side.as_str())))?;
            if let Some(password) = spec.password {
                self.set(side, password);
                let endpoint = match side {
                    Side::Source => &mut clean.source,
                    Side::Target => &mut clean.target,
                };
                endpoint.url = Some(strip_password(url));
            }
        }
        Ok(clean)
    }
}

/// The URL or key/value string without its password component: the userinfo's, and a
/// `password` query parameter.
fn strip_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                format!("{}@{host}", userinfo.split_once(':').map_or(userinfo, |(u, _)| u))
            }
            None => authority.to_string(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let kept: Vec<&str> = query.split('&').filter(|p| p.split('=').next() != Some("password")).collect();
                if kept.is_empty() { path.to_string() } else { format!("{path}?{}", kept.join("&")) }
            }
            None => tail.to_string(),
        };
        return format!("{scheme}://{authority}{tail}");
    }
    // key/value: rebuild from the parsed spec is lossy; drop the password pair textually instead.
    let spec_has_password = url.contains("password");
    if !spec_has_password {
        return url.to_string();
    }
    let mut out = Vec::new();
    let mut rest = url.trim();
    while !rest.is_empty() {
        let (pair, after) = split_kv_pair(rest);
        if !pair.trim_start().starts_with("password") {
            out.push(pair.trim().to_string());
        }
        rest = after.trim_start();
    }
    out.join(" ")
}

/// Splits the first `key=value` pair (value possibly quoted) off a key/value string.
fn split_kv_pair(s: &str) -> (&str, &str) {
    let bytes = s.as_bytes();
    let mut i = match s.find('=') {
        Some(i) => i + 1,
        None => return (s, ""),
    };
    while i < bytes.len() && bytes[i] == b' ' {
        i += 1;
    }
    if i < bytes.len() && bytes[i] == b'\'' {
        i += 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'\'' => {
                    i += 1;
                    break;
                }
                _ => i += 1,
            }
        }
    } else {
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
    }
    let i = i.min(bytes.len());
    s.split_at(i)
}

/// The AWS clients of the process, built on first use from the standard environment (or given
/// ready-made, as tests do with the emulator's endpoint).
#[derive(Debug, Clone, Default)]
pub struct AwsAccess {
    cell: Arc<tokio::sync::OnceCell<Clients>>,
}

impl AwsAccess {
    /// Uses these clients instead of building them from the environment.
    pub fn preset(clients: Clients) -> Self {
        Self { cell: Arc::new(tokio::sync::OnceCell::new_with(Some(clients))) }
    }

    /// The clients, built from the environment the first time.
    pub async fn clients(&self) -> Result<&Clients> {
        self.cell.get_or_try_init(|| Box::pin(Clients::from_env())).await
    }
}

/// Where a side's password comes from. Never holds the password itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// Written in the job's URL (local runs).
    Url,
    /// Taken out of the job's URL by the CLI.
    Cli,
    /// A Secrets Manager secret; `managed` when it is the instance's `MasterUserSecret`.
    Secret { id: String, managed: bool },
    /// A fresh RDS IAM auth token.
    IamToken,
    /// No password (the server may not need one).
    None,
}

impl CredentialSource {
    /// For reports: `RDS-managed secret arn:…`.
    pub fn describe(&self) -> String {
        match self {
            Self::Url => "the password in the job's URL".to_string(),
            Self::Cli => "the password given to the CLI".to_string(),
            Self::Secret { id, managed: true } => format!("RDS-managed secret {id}"),
            Self::Secret { id, managed: false } => format!("secret {id}"),
            Self::IamToken => "an RDS IAM auth token".to_string(),
            Self::None => "no password".to_string(),
        }
    }
}

/// A side of the job, ready to connect.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub spec: ConnSpec,
    /// What RDS said about the instance or cluster, when the side names one.
    pub rds: Option<DbFacts>,
    pub credential: CredentialSource,
}

/// Process-wide caches of RDS lookups and secrets (Lambda containers are reused).
#[derive(Debug, Default)]
struct Cache {
    rds: Mutex<HashMap<String, DbFacts>>,
    secrets: Mutex<HashMap<String, DbSecret>>,
}

/// Everything steps share within one process.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub store: ArtifactStore,
    pub credentials: Credentials,
    /// Private scratch directory (CA bundle for child tools); `/tmp` in Lambda.
    pub scratch: PathBuf,
    /// Directory of `pg_dump`/`pg_dumpall`; `None` means `PATH`.
    pub pg_bin_dir: Option<PathBuf>,
    /// AWS clients, built on first use.
    pub aws: AwsAccess,
    /// Where the functions run, from the deployment; a job's `network` takes precedence.
    pub network: Option<Network>,
    /// Whether the process runs as a Lambda function (changes advice about the network path).
    pub in_lambda: bool,
    /// Whether a password written in a job URL is accepted: by the local CLI only, since in AWS
    /// the job is stored in the execution history.
    pub allow_url_passwords: bool,
    /// The databases jobs may name as source and as target.
    pub allowed_sources: AllowList,
    pub allowed_targets: AllowList,
    cache: Arc<Cache>,
}

/// Variables naming the databases a deployment lets jobs read from and write to.
pub const ALLOWED_SOURCES_VAR: &str = "PGFERRY_ALLOWED_SOURCES";
pub const ALLOWED_TARGETS_VAR: &str = "PGFERRY_ALLOWED_TARGETS";

/// The databases a deployment lets a side of a job name (issue 23: whoever may start an
/// execution must not be able to copy any database in the account to any server): RDS instance
/// or cluster identifiers (or their ARNs), `host:port` or `host` for `url` sides, `*` for any.
/// Read from [`ALLOWED_SOURCES_VAR`] / [`ALLOWED_TARGETS_VAR`]; in Lambda an unset or empty
/// variable allows nothing, for the local CLI it allows anything.
#[derive(Debug, Clone)]
pub struct AllowList {
    variable: &'static str,
    /// `None`: anything.
    entries: Option<Vec<String>>,
}

impl AllowList {
    pub fn any(variable: &'static str) -> Self {
        Self { variable, entries: None }
    }

    pub fn parse(variable: &'static str, value: &str) -> Self {
        let entries: Vec<String> =
            value.split(',').map(|e| e.trim().to_ascii_lowercase()).filter(|e| !e.is_empty()).collect();
        if entries.iter().any(|e| e == "*") {
            return Self::any(variable);
        }
        Self { variable, entries: Some(entries) }
    }

    /// From the environment; unset means anything unless `strict` (Lambda), where it means nothing.
    pub fn from_env(variable: &'static str, strict: bool) -> Self {
        match std::env::var(variable) {
            Ok(value) => Self::parse(variable, &value),
            Err(_) if strict => Self { variable, entries: Some(vec![]) },
            Err(_) => Self::any(variable),
        }
    }

    /// Whether an RDS resource (`db` for instances, `cluster`) is allowed.
    fn permits_rds(&self, kind: ResourceKind, id: &str) -> bool {
        let Some(entries) = &self.entries else { return true };
        let id = id.to_ascii_lowercase();
        let arn_kind = match kind {
            ResourceKind::Instance => "db",
            ResourceKind::Cluster => "cluster",
        };
        entries.iter().any(|e| match e.strip_prefix("arn:") {
            // arn:partition:rds:region:account:db|cluster:identifier
            Some(rest) => {
                let parts: Vec<&str> = rest.split(':').collect();
                parts.len() == 6 && parts[1] == "rds" && parts[4] == arn_kind && parts[5] == id
            }
            None => *e == id,
        })
    }

    /// Whether a `url` side's server is allowed: `host:port` or `host` (any port).
    fn permits_host(&self, host: &str, port: u16) -> bool {
        let Some(entries) = &self.entries else { return true };
        let host = host.to_ascii_lowercase();
        let with_port = format!("{host}:{port}");
        entries.iter().any(|e| *e == host || *e == with_port)
    }

    fn describe(&self) -> String {
        match &self.entries {
            None => "*".to_string(),
            Some(e) if e.is_empty() => "(unset: nothing)".to_string(),
            Some(e) => e.join(","),
        }
    }

    fn refuse(&self, side: Side, endpoint: String) -> Error {
        Error::NotAllowed {
            side: side.as_str().to_string(),
            endpoint,
            variable: self.variable.to_string(),
            allowed: self.describe(),
        }
    }
}

impl StepContext {
    /// A local context (the CLI and tests): passwords in job URLs are accepted, AWS clients come
    /// from the environment on first use.
    pub fn new(store: ArtifactStore, credentials: Credentials) -> Self {
        Self {
            store,
            credentials,
            scratch: crate::pg::default_scratch(),
            pg_bin_dir: std::env::var_os("PGFERRY_PG_BIN").map(PathBuf::from),
            aws: AwsAccess::default(),
            network: None,
            in_lambda: false,
            allow_url_passwords: true,
            allowed_sources: AllowList::from_env(ALLOWED_SOURCES_VAR, false),
            allowed_targets: AllowList::from_env(ALLOWED_TARGETS_VAR, false),
            cache: Arc::default(),
        }
    }

    /// The context of a Lambda function, from its environment: artifacts in the bucket named by
    /// `PGFERRY_ARTIFACT_BUCKET`, sealed with the secret named by `PGFERRY_SEAL_SECRET` (else
    /// under `PGFERRY_ARTIFACT_DIR`, default `/tmp/pgferry-artifacts`), the functions' network from `PGFERRY_SECURITY_GROUP_IDS` /
    /// `PGFERRY_SUBNET_IDS`, AWS clients from the standard AWS environment (built here when the
    /// store needs them, else on first use).
    pub async fn from_env() -> Result<Self> {
        let bucket = std::env::var(ARTIFACT_BUCKET_VAR).ok().filter(|b| !b.is_empty());
        let mut ctx = match bucket {
            Some(bucket) => {
                let clients = Box::pin(Clients::from_env()).await?;
                let secret = std::env::var(SEAL_SECRET_VAR).ok().filter(|s| !s.is_empty()).ok_or_else(|| {
                    Error::job(format!(
                        "{SEAL_SECRET_VAR} is not set: with an artifact bucket, the functions seal what they \
                         write with the deployment's seal secret (the template creates it)"
                    ))
                })?;
                let key = Box::pin(seal_key_from_secret(&clients, &secret)).await?;
                Self::in_bucket(clients, bucket, key)
            }
            None => {
                let dir = std::env::var_os("PGFERRY_ARTIFACT_DIR")
                    .map_or_else(|| PathBuf::from("/tmp/pgferry-artifacts"), PathBuf::from);
                Self::new(ArtifactStore::local(dir), Credentials::default())
            }
        };
        ctx.network = Network::from_env();
        ctx.in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
        ctx.allow_url_passwords = !ctx.in_lambda;
        ctx.allowed_sources = AllowList::from_env(ALLOWED_SOURCES_VAR, ctx.in_lambda);
        ctx.allowed_targets = AllowList::from_env(ALLOWED_TARGETS_VAR, ctx.in_lambda);
        Ok(ctx)
    }

    /// A context whose artifacts live in an S3 bucket, reached through `clients` — the same
    /// clients (one configuration, one HTTP client) that serve the RDS and secret lookups.
    pub fn in_bucket(clients: Clients, bucket: impl Into<String>, seal_key: crate::seal::SealKey) -> Self {
        let store = ArtifactStore::s3(clients.s3.clone(), bucket, Some(seal_key));
        Self::new(store, Credentials::default()).with_aws(clients)
    }

    /// Uses these AWS clients (tests: the emulator).
    pub fn with_aws(mut self, clients: Clients) -> Self {
        self.aws = AwsAccess::preset(clients);
        self
    }

    /// The network the functions run in: the job's, else the deployment's.
    pub fn network_of<'a>(&'a self, job: &'a Job) -> Option<&'a Network> {
        job.network.as_ref().or(self.network.as_ref())
    }

    /// The connection spec of one side, with its password filled in.
    pub async fn conn_spec(&self, job: &Job, side: Side) -> Result<ConnSpec> {
        Ok(self.resolve(job, side).await?.spec)
    }

    /// Resolves one side: looks the RDS resource up, picks the credentials, builds the spec.
    /// The side must be on the deployment's allow-list (checked before any secret is read), and in
    /// Lambda its TLS must be `verify-full`.
    pub async fn resolve(&self, job: &Job, side: Side) -> Result<Resolved> {
        let resolved = self.resolve_allowed(job, side).await?;
        if self.in_lambda && resolved.spec.sslmode != crate::pg::SslMode::VerifyFull {
            return Err(Error::job(format!(
                "{}: sslmode {:?} is refused in AWS: connections are verify-full (the RDS CA bundle is built in)",
                side.as_str(),
                resolved.spec.sslmode
            )));
        }
        Ok(resolved)
    }

    fn allow_list(&self, side: Side) -> &AllowList {
        match side {
            Side::Source => &self.allowed_sources,
            Side::Target => &self.allowed_targets,
        }
    }

    /// Whether the deployment's allow-list for `side` names the job's database (`Pgferry.NotAllowed`
    /// otherwise). Reads nothing: checked before any lookup, secret or connection.
    pub fn check_allowed(&self, job: &Job, side: Side) -> Result<()> {
        let ep = job.endpoint(side);
        let allowed = self.allow_list(side);
        if let Some(url) = &ep.url {
            let spec = ConnSpec::parse(url).map_err(|e| Error::job(format!("{}.url: {e}", side.as_str())))?;
            if !allowed.permits_host(&spec.host, spec.port) {
                return Err(allowed.refuse(side, format!("{}:{}", spec.host, spec.port)));
            }
        } else if let Some((kind, id)) = ep.rds_resource()
            && !allowed.permits_rds(kind, id)
        {
            let what = match kind {
                ResourceKind::Instance => "RDS instance",
                ResourceKind::Cluster => "Aurora cluster",
            };
            return Err(allowed.refuse(side, format!("{what} {id}")));
        }
        Ok(())
    }

    async fn resolve_allowed(&self, job: &Job, side: Side) -> Result<Resolved> {
        self.check_allowed(job, side)?;
        let ep = job.endpoint(side);
        let name = side.as_str();
        if let Some(url) = &ep.url {
            let mut spec = ConnSpec::parse(url).map_err(|e| Error::job(format!("{name}.url: {e}")))?;
            let credential = if spec.password.is_some() {
                if !self.allow_url_passwords {
                    return Err(Error::job(format!(
                        "{name}.url holds a password, which the execution history now keeps: rotate it, and \
                         give the password through `secretArn` (Secrets Manager) instead"
                    )));
                }
                CredentialSource::Url
            } else if let Some(password) = self.credentials.passwords.get(&side) {
                spec.password = Some(password.clone());
                CredentialSource::Cli
            } else if let Some(id) = &ep.secret_arn {
                spec.password = Some(self.secret(id).await?.password);
                CredentialSource::Secret { id: id.clone(), managed: false }
            } else {
                CredentialSource::None
            };
            return Ok(Resolved { spec, rds: None, credential });
        }
        let Some((kind, id)) = ep.rds_resource() else {
            return Err(Error::job(format!("{name}: give exactly one of `url`, `rdsInstance`, `rdsCluster`")));
        };

        let db = self.rds_facts(kind, id).await?;
        let (secret, credential) = if let Some(id) = &ep.secret_arn {
            (Some(self.secret(id).await?), CredentialSource::Secret { id: id.clone(), managed: false })
        } else if ep.iam_auth {
            (None, CredentialSource::IamToken)
        } else if let Some(arn) = &db.master_secret_arn {
            (Some(self.secret(arn).await?), CredentialSource::Secret { id: arn.clone(), managed: true })
        } else {
            return Err(Error::job(format!(
                "{name}: {} has no RDS-managed master secret: give `secretArn` or `iamAuth: true`",
                db.label()
            )));
        };
        let mut spec = endpoint_spec(side, ep, &db, secret.as_ref())?;
        if credential == CredentialSource::IamToken {
            spec.password = Some(self.iam_token(&db, &spec.user).await?);
        }
        Ok(Resolved { spec, rds: Some(db), credential })
    }

    /// What RDS says about an instance or cluster (cached for the process).
    pub async fn rds_facts(&self, kind: ResourceKind, id: &str) -> Result<DbFacts> {
        let key = format!("{kind:?}:{id}");
        if let Some(facts) = self.cache.rds.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(facts);
        }
        let clients = self.aws.clients().await?;
        // Boxed: the SDK's futures are deep types, and every step's future would carry them.
        let facts = match kind {
            ResourceKind::Instance => Box::pin(crate::aws::rds::describe_instance(clients, id)).await?,
            ResourceKind::Cluster => Box::pin(crate::aws::rds::describe_cluster(clients, id)).await?,
        };
        if let Ok(mut cache) = self.cache.rds.lock() {
            cache.insert(key, facts.clone());
        }
        Ok(facts)
    }

    /// A database secret (cached for the process until [`StepContext::forget_secret`]).
    pub async fn secret(&self, id: &str) -> Result<DbSecret> {
        if let Some(secret) = self.cache.secrets.lock().ok().and_then(|c| c.get(id).cloned()) {
            return Ok(secret);
        }
        let secret = Box::pin(crate::aws::secrets::fetch(self.aws.clients().await?, id)).await?;
        if let Ok(mut cache) = self.cache.secrets.lock() {
            cache.insert(id.to_string(), secret.clone());
        }
        Ok(secret)
    }

    /// Drops a cached secret so that the next use reads its current version.
    pub fn forget_secret(&self, id: &str) {
        if let Ok(mut cache) = self.cache.secrets.lock() {
            cache.remove(id);
        }
    }

    fn forget_rds(&self) {
        if let Ok(mut cache) = self.cache.rds.lock() {
            cache.clear();
        }
    }

    /// An IAM auth token for `user`, signed for the instance's real endpoint (not a `host`
    /// override: RDS checks the token against its own name).
    async fn iam_token(&self, db: &DbFacts, user: &str) -> Result<Secret> {
        use aws_sdk_rds::auth_token::{AuthTokenGenerator, Config};
        let clients = self.aws.clients().await?;
        let failed = |message: String| Error::Aws {
            operation: "rds-db:connect (IAM auth token)".to_string(),
            resource: db.identifier.clone(),
            failure: AwsFailure::AccessDenied,
            code: None,
            message,
        };
        let (Some(host), Some(port)) = (db.address.as_deref(), db.port) else {
            return Err(failed(format!("{} has no endpoint yet", db.label())));
        };
        let config = Config::builder()
            .hostname(host)
            .port(u64::from(port))
            .username(user)
            .region(aws_config::Region::new(db.region.clone()))
            .build()
            .map_err(|e| failed(e.to_string()))?;
        let generator = AuthTokenGenerator::new(config);
        let token = Box::pin(generator.auth_token(&clients.config)).await.map_err(|e| failed(e.to_string()))?;
        Ok(Secret::new(token.as_str()))
    }

    /// Connects to one side of the job for a step. A password rejected while it came from a
    /// secret re-reads the secret once (it may have rotated); a connection failure is explained
    /// with what preflight learned about that side.
    pub async fn connect(&self, job: &Job, side: Side, step: &str, run_id: &str) -> Result<tokio_postgres::Client> {
        let resolved = self.resolve(job, side).await?;
        let session = Session::new(step, run_id);
        let err = match pg::connect(&resolved.spec, &session).await {
            Ok(client) => return Ok(client),
            Err(e) => e,
        };
        let rotating = matches!(resolved.credential, CredentialSource::Secret { .. } | CredentialSource::IamToken);
        let err = if rotating && err.kind() == ErrorKind::AuthFailed {
            if let CredentialSource::Secret { id, .. } = &resolved.credential {
                self.forget_secret(id);
            }
            tracing::info!(
                side = side.as_str(),
                credentials = %resolved.credential.describe(),
                "password rejected: reading the credentials again once"
            );
            match pg::connect(&self.resolve(job, side).await?.spec, &session).await {
                Ok(client) => return Ok(client),
                Err(e) => e,
            }
        } else {
            if matches!(err.kind(), ErrorKind::HostNotFound | ErrorKind::ConnectionRefused) {
                // The instance may have moved (renamed, restored, failed over): look it up afresh
                // on the retry the state machine will make.
                self.forget_rds();
            }
            err
        };
        Err(self.explain(run_id, side, err).await)
    }

    /// Wraps a connection failure with what preflight stored about that side, when it helps.
    pub async fn explain(&self, run_id: &str, side: Side, err: Error) -> Error {
        if matches!(err, Error::Explained { .. }) {
            return err;
        }
        let Ok(report) = self.store.get_json::<PreflightOutput>(&keys::preflight(run_id)).await else {
            return err;
        };
        let Some(facts) = report.facts.iter().find(|f| f.side == side) else {
            return err;
        };
        match crate::step::explain(facts, err.kind()) {
            Some(explanation) => Error::Explained { source: Box::new(err), explanation },
            None => err,
        }
    }

    /// Path of a PostgreSQL client program.
    pub fn pg_tool(&self, name: &str) -> PathBuf {
        match &self.pg_bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }
}

/// The connection spec of an RDS-named side: endpoint (or the `host`/`port` override), user,
/// database and TLS settings from the job, password from the secret.
pub fn endpoint_spec(side: Side, ep: &Endpoint, db: &DbFacts, secret: Option<&DbSecret>) -> Result<ConnSpec> {
    let name = side.as_str();
    let host =
        ep.host.clone().or_else(|| db.address.clone()).or_else(|| secret.and_then(|s| s.host.clone())).ok_or_else(
            || Error::job(format!("{name}: {} has no endpoint yet (is it still being created?)", db.label())),
        )?;
    let user = ep
        .user
        .clone()
        .or_else(|| secret.and_then(|s| s.username.clone()))
        .or_else(|| db.master_username.clone())
        .ok_or_else(|| Error::job(format!("{name}: no user: give `user`")))?;
    let dbname = ep.database.clone().ok_or_else(|| Error::job(format!("{name}: `database` is required")))?;
    let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut spec = ConnSpec::parse(&format!("host={} user={} dbname={}", quote(&host), quote(&user), quote(&dbname)))
        .map_err(|e| Error::job(format!("{name}: {e}")))?;
    spec.port = ep.port.or(db.port).or_else(|| secret.and_then(|s| s.port)).unwrap_or(pg::config::DEFAULT_PORT);
    spec.sslmode = ep.ssl_mode.unwrap_or(SslMode::VerifyFull);
    spec.sslrootcert = ep.ssl_root_cert.clone();
    spec.password = secret.map(|s| s.password.clone());
    Ok(spec)
}

/// The deployment's seal key, from its secret's text (never logged).
async fn seal_key_from_secret(clients: &Clients, secret_id: &str) -> Result<crate::seal::SealKey> {
    let (text, _) = crate::aws::secrets::read_text(clients, secret_id).await?;
    let text = text.ok_or_else(|| Error::job(format!("seal secret {secret_id} holds no text")))?;
    crate::seal::SealKey::from_secret(&text)
}

#[cfg(test)]
mod tests {

    #[test]
    fn allow_lists_match_identifiers_arns_and_hosts_and_nothing_else() {
        let list = AllowList::parse(
            "PGFERRY_ALLOWED_SOURCES",
            "prod-db, arn:aws:rds:eu-west-1:123456789012:cluster:Aurora-Main, db.example.com:5432, 10.0.0.5",
        );
        assert!(list.permits_rds(ResourceKind::Instance, "PROD-DB"));
        assert!(!list.permits_rds(ResourceKind::Instance, "prod-db-2"));
        assert!(list.permits_rds(ResourceKind::Cluster, "aurora-main"));
        assert!(!list.permits_rds(ResourceKind::Instance, "aurora-main"), "an ARN names its kind");
        assert!(list.permits_host("db.example.com", 5432));
        assert!(!list.permits_host("db.example.com", 5433));
        assert!(list.permits_host("10.0.0.5", 6543), "a host alone allows any port");
        assert!(!list.permits_host("evil.example.com", 5432));
        let any = AllowList::parse("PGFERRY_ALLOWED_TARGETS", " * ");
        assert!(any.permits_host("anything", 1) && any.permits_rds(ResourceKind::Cluster, "x"));
        // An empty value allows nothing; so does an unset variable in Lambda.
        let none = AllowList::parse("PGFERRY_ALLOWED_TARGETS", "");
        assert!(!none.permits_host("127.0.0.1", 5432) && !none.permits_rds(ResourceKind::Instance, "db"));
        let strict = AllowList::from_env("PGFERRY_TEST_NEVER_SET_ALLOW_VARIABLE", true);
        assert!(!strict.permits_host("127.0.0.1", 5432));
        assert!(AllowList::from_env("PGFERRY_TEST_NEVER_SET_ALLOW_VARIABLE", false).permits_host("h", 1));
        let err = none.refuse(crate::job::Side::Target, "h:1".to_string());
        assert_eq!(err.kind().step_error_name(), "Pgferry.NotAllowed");
    }

    use super::*;

    #[tokio::test]
    async fn passwords_are_taken_out_of_urls_and_kept_aside() {
        let job = Job::from_json(
            r#"{"source":{"url":"postgresql://postgres:p%40ss%3Aw@127.0.0.1:55432/shop?sslmode=verify-full"},
                "target":{"url":"host=127.0.0.1 user=dbadmin password='a b\\'c' dbname=shop"}}"#,
        )
        .unwrap();
        let mut creds = Credentials::default();
        let clean = creds.take_from(&job).unwrap();
        assert_eq!(clean.source.url.as_deref(), Some("postgresql://postgres@127.0.0.1:55432/shop?sslmode=verify-full"));
        assert_eq!(clean.target.url.as_deref(), Some("host=127.0.0.1 user=dbadmin dbname=shop"));
        assert_eq!(
            strip_password(
                "postgresql://postgres@db:5432/shop?sslmode=verify-full&password=hunter2&application_name=x"
            ),
            "postgresql://postgres@db:5432/shop?sslmode=verify-full&application_name=x"
        );
        assert_eq!(strip_password("postgres://u@db/shop?password=hunter2"), "postgres://u@db/shop");
        let ctx = StepContext::new(ArtifactStore::local("/nonexistent"), creds);
        assert_eq!(ctx.conn_spec(&clean, Side::Source).await.unwrap().password.unwrap().expose(), "p@ss:w");
        assert_eq!(ctx.conn_spec(&clean, Side::Target).await.unwrap().password.unwrap().expose(), "a b'c");
        let resolved = ctx.resolve(&clean, Side::Source).await.unwrap();
        assert_eq!(resolved.credential, CredentialSource::Cli);
    }

    #[tokio::test]
    async fn a_password_in_a_job_url_is_refused_in_aws() {
        let job = Job::from_json(
            r#"{"source":{"url":"postgresql://postgres:hunter2@db/shop"},"target":{"url":"postgresql://u@b/d"}}"#,
        )
        .unwrap();
        let mut ctx = StepContext::new(ArtifactStore::local("/nonexistent"), Credentials::default());
        ctx.allow_url_passwords = false;
        let err = ctx.conn_spec(&job, Side::Source).await.unwrap_err().to_string();
        assert!(err.contains("secretArn") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn an_rds_side_is_dialled_at_its_endpoint_unless_overridden() {
        let db: DbFacts = serde_json::from_value(serde_json::json!({
            "kind": "instance", "identifier": "prod-db", "arn": null, "region": "us-east-1", "status": "available",
            "engine": "postgres", "engineVersion": "15.4", "address": "prod-db.x.us-east-1.rds.amazonaws.com",
            "port": 5432, "masterUsername": "postgres", "masterSecretArn": "arn:s", "masterSecretStatus": "active",
            "securityGroupIds": [], "vpcId": null, "subnetIds": [], "publiclyAccessible": false,
            "caCertificate": "rds-ca-rsa2048-g1", "iamAuthEnabled": false, "storageType": "gp3",
            "allocatedStorageGib": 20, "maxAllocatedStorageGib": null, "parameterGroup": "default.postgres15",
            "parameterApplyStatus": "in-sync", "pendingModifications": [], "resourceId": "db-1"
        }))
        .unwrap();
        let secret = crate::aws::secrets::parse("arn:s", r#"{"username":"app","password":"pw"}"#).unwrap();
        let ep =
            Endpoint { rds_instance: Some("prod-db".into()), database: Some("shop".into()), ..Endpoint::default() };
        let spec = endpoint_spec(Side::Source, &ep, &db, Some(&secret)).unwrap();
        assert_eq!(
            (spec.host.as_str(), spec.port, spec.user.as_str()),
            ("prod-db.x.us-east-1.rds.amazonaws.com", 5432, "app")
        );
        assert_eq!(spec.sslmode, SslMode::VerifyFull);
        let ep = Endpoint { host: Some("127.0.0.1".into()), port: Some(55432), user: Some("o'k".into()), ..ep };
        let spec = endpoint_spec(Side::Source, &ep, &db, Some(&secret)).unwrap();
        assert_eq!((spec.host.as_str(), spec.port, spec.user.as_str()), ("127.0.0.1", 55432, "o'k"));
        assert_eq!(spec.password.unwrap().expose(), "pw");
    }
}
