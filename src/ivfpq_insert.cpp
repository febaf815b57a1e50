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
 * ---------- side pages ----------
 *
 * Under skewed data many sessions insert into the same list, and each insert
 * holds the list's tail page exclusively while it writes its entry and WAL
 * record: the tail becomes a queue.  A session that finds the tail locked
 * (after IVFPQ_SIDE_PAGE_AFTER such waits on the same list) instead links a
 * page of its own into the list, right after the list's first page, and
 * keeps putting that list's entries there until it is full.  Entries of a
 * list may sit on any of its pages (a scan reads them all), so nothing else
 * changes.  The side page is remembered in the backend's cached quantizer
 * (forgotten with it on REINDEX or TRUNCATE) and checked under its lock
 * before each use: still a list page, of this list (list_plus_one), with
 * room.  VACUUM may have unlinked it since, but a page reused afterwards was
 * initialised and linked into its new chain in one WAL record under its
 * lock, so a page that passes the check is in this list's chain (see the
 * rule in ivfpq_pages.cpp).  A session's partly filled side pages are the
 * only space this costs; VACUUM compacts them like any page.
 */
#define IVFPQ_SIDE_PAGE_AFTER 3

/*
 * Write (tid, payload: code and filter values) into the next slot of a locked
 * list page with room, WAL-logged.
 */
static void
IvfpqAppendToPage(Relation index, const IvfpqQuantizer *q, Buffer buffer, ItemPointer tid,
				  const uint8 *code)
{
	IvfpqListLayout layout = IvfpqQuantizerLayout(q);
	GenericXLogState *state = GenericXLogStart(index);
	Page		page = GenericXLogRegisterBuffer(state, buffer, 0);
	IvfpqPageOpaque opaque = IvfpqPageGetOpaque(page);

	IvfpqStoreEntry(page, &layout, opaque->entry_count, tid, code);
	opaque->entry_count++;
	opaque->inserted++;
	GenericXLogFinish(state);
}

/* A new page of a list holding one entry: inside the caller's WAL record. */
static void
IvfpqInitNewListPage(Page page, const IvfpqQuantizer *q, int list, ItemPointer tid,
					 const uint8 *code)
{
	IvfpqListLayout layout = IvfpqQuantizerLayout(q);

	IvfpqInitListPage(page, &layout, list);
	IvfpqStoreEntry(page, &layout, 0, tid, code);
	IvfpqPageGetOpaque(page)->entry_count = 1;
	IvfpqPageGetOpaque(page)->inserted = 1;
}

/* This backend's side page of a list, or Invalid. */
static BlockNumber
IvfpqSidePage(const IvfpqQuantizer *q, int list)
{
	return q->side_pages != NULL ? q->side_pages[list] : InvalidBlockNumber;
}

/* The per-list side page and wait counters of this backend, allocated on first need. */
static void
IvfpqEnsureSideState(IvfpqQuantizer *q)
{
	if (q->side_pages == NULL)
	{
		q->side_waits = (uint8 *) MemoryContextAllocZero(q->context, Max(q->shape.lists, 1));
		q->side_pages = IvfpqCacheListBlocks(q);
	}
}

/* Put the entry on this backend's side page of the list if it still can: true if done. */
static bool
IvfpqAppendToSidePage(Relation index, IvfpqQuantizer *q, int list, ItemPointer tid,
					  const uint8 *code)
{
	BlockNumber block = IvfpqSidePage(q, list);
	Buffer		buffer;
	IvfpqPageOpaque opaque;

	if (block == InvalidBlockNumber)
		return false;
	/* ivfpq indexes never shrink, so the block still exists. */
	buffer = ReadBuffer(index, block);
	LockBuffer(buffer, BUFFER_LOCK_EXCLUSIVE);
	opaque = IvfpqPageGetOpaque(BufferGetPage(buffer));
	if (opaque->page_type == IVFPQ_PAGE_LIST && opaque->list_plus_one == (uint32) list + 1 &&
		opaque->entry_count < q->list_page_capacity)
	{
		IvfpqAppendToPage(index, q, buffer, tid, code);
		UnlockReleaseBuffer(buffer);
		return true;
	}
	UnlockReleaseBuffer(buffer);
	q->side_pages[list] = InvalidBlockNumber;
	return false;
}

/*
 * Link a new page holding the entry right after the list's first page and
 * make it this backend's side page.  False if the first page is the list's
 * only page (then it is the tail the caller waits for anyway).
 */
static bool
IvfpqAddSidePage(Relation index, IvfpqQuantizer *q, int list, BlockNumber first_block,
				 ItemPointer tid, const uint8 *code)
{
	Buffer		first_buffer = ReadBuffer(index, first_block);
	Buffer		new_buffer;
	GenericXLogState *state;
	Page		first_page;
	Page		new_page;

	LockBuffer(first_buffer, BUFFER_LOCK_EXCLUSIVE);
	if (IvfpqPageGetOpaque(BufferGetPage(first_buffer))->next_block == InvalidBlockNumber)
	{
		UnlockReleaseBuffer(first_buffer);
		return false;
	}
	new_buffer = IvfpqNewListBuffer(index);
	state = GenericXLogStart(index);
	first_page = GenericXLogRegisterBuffer(state, first_buffer, 0);
	new_page = GenericXLogRegisterBuffer(state, new_buffer, GENERIC_XLOG_FULL_IMAGE);
	IvfpqInitNewListPage(new_page, q, list, tid, code);
	IvfpqPageGetOpaque(new_page)->next_block = IvfpqPageGetOpaque(first_page)->next_block;
	IvfpqPageGetOpaque(first_page)->next_block = BufferGetBlockNumber(new_buffer);
	GenericXLogFinish(state);
	IvfpqEnsureSideState(q);
	q->side_pages[list] = BufferGetBlockNumber(new_buffer);
	UnlockReleaseBuffer(new_buffer);
	UnlockReleaseBuffer(first_buffer);
	return true;
}

/*
 * Append (tid, code) to a list (code: the entry payload, the PQ code then
 * the filter values): onto this backend's side page of the list
 * if it has one with room, else into the list's tail page if it has room,
 * else onto a new page linked after the tail.  Concurrent inserters are
 * safe: the tail page's next_block is the truth, the directory's tail_block
 * only a hint.  Every change is WAL-logged with GenericXLog (at most 3 pages
 * per record).  New pages come from the free space map first (pages VACUUM
 * freed).  The entry goes after the page's others and counts as added since
 * the build (IvfpqPageOpaqueData.inserted).
 */
void
IvfpqAppendEntry(Relation index, IvfpqQuantizer *q, int list, ItemPointer tid,
				 const uint8 *code)
{
	BlockNumber dir_block = q->directory_start + list / IVFPQ_DIR_ENTRIES_PER_PAGE;
	int			dir_slot = list % IVFPQ_DIR_ENTRIES_PER_PAGE;
	int			capacity = q->list_page_capacity;
	IvfpqDirEntryData entry;
	BlockNumber block;
	bool		waited = false;

	if (IvfpqAppendToSidePage(index, q, list, tid, code))
		return;

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

			IvfpqInitNewListPage(new_page, q, list, tid, code);
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

		if (!ConditionalLockBuffer(buffer))
		{
			/* Someone holds the tail: after a few such waits, a side page. */
			if (!waited && q->side_waits != NULL &&
				q->side_waits[list] >= IVFPQ_SIDE_PAGE_AFTER - 1 &&
				IvfpqAddSidePage(index, q, list, entry.first_block, tid, code))
			{
				q->side_waits[list] = 0;
				ReleaseBuffer(buffer);
				return;
			}
			if (!waited)
			{
				IvfpqEnsureSideState(q);
				if (q->side_waits[list] < PG_UINT8_MAX)
					q->side_waits[list]++;
			}
			waited = true;
			LockBuffer(buffer, BUFFER_LOCK_EXCLUSIVE);
		}
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
			IvfpqAppendToPage(index, q, buffer, tid, code);
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

			IvfpqInitNewListPage(new_page, q, list, tid, code);
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

	q = IvfpqGetQuantizer(index, false, false);
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

	{
		IvfpqListLayout layout = IvfpqQuantizerLayout(q);

		/* The entry payload: the code, then the filter columns' values. */
		code = (uint8 *) palloc0(IvfpqEntryPayloadBytes(&layout));
		if (layout.filter_columns > 0)
			IvfpqEncodeFilterValues(index, values, isnull, code + IvfpqCodeBytes(&layout));
	}
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
