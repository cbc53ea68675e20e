//! What each Lambda function does with a request: its actions mapped to the steps that serve
//! them, one function per Lambda function. The runner calls these for the deployed functions
//! and for the local Tasks alike; the steps never route to one another.
//!
//! Map items (chunks, post-data items) reach the functions as the Map states read them from the
//! artifact store: their seals are checked here, before any step sees them (see [`crate::seal`]).

use std::time::Instant;

use serde_json::Value;

use crate::context::StepContext;
use crate::error::{Error, Result};
use crate::step::{CloneRequest, CopyRequest, SchemaRequest, VerifyRequest, to_value};
use crate::{clone, continuous, copy, lobs, plan, schema, verify};

/// The schema function (and the continuous mode's actions it hosts), without a time limit.
pub async fn schema(ctx: &StepContext, request: SchemaRequest) -> Result<Value> {
    schema_until(ctx, request, None).await
}

/// The schema function. `deadline` is when the invocation is stopped (Lambda's remaining time);
/// `None` means no limit.
pub async fn schema_until(ctx: &StepContext, request: SchemaRequest, deadline: Option<Instant>) -> Result<Value> {
    Ok(match request {
        SchemaRequest::Globals(input) => to_value(schema::globals(ctx, &input).await?),
        SchemaRequest::PreData(input) => to_value(schema::pre_data(ctx, &input).await?),
        SchemaRequest::PostDataPlan(input) => to_value(schema::post_data_plan(ctx, &input).await?),
        SchemaRequest::PostDataItem(input) => {
            ctx.store.check_item(&input.run_id, &input.item).await?;
            to_value(schema::post_data_item(ctx, &input, deadline).await?)
        }
        SchemaRequest::PostData(input) => to_value(schema::post_data(ctx, &input).await?),
        SchemaRequest::Sequences(input) => to_value(schema::sequences(ctx, &input).await?),
        SchemaRequest::Release(input) => to_value(schema::release(ctx, &input).await?),
        SchemaRequest::PrepareReplication(input) => to_value(continuous::prepare(ctx, &input).await?),
        SchemaRequest::Subscribe(input) => to_value(continuous::subscribe(ctx, &input).await?),
        SchemaRequest::CheckLag(input) => to_value(continuous::check_lag(ctx, &input).await?),
        SchemaRequest::CutoverCatchUp(input) => to_value(continuous::catch_up(ctx, &input, deadline).await?),
        SchemaRequest::FinishCutover(input) => to_value(continuous::finish_cutover(ctx, &input).await?),
        SchemaRequest::CleanupReplication(input) => to_value(continuous::cleanup(ctx, &input).await?),
        SchemaRequest::AbandonReplication(input) => to_value(continuous::abandon(ctx, &input).await?),
    })
}

/// The copy function: the plan, one chunk, the large objects. `deadline` as for the schema.
pub async fn copy(ctx: &StepContext, request: CopyRequest, deadline: Option<Instant>) -> Result<Value> {
    Ok(match request {
        CopyRequest::Plan(input) => to_value(plan::run(ctx, &input).await?),
        CopyRequest::CopyChunk(input) => {
            ctx.store.check_item(&input.run_id, &input.chunk).await?;
            to_value(copy::copy_chunk(ctx, &input, deadline).await?)
        }
        CopyRequest::LargeObjects(input) => to_value(lobs::copy_all(ctx, &input).await?),
    })
}

/// The verify function: one chunk, the report, the failure diagnosis.
pub async fn verify(ctx: &StepContext, request: VerifyRequest) -> Result<Value> {
    Ok(match request {
        VerifyRequest::VerifyChunk(input) => {
            ctx.store.check_item(&input.run_id, &input.chunk).await?;
            to_value(verify::verify_chunk(ctx, &input).await?)
        }
        VerifyRequest::Report(input) => to_value(verify::report(ctx, &input).await?),
        VerifyRequest::Diagnose(input) => to_value(verify::diagnose(ctx, &input).await?),
    })
}

/// The clone actions the preflight function hosts (`"consistency": "clone"`).
pub async fn clone(ctx: &StepContext, request: CloneRequest) -> Result<Value> {
    let value = match request {
        CloneRequest::CreateClone(input) => serde_json::to_value(clone::create(ctx, &input).await?),
        CloneRequest::DescribeClone(input) => serde_json::to_value(clone::describe(ctx, &input).await?),
        CloneRequest::DeleteClone(input) => serde_json::to_value(clone::delete(ctx, &input).await?),
    };
    value.map_err(|e| Error::Internal(format!("clone step output: {e}")))
}
