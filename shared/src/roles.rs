//! The run's holder role: how a master that is not a superuser acts as the roles it must.
//!
//! A master can only give an object to a role it can become, and read a table it does not own
//! only through a role that may. Roles are cluster-wide, so a membership granted to the master
//! directly would be shared by every run into the same cluster. Each run therefore makes the
//! master a member of the roles it needs through a role of its own, `pgferry_hold_<run>`
//! ([`holder_role`]), logged in the artifact store before it is created and dropped — with all
//! its memberships — when the run ends. Used by the schema apply, source access, large objects
//! and refresh.

use tokio_postgres::{Client, GenericClient};

use crate::error::{Error, Result};
use crate::pg::quote_ident;
use crate::step::keys;
use crate::store::ArtifactStore;

/// Prefix of the roles through which the master holds a run's memberships ([`holder_role`]).
pub const HOLDER_PREFIX: &str = "pgferry_hold_";

/// The role through which the master is a member of the roles it must act as during one run:
/// `pgferry_hold_<run id>` (NOLOGIN, created on first need, dropped by the release step with its
/// memberships). Roles are cluster-wide: two runs into databases of one cluster (nightly
/// refreshes scheduled together) often need the same owner roles, and a membership granted to
/// the master directly would be shared — the first run to end would revoke what the other still
/// copies with. Each run's memberships go through its own holder instead; ending one run drops
/// only its holder. Names longer than PostgreSQL's 63 bytes keep a hash of the whole run id.
pub fn holder_role(run: &str) -> String {
    let name = format!("{HOLDER_PREFIX}{run}");
    if name.len() <= 63 {
        return name;
    }
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(run.as_bytes())[..8].iter().map(|b| format!("{b:02x}")).collect();
    let mut head = name;
    let mut cut = 63 - 1 - hash.len();
    while !head.is_char_boundary(cut) {
        cut -= 1;
    }
    head.truncate(cut);
    format!("{head}_{hash}")
}

/// `reach(oid)`: the connecting role and the roles it may act as (`SET ROLE`, which owning an
/// object needs), through memberships direct or not, other than through another run's holder role
/// (`$1` is this run's, `$2` the holders' prefix) — what another run holds for itself can go at any
/// time. From PostgreSQL 16 a membership may withhold SET: the ADMIN-only membership a CREATEROLE
/// role receives in each role it creates (RDS-CASES T62) lets it grant the role, not act as it.
/// A `WITH RECURSIVE` item.
pub(crate) const REACH_CTE: &str = "reach(oid) AS ( \
       SELECT oid FROM pg_roles WHERE rolname = current_user \
       UNION \
       SELECT m.roleid FROM pg_auth_members m JOIN reach ON m.member = reach.oid \
         JOIN pg_roles g ON g.oid = m.roleid \
        WHERE coalesce((to_jsonb(m) ->> 'set_option')::boolean, true) \
          AND (NOT starts_with(g.rolname::text, $2::text) OR g.rolname = $1::text::name))";

/// SQL: the role whose membership gives the privileges of role `role_sql` in the current
/// database. `pg_database_owner` cannot have explicit members (RDS-CASES T65): its members are,
/// implicitly, whoever owns the current database.
pub(crate) fn privileges_holder_sql(role_sql: &str) -> String {
    format!(
        "CASE WHEN {role_sql} = 'pg_database_owner' \
              THEN (SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = current_database()) \
              ELSE {role_sql} END"
    )
}

/// `(whether the connecting role is a superuser or a member of role $3 within [`REACH_CTE`],
/// the role to join for it)`.
fn member_sql() -> String {
    format!(
        "WITH RECURSIVE {REACH_CTE}, holder(name) AS (SELECT {}) \
         SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \
             OR EXISTS (SELECT 1 FROM reach JOIN pg_roles r ON r.oid = reach.oid, holder \
                        WHERE r.rolname = holder.name::name), \
             (SELECT name FROM holder)",
        privileges_holder_sql("$3::text")
    )
}

/// The roles the master was made a member of for this run (through the run's holder role),
/// logged before each grant.
#[derive(Debug)]
pub struct MembershipLog {
    store: ArtifactStore,
    key: String,
    holder: String,
    pub roles: Vec<String>,
}

impl MembershipLog {
    /// The phase's log as stored (empty when there is none; a store failure is an error, not an
    /// empty log that would forget what to revoke).
    pub async fn open(store: &ArtifactStore, run: &str, phase: &str) -> Result<Self> {
        let key = keys::schema_memberships(run, phase);
        let roles = store.get_json_opt(&key).await?.unwrap_or_default();
        Ok(Self { store: store.clone(), key, holder: holder_role(run), roles })
    }

    /// Makes the connecting role a member of `role` through the run's holder role unless it is
    /// one already (not counting other runs' holders); returns true if it granted.
    /// A role that cannot have members (`pg_database_owner`) is held through the role it stands
    /// for.
    pub async fn ensure<C: GenericClient>(&mut self, client: &C, role: &str) -> Result<bool> {
        let row = client
            .query_one(&member_sql(), &[&self.holder, &HOLDER_PREFIX, &role])
            .await
            .map_err(|e| Error::db(format!("check membership in {role}"), e))?;
        let (member, holds): (bool, String) = (row.get(0), row.get(1));
        if member {
            return Ok(false);
        }
        let role = holds.as_str();
        if !self.roles.iter().any(|r| r == role) {
            self.roles.push(role.to_string());
            self.store.put_json(&self.key, &self.roles).await?;
        }
        hold(client, &self.holder, role).await?;
        Ok(true)
    }
}

async fn holder_exists<C: GenericClient>(client: &C, holder: &str) -> Result<bool> {
    Ok(client
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1::text::name)", &[&holder])
        .await
        .map_err(|e| Error::db("look for the run's holder role", e))?
        .get(0))
}

/// Makes the connecting role a member of `role` through the holder role `holder`, created
/// (NOLOGIN, the connecting role its member) on first need.
pub(crate) async fn hold<C: GenericClient>(client: &C, holder: &str, role: &str) -> Result<()> {
    let quoted = quote_ident(holder);
    if !holder_exists(client, holder).await? {
        client
            .batch_execute(&format!(
                "CREATE ROLE {quoted} NOLOGIN INHERIT; COMMENT ON ROLE {quoted} IS {}; GRANT {quoted} TO CURRENT_USER",
                crate::pg::quote_literal(
                    "pgferry: the memberships the master holds for one run; dropped by the run's release step"
                )
            ))
            .await
            .map_err(|e| Error::db(format!("create the run's holder role {holder}"), e))?;
    }
    client
        .batch_execute(&format!("GRANT {} TO {quoted}", quote_ident(role)))
        .await
        .map_err(|e| Error::db(format!("make the connecting user a member of {role}"), e))
}

/// Drops a run's holder role, and with it the memberships the run was given; true if it
/// existed. Retried like a globals statement when another session updates the same catalog rows.
pub async fn drop_holder(client: &Client, run: &str) -> Result<bool> {
    let holder = holder_role(run);
    let exists = holder_exists(client, &holder).await?;
    if exists {
        execute_alone(client, &format!("DROP ROLE IF EXISTS {}", quote_ident(&holder)))
            .await
            .map_err(|e| Error::db(format!("drop the run's holder role {holder}"), e))?;
    }
    Ok(exists)
}

/// Tries of a globals statement that failed because another session updated the same catalog
/// row at the same moment.
const CONCURRENT_UPDATE_TRIES: u32 = 20;

/// Runs one globals statement on its own, again when another session updated the same catalog
/// row at the same moment: roles are cluster-wide, so two runs into databases of one cluster
/// (nightly refreshes scheduled together) apply the same `ALTER ROLE`s and `GRANT`s at once, and
/// PostgreSQL fails the later update with "tuple concurrently updated" instead of waiting. The
/// statements set attributes and memberships to given values: running one again is harmless.
pub(crate) async fn execute_alone(client: &Client, sql: &str) -> std::result::Result<(), tokio_postgres::Error> {
    let mut tries = 1;
    loop {
        match client.batch_execute(sql).await {
            Err(e) if tries < CONCURRENT_UPDATE_TRIES && concurrently_updated(&e) => {
                tokio::time::sleep(std::time::Duration::from_millis((10 * u64::from(tries)).min(200))).await;
                tries += 1;
            }
            done => return done,
        }
    }
}

/// PostgreSQL's "tuple concurrently updated/deleted" (an internal error, `XX000`).
fn concurrently_updated(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|d| d.code().code() == "XX000" && d.message().starts_with("tuple concurrently"))
}
