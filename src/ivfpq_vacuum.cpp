/*
 * ivfpq_vacuum.cpp
 *		VACUUM support: ambulkdelete removes the entries of dead heap TIDs from
 *		every list page (compacting the page in place, WAL-logged), so no entry
 *		ever points at a heap slot a new row may reuse; amvacuumcleanup reports
 *		the index size and live entries.
 */
#include "ivfpq_am.h"

extern "C"
{
#include "commands/vacuum.h"
#include "utils/rel.h"
}

/*
 * Remove dead entries from one page under an exclusive lock.  Entries keep
 * their relative order; the page's count shrinks.  Returns entries removed.
 */
static int
IvfpqVacuumPage(Relation index, Buffer buffer, int capacity, int m,
				IndexBulkDeleteCallback callback, void *callback_state, double *live)
{
	Page		page = BufferGetPage(buffer);
	IvfpqPageOpaque opaque = IvfpqPageGetOpaque(page);
	ItemPointer tids = IvfpqListTids(page);
	int			n = opaque->entry_count;
	int			dead = 0;
	GenericXLogState *state;
	Page		wpage;
	ItemPointer wtids;
	uint8	   *wcodes;
	int			kept = 0;
	uint8		code[IVFPQ_MAX_M];
	bool		is_dead[BLCKSZ / sizeof(ItemPointerData)];

	/* Ask about each TID once: the callback searches VACUUM's dead-TID store. */
	for (int i = 0; i < n; i++)
	{
		is_dead[i] = callback(&tids[i], callback_state);
		dead += is_dead[i];
	}
	if (dead == 0)
	{
		*live += n;
		return 0;
	}

	state = GenericXLogStart(index);
	wpage = GenericXLogRegisterBuffer(state, buffer, 0);
	wtids = IvfpqListTids(wpage);
	wcodes = IvfpqListCodes(wpage, capacity);
	for (int i = 0; i < n; i++)
	{
		if (is_dead[i])
			continue;
		if (kept != i)
		{
			wtids[kept] = wtids[i];
			ivfpq::core::LoadBlockedCode(wcodes, (size_t) i, (size_t) m, code);
			ivfpq::core::StoreBlockedCode(wcodes, (size_t) kept, (size_t) m, code);
		}
		kept++;
	}
	/*
	 * Zero the freed slots, so no dead row's heap TID stays readable on the
	 * page (for anyone inspecting pages, and for any future code that would
	 * trust entry_count less).  It costs WAL: the generic record's delta
	 * covers these bytes too.
	 */
	for (int i = kept; i < n; i++)
	{
		MemSet(&wtids[i], 0, sizeof(ItemPointerData));
		MemSet(code, 0, m);
		ivfpq::core::StoreBlockedCode(wcodes, (size_t) i, (size_t) m, code);
	}
	IvfpqPageGetOpaque(wpage)->entry_count = (uint16) kept;
	GenericXLogFinish(state);
	*live += kept;
	return n - kept;
}

/* ambulkdelete: drop entries whose heap TIDs the callback reports dead. */
IndexBulkDeleteResult *
ivfpqbulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
				IndexBulkDeleteCallback callback, void *callback_state)
{
	Relation	index = info->index;
	IvfpqMetaPageData meta;
	double		live = 0;

	if (stats == NULL)
		stats = (IndexBulkDeleteResult *) palloc0(sizeof(IndexBulkDeleteResult));

	IvfpqReadMeta(index, &meta);
	for (int list = 0; list < meta.shape.lists; list++)
	{
		IvfpqDirEntryData entry;
		BlockNumber block;

		IvfpqReadDirEntry(index, meta.directory_start, (int) list, &entry);
		for (block = entry.first_block; block != InvalidBlockNumber;)
		{
			Buffer		buffer;

			vacuum_delay_point();
			buffer = ReadBufferExtended(index, MAIN_FORKNUM, block, RBM_NORMAL, info->strategy);
			LockBuffer(buffer, BUFFER_LOCK_EXCLUSIVE);
			stats->tuples_removed += IvfpqVacuumPage(index, buffer, (int) meta.list_page_capacity,
													 (int) meta.shape.m, callback, callback_state, &live);
			block = IvfpqPageGetOpaque(BufferGetPage(buffer))->next_block;
			UnlockReleaseBuffer(buffer);
		}
	}
	stats->num_index_tuples = live;
	stats->num_pages = RelationGetNumberOfBlocks(index);
	return stats;
}

/* Count live entries by walking every list (when bulkdelete did not run). */
static double
IvfpqCountEntries(Relation index, BufferAccessStrategy strategy)
{
	IvfpqMetaPageData meta;
	double		count = 0;

	IvfpqReadMeta(index, &meta);
	for (int list = 0; list < meta.shape.lists; list++)
	{
		count += IvfpqCountListEntries(index, meta.directory_start, (int) list, strategy);
		vacuum_delay_point();
	}
	return count;
}

/* amvacuumcleanup: final statistics. */
IndexBulkDeleteResult *
ivfpqvacuumcleanup(IndexVacuumInfo *info, IndexBulkDeleteResult *stats)
{
	if (info->analyze_only)
		return stats;
	if (stats == NULL)
	{
		stats = (IndexBulkDeleteResult *) palloc0(sizeof(IndexBulkDeleteResult));
		stats->num_index_tuples = IvfpqCountEntries(info->index, info->strategy);
	}
	stats->num_pages = RelationGetNumberOfBlocks(info->index);
	return stats;
}
