/*
 * ivfpq_worker.cpp
 *		The background worker that keeps the ivfpq indexes of managed daily
 *		partitions trained on their own data.
 *
 * With shared_preload_libraries = 'ivfpq' a launcher starts, and it keeps one
 * worker running per database named in ivfpq.worker_databases (while
 * ivfpq.worker_enabled is on).  Each worker, every ivfpq.worker_naptime:
 *	1. drops the invalid indexes an interrupted REINDEX CONCURRENTLY left on
 *	   managed partitions (ivfpq_worker_leftovers());
 *	2. asks ivfpq_worker_next() for the next index to (re)train: a sealed
 *	   partition whose index is untrained, inherited (codebooks_from) or was
 *	   built before its day ended, or an active partition whose recall
 *	   estimate fell below ivfpq.retrain_recall;
 *	3. rebuilds it on its own rows with ALTER INDEX ... RESET
 *	   (codebooks_from) and REINDEX INDEX CONCURRENTLY, run as top-level
 *	   commands (CONCURRENTLY cannot run inside a transaction block or SPI),
 *	   so reads and writes of the table go on;
 *	4. records every step in ivfpq_worker_state (the view
 *	   ivfpq_worker_status), including errors, which are retried later
 *	   without holding up the other partitions.
 * One build at a time per database.  The decisions live in SQL (sql/install/
 * 70_worker.sql); this file only schedules and runs commands.  Nothing is
 * kept in memory between cycles, so a crash or restart resumes by itself.
 */
#include "ivfpq.h"

extern "C"
{
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "libpq/pqsignal.h"
#include "parser/analyze.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/cmdtag.h"
#include "tcop/pquery.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

PGDLLEXPORT void IvfpqLauncherMain(Datum main_arg);
PGDLLEXPORT void IvfpqWorkerMain(Datum main_arg);
}

/* Databases one launcher serves at most. */
#define IVFPQ_MAX_WORKER_DATABASES	32

/* How often the launcher looks at its workers and settings (ms). */
#define IVFPQ_LAUNCHER_NAP_MS		5000

/* ---------- settings ---------- */

bool		ivfpq_worker_enabled = true;
char	   *ivfpq_worker_databases = NULL;
int			ivfpq_worker_naptime = 60;
double		ivfpq_retrain_recall = 0.9;
int			ivfpq_recall_check_interval = 3600;
int			ivfpq_worker_retry_delay = 600;

/* Register the worker settings and, at preload, the launcher; from _PG_init. */
void
IvfpqWorkerInit(void)
{
	BackgroundWorker worker;

	DefineCustomBoolVariable("ivfpq.worker_enabled",
							 "Runs the ivfpq background workers that train sealed partitions.",
							 "Takes effect only with ivfpq in shared_preload_libraries.",
							 &ivfpq_worker_enabled, true, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("ivfpq.worker_databases",
							   "Databases whose managed partitions the ivfpq workers maintain (comma-separated).",
							   NULL, &ivfpq_worker_databases, "", PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ivfpq.worker_naptime",
							"Time between two rounds of an ivfpq worker.",
							NULL, &ivfpq_worker_naptime, 60, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomRealVariable("ivfpq.retrain_recall",
							 "Recall@10 estimate below which the worker retrains an active partition's index.",
							 "Measured by ivfpq_estimate_recall at the worker's own ivfpq.probes and ivfpq.rerank; 0 disables.",
							 &ivfpq_retrain_recall, 0.9, 0.0, 1.0, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ivfpq.recall_check_interval",
							"Time between two recall estimates of an active partition by the worker.",
							NULL, &ivfpq_recall_check_interval, 3600, 1, 7 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("ivfpq.worker_retry_delay",
							"Time before the worker retries a build that failed.",
							NULL, &ivfpq_worker_retry_delay, 600, 1, 7 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);

	if (!process_shared_preload_libraries_in_progress)
		return;

	MemSet(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 10;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "ivfpq");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "IvfpqLauncherMain");
	snprintf(worker.bgw_name, BGW_MAXLEN, "ivfpq launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "ivfpq launcher");
	RegisterBackgroundWorker(&worker);
}

/* ---------- the launcher ---------- */

typedef struct IvfpqWorkerSlot
{
	char		database[NAMEDATALEN];
	BackgroundWorkerHandle *handle;
	TimestampTz started_at;
} IvfpqWorkerSlot;

/* Start the worker of one database; false if no background worker slot was free. */
static bool
IvfpqStartDatabaseWorker(IvfpqWorkerSlot *slot)
{
	BackgroundWorker worker;

	MemSet(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;	/* the launcher restarts it */
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "ivfpq");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "IvfpqWorkerMain");
	snprintf(worker.bgw_name, BGW_MAXLEN, "ivfpq worker for database %s", slot->database);
	snprintf(worker.bgw_type, BGW_MAXLEN, "ivfpq worker");
	strlcpy(worker.bgw_extra, slot->database, BGW_EXTRALEN);
	worker.bgw_notify_pid = MyProcPid;
	slot->started_at = GetCurrentTimestamp();
	return RegisterDynamicBackgroundWorker(&worker, &slot->handle);
}

/*
 * Make the running workers match the settings: stop those whose database is
 * no longer listed (or all, when disabled), start the missing ones.  A worker
 * that stopped is started again, at most once per ivfpq.worker_naptime.
 */
static void
IvfpqReconcileWorkers(IvfpqWorkerSlot *slots, int *slot_count)
{
	char	   *list = pstrdup(ivfpq_worker_databases ? ivfpq_worker_databases : "");
	List	   *wanted = NIL;
	ListCell   *cell;

	if (!SplitIdentifierString(list, ',', &wanted))
	{
		ereport(LOG,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ivfpq.worker_databases is not a valid list of database names: \"%s\"",
						ivfpq_worker_databases)));
		wanted = NIL;
	}
	if (!ivfpq_worker_enabled)
		wanted = NIL;

	/* Stop the workers no longer wanted. */
	for (int i = 0; i < *slot_count;)
	{
		bool		keep = false;

		foreach(cell, wanted)
			keep |= strcmp((char *) lfirst(cell), slots[i].database) == 0;
		if (keep)
		{
			i++;
			continue;
		}
		if (slots[i].handle != NULL)
			TerminateBackgroundWorker(slots[i].handle);
		slots[i] = slots[--(*slot_count)];
	}

	/* Start the wanted ones that are not running. */
	foreach(cell, wanted)
	{
		const char *database = (const char *) lfirst(cell);
		IvfpqWorkerSlot *slot = NULL;
		pid_t		pid;

		for (int i = 0; i < *slot_count; i++)
			if (strcmp(slots[i].database, database) == 0)
				slot = &slots[i];
		if (slot == NULL)
		{
			if (*slot_count >= IVFPQ_MAX_WORKER_DATABASES)
			{
				ereport(LOG,
						(errmsg("ivfpq launcher serves at most %d databases; \"%s\" is left out",
								IVFPQ_MAX_WORKER_DATABASES, database)));
				continue;
			}
			slot = &slots[(*slot_count)++];
			MemSet(slot, 0, sizeof(*slot));
			strlcpy(slot->database, database, NAMEDATALEN);
		}
		else if (slot->handle != NULL &&
				 GetBackgroundWorkerPid(slot->handle, &pid) != BGWH_STOPPED)
			continue;			/* running, or starting */
		else if (slot->handle != NULL &&
				 !TimestampDifferenceExceeds(slot->started_at, GetCurrentTimestamp(),
											 ivfpq_worker_naptime * 1000))
			continue;			/* stopped recently: do not spin on a failing start */

		if (!IvfpqStartDatabaseWorker(slot))
		{
			ereport(LOG,
					(errmsg("ivfpq launcher could not start a worker for database \"%s\"", database),
					 errhint("Raise max_worker_processes.")));
			slot->handle = NULL;
		}
	}
	list_free(wanted);
	pfree(list);
}

/* Entry point of the launcher (a static background worker). */
void
IvfpqLauncherMain(Datum main_arg)
{
	IvfpqWorkerSlot slots[IVFPQ_MAX_WORKER_DATABASES];
	int			slot_count = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		IvfpqReconcileWorkers(slots, &slot_count);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 IVFPQ_LAUNCHER_NAP_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* ---------- one database's worker ---------- */

/*
 * Run one SQL command as a top-level statement, the way a client's simple
 * query would: its own transaction(s), no SPI, so REINDEX CONCURRENTLY and
 * DROP INDEX CONCURRENTLY may commit and start transactions inside.  Parse
 * trees and plans live in a context of their own, as exec_simple_query keeps
 * them in MessageContext: those commands free the transaction's memory while
 * their portal still runs.  Errors propagate (the caller catches them).
 * Shows in pg_stat_activity.
 */
static void
IvfpqRunTopLevel(const char *sql)
{
	static MemoryContext command_context = NULL;	/* reset by each command */
	MemoryContext caller_context = CurrentMemoryContext;
	List	   *parsetrees;
	ListCell   *cell;

	if (command_context == NULL)
		command_context = AllocSetContextCreate(TopMemoryContext, "ivfpq worker command",
												ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(command_context);	/* what a failed command left */
	SetCurrentStatementStartTimestamp();
	pgstat_report_activity(STATE_RUNNING, sql);
	StartTransactionCommand();
	MemoryContextSwitchTo(command_context);
	parsetrees = pg_parse_query(sql);
	foreach(cell, parsetrees)
	{
		RawStmt    *parsetree = lfirst_node(RawStmt, cell);
		List	   *queries;
		List	   *plans;
		Portal		portal;
		DestReceiver *receiver;
		QueryCompletion completion;
		bool		snapshot_set = false;
		int16		format = 0;

		if (analyze_requires_snapshot(parsetree))
		{
			PushActiveSnapshot(GetTransactionSnapshot());
			snapshot_set = true;
		}
		queries = pg_analyze_and_rewrite_fixedparams(parsetree, sql, NULL, 0, NULL);
		plans = pg_plan_queries(queries, sql, CURSOR_OPT_PARALLEL_OK, NULL);
		if (snapshot_set)
			PopActiveSnapshot();

		portal = CreatePortal("ivfpq worker", true, true);
		portal->visible = false;
		PortalDefineQuery(portal, NULL, sql, CreateCommandTag(parsetree->stmt), plans, NULL);
		PortalStart(portal, NULL, 0, InvalidSnapshot);
		PortalSetResultFormat(portal, 1, &format);
		receiver = CreateDestReceiver(DestNone);
		InitializeQueryCompletion(&completion);
		(void) PortalRun(portal, FETCH_ALL, true, true, receiver, receiver, &completion);
		receiver->rDestroy(receiver);
		PortalDrop(portal, false);
		CommandCounterIncrement();
		/* PortalRun may have switched contexts; stay in ours for the next statement. */
		MemoryContextSwitchTo(command_context);
	}
	CommitTransactionCommand();
	/* Commit leaves TopMemoryContext current; go back to the caller's. */
	MemoryContextSwitchTo(caller_context);
	MemoryContextReset(command_context);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Run a query through SPI in a transaction of its own and return the text of
 * the first column of every row (palloc'd in the caller's context).  With
 * nargs > 0 the arguments are text values ($1, $2, ...).
 */
static List *
IvfpqWorkerQuery(const char *sql, int nargs, const char **args)
{
	MemoryContext caller_context = CurrentMemoryContext;
	List	   *rows = NIL;
	Oid			types[4];
	Datum		values[4];
	char		nulls[4];

	Assert(nargs <= 4);
	for (int i = 0; i < nargs; i++)
	{
		types[i] = TEXTOID;
		values[i] = args[i] ? CStringGetTextDatum(args[i]) : (Datum) 0;
		nulls[i] = args[i] ? ' ' : 'n';
	}
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, sql);
	if (SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0) < 0)
		elog(ERROR, "ivfpq worker query failed: %s", sql);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *value = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		MemoryContext spi_context = MemoryContextSwitchTo(caller_context);

		rows = lappend(rows, value ? pstrdup(value) : NULL);
		MemoryContextSwitchTo(spi_context);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	/* Commit leaves TopMemoryContext current; go back to the caller's. */
	MemoryContextSwitchTo(caller_context);
	pgstat_report_activity(STATE_IDLE, NULL);
	return rows;
}

/*
 * The extension's schema in this database, quoted for SQL, or NULL when
 * ivfpq is not installed here (the worker then waits for it).  Also makes it
 * the session's search_path: the worker's SQL functions name the extension's
 * objects unqualified.
 */
static char *
IvfpqWorkerSchema(void)
{
	List	   *rows = IvfpqWorkerQuery("SELECT pg_catalog.quote_ident(n.nspname) || "
										"pg_catalog.left(pg_catalog.set_config('search_path', "
										"pg_catalog.quote_ident(n.nspname) || ', pg_catalog', false), 0) "
										"FROM pg_catalog.pg_extension e "
										"JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace "
										"WHERE e.extname = 'ivfpq'", 0, NULL);

	return rows != NIL ? (char *) linitial(rows) : NULL;
}

/*
 * Run a top-level command; on error, record nothing, clean up and return the
 * message (palloc'd in the caller's context), else NULL.
 */
static char *
IvfpqTryTopLevel(const char *sql)
{
	MemoryContext caller_context = CurrentMemoryContext;
	char	   *volatile message = NULL;

	PG_TRY();
	{
		IvfpqRunTopLevel(sql);
	}
	PG_CATCH();
	{
		ErrorData  *error;

		MemoryContextSwitchTo(caller_context);
		error = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		/* The error is recorded in ivfpq_worker_state; the log gets it too. */
		ereport(LOG,
				(errmsg("ivfpq worker: \"%s\" failed: %s", sql, error->message)));
		message = pstrdup(error->message);
		FreeErrorData(error);
		pgstat_report_activity(STATE_IDLE, NULL);
	}
	PG_END_TRY();
	return message;
}

/* Drop what interrupted concurrent builds left behind (invalid indexes). */
static void
IvfpqDropLeftovers(const char *schema)
{
	List	   *leftovers = IvfpqWorkerQuery(psprintf("SELECT %s.ivfpq_worker_leftovers()", schema), 0, NULL);
	ListCell   *cell;

	foreach(cell, leftovers)
	{
		char	   *message = IvfpqTryTopLevel(psprintf("DROP INDEX CONCURRENTLY IF EXISTS %s",
														(char *) lfirst(cell)));

		if (message != NULL)
			pfree(message);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * Retrain one index on its own rows: forget inherited codebooks, rebuild
 * concurrently, record the outcome.
 */
static void
IvfpqRetrain(const char *schema, const char *index, const char *reason)
{
	const char *args[2] = {index, reason};
	char	   *message;

	(void) IvfpqWorkerQuery(psprintf("SELECT %s.ivfpq_worker_begin($1::regclass, $2)", schema), 2, args);
	message = IvfpqTryTopLevel(psprintf("ALTER INDEX %s RESET (codebooks_from)", index));
	if (message == NULL)
		message = IvfpqTryTopLevel(psprintf("REINDEX INDEX CONCURRENTLY %s", index));
	args[1] = message;
	(void) IvfpqWorkerQuery(psprintf("SELECT %s.ivfpq_worker_end($1::regclass, $2)", schema), 2, args);
	if (message != NULL)
		IvfpqDropLeftovers(schema);
}

/* One round: clean up, then retrain whatever ivfpq_worker_next() names. */
static void
IvfpqWorkerRound(void)
{
	char	   *schema = IvfpqWorkerSchema();

	if (schema == NULL)
		return;
	IvfpqDropLeftovers(schema);
	for (;;)
	{
		List	   *next;
		char	   *index;
		char	   *reason;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (!ivfpq_worker_enabled)
			break;
		next = IvfpqWorkerQuery(psprintf("SELECT format('%%s %%s', n.index::text, n.reason) "
										 "FROM %s.ivfpq_worker_next() n", schema), 0, NULL);
		if (next == NIL)
			break;
		index = pstrdup((char *) linitial(next));
		reason = strchr(index, ' ');
		*reason++ = '\0';
		IvfpqRetrain(schema, index, reason);
	}
}

/* Entry point of a database's worker (a dynamic background worker). */
void
IvfpqWorkerMain(Datum main_arg)
{
	char		database[NAMEDATALEN];
	MemoryContext round_context;

	strlcpy(database, MyBgworkerEntry->bgw_extra, NAMEDATALEN);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	pqsignal(SIGINT, StatementCancelHandler);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(database, NULL, 0);
	pgstat_report_appname("ivfpq worker");
	round_context = AllocSetContextCreate(TopMemoryContext, "ivfpq worker round",
										  ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (!ivfpq_worker_enabled)
			proc_exit(0);		/* the launcher starts it again when enabled */

		/* An error outside a build (a cancel between builds, say) ends the round only. */
		MemoryContextSwitchTo(round_context);
		PG_TRY();
		{
			IvfpqWorkerRound();
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(round_context);
			EmitErrorReport();
			FlushErrorState();
			AbortOutOfAnyTransaction();
			pgstat_report_activity(STATE_IDLE, NULL);
		}
		PG_END_TRY();
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(round_context);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 (long) ivfpq_worker_naptime * 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
