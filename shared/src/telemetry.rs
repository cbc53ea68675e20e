//! Logging setup: JSON lines in Lambda (CloudWatch parses them), human lines in the CLI.
//!
//! Never log row values or secrets: spans carry step, table and chunk names only.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber for a Lambda function: JSON, level from `RUST_LOG` (default
/// `info`), no ANSI colours, no timestamps (CloudWatch adds them).
pub fn init_lambda() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_current_span(true)
        .without_time()
        .with_ansi(false)
        .try_init();
}

/// Installs the global subscriber for the CLI: human-readable, on stderr, warnings and errors
/// unless `RUST_LOG` says otherwise (progress lines are printed by the CLI itself).
pub fn init_cli() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .try_init();
}
