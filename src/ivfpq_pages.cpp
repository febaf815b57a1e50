/*
 * ivfpq_pages.cpp
 *		Page-level helpers shared by all AM phases: page initialisation, the
 *		metapage, float-stream pages (centroids, codebooks), the list directory
 *		and the list page layout.
 */
#include <cmath>

#include "ivfpq_am.h"

extern "C"
{
#include "storage/indexfsm.h"
#include "storage/lmgr.h"
#include "storage/procarray.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
}

/* Initialise an empty ivfpq page of the given type. */
void
IvfpqInitPage(Page page, uint16 page_type)
{
	IvfpqPageOpaque opaque;

	PageInit(page, BLCKSZ, sizeof(IvfpqPageOpaqueData));
	opaque = IvfpqPageGetOpaque(page);
	opaque->next_block = InvalidBlockNumber;
	opaque->entry_count = 0;
	opaque->page_type = page_type;
	opaque->inserted = 0;
	opaque->page_id = IVFPQ_PAGE_ID;
	opaque->list_plus_one = 0;
}

/*
 * Extend the index by one page and return it pinned and exclusively locked.
 * Takes the relation extension lock unless the index is new (build).
 */
Buffer
IvfpqNewBuffer(Relation index, ForkNumber fork)
{
	Buffer		buffer;
	bool		need_lock = !RELATION_IS_LOCAL(index);

	if (need_lock)
		LockRelationForExtension(index, ExclusiveLock);
	buffer = ReadBufferExtended(index, fork, P_NEW, RBM_NORMAL, NULL);
	LockBuffer(buffer, BUFFER_LOCK_EXCLUSIVE);
	if (need_lock)
		UnlockRelationForExtension(index, ExclusiveLock);
	return buffer;
}

/*
 * ---------- chains, deleted pages and page reuse ----------
 *
 * The rule that keeps scans correct while VACUUM moves entries and unlinks
 * pages (ivfpq_vacuum.cpp):
 *
 *	 Everyone walks a list chain with lock coupling, in chain order: the next
 *	 page is locked before the current one is released (IvfpqChainNext).
 *	 VACUUM changes two neighbouring pages, prev and cur, only while it holds
 *	 both exclusively, and in one WAL record.
 *
 * So a reader is always wholly before prev or wholly after cur when the
 * change happens: it sees both pages as they were or both as they are, and an
 * entry moved from cur into prev is read exactly once.  A reader can never
 * stand on a page between reading the link to it and locking it, so no
 * reader reaches an unlinked page through the chain.  The only pointers read
 * without the chain are the directory's tail hints (inserters): VACUUM moves
 * a hint off a page in the same record that unlinks the page, and the page
 * is not reused until every transaction that might have read the old hint
 * has ended (IvfpqPageIsRecyclable); an inserter that lands on a deleted page
 * starts again from the directory.  The other kind, a session's side page of
 * a list (ivfpq_insert.cpp), outlives transactions, so it is trusted only
 * after a check under the page's lock that it is a page of the same list: a
 * reused page is initialised and linked into its chain in one WAL record
 * under its lock, so a page of the list is always in the list's chain.  Redo of a generic WAL record locks its
 * pages in registration order and releases them together, so standby scans
 * follow the same rule without recovery conflicts.
 */

/*
 * Lock coupling: pin and lock the page after 'buffer' in its chain, then
 * release 'buffer'.  Returns InvalidBuffer at the end of the chain.
 */
Buffer
IvfpqChainNext(Relation index, Buffer buffer, int lock_mode, BufferAccessStrategy strategy)
{
	BlockNumber next = IvfpqPageGetOpaque(BufferGetPage(buffer))->next_block;
	Buffer		next_buffer = InvalidBuffer;

	if (next != InvalidBlockNumber)
	{
		next_buffer = ReadBufferExtended(index, MAIN_FORKNUM, next, RBM_NORMAL, strategy);
		LockBuffer(next_buffer, lock_mode);
	}
	UnlockReleaseBuffer(buffer);
	return next_buffer;
}

/* Make page a deleted page (VACUUM, inside its WAL record), keeping next_block. */
void
IvfpqInitDeletedPage(Page page, BlockNumber next_block)
{
	IvfpqDeletedPageData *data;

	IvfpqInitPage(page, IVFPQ_PAGE_DELETED);
	IvfpqPageGetOpaque(page)->next_block = next_block;
	data = (IvfpqDeletedPageData *) PageGetContents(page);
	data->delete_xid = ReadNextFullTransactionId();
	((PageHeader) page)->pd_lower = MAXALIGN(SizeOfPageHeaderData) + sizeof(IvfpqDeletedPageData);
}

/*
 * Bring this backend's view of the oldest running transaction up to date.
 * GlobalVisCheckRemovableFullXid answers from the horizons of the last
 * snapshot and recomputes them only when that snapshot's xmin moved, so a
 * page deleted just before the last snapshot could look unsafe long after
 * it is safe.  Computing the horizons (a pass over the proc array) applies
 * them to the GlobalVis state.
 */
void
IvfpqRefreshHorizons(void)
{
	(void) GetOldestNonRemovableTransactionId(NULL);
}

/* May this page be handed out again?  New (never written) pages and old enough deleted ones. */
bool
IvfpqPageIsRecyclable(Page page)
{
	IvfpqPageOpaque opaque;

	if (PageIsNew(page))
		return true;
	opaque = IvfpqPageGetOpaque(page);
	if (opaque->page_id != IVFPQ_PAGE_ID || opaque->page_type != IVFPQ_PAGE_DELETED)
		return false;
	return GlobalVisCheckRemovableFullXid(NULL, ((IvfpqDeletedPageData *) PageGetContents(page))->delete_xid);
}

/*
 * A page for a list, pinned and exclusively locked: a free page the free
 * space map knows of if there is one (checked again here: the map is not
 * crash-safe and may be stale), else a new page at the end.  The caller
 * initialises it in a WAL record with GENERIC_XLOG_FULL_IMAGE.
 */
Buffer
IvfpqNewListBuffer(Relation index)
{
	if (!RELATION_IS_LOCAL(index))
	{
		for (;;)
		{
			BlockNumber block = GetFreeIndexPage(index);
			Buffer		buffer;

			if (block == InvalidBlockNumber)
				break;
			buffer = ReadBuffer(index, block);
			/* Someone else using it (a stale map entry): not free after all. */
			if (ConditionalLockBuffer(buffer))
			{
				Page		page = BufferGetPage(buffer);

				if (IvfpqPageIsRecyclable(page))
					return buffer;
				/* VACUUM found it safe: this backend's horizons may be stale. */
				if (IvfpqPageGetOpaque(page)->page_type == IVFPQ_PAGE_DELETED)
				{
					IvfpqRefreshHorizons();
					if (IvfpqPageIsRecyclable(page))
						return buffer;
				}
				LockBuffer(buffer, BUFFER_LOCK_UNLOCK);
			}
			ReleaseBuffer(buffer);
		}
	}
	return IvfpqNewBuffer(index, MAIN_FORKNUM);
}

/* Copy the metapage contents into *meta; errors if this is not an ivfpq index. */
void
IvfpqReadMeta(Relation index, IvfpqMetaPageData *meta)
{
	Buffer		buffer = ReadBuffer(index, IVFPQ_METAPAGE_BLKNO);
	Page		page;

	LockBuffer(buffer, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buffer);
	memcpy(meta, IvfpqPageGetMeta(page), sizeof(IvfpqMetaPageData));
	UnlockReleaseBuffer(buffer);

	if (meta->magic != IVFPQ_MAGIC)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("index \"%s\" is not an ivfpq index", RelationGetRelationName(index))));
	if (meta->version != IVFPQ_VERSION && meta->version != IVFPQ_VERSION_FAST_SCAN)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("index \"%s\" has ivfpq page format %u, this build reads %d and %d",
						RelationGetRelationName(index), meta->version, IVFPQ_VERSION,
						IVFPQ_VERSION_FAST_SCAN),
				 errhint("REINDEX the index.")));
	if (meta->version != (uint32) IvfpqFormatVersion(&meta->shape))
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("index \"%s\" has ivfpq page format %u with %d-bit codes",
						RelationGetRelationName(index), meta->version, meta->shape.nbits),
				 errhint("REINDEX the index.")));
}

/* ---------- list page layout ---------- */

Size
IvfpqListCodeOffset(int capacity)
{
	return MAXALIGN(sizeof(ItemPointerData) * (Size) capacity);
}

/* Bytes of one filter column's arrays on a page: a key per entry and a null bitmap. */
static Size
IvfpqFilterColumnBytes(int capacity)
{
	return sizeof(int64) * (Size) capacity + (Size) capacity / 8;
}

/* Offset of the filter arrays: after the codes, aligned for the int64 keys. */
static Size
IvfpqListFilterOffset(const IvfpqListLayout *layout)
{
	return MAXALIGN(IvfpqListCodeOffset(layout->capacity) + (Size) layout->capacity * IvfpqCodeBytes(layout));
}

/* Bytes of a list page's entry arrays (pd_lower is the header plus this). */
Size
IvfpqListLayoutBytes(const IvfpqListLayout *layout)
{
	if (layout->filter_columns == 0)
		return IvfpqListCodeOffset(layout->capacity) + (Size) layout->capacity * IvfpqCodeBytes(layout);
	return IvfpqListFilterOffset(layout) + (Size) layout->filter_columns * IvfpqFilterColumnBytes(layout->capacity);
}

/*
 * Entries per list page for codes of m sub-quantizers of nbits bits and that
 * many filter columns: a multiple of the code block size (8 entries for 8-bit
 * codes, 32 for 4-bit ones; so also of 8, which the null bitmaps rely on).
 */
int
IvfpqListPageCapacity(int m, int nbits, int filter_columns)
{
	int			block = (int) ivfpq::core::CodeBlockEntries((size_t) nbits);
	IvfpqListLayout layout;
	double		entry_bytes;

	layout.m = m;
	layout.nbits = nbits;
	layout.filter_columns = filter_columns;
	entry_bytes = sizeof(ItemPointerData) + IvfpqCodeBytes(&layout) +
		filter_columns * (sizeof(int64) + 0.125);
	layout.capacity = (int) (IVFPQ_PAGE_CONTENT_BYTES / entry_bytes);
	layout.capacity -= layout.capacity % block;
	while (layout.capacity > 0 && IvfpqListLayoutBytes(&layout) > IVFPQ_PAGE_CONTENT_BYTES)
		layout.capacity -= block;
	return layout.capacity;
}

/* The list page layout of an index, from its metapage. */
IvfpqListLayout
IvfpqMetaLayout(const IvfpqMetaPageData *meta)
{
	IvfpqListLayout layout;

	layout.capacity = (int) meta->list_page_capacity;
	layout.m = Max((int) meta->shape.m, 1);
	layout.nbits = (int) meta->shape.nbits;
	layout.filter_columns = (int) meta->filter_columns;
	return layout;
}

ItemPointer
IvfpqListTids(Page page)
{
	return (ItemPointer) PageGetContents(page);
}

uint8 *
IvfpqListCodes(Page page, int capacity)
{
	return (uint8 *) PageGetContents(page) + IvfpqListCodeOffset(capacity);
}

/* The keys of filter column 'column' (0 = the index's second column). */
int64 *
IvfpqListFilterKeys(Page page, const IvfpqListLayout *layout, int column)
{
	return (int64 *) ((char *) PageGetContents(page) + IvfpqListFilterOffset(layout) +
					  (Size) column * IvfpqFilterColumnBytes(layout->capacity));
}

/* The null bitmap of filter column 'column': bit (slot % 8) of byte slot / 8. */
uint8 *
IvfpqListFilterNulls(Page page, const IvfpqListLayout *layout, int column)
{
	return (uint8 *) (IvfpqListFilterKeys(page, layout, column) + layout->capacity);
}

/* Write an entry (heap TID, then code and filter values from payload) into a slot. */
void
IvfpqStoreEntry(Page page, const IvfpqListLayout *layout, int slot, ItemPointer tid, const uint8 *payload)
{
	IvfpqListTids(page)[slot] = *tid;
	ivfpq::core::StoreBlockedCode(IvfpqListCodes(page, layout->capacity), (size_t) slot,
								  (size_t) layout->m, (size_t) layout->nbits, payload);
	payload += IvfpqCodeBytes(layout);
	for (int c = 0; c < layout->filter_columns; c++)
	{
		uint8	   *nulls = IvfpqListFilterNulls(page, layout, c);
		uint8		bit = (uint8) (1 << (slot % 8));

		memcpy(&IvfpqListFilterKeys(page, layout, c)[slot], payload, sizeof(int64));
		if (payload[sizeof(int64)])
			nulls[slot / 8] |= bit;
		else
			nulls[slot / 8] &= (uint8) ~bit;
		payload += IVFPQ_FILTER_VALUE_BYTES;
	}
}

/* Read a slot's entry: its heap TID and its payload (code, filter values). */
void
IvfpqLoadEntry(Page page, const IvfpqListLayout *layout, int slot, ItemPointer tid, uint8 *payload)
{
	*tid = IvfpqListTids(page)[slot];
	ivfpq::core::LoadBlockedCode(IvfpqListCodes(page, layout->capacity), (size_t) slot,
								 (size_t) layout->m, (size_t) layout->nbits, payload);
	payload += IvfpqCodeBytes(layout);
	for (int c = 0; c < layout->filter_columns; c++)
	{
		memcpy(payload, &IvfpqListFilterKeys(page, layout, c)[slot], sizeof(int64));
		payload[sizeof(int64)] = (IvfpqListFilterNulls(page, layout, c)[slot / 8] >> (slot % 8)) & 1;
		payload += IVFPQ_FILTER_VALUE_BYTES;
	}
}

/* Zero a slot past the page's last entry, so no removed row's TID or values stay readable. */
void
IvfpqClearEntry(Page page, const IvfpqListLayout *layout, int slot)
{
	static const uint8 zero[IVFPQ_MAX_M + IVFPQ_MAX_FILTER_COLUMNS * IVFPQ_FILTER_VALUE_BYTES] = {0};
	ItemPointerData no_tid;

	MemSet(&no_tid, 0, sizeof(no_tid));
	IvfpqStoreEntry(page, layout, slot, &no_tid, zero);
}

/* Initialise a page of list 'list'; pd_lower covers the whole entry layout. */
void
IvfpqInitListPage(Page page, const IvfpqListLayout *layout, int list)
{
	IvfpqInitPage(page, IVFPQ_PAGE_LIST);
	IvfpqPageGetOpaque(page)->list_plus_one = (uint32) list + 1;
	((PageHeader) page)->pd_lower = MAXALIGN(SizeOfPageHeaderData) + IvfpqListLayoutBytes(layout);
}

/*
 * Write count floats to consecutive new pages (build only: the caller
 * WAL-logs all pages at the end with log_newpage_range).
 */
void
IvfpqWriteFloatPages(Relation index, ForkNumber fork, const float *values, Size count,
					 BlockNumber *first_block)
{
	Size		done = 0;

	*first_block = InvalidBlockNumber;
	while (done < count || *first_block == InvalidBlockNumber)
	{
		Buffer		buffer = IvfpqNewBuffer(index, fork);
		Page		page = BufferGetPage(buffer);
		Size		n = Min(count - done, (Size) IVFPQ_FLOATS_PER_PAGE);

		if (*first_block == InvalidBlockNumber)
			*first_block = BufferGetBlockNumber(buffer);
		IvfpqInitPage(page, IVFPQ_PAGE_FLOATS);
		memcpy(PageGetContents(page), values + done, n * sizeof(float));
		((PageHeader) page)->pd_lower = MAXALIGN(SizeOfPageHeaderData) + n * sizeof(float);
		MarkBufferDirty(buffer);
		UnlockReleaseBuffer(buffer);
		done += n;
		if (count == 0)
			break;
	}
}

/* Read count floats from consecutive pages starting at first_block. */
static void
IvfpqReadFloatPages(Relation index, BlockNumber first_block, float *values, Size count)
{
	Size		done = 0;
	BlockNumber block = first_block;

	while (done < count)
	{
		Buffer		buffer = ReadBuffer(index, block);
		Size		n = Min(count - done, (Size) IVFPQ_FLOATS_PER_PAGE);

		LockBuffer(buffer, BUFFER_LOCK_SHARE);
		memcpy(values + done, PageGetContents(BufferGetPage(buffer)), n * sizeof(float));
		UnlockReleaseBuffer(buffer);
		done += n;
		block++;
	}
}

/*
 * Read a trained index's centroids and codebooks into arrays of
 * IvfpqCentroidFloats / IvfpqCodebookFloats floats (the cache, and builds
 * WITH codebooks_from).
 */
void
IvfpqReadQuantizerArrays(Relation index, const IvfpqMetaPageData *meta, float *centroids, float *codebooks)
{
	IvfpqReadFloatPages(index, meta->centroid_start, centroids, IvfpqCentroidFloats(&meta->shape));
	IvfpqReadFloatPages(index, meta->codebook_start, codebooks, IvfpqCodebookFloats(&meta->shape));
}

/* ---------- list directory ---------- */

/* Copy the directory entry of a list. */
void
IvfpqReadDirEntry(Relation index, BlockNumber directory_start, int list, IvfpqDirEntryData *entry)
{
	BlockNumber block = directory_start + list / IVFPQ_DIR_ENTRIES_PER_PAGE;
	Buffer		buffer = ReadBuffer(index, block);

	LockBuffer(buffer, BUFFER_LOCK_SHARE);
	*entry = ((IvfpqDirEntry) PageGetContents(BufferGetPage(buffer)))[list % IVFPQ_DIR_ENTRIES_PER_PAGE];
	UnlockReleaseBuffer(buffer);
}

/*
 * Entries in one list, counted page by page under share locks (coupled);
 * also its pages and its entries added since the build, if asked.
 */
int64
IvfpqCountListEntries(Relation index, BlockNumber directory_start, int list,
					  BufferAccessStrategy strategy, int64 *pages, int64 *inserted)
{
	IvfpqDirEntryData entry;
	Buffer		buffer;
	int64		count = 0;

	IvfpqReadDirEntry(index, directory_start, list, &entry);
	if (entry.first_block == InvalidBlockNumber)
		return 0;
	buffer = ReadBufferExtended(index, MAIN_FORKNUM, entry.first_block, RBM_NORMAL, strategy);
	LockBuffer(buffer, BUFFER_LOCK_SHARE);
	while (BufferIsValid(buffer))
	{
		count += IvfpqPageGetOpaque(BufferGetPage(buffer))->entry_count;
		if (pages != NULL)
			(*pages)++;
		if (inserted != NULL)
			*inserted += IvfpqPageGetOpaque(BufferGetPage(buffer))->inserted;
		buffer = IvfpqChainNext(index, buffer, BUFFER_LOCK_SHARE, strategy);
	}
	CHECK_FOR_INTERRUPTS();
	return count;
}

/* Scale x to unit length in place; *is_zero reports a zero vector (left as is). */
void
IvfpqNormalize(float *x, int dim, bool *is_zero)
{
	double		norm = std::sqrt((double) ivfpq::core::SquaredNorm(x, (size_t) dim));

	*is_zero = (norm == 0);
	if (norm == 0)
		return;
	for (int i = 0; i < dim; i++)
		x[i] = (float) (x[i] / norm);
}
