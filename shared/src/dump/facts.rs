//! What the sanitizer's rules may consult: facts read from the target (and a few from the source).
//!
//! Rules decide from facts, not from trial and error, so that a plan can be computed, stored and
//! reviewed before anything is applied, and unit-tested with hand-written facts. The facts are
//! read once per step with the connecting (master) user's own eyes — `pg_settings.context` and
//! `has_parameter_privilege` for each parameter, the extensions the target offers and whether the
//! connecting role may create them, the roles that exist and what the master may do to them —
//! and stored with the plan, so a later step plans the same way.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::error::{Error, Result};

/// A role as the target has it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetRole {
    pub superuser: bool,
    pub replication: bool,
    pub bypassrls: bool,
    pub createdb: bool,
    /// The connecting role may change this role's attributes (CREATEROLE rules of the version).
    pub alterable: bool,
    /// The role is (directly or indirectly) a member of the connecting role: making the
    /// connecting role a member of it would be circular.
    pub member_of_master: bool,
    /// The connecting role already has this role's privileges (a member with INHERIT: from
    /// PostgreSQL 16 the ADMIN-only membership of a role's creator does not count).
    pub master_is_member: bool,
}

/// A run-time parameter as the target has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Setting {
    /// Canonical name, e.g. `TimeZone`.
    pub name: String,
    /// `pg_settings.context`: `user`, `superuser`, `sighup`, `postmaster`…
    pub context: String,
    /// The connecting role may set it (`user` context, or `has_parameter_privilege(…, 'SET')`).
    pub settable: bool,
    /// The connecting role may grant `SET` on it to others.
    pub grantable: bool,
}

/// An extension the target's server offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AvailableExtension {
    pub default_version: String,
    /// Marked `trusted`: a non-superuser with CREATE on the database may create it (PG13+).
    pub trusted: bool,
}

/// The target database, when it exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetDatabase {
    pub owner: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
}

/// Facts about the target server and database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetFacts {
    pub server_version_num: i32,
    /// The connecting (master) user.
    pub master: String,
    pub superuser: bool,
    pub createrole: bool,
    pub createdb: bool,
    pub bypassrls: bool,
    /// The RDS role set is present (`rds_superuser` exists): memberships in RDS roles can be kept.
    pub rds_roles: bool,
    /// Real RDS: `rds.extensions` exists, and `rds_superuser` may create the extensions and event
    /// triggers RDS supports.
    pub rds_superuser_powers: bool,
    /// `rds.allowed_extensions`, when set to anything but `*`.
    pub allowed_extensions: Option<Vec<String>>,
    pub roles: BTreeMap<String, TargetRole>,
    /// By lower-case name.
    pub settings: BTreeMap<String, Setting>,
    pub available_extensions: BTreeMap<String, AvailableExtension>,
    /// Extensions installed in the target database, with their owners.
    pub installed_extensions: BTreeMap<String, String>,
    /// Procedural languages of the target database and whether they are trusted.
    pub languages: BTreeMap<String, bool>,
    /// Schemas of the target database.
    pub schemas: BTreeSet<String>,
    /// The job's target database, if it exists.
    pub database: Option<TargetDatabase>,
}

/// Facts about the source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceFacts {
    pub server_version_num: i32,
    /// The source's connecting (master) user.
    pub master: String,
    pub database: String,
    /// Owners of the source database's extensions.
    pub extension_owners: BTreeMap<String, String>,
    /// Publications of the source database (not recreated: RDS-CASES T22).
    pub publications: Vec<String>,
    /// Subscriptions of the source database (not recreated: RDS-CASES T22).
    pub subscriptions: Vec<String>,
    /// Roles the source user was made a member of for this run (`obtainSourceAccess`), which the
    /// globals dump shows but the source does not really have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub temporary_memberships: Vec<String>,
}

/// Everything a plan is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Facts {
    pub target: TargetFacts,
    pub source: SourceFacts,
    /// The job's target database name.
    pub target_database: String,
}

impl TargetFacts {
    /// Reads the facts through a connection to the target; `in_database` says whether that
    /// connection is to the job's target database (for extensions, languages and schemas).
    pub async fn read(client: &Client, target_database: &str, in_database: bool) -> Result<Self> {
        let db = |what: &str| {
            let what = what.to_string();
            move |e| Error::db(format!("read target facts: {what}"), e)
        };
        let row = client
            .query_one(
                "SELECT current_setting('server_version_num')::int, current_user::text, r.rolsuper, \
                        r.rolcreaterole, r.rolcreatedb, r.rolbypassrls, \
                        EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_superuser'), \
                        current_setting('rds.extensions', true) IS NOT NULL, \
                        current_setting('rds.allowed_extensions', true) \
                 FROM pg_roles r WHERE r.rolname = current_user",
                &[],
            )
            .await
            .map_err(db("server"))?;
        let version: i32 = row.get(0);
        let mut facts = TargetFacts {
            server_version_num: version,
            master: row.get(1),
            superuser: row.get(2),
            createrole: row.get(3),
            createdb: row.get(4),
            bypassrls: row.get(5),
            rds_roles: row.get(6),
            rds_superuser_powers: row.get(7),
            allowed_extensions: row
                .get::<_, Option<String>>(8)
                .filter(|v| !v.trim().is_empty() && v.trim() != "*")
                .map(|v| v.split(',').map(|e| e.trim().to_string()).collect()),
            ..Self::default()
        };

        // Who may alter a role: PG16+ needs ADMIN OPTION on it; before, CREATEROLE sufficed for
        // roles that are neither superusers nor (to change the attribute) replication roles.
        let alterable = if version >= 160000 {
            "(me.rolsuper OR pg_has_role(r.oid, 'USAGE WITH ADMIN OPTION'))"
        } else {
            "(me.rolsuper OR (me.rolcreaterole AND NOT r.rolsuper AND NOT r.rolreplication))"
        };
        let roles = client
            .query(
                &format!(
                    "SELECT r.rolname::text, r.rolsuper, r.rolreplication, r.rolbypassrls, r.rolcreatedb, {alterable}, \
                            r.rolname <> current_user AND pg_has_role(r.oid, me.oid, 'MEMBER'), \
                            pg_has_role(me.oid, r.oid, 'USAGE') \
                     FROM pg_roles r, pg_roles me WHERE me.rolname = current_user"
                ),
                &[],
            )
            .await
            .map_err(db("roles"))?;
        for r in roles {
            facts.roles.insert(
                r.get(0),
                TargetRole {
                    superuser: r.get(1),
                    replication: r.get(2),
                    bypassrls: r.get(3),
                    createdb: r.get(4),
                    alterable: r.get(5),
                    member_of_master: r.get(6),
                    master_is_member: r.get(7),
                },
            );
        }

        let (settable, grantable) = if version >= 150000 {
            (
                "s.context = 'user' OR (s.context = 'superuser' AND has_parameter_privilege(s.name, 'SET'))",
                "has_parameter_privilege(s.name, 'SET WITH GRANT OPTION')",
            )
        } else {
            ("s.context = 'user' OR (s.context = 'superuser' AND $1)", "$1")
        };
        let sql =
            format!("SELECT s.name::text, s.context::text, ({settable}) OR $1, ({grantable}) OR $1 FROM pg_settings s");
        let superuser = facts.superuser;
        for r in client.query(&sql, &[&superuser]).await.map_err(db("settings"))? {
            let name: String = r.get(0);
            facts.settings.insert(
                name.to_lowercase(),
                Setting { name, context: r.get(1), settable: r.get(2), grantable: r.get(3) },
            );
        }

        let trusted = if version >= 130000 { "coalesce(v.trusted, false)" } else { "false" };
        let sql = format!(
            "SELECT e.name::text, coalesce(e.default_version, '')::text, {trusted} FROM pg_available_extensions e \
             LEFT JOIN pg_available_extension_versions v ON v.name = e.name AND v.version = e.default_version"
        );
        for r in client.query(&sql, &[]).await.map_err(db("extensions"))? {
            facts
                .available_extensions
                .insert(r.get(0), AvailableExtension { default_version: r.get(1), trusted: r.get(2) });
        }

        let database = client
            .query_opt(
                "SELECT pg_get_userbyid(datdba)::text, pg_encoding_to_char(encoding)::text, datcollate::text, \
                        datctype::text FROM pg_database WHERE datname = $1",
                &[&target_database],
            )
            .await
            .map_err(db("database"))?;
        facts.database = database.map(|r| TargetDatabase {
            owner: r.get(0),
            encoding: r.get(1),
            collate: r.get(2),
            ctype: r.get(3),
        });

        if in_database {
            for r in client
                .query("SELECT extname::text, pg_get_userbyid(extowner)::text FROM pg_extension", &[])
                .await
                .map_err(db("installed extensions"))?
            {
                facts.installed_extensions.insert(r.get(0), r.get(1));
            }
            for r in client
                .query("SELECT lanname::text, lanpltrusted FROM pg_language", &[])
                .await
                .map_err(db("languages"))?
            {
                facts.languages.insert(r.get(0), r.get(1));
            }
            for r in client.query("SELECT nspname::text FROM pg_namespace", &[]).await.map_err(db("schemas"))? {
                facts.schemas.insert(r.get(0));
            }
        }
        Ok(facts)
    }

    /// A role exists on the target.
    pub fn has_role(&self, name: &str) -> bool {
        self.roles.contains_key(name)
    }

    /// The setting, by any spelling of its name.
    pub fn setting(&self, name: &str) -> Option<&Setting> {
        self.settings.get(&name.to_lowercase())
    }
}

impl SourceFacts {
    /// Reads the facts through the source connection (to the job's source database).
    pub async fn read(client: &Client) -> Result<Self> {
        let db = |what: &'static str| move |e| Error::db(format!("read source facts: {what}"), e);
        let row = client
            .query_one(
                "SELECT current_setting('server_version_num')::int, current_user::text, current_database()::text",
                &[],
            )
            .await
            .map_err(db("server"))?;
        let mut facts =
            SourceFacts { server_version_num: row.get(0), master: row.get(1), database: row.get(2), ..Self::default() };
        for r in client
            .query("SELECT extname::text, pg_get_userbyid(extowner)::text FROM pg_extension", &[])
            .await
            .map_err(db("extensions"))?
        {
            facts.extension_owners.insert(r.get(0), r.get(1));
        }
        facts.publications = client
            .query("SELECT pubname::text FROM pg_publication ORDER BY 1", &[])
            .await
            .map_err(db("publications"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        facts.subscriptions = client
            .query(
                "SELECT subname::text FROM pg_subscription \
                 WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY 1",
                &[],
            )
            .await
            .map_err(db("subscriptions"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(facts)
    }
}

/// RDS-internal role names that are not `rds_*` (RDS-CASES T4).
const RDS_INTERNAL_ROLES: &[&str] = &["rdsadmin", "rdsrepladmin", "rdstopmgr", "rdswriteforwarduser", "rdsproxyadmin"];

/// Roles RDS owns (never created or altered by pgferry): `rdsadmin`, `rds_*`, `rdsrepladmin`…
/// Also pgferry's per-run holder roles (`pgferry_hold_*`, [`crate::roles::holder_role`]): a
/// cluster that is the target of other runs holds them for those runs; like RDS's roles they
/// belong to that cluster and are never carried by a copy, nor listed by verification.
pub fn is_rds_internal(role: &str) -> bool {
    RDS_INTERNAL_ROLES.contains(&role) || role.starts_with("rds_") || role.starts_with(crate::roles::HOLDER_PREFIX)
}

/// Predefined roles of PostgreSQL (`pg_monitor`, `pg_read_all_data`…): exist or not by version.
pub fn is_predefined(role: &str) -> bool {
    role.starts_with("pg_")
}
