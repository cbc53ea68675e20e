//! Connection strings: libpq URLs and key/value strings, parsed once into [`ConnSpec`].
//!
//! Users paste libpq strings from `psql`, RDS console snippets and secrets. tokio-postgres knows
//! only part of libpq's vocabulary and does not percent-decode the way libpq does, so pgferry
//! parses the string itself (RDS-CASES T51), translates the keys libpq and tokio-postgres name
//! differently (`keepalives_count` → retries, T52), and rejects with a reason the keys it cannot
//! honour instead of silently ignoring them. The password never appears in `Debug` output.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;

use crate::error::{Error, Result};

/// Default TCP keepalive idle time: well under the 350 s idle cut-off of NAT gateways and NLBs
/// (RDS-CASES T53), short enough that a dead peer is noticed within a couple of minutes.
pub const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(30);
/// Default interval between unanswered keepalive probes.
pub const DEFAULT_KEEPALIVES_INTERVAL: Duration = Duration::from_secs(10);
/// Default number of unanswered probes before the kernel drops the connection.
pub const DEFAULT_KEEPALIVES_RETRIES: u32 = 5;
/// Default `TCP_USER_TIMEOUT`: how long sent data may stay unacknowledged. Matches the keepalive
/// budget (30 s + 5 × 10 s) so both detectors agree on when a peer is gone.
pub const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(80);
/// Default connect timeout; a security group that drops SYNs shows up as this timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default PostgreSQL port.
pub const DEFAULT_PORT: u16 = 5432;

/// libpq `sslmode`, with libpq's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS if the server offers it, no certificate check; plain TCP otherwise.
    Prefer,
    /// TLS, certificate checked only if a root certificate file is given (libpq semantics).
    Require,
    /// TLS, chain checked against the roots, host name not checked.
    VerifyCa,
    /// TLS, chain and host name checked. pgferry's default.
    VerifyFull,
}

impl SslMode {
    pub fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            "disable" => Self::Disable,
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(Error::conn_string(format!(
                    "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// A password that does not print.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is handed to a driver or a child process.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Whether the server must accept writes (`target_session_attrs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAttrs {
    Any,
    ReadWrite,
}

/// Everything needed to open one PostgreSQL connection, parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnSpec {
    /// Host name (verified against the certificate and sent as SNI) or a Unix socket directory.
    pub host: String,
    /// Address to dial instead of resolving `host` (libpq `hostaddr`).
    pub hostaddr: Option<std::net::IpAddr>,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    pub password: Option<Secret>,
    pub sslmode: SslMode,
    /// Root certificates file; `None` means the Amazon RDS bundle embedded in the binary.
    pub sslrootcert: Option<PathBuf>,
    pub keepalives: bool,
    pub keepalives_idle: Duration,
    pub keepalives_interval: Duration,
    pub keepalives_retries: u32,
    /// `None` leaves the kernel default (libpq `tcp_user_timeout=0`).
    pub tcp_user_timeout: Option<Duration>,
    pub connect_timeout: Duration,
    /// Extra server options (`-c name=value …`), passed through as libpq does.
    pub options: Option<String>,
    pub target_session_attrs: SessionAttrs,
    /// `channel_binding=require`.
    pub require_channel_binding: bool,
}

impl ConnSpec {
    /// Parses a libpq URL (`postgresql://…`, `postgres://…`) or key/value string (`host=… …`).
    pub fn parse(input: &str) -> Result<Self> {
        let trimmed = input.trim();
        let pairs = if trimmed.starts_with("postgresql://") || trimmed.starts_with("postgres://") {
            parse_url(trimmed)?
        } else if trimmed.contains("://") {
            return Err(Error::conn_string(
                "only postgresql:// and postgres:// URLs are connection strings".to_string(),
            ));
        } else {
            parse_key_values(trimmed)?
        };
        Self::from_pairs(pairs)
    }

    /// The same connection to another database on the same server.
    pub fn with_dbname(&self, dbname: &str) -> Self {
        Self { dbname: dbname.to_string(), ..self.clone() }
    }

    /// `host:port/dbname` for messages: never the user's password, never the full URL.
    pub fn endpoint(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.dbname)
    }

    fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self> {
        let mut spec = ConnSpec {
            host: String::new(),
            hostaddr: None,
            port: DEFAULT_PORT,
            dbname: String::new(),
            user: String::new(),
            password: None,
            sslmode: SslMode::VerifyFull,
            sslrootcert: None,
            keepalives: true,
            keepalives_idle: DEFAULT_KEEPALIVES_IDLE,
            keepalives_interval: DEFAULT_KEEPALIVES_INTERVAL,
            keepalives_retries: DEFAULT_KEEPALIVES_RETRIES,
            tcp_user_timeout: Some(DEFAULT_TCP_USER_TIMEOUT),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            options: None,
            target_session_attrs: SessionAttrs::Any,
            require_channel_binding: false,
        };
        for (key, value) in pairs {
            spec.apply(&key, value)?;
        }
        if spec.host.is_empty() {
            return Err(Error::conn_string("no host given".to_string()));
        }
        if spec.user.is_empty() {
            return Err(Error::conn_string("no user given".to_string()));
        }
        if spec.dbname.is_empty() {
            spec.dbname = spec.user.clone();
        }
        Ok(spec)
    }

    fn apply(&mut self, key: &str, value: String) -> Result<()> {
        let unsupported = |why: &str| Err(Error::conn_string(format!("`{key}` is not supported: {why}")));
        match key {
            "host" => {
                if value.contains(',') {
                    return unsupported("give exactly one host (use an RDS Proxy or cluster endpoint for failover)");
                }
                self.host = value;
            }
            "hostaddr" => {
                self.hostaddr = Some(
                    value
                        .parse()
                        .map_err(|_| Error::conn_string(format!("hostaddr `{value}` is not an IP address")))?,
                );
            }
            "port" => {
                self.port =
                    value.parse().map_err(|_| Error::conn_string(format!("port `{value}` is not a port number")))?;
            }
            "dbname" => self.dbname = value,
            "user" => self.user = value,
            "password" => self.password = Some(Secret::new(value)),
            "sslmode" => self.sslmode = SslMode::parse(&value)?,
            "requiressl" => {
                if parse_bool(key, &value)? {
                    self.sslmode = SslMode::Require;
                }
            }
            "sslrootcert" => {
                // libpq's `system` means the OS store; pgferry trusts only explicit roots.
                if value == "system" {
                    return unsupported("pgferry trusts the embedded Amazon RDS bundle or a file you name");
                }
                self.sslrootcert = Some(PathBuf::from(value));
            }
            "sslcert" | "sslkey" | "sslpassword" => {
                return unsupported(
                    "client certificates are not used by RDS; authenticate with a password or IAM token",
                );
            }
            "sslcrl" | "sslcrldir" => return unsupported("certificate revocation lists are not checked"),
            "sslcompression" => {
                if parse_bool(key, &value)? {
                    return unsupported("TLS compression is insecure and disabled in every modern TLS stack");
                }
            }
            "sslsni" => {
                if !parse_bool(key, &value)? {
                    return unsupported("SNI is always sent so that the certificate can be verified");
                }
            }
            "ssl_min_protocol_version" => match value.as_str() {
                "TLSv1.2" | "TLSv1.3" => {}
                _ => return unsupported("pgferry speaks TLS 1.2 and 1.3 only"),
            },
            "ssl_max_protocol_version" => {}
            "keepalives" => self.keepalives = parse_bool(key, &value)?,
            "keepalives_idle" => self.keepalives_idle = Duration::from_secs(parse_u64(key, &value)?),
            "keepalives_interval" => self.keepalives_interval = Duration::from_secs(parse_u64(key, &value)?),
            // libpq says `keepalives_count`, tokio-postgres says retries (T52).
            "keepalives_count" | "keepalives_retries" => {
                self.keepalives_retries = u32::try_from(parse_u64(key, &value)?)
                    .map_err(|_| Error::conn_string(format!("{key} `{value}` is too large")))?;
            }
            // libpq: milliseconds, 0 = kernel default.
            "tcp_user_timeout" => {
                let ms = parse_u64(key, &value)?;
                self.tcp_user_timeout = (ms > 0).then(|| Duration::from_millis(ms));
            }
            // libpq: seconds, 0 = wait forever; pgferry never waits forever.
            "connect_timeout" => {
                let secs = parse_u64(key, &value)?;
                self.connect_timeout =
                    if secs == 0 { DEFAULT_CONNECT_TIMEOUT } else { Duration::from_secs(secs.max(2)) };
            }
            "options" => self.options = Some(value),
            // pgferry names every session `pgferry:<step>:<run>` so that DBAs can find it.
            "application_name" | "fallback_application_name" => {}
            "client_encoding" => {
                if !value.eq_ignore_ascii_case("utf8") && !value.eq_ignore_ascii_case("utf-8") {
                    return unsupported("pgferry always talks UTF8 to the server");
                }
            }
            "target_session_attrs" => {
                self.target_session_attrs = match value.as_str() {
                    "any" => SessionAttrs::Any,
                    "read-write" | "primary" => SessionAttrs::ReadWrite,
                    _ => return unsupported("only `any` and `read-write` are understood"),
                };
            }
            "channel_binding" => match value.as_str() {
                "disable" | "prefer" => self.require_channel_binding = false,
                "require" => self.require_channel_binding = true,
                _ => {
                    return Err(Error::conn_string(format!(
                        "channel_binding `{value}` is not disable, prefer or require"
                    )));
                }
            },
            "gssencmode" => {
                if value == "require" {
                    return unsupported("GSSAPI encryption is not available on RDS; use TLS");
                }
            }
            "load_balance_hosts" => {
                if value != "disable" {
                    return unsupported("give exactly one host");
                }
            }
            "connect_timeout_ms" => return unsupported("did you mean connect_timeout (seconds)?"),
            "passfile" => {
                return unsupported("give the password in the URL, a secret or the PGPASSWORD-free job field");
            }
            "service" | "servicefile" => return unsupported("pg_service.conf is not read; give host, port and dbname"),
            "replication" => return unsupported("pgferry opens replication connections itself"),
            "krbsrvname" | "gsslib" | "gssdelegation" => return unsupported("Kerberos is not available on RDS"),
            "require_auth" => return unsupported("the server's authentication method is accepted as offered"),
            other => {
                return Err(Error::conn_string(format!("unknown connection parameter `{other}`")));
            }
        }
        Ok(())
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => Err(Error::conn_string(format!("{key} `{value}` is not 0 or 1"))),
    }
}

fn parse_u64(key: &str, value: &str) -> Result<u64> {
    value.trim().parse().map_err(|_| Error::conn_string(format!("{key} `{value}` is not a non-negative integer")))
}

fn decode(part: &str, what: &str) -> Result<String> {
    percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::conn_string(format!("the {what} is not valid UTF-8 after percent-decoding")))
}

/// Splits `postgresql://user:password@host:port/dbname?k=v&…`. Every component is decoded exactly
/// once, after splitting, so `%40` in a password is an `@` and never a separator.
fn parse_url(url: &str) -> Result<Vec<(String, String)>> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (before_query, None),
    };
    let mut pairs = Vec::new();
    // The last `@` separates user info: an unencoded `@` in a password is a common paste error,
    // and libpq takes the last one as well.
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                pairs.push(("user".to_string(), decode(user, "user name")?));
            }
            if let Some(p) = password {
                pairs.push(("password".to_string(), decode(p, "password")?));
            }
            hostport
        }
        None => authority,
    };
    if !hostport.is_empty() {
        let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
            let (addr, after) = inner
                .split_once(']')
                .ok_or_else(|| Error::conn_string("unterminated `[` in an IPv6 host".to_string()))?;
            (addr.to_string(), after.strip_prefix(':'))
        } else if hostport.contains(',') {
            return Err(Error::conn_string(
                "`host` is not supported: give exactly one host (use an RDS Proxy or cluster endpoint for failover)"
                    .to_string(),
            ));
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (decode(h, "host")?, Some(p)),
                None => (decode(hostport, "host")?, None),
            }
        };
        if !host.is_empty() {
            pairs.push(("host".to_string(), host));
        }
        if let Some(port) = port.filter(|p| !p.is_empty()) {
            pairs.push(("port".to_string(), decode(port, "port")?));
        }
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        pairs.push(("dbname".to_string(), decode(db, "database name")?));
    }
    if let Some(query) = query {
        for item in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| Error::conn_string(format!("URL parameter `{}` has no value", decode_lossy(item))))?;
            pairs.push((decode(k, "parameter name")?, decode(v, "parameter value")?));
        }
    }
    Ok(pairs)
}

fn decode_lossy(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Splits `key=value key='quoted \' value'` the way libpq does.
fn parse_key_values(input: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(Error::conn_string(format!("missing `=` after `{key}`")));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(Error::conn_string(format!("unterminated quoted value for `{key}`"))),
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(Error::conn_string(format!("unterminated quoted value for `{key}`"))),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HARD: &str = "p@ss:w/rd#%\\' x";

    #[test]
    fn t51_percent_encoded_hard_password_is_decoded_once() {
        let url = "postgresql://app%20user:p%40ss%3Aw%2Frd%23%25%5C%27%20x@db.example.com:6543/my-app?sslmode=require";
        let spec = ConnSpec::parse(url).unwrap();
        assert_eq!(spec.password.as_ref().unwrap().expose(), HARD);
        assert_eq!(spec.user, "app user");
        assert_eq!(spec.host, "db.example.com");
        assert_eq!(spec.port, 6543);
        assert_eq!(spec.dbname, "my-app");
        assert_eq!(spec.sslmode, SslMode::Require);
    }

    #[test]
    fn t51_key_value_strings_unescape_quotes_and_backslashes() {
        let spec = ConnSpec::parse(r"host=h user=u password='p@ss:w/rd#%\\\' x' dbname=d").unwrap();
        assert_eq!(spec.password.as_ref().unwrap().expose(), HARD);
        assert_eq!(spec.dbname, "d");
    }

    #[test]
    fn t52_libpq_keys_are_translated_or_accepted() {
        let spec = ConnSpec::parse(
            "postgresql://u@h/d?keepalives_count=7&keepalives_idle=40&keepalives_interval=4\
             &target_session_attrs=read-write&options=-c%20statement_timeout%3D0\
             &application_name=psql&tcp_user_timeout=9000&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(spec.keepalives_retries, 7);
        assert_eq!(spec.keepalives_idle, Duration::from_secs(40));
        assert_eq!(spec.keepalives_interval, Duration::from_secs(4));
        assert_eq!(spec.target_session_attrs, SessionAttrs::ReadWrite);
        assert_eq!(spec.options.as_deref(), Some("-c statement_timeout=0"));
        assert_eq!(spec.tcp_user_timeout, Some(Duration::from_millis(9000)));
        assert_eq!(spec.connect_timeout, Duration::from_secs(3));
    }

    #[test]
    fn t52_unsupported_keys_are_rejected_with_the_key_named() {
        for (url, key) in [
            ("postgresql://u@h/d?sslcert=/x", "sslcert"),
            ("postgresql://u@h/d?service=prod", "service"),
            ("postgresql://u@h/d?frobnicate=1", "frobnicate"),
        ] {
            let msg = ConnSpec::parse(url).unwrap_err().to_string();
            assert!(msg.contains(key), "{msg}");
        }
    }

    #[test]
    fn defaults_are_verify_full_with_keepalives_under_the_nat_idle_cutoff() {
        let spec = ConnSpec::parse("postgresql://u@h").unwrap();
        assert_eq!(spec.sslmode, SslMode::VerifyFull);
        assert!(spec.sslrootcert.is_none());
        assert!(spec.keepalives);
        assert!(spec.keepalives_idle + spec.keepalives_interval * spec.keepalives_retries < Duration::from_secs(350));
        assert_eq!(spec.dbname, "u");
    }

    #[test]
    fn ipv6_hosts_and_hostaddr_are_understood() {
        let spec = ConnSpec::parse("postgresql://u@[::1]:5433/d?hostaddr=127.0.0.1").unwrap();
        assert_eq!(spec.host, "::1");
        assert_eq!(spec.port, 5433);
        assert_eq!(spec.hostaddr, Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn multiple_hosts_are_refused_with_a_reason() {
        let msg = ConnSpec::parse("postgresql://u@h1,h2/d").unwrap_err().to_string();
        assert!(msg.contains("exactly one host"), "{msg}");
    }

    #[test]
    fn passwords_never_print() {
        let spec = ConnSpec::parse("postgresql://u:hunter2@h/d").unwrap();
        assert!(!format!("{spec:?}").contains("hunter2"));
        assert!(!spec.endpoint().contains("hunter2"));
    }
}
