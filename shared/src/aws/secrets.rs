//! Database credentials from AWS Secrets Manager.
//!
//! RDS-managed master secrets (`MasterUserSecret`) and the console's "credentials for an RDS
//! database" secrets are JSON objects with `username` and `password` (and optionally `host`,
//! `port`, `dbname`). The secret's text never reaches an error message: a malformed secret is
//! described by which field is missing or has the wrong type, never by its content.

use serde_json::Value;

use super::{Clients, sdk_error};
use crate::error::{Error, Result};
use crate::pg::Secret;

/// The parts of a database secret pgferry uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSecret {
    pub username: Option<String>,
    pub password: Secret,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub dbname: Option<String>,
    /// `VersionId` read, for logs (not secret).
    pub version_id: Option<String>,
}

/// Reads the current version of a secret (by ARN or name): its text (`None` for a binary secret)
/// and version id.
pub async fn read_text(clients: &Clients, secret_id: &str) -> Result<(Option<String>, Option<String>)> {
    let out = clients
        .secrets
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| sdk_error("secretsmanager:GetSecretValue", secret_id, e))?;
    Ok((out.secret_string().map(str::to_string), out.version_id().map(str::to_string)))
}

/// Reads the current version of a database secret (by ARN or name).
pub async fn fetch(clients: &Clients, secret_id: &str) -> Result<DbSecret> {
    let (text, version_id) = read_text(clients, secret_id).await?;
    let text = text.ok_or_else(|| invalid(secret_id, "holds binary data, not a JSON text"))?;
    let mut secret = parse(secret_id, &text)?;
    secret.version_id = version_id;
    Ok(secret)
}

fn invalid(secret_id: &str, reason: &str) -> Error {
    Error::job(format!("secret {secret_id} {reason}: it must be a JSON object with `username` and `password`"))
}

/// Parses a secret's JSON text without ever quoting it.
pub fn parse(secret_id: &str, text: &str) -> Result<DbSecret> {
    let value: Value = serde_json::from_str(text).map_err(|_| invalid(secret_id, "is not valid JSON"))?;
    let Value::Object(map) = value else {
        return Err(invalid(secret_id, "is not a JSON object"));
    };
    let string = |key: &str| -> Result<Option<String>> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(secret_id, &format!("has a non-string `{key}`"))),
        }
    };
    let password = string("password")?.ok_or_else(|| invalid(secret_id, "has no `password`"))?;
    let port = match map.get("port") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| invalid(secret_id, "has an invalid `port`"))?,
        ),
        Some(Value::String(s)) => Some(s.parse().map_err(|_| invalid(secret_id, "has an invalid `port`"))?),
        Some(_) => return Err(invalid(secret_id, "has an invalid `port`")),
    };
    Ok(DbSecret {
        username: string("username")?,
        password: Secret::new(password),
        host: string("host")?,
        port,
        dbname: string("dbname")?,
        version_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_rds_managed_secret_is_parsed() {
        let s = parse("arn:x", r#"{"username":"postgres","password":"p@ss:w/rd#%\\' x"}"#).unwrap();
        assert_eq!(s.username.as_deref(), Some("postgres"));
        assert_eq!(s.password.expose(), "p@ss:w/rd#%\\' x");
        let s = parse("arn:x", r#"{"username":"u","password":"p","host":"h","port":"5433","dbname":"d"}"#).unwrap();
        assert_eq!((s.host.as_deref(), s.port, s.dbname.as_deref()), (Some("h"), Some(5433), Some("d")));
    }

    #[test]
    fn a_malformed_secret_is_described_without_its_content() {
        for text in [r#"{"username":"u","pass":"hunter2"}"#, "hunter2", r#"{"password":["hunter2"]}"#, r#"["hunter2"]"#]
        {
            let err = parse("arn:x", text).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("arn:x"), "{err}");
        }
    }
}
