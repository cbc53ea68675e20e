//! The schema step: globals and the target database, the schema's pre-data and post-data, and
//! sequences — dumped once, sanitized for the target, applied so that nothing is lost silently
//! (the machinery is in [`crate::dump`]).
//!
//! Steps and what makes them retry-safe:
//! - **globals** takes the run's one dump ([`tool`]), then converges roles and the database: each
//!   statement is idempotent (create if missing, then converge).
//! - **pre-data** / **post-data** apply their section in one transaction with a marker row that
//!   also records a hash of the section: a retry finds all or nothing, and a later run of the
//!   same job into the same database finds the same schema applied and changes nothing.
//! - **release** revokes the memberships the master was given to act as the objects' owners.

pub mod refresh;

use crate::dump::{
    POST_DATA, PRE_DATA, acting_roles, apply, facts, lex, plan_sections, postdata, prepare_section, report, sanitize,
    section_hash, tool,
};
use crate::ledger::marker;

use std::time::Instant;

use tokio_postgres::Client;

use crate::catalog;
use crate::context::StepContext;
use crate::error::{Error, Result};
use crate::job::Side;
use crate::pg::{self, Session};
use crate::roles::MembershipLog;
use crate::step::{
    GlobalsOutput, PostDataItem, PostDataItemInput, PostDataItemOutput, PostDataPlanOutput, ReleaseOutput,
    SchemaOutput, SequencesOutput, StepInput, keys,
};
use facts::{Facts, SourceFacts, TargetFacts};
use report::SchemaReport;
use sanitize::{ApplyAs, Phase, Sanitizer};

/// Takes the run's dump (once), then converges roles and the target database.
pub async fn globals(ctx: &StepContext, input: &StepInput) -> Result<GlobalsOutput> {
    let started = Instant::now();
    let job = &input.job;
    let run = &input.run_id;
    if job.mode == crate::job::Mode::Refresh {
        // Before anything is written, roles included: a refresh updates only an earlier pgferry
        // copy of this source (RDS-CASES T57), whatever preflight said.
        crate::refresh::ensure_earlier_copy(ctx, input).await?;
    }
    // Read access first: pg_dump locks every table it dumps (RDS-CASES T39).
    let access = crate::access::obtain(ctx, input, crate::access::Obtain::Memberships).await?;
    let source = ctx.connect(job, Side::Source, "globals", run).await?;
    let mut source_facts = SourceFacts::read(&source).await?;
    source_facts.temporary_memberships = access.memberships;
    if let Some(master) = &job.source_master_user {
        // The job says which source role is the master when pgferry connects as another one.
        source_facts.master = master.clone();
    }
    drop(source);
    let dump = tool::ensure(ctx, input).await?;
    crate::access::obtain(ctx, input, crate::access::Obtain::Unforce).await?;

    let target_spec = ctx.conn_spec(job, Side::Target).await?;
    let target_database = target_spec.dbname.clone();
    let mut admin = pg::connect(&target_spec.with_dbname("postgres"), &Session::new("globals", run)).await?;
    let mut facts = Facts {
        target: TargetFacts::read(&admin, &target_database, false).await?,
        source: source_facts,
        target_database: target_database.clone(),
    };
    ctx.store.put_json(&keys::schema_facts(run), &facts).await?;
    let mut log = MembershipLog::open(&ctx.store, run, "globals").await?;

    let items = lex::split(&dump.globals);
    let mut globals_plan = Sanitizer::new(&facts).plan(Phase::Globals, &items);
    let roles = apply::autocommit(&mut admin, &mut globals_plan, &mut log, &target_database).await;
    let roles = match roles {
        Ok(applied) => applied,
        Err(e) => {
            let report = SchemaReport::new(run, "globals", vec![globals_plan]);
            ctx.store.put_json(&keys::schema_report(run, "globals"), &report).await?;
            return Err(e);
        }
    };

    // The database phase sees the roles just created.
    facts.target = TargetFacts::read(&admin, &target_database, false).await?;
    let pre_items = lex::split(&dump.pre_data);
    let (database_items, _) = sanitize::database_items(&pre_items);
    let mut database_plan = Sanitizer::new(&facts).plan(Phase::Database, &database_items);
    let database = apply::autocommit(&mut admin, &mut database_plan, &mut log, &target_database).await;
    apply::ensure_database_owner(&admin, &mut log, &target_database).await?;

    let roles_created = globals_plan
        .statements
        .iter()
        .filter(|s| matches!(s.apply, ApplyAs::CreateRole { .. }) && s.outcome.as_deref() == Some("created"))
        .filter_map(|s| match &s.apply {
            ApplyAs::CreateRole { role } => Some(role.clone()),
            _ => None,
        })
        .collect();
    let mut report = SchemaReport::new(run, "globals", vec![globals_plan, database_plan]);
    report.temporary_memberships = log.roles.clone();
    let report_key = keys::schema_report(run, "globals");
    ctx.store.put_json(&report_key, &report).await?;
    let database = database?;
    tracing::info!(
        applied = report.applied,
        rewritten = report.rewritten,
        skipped = report.skipped,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "globals applied"
    );
    Ok(GlobalsOutput {
        database_created: database.database_created,
        roles_created,
        report_key,
        applied: roles.statements + database.statements,
        rewritten: report.rewritten,
        skipped: report.skipped,
    })
}

/// Applies the pre-data section of the run's dump.
pub async fn pre_data(ctx: &StepContext, input: &StepInput) -> Result<SchemaOutput> {
    section(ctx, input, Phase::PreData, &[]).await
}

/// Splits post-data into the items the Map states run in parallel (see [`postdata`]) and writes
/// them to the artifact store. A target whose post-data was applied before gets no items.
pub async fn post_data_plan(ctx: &StepContext, input: &StepInput) -> Result<PostDataPlanOutput> {
    let run = &input.run_id;
    let target = ctx.connect(&input.job, Side::Target, "schema", run).await?;
    let mut split = match marker(&target, None, POST_DATA).await? {
        Some(_) => postdata::Split::default(),
        None => post_data_split(ctx, run, &target).await?,
    };
    // The Map states hand these statements to the functions as they read them from the bucket.
    ctx.store.seal_items(run, &mut split.indexes).await?;
    ctx.store.seal_items(run, &mut split.validations).await?;
    let (indexes_key, validations_key) =
        (keys::post_data_items(run, "indexes"), keys::post_data_items(run, "validations"));
    ctx.store.put_json(&indexes_key, &split.indexes).await?;
    ctx.store.put_json(&validations_key, &split.validations).await?;
    Ok(PostDataPlanOutput {
        indexes_key,
        indexes: split.indexes.len(),
        validations_key,
        validations: split.validations.len(),
    })
}

/// The post-data items of the run (the section's own transaction recomputes the same split).
async fn post_data_split(ctx: &StepContext, run: &str, target: &Client) -> Result<postdata::Split> {
    let dump = tool::stored(ctx, run).await?;
    let facts: Facts = ctx.store.get_json(&keys::schema_facts(run)).await?;
    let pre_items = lex::split(&dump.pre_data);
    let (_, pre_items) = sanitize::database_items(&pre_items);
    let post_items = lex::split(&dump.post_data);
    let (_, mut plan) = plan_sections(&facts, &pre_items, &post_items);
    Ok(postdata::split(&mut plan, &postdata::partitioned_tables(target).await?))
}

/// Builds one index or validates one table's foreign keys.
pub async fn post_data_item(
    ctx: &StepContext,
    input: &PostDataItemInput,
    deadline: Option<std::time::Instant>,
) -> Result<PostDataItemOutput> {
    let target = ctx.connect(&input.job, Side::Target, "postdata", &input.run_id).await?;
    let output = postdata::run_item(&target, &input.run_id, &input.item, deadline).await?;
    tracing::info!(item = %output.id, table = %input.item.table, outcome = %output.outcome, millis = output.millis, "post-data item");
    Ok(output)
}

/// All of post-data in one call, items one after the other: what the state machine does with
/// its Map states, for callers outside it.
pub async fn post_data_complete(ctx: &StepContext, input: &StepInput) -> Result<SchemaOutput> {
    let plan = post_data_plan(ctx, input).await?;
    run_items(ctx, input, &plan.indexes_key).await?;
    let output = post_data(ctx, input).await?;
    run_items(ctx, input, &plan.validations_key).await?;
    Ok(output)
}

/// Runs the post-data items stored at `key`, one after the other.
async fn run_items(ctx: &StepContext, input: &StepInput, key: &str) -> Result<()> {
    let items: Vec<PostDataItem> = ctx.store.get_json(key).await?;
    for item in items {
        let input = PostDataItemInput { job: input.job.clone(), run_id: input.run_id.clone(), item };
        post_data_item(ctx, &input, None).await?;
    }
    Ok(())
}

/// Applies post-data from the stored dump, then refreshes materialized views.
pub async fn post_data(ctx: &StepContext, input: &StepInput) -> Result<SchemaOutput> {
    let plan: crate::step::Plan = ctx.store.get_json(&keys::plan(&input.run_id)).await?;
    let refreshes: Vec<String> =
        plan.materialized_views.iter().map(|m| format!("REFRESH MATERIALIZED VIEW {m}")).collect();
    if input.job.mode == crate::job::Mode::Refresh {
        return refresh_materialized_views(ctx, input, &plan.materialized_views).await;
    }
    section(ctx, input, Phase::PostData, &refreshes).await
}

/// Post-data of a refresh: the schema is in place (a refresh's pre-data creates or rebuilds
/// tables with their indexes and constraints), so only materialized views are refreshed, in one
/// transaction, as their owners.
async fn refresh_materialized_views(
    ctx: &StepContext,
    input: &StepInput,
    views: &[pg::QualifiedName],
) -> Result<SchemaOutput> {
    let run = &input.run_id;
    let mut target = ctx.connect(&input.job, Side::Target, "schema", run).await?;
    let previous = marker(&target, None, POST_DATA).await?.map(|(by, _)| by);
    let mut log = MembershipLog::open(&ctx.store, run, POST_DATA).await?;
    let tx = target.transaction().await.map_err(|e| Error::db("begin", e))?;
    for view in views {
        let owner: Option<String> = tx
            .query_opt(
                "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = to_regclass($1)",
                &[&view.to_string()],
            )
            .await
            .map_err(|e| Error::db(format!("look for {view}"), e))?
            .map(|r| r.get(0));
        if let Some(owner) = owner {
            log.ensure(&tx, &owner).await?;
            tx.batch_execute(&format!("REFRESH MATERIALIZED VIEW {view}"))
                .await
                .map_err(|e| Error::db(format!("refresh {view}"), e))?;
        }
    }
    tx.commit().await.map_err(|e| Error::db("commit materialized view refreshes", e))?;
    let report_key = keys::schema_report(run, POST_DATA);
    let mut report = SchemaReport::new(run, POST_DATA, Vec::new());
    report.already_applied_by = previous.clone();
    report.temporary_memberships = log.roles.clone();
    ctx.store.put_json(&report_key, &report).await?;
    Ok(SchemaOutput {
        section: POST_DATA.to_string(),
        statements: views.len(),
        dump_key: keys::dump(run, POST_DATA),
        report_key,
        rewritten: 0,
        skipped: 0,
        already_applied_by: previous,
    })
}

async fn section(ctx: &StepContext, input: &StepInput, phase: Phase, extra: &[String]) -> Result<SchemaOutput> {
    if phase == Phase::PreData && input.job.mode == crate::job::Mode::Refresh {
        return self::refresh::pre_data(ctx, input).await;
    }
    let started = Instant::now();
    let run = &input.run_id;
    let name = phase.as_str();
    let dump = tool::stored(ctx, run).await?;
    let mut target = ctx.connect(&input.job, Side::Target, "schema", run).await?;
    if let Some(row) = marker(&target, Some(run), name).await?
        && row.0 == *run
        && let Ok(done) = ctx.store.get_json::<SchemaOutput>(&keys::schema_output(run, name)).await
    {
        return Ok(done);
    }

    // Facts: pre-data reads them and stores them; post-data plans with the same facts, so that
    // both steps see the same skipped objects.
    let facts = match phase {
        Phase::PreData => {
            let stored: Facts = ctx.store.get_json(&keys::schema_facts(run)).await?;
            let target_database = stored.target_database.clone();
            let facts = Facts {
                target: TargetFacts::read(&target, &target_database, true).await?,
                source: stored.source,
                target_database,
            };
            ctx.store.put_json(&keys::schema_facts(run), &facts).await?;
            facts
        }
        _ => ctx.store.get_json(&keys::schema_facts(run)).await?,
    };
    let pre_items = lex::split(&dump.pre_data);
    let (_, pre_items) = sanitize::database_items(&pre_items);
    let post_items = lex::split(&dump.post_data);
    let (pre_plan, mut post_plan) = plan_sections(&facts, &pre_items, &post_items);
    let post_split = match phase {
        Phase::PostData => postdata::split(&mut post_plan, &postdata::partitioned_tables(&target).await?),
        _ => postdata::Split::default(),
    };
    let (mut plan, items) = match phase {
        Phase::PreData => (pre_plan, &pre_items),
        _ => (post_plan, &post_items),
    };
    let hash = section_hash(items);
    let report_key = keys::schema_report(run, name);
    let dump_key = keys::dump(run, name);
    let mut log = MembershipLog::open(&ctx.store, run, name).await?;

    // A section applied by an earlier run of the same job: the same schema is accepted as is.
    let previous = marker(&target, None, name).await?;
    if let Some((by, previous_hash)) = previous {
        if previous_hash.as_deref() != Some(hash.as_str()) {
            return Err(Error::TargetNotEmpty {
                database: facts.target_database.clone(),
                objects: vec![format!("a different {name} schema applied by run {by}")],
            });
        }
        let tx = target.transaction().await.map_err(|e| Error::db("begin", e))?;
        for role in acting_roles(&facts, &plan) {
            log.ensure(&tx, &role).await?;
        }
        tx.commit().await.map_err(|e| Error::db("commit memberships", e))?;
        let mut report = SchemaReport::new(run, name, vec![plan]);
        report.already_applied_by = Some(by.clone());
        report.temporary_memberships = log.roles.clone();
        report.recount();
        ctx.store.put_json(&report_key, &report).await?;
        return Ok(SchemaOutput {
            section: name.to_string(),
            statements: 0,
            dump_key,
            report_key,
            rewritten: report.rewritten,
            skipped: report.skipped,
            already_applied_by: Some(by),
        });
    }

    // The indexes the section attaches to its keys: built by the Map state before this step;
    // any missing (a caller outside the state machine) is built here, one after the other.
    if !post_split.indexes.is_empty() {
        let builder = ctx.connect(&input.job, Side::Target, "postdata", run).await?;
        for item in &post_split.indexes {
            postdata::run_item(&builder, run, item, None).await?;
        }
    }
    let tx = target.transaction().await.map_err(|e| Error::db("begin schema transaction", e))?;
    prepare_section(&tx, &mut log, &facts, &plan).await?;
    let applied = apply::in_transaction(&tx, &mut plan, extra).await;
    if applied.is_ok() && phase == Phase::PostData {
        crate::access::unforce_target(&tx, &ctx.store, run).await?;
    }
    let mut report = SchemaReport::new(run, name, vec![plan]);
    report.temporary_memberships = log.roles.clone();
    if phase == Phase::PreData {
        report.not_recreated =
            facts.source.subscriptions.iter().map(|s| format!("subscription {s} ({})", sanitize::PUBSUB.id)).collect();
    }
    ctx.store.put_json(&report_key, &report).await?;
    let statements = applied?;
    let n = i32::try_from(statements).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO pgferry.applied_sections (run_id, section, statements, dump_hash) VALUES ($1, $2, $3, $4)",
        &[run, &name, &n, &hash],
    )
    .await
    .map_err(|e| Error::db("record applied section", e))?;
    let output = SchemaOutput {
        section: name.to_string(),
        statements,
        dump_key,
        report_key,
        rewritten: report.rewritten,
        skipped: report.skipped,
        already_applied_by: None,
    };
    ctx.store.put_json(&keys::schema_output(run, name), &output).await?;
    tx.commit().await.map_err(|e| Error::db(format!("commit {name}"), e))?;
    tracing::info!(
        section = name,
        statements,
        rewritten = report.rewritten,
        skipped = report.skipped,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "schema section applied"
    );
    Ok(output)
}

/// Revokes the memberships the master was given for this run; idempotent.
pub async fn release(ctx: &StepContext, input: &StepInput) -> Result<ReleaseOutput> {
    let run = &input.run_id;
    let mut roles: Vec<String> = Vec::new();
    for step in ["globals", "database", PRE_DATA, POST_DATA, crate::step::LARGE_OBJECTS] {
        let logged: Vec<String> =
            ctx.store.get_json_opt(&keys::schema_memberships(run, step)).await?.unwrap_or_default();
        for r in logged {
            if !roles.contains(&r) {
                roles.push(r);
            }
        }
    }
    // Before the memberships go: turning FORCE back on takes the owner's rights.
    let mut restored = crate::access::restore_target(ctx, input).await?;
    restored.extend(crate::access::restore(ctx, input).await?);
    let spec = ctx.conn_spec(&input.job, Side::Target).await?;
    let target = pg::connect(&spec.with_dbname("postgres"), &Session::new("release", run)).await?;
    // The run's memberships go with its holder role; other runs' stay (see `roles::holder_role`).
    let revoked = if crate::roles::drop_holder(&target, run).await? { roles } else { Vec::new() };
    // Last, once its memberships are gone: a refresh lets go of the target for the next run.
    if input.job.mode == crate::job::Mode::Refresh {
        match ctx.connect(&input.job, Side::Target, "release", run).await {
            Ok(database) => {
                if crate::refresh::end_run(&database, run).await? {
                    restored.push("the target, held by this refresh, released for the next run".to_string());
                }
            }
            Err(e) if e.kind() == crate::error::ErrorKind::DatabaseMissing => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ReleaseOutput { revoked, restored })
}

/// Sets every target sequence to the source's value (`setval` with `is_called`).
pub async fn sequences(ctx: &StepContext, input: &StepInput) -> Result<SequencesOutput> {
    let source = ctx.connect(&input.job, Side::Source, "sequences", &input.run_id).await?;
    let target = ctx.connect(&input.job, Side::Target, "sequences", &input.run_id).await?;
    let values = catalog::sequence_values(&source).await?;
    for (name, (value, called)) in &values {
        target
            .execute("SELECT pg_catalog.setval($1::text::regclass, $2, $3)", &[&name.to_string(), value, called])
            .await
            .map_err(|e| Error::db(format!("set sequence {name}"), e))?;
    }
    Ok(SequencesOutput { sequences: values.len() })
}
