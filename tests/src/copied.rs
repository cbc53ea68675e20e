//! A source copied into a target by pgferry's steps, in the state machine's order, for the tests
//! that inspect what verification and the run report say about the copy.

use std::sync::Arc;

use pgferry_core::context::StepContext;
use pgferry_core::plan::{self, Plan, PlanOptions};
use pgferry_core::step::{ChunkInput, SchemaRequest, StepInput, keys};
use pgferry_core::{copy, schema, verify};
use tokio::sync::Semaphore;
use tokio_postgres::Client;

use crate::{Server, connect, drop_db, step_setup, testbed};

/// Chunks in flight at once, as the Map states run them (the test bed has few cores).
const PARALLEL: usize = 2;

/// The copy, with what verifying it needs.
#[derive(Debug)]
pub struct Copied {
    pub ctx: StepContext,
    pub input: StepInput,
    pub plan: Plan,
    pub source_db: String,
    pub target_db: String,
}

/// Copies `source_db` into the new `target_db`: globals, pre-data, the chunk plan (the real one
/// with `options` `None`), every chunk, post-data with its items, sequences, large objects.
pub async fn copy_with_steps(source_db: &str, target_db: &str, options: Option<PlanOptions>) -> Copied {
    let (ctx, input) = step_setup(source_db, target_db, serde_json::json!({}));
    pgferry_core::dispatch::schema(&ctx, SchemaRequest::Globals(input.clone())).await.unwrap();
    pgferry_core::dispatch::schema(&ctx, SchemaRequest::PreData(input.clone())).await.unwrap();
    let plan = match options {
        None => {
            plan::run(&ctx, &input).await.unwrap();
            ctx.store.get_json(&keys::plan(&input.run_id)).await.unwrap()
        }
        Some(o) => {
            let plan = plan::build(&ctx, &input, o).await.unwrap();
            ctx.store.put_json(&keys::plan(&input.run_id), &plan).await.unwrap();
            plan
        }
    };
    let permits = Arc::new(Semaphore::new(PARALLEL));
    let copies: Vec<_> = plan
        .chunks
        .iter()
        .map(|chunk| {
            let ci = ChunkInput { job: input.job.clone(), run_id: input.run_id.clone(), chunk: chunk.clone() };
            let (ctx, permits) = (ctx.clone(), Arc::clone(&permits));
            tokio::spawn(async move {
                let _permit = permits.acquire().await.unwrap();
                copy::copy_chunk(&ctx, &ci, None).await.unwrap().done
            })
        })
        .collect();
    for done in copies {
        assert!(done.await.unwrap());
    }
    schema::post_data_complete(&ctx, &input).await.unwrap();
    pgferry_core::dispatch::schema(&ctx, SchemaRequest::Sequences(input.clone())).await.unwrap();
    pgferry_core::lobs::copy_all(&ctx, &input).await.unwrap();
    Copied { ctx, input, plan, source_db: source_db.to_string(), target_db: target_db.to_string() }
}

impl Copied {
    /// Verifies every item (a few at once) and writes the run report, as the Report state does.
    pub async fn verify_all(&self) -> verify::Report {
        let permits = Arc::new(Semaphore::new(PARALLEL));
        let checks: Vec<_> = self
            .plan
            .verify_items
            .iter()
            .map(|item| {
                let ci =
                    ChunkInput { job: self.input.job.clone(), run_id: self.input.run_id.clone(), chunk: item.clone() };
                let (ctx, permits) = (self.ctx.clone(), Arc::clone(&permits));
                tokio::spawn(async move {
                    let _permit = permits.acquire().await.unwrap();
                    verify::verify_chunk(&ctx, &ci).await.unwrap()
                })
            })
            .collect();
        for check in checks {
            check.await.unwrap();
        }
        let out = verify::report(&self.ctx, &self.input).await.unwrap();
        let report: verify::Report = self.ctx.store.get_json(&out.report_key).await.unwrap();
        assert_eq!(out.equal, report.equal());
        report
    }

    /// The target as the master user.
    pub async fn target(&self) -> Client {
        connect(&testbed().url(Server::Target, &self.target_db)).await
    }

    /// The target as the test bed's superuser.
    pub async fn target_admin(&self) -> Client {
        connect(&testbed().admin_url(Server::Target, &self.target_db)).await
    }

    /// Drops both databases.
    pub async fn cleanup(self) {
        drop_db(Server::Target, &self.target_db).await;
        drop_db(Server::Source, &self.source_db).await;
    }
}
