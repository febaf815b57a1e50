/*
 * ivfpq_insert.cpp
 *		aminsert: assign a new row to its nearest list, PQ-encode its residual
 *		and append (heap TID, code) to the list's tail page, WAL-logged.  The
 *		row is searchable as soon as its transaction commits.
 */
#include "ivfpq_am.h"

extern "C"
{
#include "utils/memutils.h"
}

/* aminsert: index one heap row; NULL vectors are not indexed. */
bool
ivfpqinsert(Relation index, Datum *values, bool *isnull, ItemPointer heap_tid,
			Relation heap, IndexUniqueCheck checkUnique, bool indexUnchanged,
			IndexInfo *indexInfo)
{
	MemoryContext insert_context;
	MemoryContext old_context;
	IvfpqQuantizer *q;
	Vector	   *v;
	float	   *x;
	uint8	   *code;
	int32		list = 0;

	if (isnull[0])
		return false;

	insert_context = AllocSetContextCreate(CurrentMemoryContext, "ivfpq insert",
										   ALLOCSET_SMALL_SIZES);
	old_context = MemoryContextSwitchTo(insert_context);

	q = IvfpqGetQuantizer(index, false);
	v = DatumGetVector(values[0]);
	if (q->dim > 0 && v->dim != q->dim)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("expected %d dimensions, not %d", q->dim, v->dim),
				 errdetail("Index \"%s\" was built for %d dimensions.",
						   RelationGetRelationName(index), q->dim)));

	x = (float *) palloc(sizeof(float) * v->dim);
	memcpy(x, v->x, sizeof(float) * v->dim);
	if (q->metric == IVFPQ_METRIC_COSINE)
	{
		bool		is_zero;

		IvfpqNormalize(x, v->dim, &is_zero);
		if (is_zero)
		{
			/* Cosine distance is undefined for a zero vector: not indexed. */
			MemoryContextSwitchTo(old_context);
			MemoryContextDelete(insert_context);
			return false;
		}
	}

	code = (uint8 *) palloc0(Max(q->m, 1));
	if (q->trained)
	{
		ivfpq::core::QuantizerView view = IvfpqView(q);
		const float *prepared = q->prepared;

		IvfpqCallCore("ivfpq insert", [&]() {
			ivfpq::core::AssignLists(view, x, 1, &list);
			ivfpq::core::EncodeResidualsPrepared(view, prepared, x, &list, 1, code);
		});
	}

	IvfpqAppendEntry(index, q, list, heap_tid, code);

	MemoryContextSwitchTo(old_context);
	MemoryContextDelete(insert_context);
	return false;
}
