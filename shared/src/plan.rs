//! The plan: which relations are copied, in which chunks, and what is skipped and why.
//!
//! This first planner makes one chunk per table (largest first, so the long poles start early);
//! key-range and page-range chunks replace it later without changing the contract. Partitioned
//! parents hold no rows and are skipped in favour of their leaves (RDS-CASES T36); materialized
//! views are refreshed after post-data and foreign tables are skipped, both recorded (T37).

use serde::{Deserialize, Serialize};

use crate::catalog;
use crate::context::StepContext;
use crate::error::Result;
use crate::job::Side;
use crate::pg::QualifiedName;
use crate::step::{Chunk, PlanOutput, StepInput, keys};

/// The full plan, stored at `runs/<run>/plan.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub chunks: Vec<Chunk>,
    /// Unlogged tables: copied, but their contents are not crash-safe on the target either.
    pub unlogged: Vec<QualifiedName>,
    /// Refreshed in post-data instead of copied.
    pub materialized_views: Vec<QualifiedName>,
    /// Relations with no data of their own, with the reason.
    pub skipped: Vec<(QualifiedName, String)>,
    pub estimated_bytes: u64,
}

/// Reads the source catalog and plans the copy. Reads only the source.
pub async fn build(ctx: &StepContext, input: &StepInput) -> Result<Plan> {
    let source = ctx.connect(&input.job, Side::Source, "plan", &input.run_id).await?;
    let relations = catalog::relations(&source).await?;
    let mut plan =
        Plan { chunks: vec![], unlogged: vec![], materialized_views: vec![], skipped: vec![], estimated_bytes: 0 };
    let mut tables = Vec::new();
    for rel in relations {
        match rel.kind.as_str() {
            "r" => {
                if rel.persistence == "u" {
                    plan.unlogged.push(rel.name.clone());
                }
                tables.push(rel);
            }
            "p" => plan.skipped.push((rel.name, "partitioned table: rows are copied per partition".to_string())),
            "m" => plan.materialized_views.push(rel.name),
            "f" => plan.skipped.push((rel.name, "foreign table: its data lives on another server".to_string())),
            _ => {}
        }
    }
    tables.sort_by(|a, b| b.total_bytes.cmp(&a.total_bytes).then_with(|| a.name.cmp(&b.name)));
    for (i, rel) in tables.into_iter().enumerate() {
        plan.estimated_bytes += rel.total_bytes;
        plan.chunks.push(Chunk {
            id: format!("c{i:06}"),
            table: rel.name,
            columns: rel.columns,
            estimated_bytes: rel.total_bytes,
        });
    }
    Ok(plan)
}

/// The plan step: builds the plan and stores it, with the chunk list the Map states read.
pub async fn run(ctx: &StepContext, input: &StepInput) -> Result<PlanOutput> {
    let plan = build(ctx, input).await?;
    let output = PlanOutput {
        plan_key: keys::plan(&input.run_id),
        chunks_key: keys::chunks(&input.run_id),
        tables: plan.chunks.len(),
        chunks: plan.chunks.len(),
        estimated_bytes: plan.estimated_bytes,
    };
    ctx.store.put_json(&output.plan_key, &plan).await?;
    ctx.store.put_json(&output.chunks_key, &plan.chunks).await?;
    Ok(output)
}
