/*
 * ivfpq_stats.cpp
 *		ivfpq_index_stats(regclass): what an ivfpq index holds, counted from
 *		its pages: lists, rows, pages, bytes per row, list-size distribution,
 *		training sample size, the PQ parameters, whether the centroids and
 *		codebooks were trained or inherited from another index, when the
 *		index was built, and (0.3) its free pages, pages per list and the
 *		entries added since the build: when VACUUM or REINDEX is due.
 *
 *		Reading an index's statistics needs SELECT on its table or the
 *		privileges of pg_stat_scan_tables (as pgstattuple); IvfpqCheckReadable.
 */
#include "ivfpq_am.h"

extern "C"
{
#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/index.h"
#include "catalog/pg_authid.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/builtins.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(ivfpq_index_stats);
}

/*
 * The caller may read what index holds: SELECT on its table, or the
 * privileges of pg_stat_scan_tables; else ERROR 42501.
 */
void
IvfpqCheckReadable(Relation index, const char *function)
{
	Oid			heap_oid = IndexGetRelation(RelationGetRelid(index), false);

	if (pg_class_aclcheck(heap_oid, GetUserId(), ACL_SELECT) == ACLCHECK_OK ||
		has_privs_of_role(GetUserId(), ROLE_PG_STAT_SCAN_TABLES))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for %s of index \"%s\"", function, RelationGetRelationName(index)),
			 errdetail("Only roles with SELECT on table \"%s\" or the privileges of pg_stat_scan_tables may read it.",
					   get_rel_name(heap_oid))));
}

static int
IvfpqCompareInt64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/* ivfpq_index_stats(index regclass) returns record. */
extern "C" Datum
ivfpq_index_stats(PG_FUNCTION_ARGS)
{
	Oid			index_oid = PG_GETARG_OID(0);
	Relation	index;
	TupleDesc	tupdesc;
	IvfpqMetaPageData meta;
	int64	   *sizes;
	int64	   *list_pages;
	int64		rows = 0;
	int64		added = 0;
	int64		free_pages;
	int64		chain_pages = 0;
	BlockNumber pages;
	int			lists;
	Datum		values[21];
	bool		nulls[21];

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	/*
	 * The index may have been dropped since the caller looked it up (REINDEX
	 * CONCURRENTLY drops the old index; the background worker runs it):
	 * then there is nothing to report.
	 */
	index = try_relation_open(index_oid, AccessShareLock);
	if (index == NULL)
		PG_RETURN_NULL();
	/* An index whose build has not written its pages yet (CONCURRENTLY, phase 1). */
	if (index->rd_rel->relkind == RELKIND_INDEX && RelationGetNumberOfBlocks(index) == 0)
	{
		relation_close(index, AccessShareLock);
		PG_RETURN_NULL();
	}
	if (index->rd_rel->relkind != RELKIND_INDEX || index->rd_indam == NULL ||
		index->rd_indam->ambuild != ivfpqbuild)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not an ivfpq index", RelationGetRelationName(index))));
	IvfpqCheckReadable(index, "ivfpq_index_stats");

	IvfpqReadMeta(index, &meta);
	pages = RelationGetNumberOfBlocks(index);
	lists = meta.shape.lists;
	sizes = (int64 *) palloc0(sizeof(int64) * Max(lists, 1));
	list_pages = (int64 *) palloc0(sizeof(int64) * Max(lists, 1));
	for (int list = 0; list < lists; list++)
	{
		sizes[list] = IvfpqCountListEntries(index, meta.directory_start, (int) list, NULL,
											&list_pages[list], &added);
		rows += sizes[list];
		chain_pages += list_pages[list];
	}
	/*
	 * The list area's pages on no chain: those VACUUM unlinked (reusable now
	 * or later) and never-written ones.  Derived from the chains just walked
	 * rather than read again; ivfpq_verify reports a list page on no chain.
	 * Inserts running meanwhile may add pages: never below 0.
	 */
	free_pages = Max((int64) pages - (int64) IvfpqFirstListBlock(&meta) - chain_pages, 0);
	relation_close(index, AccessShareLock);

	qsort(sizes, lists, sizeof(int64), IvfpqCompareInt64);
	qsort(list_pages, lists, sizeof(int64), IvfpqCompareInt64);
	MemSet(nulls, 0, sizeof(nulls));
	values[0] = Int32GetDatum((int32) meta.shape.lists);
	values[1] = Int64GetDatum(rows);
	values[2] = Int64GetDatum((int64) pages);
	if (rows > 0)
		values[3] = Float8GetDatum((double) pages * BLCKSZ / rows);
	else
		nulls[3] = true;
	values[4] = Int64GetDatum(meta.shape.lists > 0 ? sizes[0] : 0);
	values[5] = Int64GetDatum(meta.shape.lists > 0 ? sizes[meta.shape.lists / 2] : 0);
	values[6] = Int64GetDatum(meta.shape.lists > 0 ? sizes[meta.shape.lists - 1] : 0);
	values[7] = Int64GetDatum((int64) meta.training_rows);
	values[8] = Int32GetDatum((int32) meta.shape.dim);
	values[9] = Int32GetDatum((int32) meta.shape.m);
	values[10] = Int32GetDatum((int32) meta.shape.nbits);
	values[11] = CStringGetTextDatum(IvfpqMetricName(meta.shape.metric));
	values[12] = BoolGetDatum(meta.trained != 0);
	/* Read by 0.2's definition; 0.1's (before ALTER EXTENSION UPDATE) has 13 columns. */
	values[13] = BoolGetDatum(meta.inherited != 0);
	values[14] = TimestampTzGetDatum(meta.built_at);
	nulls[14] = meta.built_at == 0;		/* built by 0.1 */
	/* 0.3's columns; 0.2's definition (before ALTER EXTENSION UPDATE) stops at built_at. */
	values[15] = Int64GetDatum(free_pages);
	values[16] = Int32GetDatum((int32) (lists > 0 ? list_pages[0] : 0));
	values[17] = Int32GetDatum((int32) (lists > 0 ? list_pages[lists / 2] : 0));
	values[18] = Int32GetDatum((int32) (lists > 0 ? list_pages[lists - 1] : 0));
	values[19] = Int64GetDatum(added);
	if (rows > 0)
		values[20] = Float8GetDatum((double) added / rows);
	else
		nulls[20] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
