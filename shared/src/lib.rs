//! pgferry-core: all domain logic of pgferry.
//!
//! The Lambda functions in `functions/*` and the `pgferry` CLI are thin adapters over the entry
//! points here. Nothing in this crate's API mentions Lambda: a step takes its input, a
//! [`context::StepContext`] (artifact store, credentials) and returns a value or an [`Error`]
//! whose [`ErrorKind`] maps to a stable Step Functions error name.

pub mod access;
pub mod asl;
pub mod aws;
pub mod catalog;
pub mod chunk;
pub mod clone;
pub mod context;
pub mod continuous;
pub mod copy;
pub mod dispatch;
pub mod dump;
pub mod error;
pub mod job;
mod keystream;
pub mod ledger;
pub mod lobs;
pub mod pg;
pub mod plan;
pub mod preflight;
pub mod refresh;
pub mod replication;
pub mod roles;
mod rowset;
pub mod runner;
pub mod schema;
pub mod seal;
pub mod step;
pub mod store;
pub mod telemetry;
pub mod verify;
pub mod watermark;

pub use error::{Error, ErrorKind, Result};
