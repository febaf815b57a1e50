/*
 * ivfpq_vacuum.cpp
 *		VACUUM support.
 *
 *		ambulkdelete walks each list's chain once, with lock coupling, holding
 *		two neighbouring pages (prev, cur) exclusively at a time.  On each
 *		step it drops the entries of dead heap TIDs from cur, then
 *		  - moves entries from cur into prev when prev has lost at least an
 *			eighth of its room (or cur fits in whole), so every page but the
 *			last stays at least seven eighths full and a list with half (or
 *			a fifth) of its entries deleted keeps about half (four fifths) of
 *			its pages;
 *		  - unlinks cur when it ends up empty (the list's first page is
 *			never unlinked): prev takes cur's link, cur becomes a deleted
 *			page stamped with the next transaction id, and the directory's
 *			tail hint moves off it, all in one WAL record.
 *		No entry of a dead row is left behind, so none ever points at a heap
 *		slot a new row may reuse.  ivfpq_pages.cpp states why scans and
 *		inserters running meanwhile stay correct.
 *
 *		amvacuumcleanup reads every page after the directory in block order:
 *		it counts live entries and hands the deleted pages no transaction can
 *		still reach (and never-written pages left by a crash) to the free
 *		space map, from which inserts take pages before extending the index.
 */
#include "ivfpq_am.h"

extern "C"
{
#include "commands/vacuum.h"
#include "storage/indexfsm.h"
#include "storage/lmgr.h"
#include "utils/rel.h"
}

/*
 * Entries of one list page as VACUUM sees them: which slots are dead, and
 * once loaded, the survivors (TIDs and payloads: codes and filter values,
 * one after another),
 * those added by aminsert last.
 */
typedef struct IvfpqVacPage
{
	Buffer		buffer;
	int			n;				/* entries after dead ones are dropped */
	int			inserted;		/* of those, added since the build (the last ones) */
	int			page_count;		/* entries on the page now */
	bool		dirty;			/* contents differ from the page */
	bool		loaded;			/* tids/codes hold the entries */
	bool	   *is_dead;		/* per slot of the page */
	ItemPointerData *tids;
	uint8	   *codes;
} IvfpqVacPage;

typedef struct IvfpqVacState
{
	Relation	index;
	IndexVacuumInfo *info;
	IndexBulkDeleteResult *stats;
	IndexBulkDeleteCallback callback;
	void	   *callback_state;
	BlockNumber directory_start;
	IvfpqListLayout layout;		/* of the list pages */
	int			entry_bytes;	/* of an entry's payload (code, filter values) */
	double		live;
	IvfpqVacPage pages[2];
	ItemPointerData *tmp_tids;	/* 2 x capacity: room to combine two pages */
	uint8	   *tmp_codes;
} IvfpqVacState;

static void
IvfpqVacPageAlloc(IvfpqVacPage *p, int capacity, int entry_bytes)
{
	p->is_dead = (bool *) palloc(sizeof(bool) * capacity);
	p->tids = (ItemPointerData *) palloc(sizeof(ItemPointerData) * capacity);
	p->codes = (uint8 *) palloc((Size) capacity * entry_bytes);
}

/* Ask the callback about each TID of the page locked in p->buffer. */
static void
IvfpqVacExamine(IvfpqVacState *vs, IvfpqVacPage *p)
{
	Page		page = BufferGetPage(p->buffer);
	IvfpqPageOpaque opaque = IvfpqPageGetOpaque(page);
	ItemPointer tids = IvfpqListTids(page);
	int			n = opaque->entry_count;
	int			first_inserted = n - Min((int) opaque->inserted, n);
	int			dead = 0;
	int			dead_inserted = 0;

	for (int i = 0; i < n; i++)
	{
		p->is_dead[i] = vs->callback(&tids[i], vs->callback_state);
		dead += p->is_dead[i];
		if (i >= first_inserted)
			dead_inserted += p->is_dead[i];
	}
	p->page_count = n;
	p->n = n - dead;
	p->inserted = (n - first_inserted) - dead_inserted;
	p->dirty = dead > 0;
	p->loaded = false;
	vs->stats->tuples_removed += dead;
}

/* Copy the page's surviving entries into p (in page order). */
static void
IvfpqVacLoad(IvfpqVacState *vs, IvfpqVacPage *p)
{
	Page		page = BufferGetPage(p->buffer);
	int			kept = 0;

	if (p->loaded)
		return;
	for (int i = 0; i < p->page_count; i++)
	{
		if (p->is_dead[i])
			continue;
		IvfpqLoadEntry(page, &vs->layout, i, &p->tids[kept], p->codes + (Size) kept * vs->entry_bytes);
		kept++;
	}
	Assert(kept == p->n);
	p->loaded = true;
}

/*
 * Write p's entries over the page image wpage (registered in a generic WAL
 * record).  Slots past the last entry are zeroed, so no removed row's TID
 * stays readable on the page.
 */
static void
IvfpqVacStore(IvfpqVacState *vs, IvfpqVacPage *p, Page wpage)
{
	IvfpqPageOpaque opaque = IvfpqPageGetOpaque(wpage);
	int			old_count = opaque->entry_count;

	Assert(p->loaded);
	for (int i = 0; i < p->n; i++)
		IvfpqStoreEntry(wpage, &vs->layout, i, &p->tids[i], p->codes + (Size) i * vs->entry_bytes);
	for (int i = p->n; i < old_count; i++)
		IvfpqClearEntry(wpage, &vs->layout, i);
	opaque->entry_count = (uint16) p->n;
	opaque->inserted = (uint16) p->inserted;
}

/*
 * Move entries from cur into prev until prev is full or cur is empty.  The
 * two pages' entries are redistributed so that each keeps the build's
 * entries first and those added since after them.
 */
static void
IvfpqVacMove(IvfpqVacState *vs, IvfpqVacPage *prev, IvfpqVacPage *cur)
{
	Size		bytes = vs->entry_bytes;
	int			total = prev->n + cur->n;
	int			built = (prev->n - prev->inserted) + (cur->n - cur->inserted);
	int			to_prev = Min(total, vs->layout.capacity);
	int			k = 0;

	IvfpqVacLoad(vs, prev);
	IvfpqVacLoad(vs, cur);

	/* Combined order: prev's built, cur's built, prev's added, cur's added. */
	auto append = [&](IvfpqVacPage *p, int from, int to) {
		for (int i = from; i < to; i++, k++)
		{
			vs->tmp_tids[k] = p->tids[i];
			memcpy(vs->tmp_codes + k * bytes, p->codes + i * bytes, bytes);
		}
	};
	append(prev, 0, prev->n - prev->inserted);
	append(cur, 0, cur->n - cur->inserted);
	append(prev, prev->n - prev->inserted, prev->n);
	append(cur, cur->n - cur->inserted, cur->n);
	Assert(k == total);

	memcpy(prev->tids, vs->tmp_tids, sizeof(ItemPointerData) * to_prev);
	memcpy(prev->codes, vs->tmp_codes, to_prev * bytes);
	prev->n = to_prev;
	prev->inserted = to_prev - Min(to_prev, built);
	memcpy(cur->tids, vs->tmp_tids + to_prev, sizeof(ItemPointerData) * (total - to_prev));
	memcpy(cur->codes, vs->tmp_codes + to_prev * bytes, (total - to_prev) * bytes);
	cur->n = total - to_prev;
	cur->inserted = cur->n - (built - Min(to_prev, built));
	prev->dirty = cur->dirty = true;
}

/* Write out the dirty pages among prev and cur in one WAL record. */
static void
IvfpqVacFlush(IvfpqVacState *vs, IvfpqVacPage *prev, IvfpqVacPage *cur)
{
	GenericXLogState *state;

	if (!(prev && prev->dirty) && !(cur && cur->dirty))
		return;
	state = GenericXLogStart(vs->index);
	if (prev && prev->dirty)
	{
		IvfpqVacLoad(vs, prev);
		IvfpqVacStore(vs, prev, GenericXLogRegisterBuffer(state, prev->buffer, 0));
	}
	if (cur && cur->dirty)
	{
		IvfpqVacLoad(vs, cur);
		IvfpqVacStore(vs, cur, GenericXLogRegisterBuffer(state, cur->buffer, 0));
	}
	GenericXLogFinish(state);
	if (prev)
		prev->dirty = false;
	if (cur)
		cur->dirty = false;
}

/*
 * Unlink cur (empty) from the chain after prev, in one WAL record with
 * prev's pending changes and, if the directory's tail hint names cur, the
 * directory page.
 */
static void
IvfpqVacUnlink(IvfpqVacState *vs, int list, IvfpqVacPage *prev, IvfpqVacPage *cur)
{
	BlockNumber dir_block = vs->directory_start + list / IVFPQ_DIR_ENTRIES_PER_PAGE;
	int			dir_slot = list % IVFPQ_DIR_ENTRIES_PER_PAGE;
	BlockNumber prev_block = BufferGetBlockNumber(prev->buffer);
	BlockNumber cur_block = BufferGetBlockNumber(cur->buffer);
	BlockNumber next_block = IvfpqPageGetOpaque(BufferGetPage(cur->buffer))->next_block;
	Buffer		dir_buffer;
	bool		move_hint;
	GenericXLogState *state;
	Page		wprev;

	/* Page locks are taken in chain order, the directory's last (no one waits for a page holding it). */
	dir_buffer = ReadBuffer(vs->index, dir_block);
	LockBuffer(dir_buffer, BUFFER_LOCK_EXCLUSIVE);
	move_hint = ((IvfpqDirEntry) PageGetContents(BufferGetPage(dir_buffer)))[dir_slot].tail_block == cur_block;

	if (prev->dirty)
		IvfpqVacLoad(vs, prev);
	state = GenericXLogStart(vs->index);
	wprev = GenericXLogRegisterBuffer(state, prev->buffer, 0);
	if (prev->dirty)
		IvfpqVacStore(vs, prev, wprev);
	IvfpqPageGetOpaque(wprev)->next_block = next_block;
	IvfpqInitDeletedPage(GenericXLogRegisterBuffer(state, cur->buffer, GENERIC_XLOG_FULL_IMAGE), next_block);
	if (move_hint)
	{
		Page		wdir = GenericXLogRegisterBuffer(state, dir_buffer, 0);

		((IvfpqDirEntry) PageGetContents(wdir))[dir_slot].tail_block = prev_block;
	}
	GenericXLogFinish(state);
	UnlockReleaseBuffer(dir_buffer);
	prev->dirty = false;
	vs->stats->pages_newly_deleted++;
	vs->stats->pages_deleted++;
}

/* Vacuum one list: drop dead entries, fill pages toward the head, unlink empty pages. */
static void
IvfpqVacuumList(IvfpqVacState *vs, int list)
{
	IvfpqDirEntryData entry;
	IvfpqVacPage *prev = &vs->pages[0];
	IvfpqVacPage *cur = &vs->pages[1];
	int			fill_room = Max(vs->layout.capacity / 8, 1);

	IvfpqReadDirEntry(vs->index, vs->directory_start, list, &entry);
	if (entry.first_block == InvalidBlockNumber)
		return;
	vacuum_delay_point();
	prev->buffer = ReadBufferExtended(vs->index, MAIN_FORKNUM, entry.first_block, RBM_NORMAL,
									  vs->info->strategy);
	LockBuffer(prev->buffer, BUFFER_LOCK_EXCLUSIVE);
	IvfpqVacExamine(vs, prev);

	for (;;)
	{
		BlockNumber next = IvfpqPageGetOpaque(BufferGetPage(prev->buffer))->next_block;
		IvfpqVacPage *swap;

		if (next == InvalidBlockNumber)
			break;
		vacuum_delay_point();
		cur->buffer = ReadBufferExtended(vs->index, MAIN_FORKNUM, next, RBM_NORMAL, vs->info->strategy);
		LockBuffer(cur->buffer, BUFFER_LOCK_EXCLUSIVE);
		IvfpqVacExamine(vs, cur);

		if (cur->n > 0 && prev->n < vs->layout.capacity &&
			(vs->layout.capacity - prev->n >= fill_room || prev->n + cur->n <= vs->layout.capacity))
			IvfpqVacMove(vs, prev, cur);

		if (cur->n == 0)
		{
			/* cur is empty: unlink it and keep filling prev from the page after. */
			IvfpqVacUnlink(vs, list, prev, cur);
			UnlockReleaseBuffer(cur->buffer);
			continue;
		}

		IvfpqVacFlush(vs, prev, cur);
		vs->live += prev->n;
		UnlockReleaseBuffer(prev->buffer);
		swap = prev;
		prev = cur;
		cur = swap;
	}
	IvfpqVacFlush(vs, prev, NULL);
	vs->live += prev->n;
	UnlockReleaseBuffer(prev->buffer);
}

/* ambulkdelete: drop entries whose heap TIDs the callback reports dead. */
IndexBulkDeleteResult *
ivfpqbulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
				IndexBulkDeleteCallback callback, void *callback_state)
{
	IvfpqMetaPageData meta;
	IvfpqVacState vs;

	if (stats == NULL)
		stats = (IndexBulkDeleteResult *) palloc0(sizeof(IndexBulkDeleteResult));

	IvfpqReadMeta(info->index, &meta);
	MemSet(&vs, 0, sizeof(vs));
	vs.index = info->index;
	vs.info = info;
	vs.stats = stats;
	vs.callback = callback;
	vs.callback_state = callback_state;
	vs.directory_start = meta.directory_start;
	vs.layout = IvfpqMetaLayout(&meta);
	vs.entry_bytes = (int) IvfpqEntryPayloadBytes(&vs.layout);
	IvfpqVacPageAlloc(&vs.pages[0], vs.layout.capacity, vs.entry_bytes);
	IvfpqVacPageAlloc(&vs.pages[1], vs.layout.capacity, vs.entry_bytes);
	vs.tmp_tids = (ItemPointerData *) palloc(sizeof(ItemPointerData) * 2 * vs.layout.capacity);
	vs.tmp_codes = (uint8 *) palloc((Size) 2 * vs.layout.capacity * vs.entry_bytes);

	for (int list = 0; list < meta.shape.lists; list++)
		IvfpqVacuumList(&vs, list);

	stats->num_index_tuples = vs.live;
	stats->num_pages = RelationGetNumberOfBlocks(info->index);
	return stats;
}

/*
 * amvacuumcleanup: read the list area in block order, count live entries
 * (when bulkdelete did not run), record the pages that can be reused in the
 * free space map, and report the index's pages.
 */
IndexBulkDeleteResult *
ivfpqvacuumcleanup(IndexVacuumInfo *info, IndexBulkDeleteResult *stats)
{
	Relation	index = info->index;
	IvfpqMetaPageData meta;
	BlockNumber nblocks;
	bool		count_entries;
	double		entries = 0;
	bool		need_lock = !RELATION_IS_LOCAL(index);

	if (info->analyze_only)
		return stats;
	count_entries = (stats == NULL);
	if (stats == NULL)
		stats = (IndexBulkDeleteResult *) palloc0(sizeof(IndexBulkDeleteResult));

	IvfpqReadMeta(index, &meta);
	/*
	 * The length under the extension lock: a page an inserter has just added
	 * is already locked by it (IvfpqNewBuffer), so it is not taken for a
	 * never-written page below.
	 */
	if (need_lock)
		LockRelationForExtension(index, ExclusiveLock);
	nblocks = RelationGetNumberOfBlocks(index);
	if (need_lock)
		UnlockRelationForExtension(index, ExclusiveLock);

	stats->pages_deleted = 0;
	stats->pages_free = 0;
	IvfpqRefreshHorizons();
	for (BlockNumber block = IvfpqFirstListBlock(&meta); block < nblocks; block++)
	{
		Buffer		buffer;
		Page		page;

		vacuum_delay_point();
		buffer = ReadBufferExtended(index, MAIN_FORKNUM, block, RBM_NORMAL, info->strategy);
		LockBuffer(buffer, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buffer);
		if (IvfpqPageIsRecyclable(page))
		{
			RecordFreeIndexPage(index, block);
			stats->pages_free++;
			stats->pages_deleted++;
		}
		else if (IvfpqPageGetOpaque(page)->page_type == IVFPQ_PAGE_DELETED)
			stats->pages_deleted++;
		else if (IvfpqPageGetOpaque(page)->page_type == IVFPQ_PAGE_LIST)
			entries += IvfpqPageGetOpaque(page)->entry_count;
		UnlockReleaseBuffer(buffer);
	}
	IndexFreeSpaceMapVacuum(index);

	if (count_entries)
		stats->num_index_tuples = entries;
	stats->num_pages = nblocks;
	return stats;
}
