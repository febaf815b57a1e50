/*
 * ivfpq_siblings.cpp
 *		Sibling scans: how many ivfpq index scans a MergeAppend merges, so each
 *		can share ivfpq.rerank with the others.
 *
 * A query over a partitioned parent, ORDER BY embedding <-> $1 LIMIT k, runs
 * as Limit -> MergeAppend -> one ivfpq index scan per partition.  Each child
 * computes and re-ranks a whole first batch before the MergeAppend takes its
 * first row, so with N partitions the heap work is N times that of one index
 * over the same rows.  Most of it is wasted: a partition holds about 1/N of
 * the rows, so a true neighbour's rank among its own partition's PQ
 * candidates is about 1/N of its rank in one index over all rows, and
 * ivfpq.rerank / N candidates per partition find what ivfpq.rerank find in
 * one index when the neighbours spread over the partitions.  (An ad-hoc run
 * on Fashion-MNIST split by id into 10 partitions gave recall@10 0.990 both
 * at rerank 50 and at rerank 10 per partition.)  When they sit in one
 * partition, as with data that drifts by day, the shared budget loses recall:
 * hence ivfpq.share_rerank is off by default.
 *
 * The scans cannot count each other: since PostgreSQL 12 an index scan
 * begins at its first row, and the MergeAppend runs its children one after
 * the other.  So an ExecutorStart hook walks the new plan-state tree and
 * records, per ivfpq index, how many ivfpq index scans the MergeAppend above
 * it merges (1 when it is not under one); IvfpqSiblingScans() reads it when
 * the scan starts.  The value is per backend and per index, overwritten by
 * every query that scans the index, which is right for the query that runs.
 * The walk runs only while ivfpq.share_rerank is on (the scan reads the
 * counts only then).
 */
#include "ivfpq_am.h"

extern "C"
{
#include "executor/executor.h"
#include "nodes/execnodes.h"
#include "nodes/nodeFuncs.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
}

typedef struct IvfpqSiblingEntry
{
	Oid			index_oid;		/* hash key */
	int			scans;			/* ivfpq scans merged with this one, itself included */
	uint64		walk;			/* the plan walk that last set it */
} IvfpqSiblingEntry;

static HTAB *sibling_table = NULL;
static uint64 walk_number = 0;
static ExecutorStart_hook_type previous_executor_start = NULL;

/* The ivfpq index an executor node scans, or InvalidOid. */
static Oid
IvfpqScannedIndex(PlanState *node)
{
	if (node != NULL && IsA(node, IndexScanState))
	{
		Relation	index = ((IndexScanState *) node)->iss_RelationDesc;

		/* NULL under EXPLAIN without ANALYZE */
		if (index != NULL && index->rd_indam != NULL && index->rd_indam->ambuild == ivfpqbuild)
			return RelationGetRelid(index);
	}
	return InvalidOid;
}

/* Record the sibling count of an index for this walk. */
static void
IvfpqSetSiblings(Oid index_oid, int scans)
{
	bool		found;
	IvfpqSiblingEntry *entry;

	if (sibling_table == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(IvfpqSiblingEntry);
		ctl.hcxt = TopMemoryContext;
		sibling_table = hash_create("ivfpq sibling scans", 64, &ctl,
									HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	entry = (IvfpqSiblingEntry *) hash_search(sibling_table, &index_oid, HASH_ENTER, &found);
	/* A MergeAppend is visited before its children: keep what it set. */
	if (found && entry->walk == walk_number)
		return;
	entry->scans = scans;
	entry->walk = walk_number;
}

/* Plan-state walker: a MergeAppend sets its ivfpq children, any other scan 1. */
static bool
IvfpqWalkPlanState(PlanState *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, MergeAppendState))
	{
		MergeAppendState *merge = (MergeAppendState *) node;
		int			scans = 0;

		for (int i = 0; i < merge->ms_nplans; i++)
			scans += OidIsValid(IvfpqScannedIndex(merge->mergeplans[i]));
		for (int i = 0; i < merge->ms_nplans; i++)
		{
			Oid			index_oid = IvfpqScannedIndex(merge->mergeplans[i]);

			if (OidIsValid(index_oid))
				IvfpqSetSiblings(index_oid, scans);
		}
	}
	else
	{
		Oid			index_oid = IvfpqScannedIndex(node);

		if (OidIsValid(index_oid))
			IvfpqSetSiblings(index_oid, 1);
	}
	return planstate_tree_walker(node, (bool (*) ()) IvfpqWalkPlanState, context);
}

/* ExecutorStart hook: start the query, then record sibling counts. */
static void
IvfpqExecutorStart(QueryDesc *query_desc, int eflags)
{
	if (previous_executor_start)
		previous_executor_start(query_desc, eflags);
	else
		standard_ExecutorStart(query_desc, eflags);
	/* Only ivfpq.share_rerank reads the counts: no walk for other queries. */
	if (ivfpq_share_rerank && (eflags & EXEC_FLAG_EXPLAIN_ONLY) == 0 && query_desc->planstate != NULL)
	{
		walk_number++;
		(void) IvfpqWalkPlanState(query_desc->planstate, NULL);
	}
}

/* Install the hook; from _PG_init. */
void
IvfpqSiblingsInit(void)
{
	previous_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = IvfpqExecutorStart;
}

/* How many ivfpq scans the MergeAppend above this index's scan merges (1 if none). */
int
IvfpqSiblingScans(Oid index_oid)
{
	IvfpqSiblingEntry *entry;

	if (sibling_table == NULL)
		return 1;
	entry = (IvfpqSiblingEntry *) hash_search(sibling_table, &index_oid, HASH_FIND, NULL);
	return entry != NULL ? Max(entry->scans, 1) : 1;
}
