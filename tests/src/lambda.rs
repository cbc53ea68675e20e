//! The four real function binaries served as Lambda functions, offline: `cargo lambda watch`
//! provides the Lambda Runtime API, and a small adapter makes the invocations moto's Step
//! Functions sends look answered by AWS Lambda.
//!
//! `cargo lambda watch` would build and start each function itself with `cargo run --bin …`.
//! That build selects one package at a time, so its dependency features differ from those of the
//! workspace build the tests ran from, and it would compile the whole AWS SDK a second time. So
//! it runs with `--only-lambda-apis`, and [`build_binaries`] builds the binaries with the
//! workspace's own selection (everything fresh after `cargo test --workspace`); the functions are
//! started here, each polling the runtime API under its own name, as in Lambda.
//!
//! moto sends every AWS call of an execution to one port (`MOTO_PORT`). The adapter listening
//! there hands Lambda `Invoke` calls to `cargo lambda watch`, with two fixes that make them look
//! as they do on AWS: the function ARN becomes the bare name cargo-lambda routes on, and a
//! handler error — which cargo-lambda answers with HTTP 500 — becomes HTTP 200 with
//! `X-Amz-Function-Error: Unhandled` and the `{"errorType", "errorMessage"}` body, so Step
//! Functions sees the function's own error name (`Pgferry.Retryable`…) instead of a service
//! failure. Every other call (the Maps' S3 reads and writes) goes through unchanged to moto.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgferry_core::runner::Function;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::moto::{find, free_port};

/// Instances started per function: Map iterations run this many invocations of one function at a
/// time (cargo-lambda queues the rest).
const INSTANCES: usize = 2;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the four function binaries and the CLI in the workspace's debug profile, selecting the
/// whole workspace with its test targets as `cargo test --workspace` does (so nothing but these
/// binaries is compiled after it); returns the directory that holds them.
pub fn build_binaries() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let started = Instant::now();
    let out = Command::new(cargo)
        .args(["build", "--workspace", "--all-targets", "--quiet"])
        .current_dir(repo())
        .output()
        .expect("run cargo build");
    assert!(out.status.success(), "cargo build --workspace --all-targets:\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("function binaries built in {:.1}s", started.elapsed().as_secs_f64());
    // This test runs as <target>/debug/deps/<test>-<hash>; the binaries are in <target>/debug.
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target profile directory").to_path_buf();
    for f in Function::ALL {
        assert!(dir.join(f.name()).exists(), "{} was not built into {}", f.name(), dir.display());
    }
    dir
}

/// One invocation the adapter passed on: function, the payload's `action` (if any) and the
/// status the runtime answered with.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub function: String,
    pub action: Option<String>,
    pub status: u16,
}

/// The runtime API, the function processes and the adapter; all stopped when dropped.
#[derive(Debug)]
pub struct LambdaHost {
    runtime: Child,
    functions: Vec<Child>,
    adapter: tokio::task::JoinHandle<()>,
    invocations: Arc<Mutex<Vec<Invocation>>>,
    log_dir: PathBuf,
}

impl LambdaHost {
    /// Starts `cargo lambda watch --only-lambda-apis`, [`INSTANCES`] processes of each function
    /// from `bin_dir` with `env` (and nothing else of this process's environment but `PATH`), and
    /// the adapter on `adapter_port`, which sends non-Lambda calls to `moto`. Logs go to
    /// `log_dir`.
    pub async fn start(
        bin_dir: &Path,
        adapter_port: u16,
        moto: SocketAddr,
        env: &[(String, String)],
        log_dir: &Path,
    ) -> Self {
        let runtime_port = free_port();
        let runtime_addr = SocketAddr::from(([127, 0, 0, 1], runtime_port));
        let runtime = Command::new(repo().join(".tools/venv/bin/cargo-lambda"))
            .args(["lambda", "watch", "--only-lambda-apis", "--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &runtime_port.to_string(), "--timeout", "900"])
            .current_dir(repo())
            .stdin(Stdio::null())
            .stdout(log_file(log_dir, "cargo-lambda.log"))
            .stderr(log_file(log_dir, "cargo-lambda.log"))
            .spawn()
            .expect("start cargo lambda watch (run scripts/bootstrap)");
        let mut host = Self {
            runtime,
            functions: Vec::new(),
            adapter: tokio::spawn(async {}),
            invocations: Arc::default(),
            log_dir: log_dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(runtime_addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "cargo lambda watch did not listen on {runtime_addr}:\n{}",
                tail(&log_dir.join("cargo-lambda.log"), 40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for f in Function::ALL {
            for instance in 0..INSTANCES {
                let log = format!("{}-{instance}.log", f.name());
                let child = Command::new(bin_dir.join(f.name()))
                    .env_clear()
                    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                    .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .env("AWS_LAMBDA_RUNTIME_API", format!("http://{runtime_addr}/.rt/{}", f.name()))
                    .env("AWS_LAMBDA_FUNCTION_NAME", f.name())
                    .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                    .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
                    .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", f.name()))
                    .env("AWS_LAMBDA_LOG_STREAM_NAME", format!("instance-{instance}"))
                    .stdin(Stdio::null())
                    .stdout(log_file(log_dir, &log))
                    .stderr(log_file(log_dir, &log))
                    .spawn()
                    .unwrap_or_else(|e| panic!("start {}: {e}", f.name()));
                host.functions.push(child);
            }
        }
        let listener = TcpListener::bind(("127.0.0.1", adapter_port)).await.expect("bind the adapter's port");
        let invocations = Arc::clone(&host.invocations);
        host.adapter = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let invocations = Arc::clone(&invocations);
                tokio::spawn(async move {
                    let _ = adapt(client, runtime_addr, moto, invocations).await;
                });
            }
        });
        host
    }

    /// Every invocation so far, in order.
    pub fn invocations(&self) -> Vec<Invocation> {
        self.invocations.lock().unwrap().clone()
    }

    /// The last lines of every function's and the runtime's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.log_dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        names.sort();
        for path in names.iter().filter(|p| p.extension().is_some_and(|e| e == "log")) {
            out += &format!("--- {}\n{}\n", path.display(), tail(path, 15));
        }
        out
    }
}

impl Drop for LambdaHost {
    fn drop(&mut self) {
        self.adapter.abort();
        for child in self.functions.iter_mut().chain(std::iter::once(&mut self.runtime)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new().create(true).append(true).open(dir.join(name)).expect("log file")
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The function a Lambda `Invoke` path names (`/2015-03-31/functions/<name or ARN>/invocations`),
/// as the bare name cargo-lambda routes on.
pub fn invoked_function(path: &str) -> Option<String> {
    let encoded = path.strip_prefix("/2015-03-31/functions/")?.strip_suffix("/invocations")?;
    let name = percent_decode(encoded);
    // arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]
    if name.starts_with("arn:") { name.split(':').nth(6).map(str::to_string) } else { Some(name) }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves one client connection: a Lambda `Invoke` is answered from the runtime API; anything
/// else is spliced through to moto as it is.
async fn adapt(
    mut client: TcpStream,
    runtime: SocketAddr,
    moto: SocketAddr,
    invocations: Arc<Mutex<Vec<Invocation>>>,
) -> std::io::Result<()> {
    let mut buffered = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(end) = find(&buffered, b"\r\n\r\n") {
            break end + 4;
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buffered.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffered[..head_end]).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    let Some(function) = invoked_function(&path) else {
        let mut upstream = TcpStream::connect(moto).await?;
        upstream.write_all(&buffered).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    };
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buffered[head_end..].to_vec();
    while body.len() < length {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let action = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|payload| payload["action"].as_str().map(str::to_string));
    let (status, answer) = crate::moto::http(
        runtime,
        "POST",
        &format!("/2015-03-31/functions/{function}/invocations"),
        &[("Content-Type", "application/json")],
        &body,
    )
    .await?;
    invocations.lock().unwrap().push(Invocation { function, action, status });
    let (status_line, function_error) = match status {
        200..=299 => ("200 OK", ""),
        // cargo-lambda's answer to a handler error; Lambda answers 200 and flags the payload.
        500 => ("200 OK", "X-Amz-Function-Error: Unhandled\r\n"),
        // Anything else (an unknown function…) is an error of the Lambda service itself.
        _ => ("502 Bad Gateway", ""),
    };
    let response = format!(
        "HTTP/1.1 {status_line}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         X-Amz-Executed-Version: $LATEST\r\n{function_error}Connection: close\r\n\r\n",
        answer.len()
    );
    client.write_all(response.as_bytes()).await?;
    client.write_all(&answer).await?;
    client.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoke_paths_name_the_bare_function() {
        let arn =
            "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Apgferry-copy/invocations";
        assert_eq!(invoked_function(arn).as_deref(), Some("pgferry-copy"));
        let plain =
            "/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:pgferry-verify:live/invocations";
        assert_eq!(invoked_function(plain).as_deref(), Some("pgferry-verify"));
        assert_eq!(
            invoked_function("/2015-03-31/functions/pgferry-schema/invocations").as_deref(),
            Some("pgferry-schema")
        );
        assert_eq!(invoked_function("/bucket/runs/r1/chunks.json"), None);
    }
}
