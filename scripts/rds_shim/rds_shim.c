/*
 * rds_shim — makes a vanilla PostgreSQL (14 to 18) test bed grant two privileges the way Amazon RDS
 * does, so that pgferry's continuous mode can be tested against the RDS role model.
 *
 * TEST BED ONLY: scripts/testbed loads it with shared_preload_libraries. Never load it into a
 * server that holds anything of value: it hands subscription management to rds_superuser.
 *
 * On RDS (RDS-CASES T46, T47):
 *   1. The master user (a member of rds_superuser, not a superuser) may CREATE, ALTER and DROP
 *      SUBSCRIPTION. Vanilla PostgreSQL 15 allows that to superusers only.
 *   2. A member of rds_replication may create replication slots and connect as a walsender,
 *      although its rolreplication stays false. Vanilla PostgreSQL checks rolreplication.
 *
 * What the shim does (a ProcessUtility_hook, nothing else):
 *   1. CREATE/ALTER/DROP SUBSCRIPTION by a non-superuser member of rds_superuser runs as the
 *      bootstrap superuser (rdsadmin). The subscription is then owned by rdsadmin: PostgreSQL 15
 *      requires a subscription's owner to be a superuser, so it cannot be handed to the master;
 *      the hook lets the master alter and drop it all the same.
 *   2. GRANT rds_replication TO r also sets REPLICATION on r, REVOKE takes it away, so
 *      PostgreSQL's rolreplication checks pass where RDS's membership checks would. (Unlike RDS,
 *      rolreplication is then true: code must detect the right with pg_has_role, as on RDS.)
 *      Only where rds_shim.replication_attribute = on (the test bed's source): elsewhere
 *      rolreplication stays false as on RDS, and roles keep the attributes a copy gave them.
 *   3. Side effect of 2 undone: PostgreSQL 15 lets only superusers alter a REPLICATION role, where
 *      on RDS (rolreplication false) CREATEROLE is enough. ALTER ROLE r PASSWORD … (password
 *      only) on a member of rds_replication by a member of rds_superuser runs as rdsadmin.
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "commands/user.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "nodes/value.h"
#include "parser/parse_node.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

void _PG_init(void);

static ProcessUtility_hook_type prev_process_utility = NULL;

/* rds_shim.replication_attribute: whether emulation 2 (and 3) is active on this server. */
static bool replication_attribute = false;

/* The next hook in the chain, or the standard implementation. */
static void
next_process_utility(PlannedStmt *pstmt, const char *query, bool read_only_tree,
					 ProcessUtilityContext context, ParamListInfo params,
					 QueryEnvironment *query_env, DestReceiver *dest, QueryCompletion *qc)
{
	if (prev_process_utility)
		prev_process_utility(pstmt, query, read_only_tree, context, params, query_env, dest, qc);
	else
		standard_ProcessUtility(pstmt, query, read_only_tree, context, params, query_env, dest, qc);
}

/* Whether the current user is an ordinary member of rds_superuser (a superuser needs no help). */
static bool
acting_as_rds_superuser(void)
{
	Oid			rds_superuser = get_role_oid("rds_superuser", true);

	return OidIsValid(rds_superuser) && !superuser() && has_privs_of_role(GetUserId(), rds_superuser);
}

/* Whether a GRANT/REVOKE of roles names rds_replication among the granted roles. */
static bool
grants_rds_replication(GrantRoleStmt *stmt)
{
	ListCell   *lc;

	foreach(lc, stmt->granted_roles)
	{
		AccessPriv *priv = lfirst_node(AccessPriv, lc);

		if (priv->priv_name && strcmp(priv->priv_name, "rds_replication") == 0)
			return true;
	}
	return false;
}

/* ALTER ROLE grantee [NO]REPLICATION for every grantee (run as the bootstrap superuser). */
static void
set_replication_attribute(GrantRoleStmt *stmt)
{
	ListCell   *lc;

	foreach(lc, stmt->grantee_roles)
	{
		AlterRoleStmt *alter = makeNode(AlterRoleStmt);

		alter->role = lfirst_node(RoleSpec, lc);
#if PG_VERSION_NUM >= 150000
		alter->options = list_make1(makeDefElem("isreplication",
												(Node *) makeBoolean(stmt->is_grant), -1));
		alter->action = 1;
		AlterRole(make_parsestate(NULL), alter);
#else
		/* PostgreSQL 14: booleans in role options are integers, AlterRole takes no ParseState. */
		alter->options = list_make1(makeDefElem("isreplication",
												(Node *) makeInteger(stmt->is_grant ? 1 : 0), -1));
		alter->action = 1;
		AlterRole(alter);
#endif
	}
}

/* ALTER ROLE r PASSWORD … (nothing else) where r is a member of rds_replication. */
static bool
password_of_replication_member(Node *parsetree)
{
	AlterRoleStmt *stmt;
	Oid			rds_replication = get_role_oid("rds_replication", true);
	Oid			role;
	ListCell   *lc;

	if (!IsA(parsetree, AlterRoleStmt) || !OidIsValid(rds_replication))
		return false;
	stmt = (AlterRoleStmt *) parsetree;
	if (stmt->role->roletype != ROLESPEC_CSTRING || stmt->options == NIL)
		return false;
	foreach(lc, stmt->options)
	{
		if (strcmp(lfirst_node(DefElem, lc)->defname, "password") != 0)
			return false;
	}
	role = get_role_oid(stmt->role->rolename, true);
	return OidIsValid(role) && is_member_of_role(role, rds_replication);
}

static void
rds_shim_process_utility(PlannedStmt *pstmt, const char *query, bool read_only_tree,
						 ProcessUtilityContext context, ParamListInfo params,
						 QueryEnvironment *query_env, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	bool		subscription = IsA(parsetree, CreateSubscriptionStmt) ||
		IsA(parsetree, AlterSubscriptionStmt) ||
		IsA(parsetree, DropSubscriptionStmt);
	bool		replication_grant = replication_attribute && IsA(parsetree, GrantRoleStmt) &&
		grants_rds_replication((GrantRoleStmt *) parsetree);
	bool		replication_password = replication_attribute && password_of_replication_member(parsetree);
	Oid			saved_user;
	int			saved_context;

	if (!((subscription || replication_password) && acting_as_rds_superuser()) &&
		!replication_grant)
	{
		next_process_utility(pstmt, query, read_only_tree, context, params, query_env, dest, qc);
		return;
	}

	GetUserIdAndSecContext(&saved_user, &saved_context);
	if (replication_grant)
	{
		/* The grant itself is checked as the caller; only the attribute needs the superuser. */
		next_process_utility(pstmt, query, read_only_tree, context, params, query_env, dest, qc);
		SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID, saved_context | SECURITY_LOCAL_USERID_CHANGE);
		PG_TRY();
		{
			set_replication_attribute((GrantRoleStmt *) parsetree);
		}
		PG_FINALLY();
		{
			SetUserIdAndSecContext(saved_user, saved_context);
		}
		PG_END_TRY();
		return;
	}

	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID, saved_context | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		next_process_utility(pstmt, query, read_only_tree, context, params, query_env, dest, qc);
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(saved_user, saved_context);
	}
	PG_END_TRY();
}

void
_PG_init(void)
{
	DefineCustomBoolVariable("rds_shim.replication_attribute",
							 "GRANT rds_replication also sets REPLICATION (test bed only).",
							 NULL, &replication_attribute, false, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("rds_shim");
#else
	EmitWarningsOnPlaceholders("rds_shim");
#endif
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = rds_shim_process_utility;
}
