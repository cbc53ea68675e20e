//! The job: what to copy where. The one input a user writes.
//!
//! Unknown fields are rejected with their name (a typo must not silently change behaviour), and
//! every URL is parsed before anything connects, so a malformed job fails with one clear line and
//! nothing written.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pg::ConnSpec;

/// A replication job, as started from the console, a schedule or `pgferry run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Job {
    pub source: Endpoint,
    pub target: Endpoint,
    #[serde(default)]
    pub mode: Mode,
    /// How many chunks are copied or verified at once (the Map states' `MaxConcurrency`).
    /// Default: [`DEFAULT_MAX_CONCURRENCY`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

/// Default number of chunks in flight: enough to keep a 2-vCPU instance busy on both ends
/// without crowding `max_connections` (each chunk holds one connection per side).
pub const DEFAULT_MAX_CONCURRENCY: u32 = 4;

/// One side of the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// libpq URL or key/value string, naming the database. Accepted by the local CLI; in AWS the
    /// password comes from Secrets Manager instead.
    pub url: String,
}

/// How the target is brought in line with the source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// One-off copy into an empty or missing database.
    #[default]
    Snapshot,
}

/// Which side of the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Side {
    Source,
    Target,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Target => "target",
        }
    }
}

impl Job {
    /// Parses and validates a job document.
    pub fn from_json(text: &str) -> Result<Self> {
        let job: Job = serde_json::from_str(text).map_err(|e| Error::job(e.to_string()))?;
        job.validate()?;
        Ok(job)
    }

    /// Checks what serde cannot: that each URL is a connection string pgferry can use.
    pub fn validate(&self) -> Result<()> {
        for side in [Side::Source, Side::Target] {
            ConnSpec::parse(&self.endpoint(side).url).map_err(|e| Error::job(format!("{}.url: {e}", side.as_str())))?;
        }
        Ok(())
    }

    pub fn endpoint(&self, side: Side) -> &Endpoint {
        match side {
            Side::Source => &self.source,
            Side::Target => &self.target,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_job_defaults_to_snapshot() {
        let job = Job::from_json(r#"{"source":{"url":"postgresql://u@a/db"},"target":{"url":"postgresql://u@b/db"}}"#)
            .unwrap();
        assert_eq!(job.mode, Mode::Snapshot);
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
}
