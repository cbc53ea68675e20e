//! PostgreSQL connections: the one `connect` every step uses, and libpq strings for child tools.
//!
//! Every connection is TLS through rustls (verify-full against the embedded Amazon RDS bundle
//! unless told otherwise), has TCP keepalives and a user timeout so that NAT gateways cannot
//! silently cut it (RDS-CASES T53), names itself `pgferry:<step>:<run>` and pins the session
//! settings that make text output and hashes identical on both sides.

pub mod config;
pub mod quote;
pub mod tls;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::Client;
use tokio_postgres::config::{ChannelBinding, SslMode as PgSslMode, TargetSessionAttrs};
use tokio_postgres_rustls::MakeRustlsConnect;

pub use config::{ConnSpec, Secret, SslMode};
pub use quote::{QualifiedName, quote_ident, quote_literal};

use crate::error::{Error, Result};

/// Default `statement_timeout` of a pgferry session: long enough for one chunk, short enough that
/// a stuck statement ends before the Lambda's 15 minutes do.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(14 * 60);
/// Default `lock_timeout`: DDL on the target must not queue behind a user's long transaction.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Who opens a connection, and the session limits it runs under.
#[derive(Debug, Clone)]
pub struct Session {
    /// Step name, e.g. `copy`.
    pub step: String,
    /// Execution (run) id; shows in `pg_stat_activity.application_name`.
    pub run_id: String,
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
}

impl Session {
    pub fn new(step: impl Into<String>, run_id: impl Into<String>) -> Self {
        Self {
            step: step.into(),
            run_id: run_id.into(),
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }

    /// `pgferry:<step>:<run id>`, cut to the 63 bytes PostgreSQL keeps.
    pub fn application_name(&self) -> String {
        let mut name = format!("pgferry:{}:{}", self.step, self.run_id);
        if name.len() > 63 {
            let mut cut = 63;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            name.truncate(cut);
        }
        name
    }

    /// The SQL that pins the session: identical text forms on both sides, explicit timeouts, and
    /// `row_security = off`, so that a read which row-level security would filter fails instead of
    /// returning a silent subset (RDS-CASES T38).
    pub fn pin_sql(&self) -> String {
        format!(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; \
             SET extra_float_digits = 3; SET bytea_output = 'hex'; SET standard_conforming_strings = on; \
             SET client_min_messages = 'warning'; SET row_security = off; SET statement_timeout = {}; SET lock_timeout = {}; \
             SET idle_in_transaction_session_timeout = {}",
            self.statement_timeout.as_millis(),
            self.lock_timeout.as_millis(),
            // A crashed invocation must not hold locks on the target for longer than one more try.
            self.statement_timeout.as_millis(),
        )
    }
}

/// Opens a connection: resolve, dial, TLS, authenticate, pin the session.
///
/// The connection's background task is spawned on the current tokio runtime; it ends when the
/// returned client is dropped.
pub async fn connect(spec: &ConnSpec, session: &Session) -> Result<Client> {
    let config = driver_config(spec, session).await?;
    let tls = MakeRustlsConnect::new(tls::client_config(spec.sslmode, spec.sslrootcert.as_deref())?);
    let (client, connection) =
        config.connect(tls).await.map_err(|source| Error::Connect { endpoint: spec.endpoint(), source })?;
    let endpoint = spec.endpoint();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(%endpoint, error = %e, "connection ended with an error");
        }
    });
    client.batch_execute(&session.pin_sql()).await.map_err(|e| Error::db("pin session settings", e))?;
    Ok(client)
}

/// Translates a [`ConnSpec`] into the driver's configuration, resolving the host name ourselves
/// so that a DNS failure is classified as such (the driver reports it as an opaque I/O error).
async fn driver_config(spec: &ConnSpec, session: &Session) -> Result<tokio_postgres::Config> {
    let mut config = tokio_postgres::Config::new();
    config
        .user(&spec.user)
        .dbname(&spec.dbname)
        .port(spec.port)
        .application_name(session.application_name())
        .connect_timeout(spec.connect_timeout)
        .keepalives(spec.keepalives)
        .keepalives_idle(spec.keepalives_idle)
        .keepalives_interval(spec.keepalives_interval)
        .keepalives_retries(spec.keepalives_retries)
        .ssl_mode(match spec.sslmode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        })
        .target_session_attrs(match spec.target_session_attrs {
            config::SessionAttrs::Any => TargetSessionAttrs::Any,
            config::SessionAttrs::ReadWrite => TargetSessionAttrs::ReadWrite,
        })
        .channel_binding(if spec.require_channel_binding { ChannelBinding::Require } else { ChannelBinding::Prefer });
    if let Some(password) = &spec.password {
        config.password(password.expose());
    }
    if let Some(timeout) = spec.tcp_user_timeout {
        config.tcp_user_timeout(timeout);
    }
    if let Some(options) = &spec.options {
        config.options(options);
    }
    if spec.host.starts_with('/') {
        config.host_path(&spec.host);
        return Ok(config);
    }
    for addr in resolve(spec).await? {
        config.host(&spec.host).hostaddr(addr);
    }
    Ok(config)
}

/// The addresses to dial: `hostaddr` if given, else every address the host name resolves to.
pub async fn resolve(spec: &ConnSpec) -> Result<Vec<IpAddr>> {
    if let Some(addr) = spec.hostaddr {
        return Ok(vec![addr]);
    }
    if let Ok(addr) = spec.host.parse::<IpAddr>() {
        return Ok(vec![addr]);
    }
    let addrs: Vec<IpAddr> = tokio::net::lookup_host((spec.host.as_str(), spec.port))
        .await
        .map_err(|source| Error::Resolve { host: spec.host.clone(), source })?
        .map(|sa| sa.ip())
        .collect();
    if addrs.is_empty() {
        return Err(Error::Resolve {
            host: spec.host.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
        });
    }
    Ok(addrs)
}

/// How to run a libpq tool (`pg_dump`, `pg_dumpall`, `psql`) against the same server: a conninfo
/// string on the command line (no password in it, so `ps` shows none) and the password in the
/// child's environment. Keeps the root certificate file alive while the child runs.
#[derive(Debug)]
pub struct LibpqInvocation {
    /// `dbname=` argument value: a quoted key/value conninfo string.
    pub conninfo: String,
    /// Environment for the child (`PGPASSWORD`, `PGAPPNAME`, `PGOPTIONS`-free).
    pub env: Vec<(String, String)>,
    _rootcert: Option<TempFile>,
}

impl LibpqInvocation {
    /// Builds the invocation; writes the embedded RDS bundle to a private temporary file when the
    /// spec relies on it, because libpq reads roots only from files.
    pub fn new(spec: &ConnSpec, session: &Session, scratch: &std::path::Path) -> Result<Self> {
        let mut rootcert_file = None;
        let rootcert: Option<PathBuf> = match (&spec.sslrootcert, spec.sslmode) {
            (Some(path), _) => Some(path.clone()),
            (None, SslMode::VerifyCa | SslMode::VerifyFull) => {
                let f = TempFile::write(scratch, "rds-ca-bundle.pem", tls::RDS_CA_BUNDLE_PEM)?;
                let p = f.path.clone();
                rootcert_file = Some(f);
                Some(p)
            }
            (None, _) => None,
        };
        let mut kv: Vec<(&str, String)> = vec![
            ("host", spec.host.clone()),
            ("port", spec.port.to_string()),
            ("dbname", spec.dbname.clone()),
            ("user", spec.user.clone()),
            ("sslmode", spec.sslmode.as_str().to_string()),
            ("connect_timeout", spec.connect_timeout.as_secs().max(2).to_string()),
            ("keepalives", u8::from(spec.keepalives).to_string()),
            ("keepalives_idle", spec.keepalives_idle.as_secs().to_string()),
            ("keepalives_interval", spec.keepalives_interval.as_secs().to_string()),
            ("keepalives_count", spec.keepalives_retries.to_string()),
            ("application_name", session.application_name()),
        ];
        if let Some(addr) = spec.hostaddr {
            kv.push(("hostaddr", addr.to_string()));
        }
        if let Some(t) = spec.tcp_user_timeout {
            kv.push(("tcp_user_timeout", t.as_millis().to_string()));
        }
        if let Some(path) = rootcert {
            kv.push(("sslrootcert", path.display().to_string()));
        }
        if spec.require_channel_binding {
            kv.push(("channel_binding", "require".to_string()));
        }
        if let Some(options) = &spec.options {
            kv.push(("options", options.clone()));
        }
        let conninfo = kv.iter().map(|(k, v)| format!("{k}={}", conninfo_quote(v))).collect::<Vec<_>>().join(" ");
        let mut env = vec![("PGCONNECT_TIMEOUT".to_string(), spec.connect_timeout.as_secs().max(2).to_string())];
        if let Some(password) = &spec.password {
            env.push(("PGPASSWORD".to_string(), password.expose().to_string()));
        }
        Ok(Self { conninfo, env, _rootcert: rootcert_file })
    }
}

/// Quotes a conninfo value: single quotes, with `\` and `'` backslash-escaped (libpq's rules).
pub fn conninfo_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// A file removed when dropped.
#[derive(Debug)]
struct TempFile {
    path: PathBuf,
}

/// The effective user id of this process (the owner of `/proc/self`).
fn own_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// The default scratch directory: `pgferry-<uid>` under the system's temporary directory, one per
/// user, so that another user of a shared `/tmp` cannot hold it.
pub fn default_scratch() -> PathBuf {
    std::env::temp_dir().join(format!("pgferry-{}", own_uid().unwrap_or(0)))
}

/// Makes `dir` a directory only this user may enter (0700) when it does not exist; an existing
/// one is used only when it is a real directory of this user's (never a symbolic link, never
/// someone else's: files written there — the CA bundle child programs trust, a schema archive —
/// could be read or swapped). Its permissions are left as they are: the system's temporary
/// directory may be given as scratch, and files are created 0600, each under a fresh name.
pub fn private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let io = |e| Error::io(format!("create the private directory {}", dir.display()), e);
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io)?;
    let mine = own_uid().is_none_or(|uid| meta.uid() == uid);
    if !meta.is_dir() || !mine {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "it exists and is not a directory of this user's",
        )));
    }
    Ok(())
}

impl TempFile {
    /// A new file (0600, never an existing path or a symbolic link) under a fresh name in `dir`.
    fn write(dir: &std::path::Path, name: &str, data: &[u8]) -> Result<Self> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        private_dir(dir)?;
        let path = dir.join(format!("{}-{name}", rand::random::<u64>()));
        let err = |e| Error::io(format!("write {}", path.display()), e);
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(err)?;
        file.write_all(data).map_err(err)?;
        Ok(Self { path })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_directories_are_private_and_a_symlink_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("pgferry-private-{}", rand::random::<u64>()));
        let dir = base.join("scratch");
        private_dir(&dir).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        // An existing directory of this user's is used as it is (the system's temporary directory
        // may be the scratch: its permissions are never touched).
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o755);
        let tmp_mode = mode(&std::env::temp_dir());
        let _ = private_dir(&std::env::temp_dir()); // another user's for a non-root user: refused
        assert_eq!(mode(&std::env::temp_dir()), tmp_mode, "the temporary directory is left alone");
        let file = TempFile::write(&dir, "x.pem", b"x").unwrap();
        assert_eq!(mode(&file.path), 0o600);
        drop(file);
        // A symbolic link (possibly to someone else's directory) is not used.
        let link = base.join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(private_dir(&link).is_err());
        assert!(default_scratch().to_string_lossy().contains("pgferry-"));
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn application_name_names_step_and_run_within_63_bytes() {
        let s = Session::new("copy", "run-1");
        assert_eq!(s.application_name(), "pgferry:copy:run-1");
        let long = Session::new("copy", "x".repeat(100));
        assert_eq!(long.application_name().len(), 63);
    }

    #[test]
    fn t51_libpq_conninfo_round_trips_hard_values_and_keeps_the_password_out() {
        let spec = ConnSpec::parse("postgresql://u:p%40ss%3Aw%2Frd%23%25%5C%27%20x@h:5433/my%20db").unwrap();
        let inv = LibpqInvocation::new(&spec, &Session::new("schema", "r"), &std::env::temp_dir()).unwrap();
        assert!(!inv.conninfo.contains("p@ss"), "{}", inv.conninfo);
        assert!(inv.conninfo.contains("dbname='my db'"));
        assert!(inv.conninfo.contains("keepalives_idle='30'"));
        let reparsed = ConnSpec::parse(&inv.conninfo).unwrap();
        assert_eq!(reparsed.dbname, "my db");
        assert!(reparsed.sslrootcert.as_ref().unwrap().exists());
        let pw = inv.env.iter().find(|(k, _)| k == "PGPASSWORD").unwrap();
        assert_eq!(pw.1, "p@ss:w/rd#%\\' x");
    }

    #[test]
    fn pinned_settings_name_timeouts_explicitly() {
        let sql = Session::new("verify", "r").pin_sql();
        for needle in [
            "TimeZone = 'UTC'",
            "extra_float_digits = 3",
            "bytea_output = 'hex'",
            "statement_timeout = 840000",
            "lock_timeout = 30000",
        ] {
            assert!(sql.contains(needle), "{needle}");
        }
    }
}
