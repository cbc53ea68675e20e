//! A private moto server for one test, with its Step Functions executing state machines.
//!
//! The test bed's shared moto (`scripts/testbed`) is left alone: a test that runs real executions
//! starts its own `moto_server` on a free loopback port, switches real execution on before it
//! creates a state machine, and stops the server when dropped. moto's Step Functions makes every
//! AWS call of a running execution (Lambda invocations, the Maps' S3 reads and writes) to
//! `http://localhost:$MOTO_PORT`; `MOTO_PORT` is set to `calls_to`, where the test puts the
//! adapter of [`crate::lambda`] that sends Lambda calls to the functions and the rest back here.
//!
//! Also home to the few raw HTTP/1.1 exchanges these helpers need (no HTTP client crate).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgferry_core::aws::Clients;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Region and static credentials of the private emulator.
pub const REGION: &str = "us-east-1";
const ACCESS_KEY: &str = "testing";
const SECRET_KEY: &str = "testing";
/// moto's default account.
pub const ACCOUNT: &str = "123456789012";

/// A running `moto_server`; killed when dropped.
#[derive(Debug)]
pub struct MotoServer {
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl MotoServer {
    /// Starts moto on a free port with `MOTO_PORT=calls_to`, waits until it answers and turns on
    /// real Step Functions executions (Lambda without Docker). `log_dir` receives `moto.log`.
    pub async fn start(calls_to: u16, log_dir: &Path) -> Self {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = log_dir.join("moto.log");
        let out = std::fs::File::create(&log).expect("moto log");
        let child = Command::new(crate::lambda::repo().join(".tools/venv/bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_PORT", calls_to.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("moto log"))
            .stderr(out)
            .spawn()
            .expect("start moto_server (run scripts/bootstrap)");
        let server = Self { addr, child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http(addr, "GET", "/moto-api/", &[], b"").await.is_err() {
            assert!(Instant::now() < deadline, "moto did not come up; log {}", server.log.display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let config = br#"{"stepfunctions": {"execute_state_machine": true}, "lambda": {"use_docker": false}}"#;
        let (status, body) = http(addr, "POST", "/moto-api/config", &[("Content-Type", "application/json")], config)
            .await
            .expect("configure moto");
        assert!((200..300).contains(&status), "moto config: {status} {}", String::from_utf8_lossy(&body));
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Clients of this emulator (never of a real account: the endpoint is loopback).
    pub async fn clients(&self) -> Clients {
        Clients::for_endpoint(&self.url(), REGION, ACCESS_KEY, SECRET_KEY).await.expect("emulator clients")
    }

    /// The AWS environment of a child process (CLI, functions) that must reach this emulator and
    /// nothing else.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.url()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_CONFIG_FILE", "/dev/null".to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// moto's own log, for a failure message.
    pub fn log_tail(&self) -> String {
        crate::lambda::tail(&self.log, 40)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// One HTTP/1.1 request with `Connection: close`; the status and the (de-chunked) body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    parse_response(&response)
}

/// Splits a complete HTTP/1.1 response (read to EOF) into status and body.
pub(crate) fn parse_response(response: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let end = find(response, b"\r\n\r\n").ok_or_else(|| invalid("no end of headers"))?;
    let head = std::str::from_utf8(&response[..end]).map_err(|_| invalid("headers are not UTF-8"))?;
    let status =
        head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| invalid("no status code"))?;
    let raw = &response[end + 4..];
    let chunked = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    if !chunked {
        return Ok((status, raw.to_vec()));
    }
    let mut body = Vec::new();
    let mut rest = raw;
    loop {
        let line_end = find(rest, b"\r\n").ok_or_else(|| invalid("truncated chunk size"))?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| invalid("chunk size"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| invalid("chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok((status, body));
        }
        let chunk = rest.get(..size).ok_or_else(|| invalid("truncated chunk"))?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or_else(|| invalid("truncated chunk"))?;
    }
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
