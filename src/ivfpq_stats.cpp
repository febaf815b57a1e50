/*
 * ivfpq_stats.cpp
 *		ivfpq_index_stats(regclass): what an ivfpq index holds, counted from
 *		its pages: lists, rows, pages, bytes per row, list-size distribution,
 *		training sample size, the PQ parameters, whether the centroids and
 *		codebooks were trained or inherited from another index, and when the
 *		index was built.
 */
#include <algorithm>

#include "ivfpq_am.h"

extern "C"
{
#include "access/htup_details.h"
#include "access/relation.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(ivfpq_index_stats);
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
	int64		rows = 0;
	BlockNumber pages;
	Datum		values[15];
	bool		nulls[15];

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

	IvfpqReadMeta(index, &meta);
	pages = RelationGetNumberOfBlocks(index);
	sizes = (int64 *) palloc0(sizeof(int64) * Max(meta.shape.lists, 1));
	for (int list = 0; list < meta.shape.lists; list++)
	{
		sizes[list] = IvfpqCountListEntries(index, meta.directory_start, (int) list, NULL);
		rows += sizes[list];
	}
	relation_close(index, AccessShareLock);

	std::sort(sizes, sizes + meta.shape.lists);
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
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
