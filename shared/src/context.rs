//! What a step needs besides its input: the artifact store, credentials and scratch space.
//!
//! Built once per process (per Lambda cold start, or per CLI run) and borrowed by every
//! invocation. Credentials are kept here, outside the state machine's state, so that passwords
//! never travel through step inputs and outputs.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::job::{Job, Side};
use crate::pg::{self, ConnSpec, Secret, Session};
use crate::store::ArtifactStore;

/// Passwords for the job's endpoints, by side.
///
/// The CLI takes them out of the job's URLs before the state machine starts (so the state holds
/// URLs without passwords); in AWS they will come from Secrets Manager.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    passwords: HashMap<Side, Secret>,
}

impl Credentials {
    pub fn set(&mut self, side: Side, password: Secret) {
        self.passwords.insert(side, password);
    }

    /// Removes the passwords from a job's URLs and keeps them here; returns the cleaned job.
    pub fn take_from(&mut self, job: &Job) -> Result<Job> {
        let mut clean = job.clone();
        for side in [Side::Source, Side::Target] {
            let spec = ConnSpec::parse(&job.endpoint(side).url)
                .map_err(|e| Error::job(format!("{}.url: {e}", side.as_str())))?;
            if let Some(password) = spec.password {
                self.set(side, password);
                let endpoint = match side {
                    Side::Source => &mut clean.source,
                    Side::Target => &mut clean.target,
                };
                endpoint.url = strip_password(&endpoint.url);
            }
        }
        Ok(clean)
    }
}

/// The URL or key/value string without its password component.
fn strip_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if let Some((userinfo, host)) = authority.rsplit_once('@') {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            return format!("{scheme}://{user}@{host}{tail}");
        }
        return url.to_string();
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

/// Everything steps share within one process.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub store: ArtifactStore,
    pub credentials: Credentials,
    /// Private scratch directory (CA bundle for child tools); `/tmp` in Lambda.
    pub scratch: PathBuf,
    /// Directory of `pg_dump`/`pg_dumpall`; `None` means `PATH`.
    pub pg_bin_dir: Option<PathBuf>,
}

impl StepContext {
    pub fn new(store: ArtifactStore, credentials: Credentials) -> Self {
        Self {
            store,
            credentials,
            scratch: std::env::temp_dir().join("pgferry"),
            pg_bin_dir: std::env::var_os("PGFERRY_PG_BIN").map(PathBuf::from),
        }
    }

    /// The context of a Lambda function, from its environment: artifacts under
    /// `PGFERRY_ARTIFACT_DIR` (default `/tmp/pgferry-artifacts`) until the S3 store lands.
    pub fn from_env() -> Self {
        let dir = std::env::var_os("PGFERRY_ARTIFACT_DIR")
            .map_or_else(|| PathBuf::from("/tmp/pgferry-artifacts"), PathBuf::from);
        Self::new(ArtifactStore::local(dir), Credentials::default())
    }

    /// The connection spec of one side, with its password filled in.
    pub fn conn_spec(&self, job: &Job, side: Side) -> Result<ConnSpec> {
        let mut spec =
            ConnSpec::parse(&job.endpoint(side).url).map_err(|e| Error::job(format!("{}.url: {e}", side.as_str())))?;
        if spec.password.is_none() {
            spec.password = self.credentials.passwords.get(&side).cloned();
        }
        Ok(spec)
    }

    /// Connects to one side of the job for a step.
    pub async fn connect(&self, job: &Job, side: Side, step: &str, run_id: &str) -> Result<tokio_postgres::Client> {
        let spec = self.conn_spec(job, side)?;
        pg::connect(&spec, &Session::new(step, run_id)).await
    }

    /// Path of a PostgreSQL client program.
    pub fn pg_tool(&self, name: &str) -> PathBuf {
        match &self.pg_bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_taken_out_of_urls_and_kept_aside() {
        let job = Job::from_json(
            r#"{"source":{"url":"postgresql://postgres:p%40ss%3Aw@127.0.0.1:55432/shop?sslmode=verify-full"},
                "target":{"url":"host=127.0.0.1 user=dbadmin password='a b\\'c' dbname=shop"}}"#,
        )
        .unwrap();
        let mut creds = Credentials::default();
        let clean = creds.take_from(&job).unwrap();
        assert_eq!(clean.source.url, "postgresql://postgres@127.0.0.1:55432/shop?sslmode=verify-full");
        assert_eq!(clean.target.url, "host=127.0.0.1 user=dbadmin dbname=shop");
        let ctx = StepContext::new(ArtifactStore::local("/nonexistent"), creds);
        assert_eq!(ctx.conn_spec(&clean, Side::Source).unwrap().password.unwrap().expose(), "p@ss:w");
        assert_eq!(ctx.conn_spec(&clean, Side::Target).unwrap().password.unwrap().expose(), "a b'c");
    }
}
