/*
 * ivfpq_insert.cpp
 *		aminsert: assign a new row to its nearest list, PQ-encode its residual
 *		and append (heap TID, code) to the list's tail page, WAL-logged.  The
 *		row is searchable as soon as its transaction commits.
 */
#include "ivfpq_am.h"

extern "C"
{
#include "storage/lmgr.h"
#include "utils/memutils.h"
}

/*
 * Append (tid, code) to a list: into the list's tail page if it has room, else
 * onto a new page linked after it.  Concurrent inserters are safe: the tail
 * page's next_block is the truth, the directory's tail_block only a hint.
 * Every change is WAL-logged with GenericXLog (at most 3 pages per record).
 * New pages come from the free space map first (pages VACUUM freed).  The
 * entry goes after the page's others and counts as added since the build
 * (IvfpqPageOpaqueData.inserted).
 */
void
IvfpqAppendEntry(Relation index, const IvfpqQuantizer *q, int list, ItemPointer tid,
				 const uint8 *code)
{
	BlockNumber dir_block = q->directory_start + list / IVFPQ_DIR_ENTRIES_PER_PAGE;
	int			dir_slot = list % IVFPQ_DIR_ENTRIES_PER_PAGE;
	int			capacity = q->list_page_capacity;
	IvfpqDirEntryData entry;
	BlockNumber block;

	IvfpqReadDirEntry(index, q->directory_start, list, &entry);

	if (entry.first_block == InvalidBlockNumber)
	{
		/* The list has no page yet: create it under the directory lock. */
		Buffer		dir_buffer = ReadBuffer(index, dir_block);
		IvfpqDirEntry dir_entry;

		LockBuffer(dir_buffer, BUFFER_LOCK_EXCLUSIVE);
		dir_entry = &((IvfpqDirEntry) PageGetContents(BufferGetPage(dir_buffer)))[dir_slot];
		if (dir_entry->first_block == InvalidBlockNumber)
		{
			Buffer		new_buffer = IvfpqNewListBuffer(index);
			GenericXLogState *state = GenericXLogStart(index);
			Page		dir_page = GenericXLogRegisterBuffer(state, dir_buffer, 0);
			Page		new_page = GenericXLogRegisterBuffer(state, new_buffer, GENERIC_XLOG_FULL_IMAGE);
			IvfpqDirEntry e = &((IvfpqDirEntry) PageGetContents(dir_page))[dir_slot];

			IvfpqInitListPage(new_page, capacity, q->shape.m);
			IvfpqListTids(new_page)[0] = *tid;
			ivfpq::core::StoreBlockedCode(IvfpqListCodes(new_page, capacity), 0, (size_t) q->shape.m, code);
			IvfpqPageGetOpaque(new_page)->entry_count = 1;
			IvfpqPageGetOpaque(new_page)->inserted = 1;
			e->first_block = BufferGetBlockNumber(new_buffer);
			e->tail_block = e->first_block;
			GenericXLogFinish(state);
			UnlockReleaseBuffer(new_buffer);
			UnlockReleaseBuffer(dir_buffer);
			return;
		}
		entry = *dir_entry;
		UnlockReleaseBuffer(dir_buffer);
	}

	block = entry.tail_block;
	for (;;)
	{
		Buffer		buffer = ReadBuffer(index, block);
		Page		page;
		IvfpqPageOpaque opaque;

		LockBuffer(buffer, BUFFER_LOCK_EXCLUSIVE);
		page = BufferGetPage(buffer);
		opaque = IvfpqPageGetOpaque(page);

		if (opaque->page_type != IVFPQ_PAGE_LIST)
		{
			/*
			 * VACUUM unlinked the page our tail hint named after we read it
			 * (it cannot have been reused while this transaction runs; see
			 * ivfpq_pages.cpp).  Start again from the directory: from its
			 * new hint, or from the list's first page, which is never
			 * unlinked.
			 */
			UnlockReleaseBuffer(buffer);
			IvfpqReadDirEntry(index, q->directory_start, list, &entry);
			block = entry.tail_block != block ? entry.tail_block : entry.first_block;
			continue;
		}
		if (opaque->entry_count < capacity)
		{
			GenericXLogState *state = GenericXLogStart(index);
			Page		wpage = GenericXLogRegisterBuffer(state, buffer, 0);
			IvfpqPageOpaque wopaque = IvfpqPageGetOpaque(wpage);
			int			slot = wopaque->entry_count;

			IvfpqListTids(wpage)[slot] = *tid;
			ivfpq::core::StoreBlockedCode(IvfpqListCodes(wpage, capacity), (size_t) slot,
										  (size_t) q->shape.m, code);
			wopaque->entry_count++;
			wopaque->inserted++;
			GenericXLogFinish(state);
			UnlockReleaseBuffer(buffer);
			return;
		}
		if (opaque->next_block != InvalidBlockNumber)
		{
			/* Someone extended the list after our hint was read. */
			block = opaque->next_block;
			UnlockReleaseBuffer(buffer);
			continue;
		}

		/* Full tail: link a new page after it. */
		{
			Buffer		new_buffer = IvfpqNewListBuffer(index);
			BlockNumber new_block = BufferGetBlockNumber(new_buffer);
			GenericXLogState *state = GenericXLogStart(index);
			Page		wpage = GenericXLogRegisterBuffer(state, buffer, 0);
			Page		new_page = GenericXLogRegisterBuffer(state, new_buffer, GENERIC_XLOG_FULL_IMAGE);
			Buffer		dir_buffer;

			IvfpqInitListPage(new_page, capacity, q->shape.m);
			IvfpqListTids(new_page)[0] = *tid;
			ivfpq::core::StoreBlockedCode(IvfpqListCodes(new_page, capacity), 0, (size_t) q->shape.m, code);
			IvfpqPageGetOpaque(new_page)->entry_count = 1;
			IvfpqPageGetOpaque(new_page)->inserted = 1;
			IvfpqPageGetOpaque(wpage)->next_block = new_block;
			GenericXLogFinish(state);
			UnlockReleaseBuffer(new_buffer);
			UnlockReleaseBuffer(buffer);

			/* Move the directory's tail hint forward. */
			dir_buffer = ReadBuffer(index, dir_block);
			LockBuffer(dir_buffer, BUFFER_LOCK_EXCLUSIVE);
			state = GenericXLogStart(index);
			{
				Page		dir_page = GenericXLogRegisterBuffer(state, dir_buffer, 0);
				IvfpqDirEntry e = &((IvfpqDirEntry) PageGetContents(dir_page))[dir_slot];

				if (e->tail_block == block)
					e->tail_block = new_block;
			}
			GenericXLogFinish(state);
			UnlockReleaseBuffer(dir_buffer);
			return;
		}
	}
}

/*
 * An index built on an empty table with an untyped vector column does not
 * know its dimensions (0 in the metapage).  The first row inserted settles
 * them, WAL-logged under the metapage's exclusive lock; later rows of other
 * dimensions are refused as for any index, so the table stays one that
 * REINDEX can rebuild.  Read from the page each time (not the cached
 * quantizer, which keeps the 0 it was loaded with) while this state lasts.
 */
static int
IvfpqSettleDimensions(Relation index, int dim)
{
	Buffer		buffer = ReadBuffer(index, IVFPQ_METAPAGE_BLKNO);
	int			known;

	LockBuffer(buffer, BUFFER_LOCK_SHARE);
	known = IvfpqPageGetMeta(BufferGetPage(buffer))->shape.dim;
	if (known == 0)
	{
		LockBuffer(buffer, BUFFER_LOCK_UNLOCK);
		LockBuffer(buffer, BUFFER_LOCK_EXCLUSIVE);
		known = IvfpqPageGetMeta(BufferGetPage(buffer))->shape.dim;
		if (known == 0)
		{
			GenericXLogState *state = GenericXLogStart(index);
			Page		page = GenericXLogRegisterBuffer(state, buffer, 0);

			IvfpqPageGetMeta(page)->shape.dim = dim;
			GenericXLogFinish(state);
			known = dim;
		}
	}
	UnlockReleaseBuffer(buffer);
	return known;
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
	int			expected_dim;

	if (isnull[0])
		return false;

	insert_context = AllocSetContextCreate(CurrentMemoryContext, "ivfpq insert",
										   ALLOCSET_SMALL_SIZES);
	old_context = MemoryContextSwitchTo(insert_context);

	q = IvfpqGetQuantizer(index, false);
	v = DatumGetVector(values[0]);
	expected_dim = q->shape.dim > 0 ? q->shape.dim : IvfpqSettleDimensions(index, v->dim);
	if (v->dim != expected_dim)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("expected %d dimensions, not %d", expected_dim, v->dim),
				 q->shape.dim > 0 ?
				 errdetail("Index \"%s\" was built for %d dimensions.",
						   RelationGetRelationName(index), expected_dim) :
				 errdetail("Index \"%s\" holds vectors of %d dimensions.",
						   RelationGetRelationName(index), expected_dim)));

	x = (float *) palloc(sizeof(float) * v->dim);
	memcpy(x, v->x, sizeof(float) * v->dim);
	if (q->shape.metric == IVFPQ_METRIC_COSINE)
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

	code = (uint8 *) palloc0(Max(q->shape.m, 1));
	if (q->trained)
	{
		ivfpq::core::QuantizerView view = IvfpqView(q);
		const float *prepared = q->prepared;

		list = IvfpqAssignList(q, x);
		IvfpqCallCore("ivfpq insert", [&]() {
			ivfpq::core::EncodeResidualsPrepared(view, prepared, x, &list, 1, code);
		});
	}

	IvfpqAppendEntry(index, q, list, heap_tid, code);

	MemoryContextSwitchTo(old_context);
	MemoryContextDelete(insert_context);
	return false;
}
