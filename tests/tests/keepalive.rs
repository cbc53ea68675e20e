//! TCP keepalives keep a connection alive through a NAT gateway that forgets idle flows
//! (RDS-CASES T53). The twin test proves the middlebox really cuts a connection without them.

use std::net::SocketAddr;
use std::time::Duration;

use pgferry_core::pg::{self, ConnSpec, Session};
use pgferry_tests::middlebox::IdleDropProxy;
use pgferry_tests::{Server, testbed};

/// The middlebox forgets a flow after this much silence (350 s on AWS, scaled down).
const IDLE_LIMIT: Duration = Duration::from_secs(3);
/// The server-side statement is silent for longer than the idle limit.
const SLEEP_SECONDS: f64 = 6.0;
/// Long enough for the statement to finish when the flow survives.
const WAIT: Duration = Duration::from_secs(12);

async fn sleep_through_middlebox(keepalives: &str) -> (Result<(), String>, usize) {
    let bed = testbed();
    let upstream: SocketAddr = format!("127.0.0.1:{}", bed.port(Server::Source)).parse().unwrap();
    let proxy = IdleDropProxy::start(upstream, IDLE_LIMIT).await;
    let url = bed
        .url(Server::Source, "postgres")
        .replace(&format!(":{}/", bed.port(Server::Source)), &format!(":{}/", proxy.addr.port()))
        + keepalives;
    let spec = ConnSpec::parse(&url).unwrap();
    let client = pg::connect(&spec, &Session::new("test", "keepalive")).await.unwrap();
    let result = tokio::time::timeout(WAIT, client.batch_execute(&format!("SELECT pg_sleep({SLEEP_SECONDS})"))).await;
    let result = match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("statement failed: {e}")),
        Err(_) => Err("no answer: the middlebox dropped the flow".to_string()),
    };
    (result, proxy.dropped_flows())
}

#[tokio::test]
async fn t53_keepalives_shorter_than_the_idle_limit_keep_a_long_statement_alive() {
    let (result, dropped) =
        sleep_through_middlebox("&keepalives=1&keepalives_idle=1&keepalives_interval=1&keepalives_count=3").await;
    assert_eq!(result, Ok(()));
    assert_eq!(dropped, 0);
}

#[tokio::test]
async fn t53_without_keepalives_the_same_statement_is_cut_by_the_middlebox() {
    let (result, dropped) = sleep_through_middlebox("&keepalives=0").await;
    assert!(result.is_err(), "the flow should have been dropped");
    assert_eq!(dropped, 1);
}
