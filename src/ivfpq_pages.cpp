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
#include "storage/lmgr.h"
#include "utils/rel.h"
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
	opaque->unused = 0;
	opaque->page_id = IVFPQ_PAGE_ID;
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
	if (meta->version != IVFPQ_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("index \"%s\" has ivfpq page format %u, this build reads %d",
						RelationGetRelationName(index), meta->version, IVFPQ_VERSION),
				 errhint("REINDEX the index.")));
}

/* ---------- list page layout ---------- */

Size
IvfpqListCodeOffset(int capacity)
{
	return MAXALIGN(sizeof(ItemPointerData) * (Size) capacity);
}

/* Entries per list page for m-byte codes: a multiple of the code block size. */
int
IvfpqListPageCapacity(int m)
{
	int			block = (int) ivfpq::core::kCodeBlock;
	int			capacity = (int) (IVFPQ_PAGE_CONTENT_BYTES / (sizeof(ItemPointerData) + m));

	capacity -= capacity % block;
	while (capacity > 0 &&
		   IvfpqListCodeOffset(capacity) + (Size) capacity * m > IVFPQ_PAGE_CONTENT_BYTES)
		capacity -= block;
	return capacity;
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

/* Initialise a list page; pd_lower covers the whole entry layout. */
void
IvfpqInitListPage(Page page, int capacity, int m)
{
	IvfpqInitPage(page, IVFPQ_PAGE_LIST);
	((PageHeader) page)->pd_lower =
		MAXALIGN(SizeOfPageHeaderData) + IvfpqListCodeOffset(capacity) + (Size) capacity * m;
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

/* Entries in one list, counted page by page under share locks. */
int64
IvfpqCountListEntries(Relation index, BlockNumber directory_start, int list,
					  BufferAccessStrategy strategy)
{
	IvfpqDirEntryData entry;
	BlockNumber block;
	int64		count = 0;

	IvfpqReadDirEntry(index, directory_start, list, &entry);
	for (block = entry.first_block; block != InvalidBlockNumber;)
	{
		Buffer		buffer = ReadBufferExtended(index, MAIN_FORKNUM, block, RBM_NORMAL, strategy);
		IvfpqPageOpaque opaque;

		LockBuffer(buffer, BUFFER_LOCK_SHARE);
		opaque = IvfpqPageGetOpaque(BufferGetPage(buffer));
		count += opaque->entry_count;
		block = opaque->next_block;
		UnlockReleaseBuffer(buffer);
		CHECK_FOR_INTERRUPTS();
	}
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
