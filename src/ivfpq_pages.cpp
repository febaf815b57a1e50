/*
 * ivfpq_pages.cpp
 *		Page-level helpers shared by all AM phases: page initialisation, the
 *		metapage, float-stream pages (centroids, codebooks), the list directory,
 *		list page layout, and the per-backend cache of quantizers.
 */
#include <cmath>

#include "ivfpq_am.h"

extern "C"
{
#include "access/xact.h"
#include "storage/lmgr.h"
#include "utils/memutils.h"
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
void
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

/* ---------- per-backend quantizer cache ---------- */

#define IVFPQ_CACHE_SLOTS 64

static IvfpqQuantizer *quantizer_cache[IVFPQ_CACHE_SLOTS];
static int	quantizer_cache_count = 0;
static MemoryContext quantizer_cache_context = NULL;
static bool quantizer_xact_callback_registered = false;

/* Pins only protect entries within a transaction; clear them at its end. */
static void
IvfpqQuantizerXactCallback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		for (int i = 0; i < quantizer_cache_count; i++)
			quantizer_cache[i]->pin_count = 0;
	}
}

static void
IvfpqFreeCacheSlot(int slot)
{
	MemoryContextDelete(quantizer_cache[slot]->context);
	quantizer_cache[slot] = quantizer_cache[quantizer_cache_count - 1];
	quantizer_cache_count--;
}

/* Read centroids and codebooks; on error free the half-built cache entry. */
static void
IvfpqLoadFloats(Relation index, MemoryContext context, const IvfpqMetaPageData *meta,
				float *centroids, Size centroid_count, float *codebooks, Size codebook_count)
{
	PG_TRY();
	{
		IvfpqReadFloatPages(index, meta->centroid_start, centroids, centroid_count);
		IvfpqReadFloatPages(index, meta->codebook_start, codebooks, codebook_count);
	}
	PG_CATCH();
	{
		MemoryContextDelete(context);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/*
 * Precompute every list's distance terms (L2 and cosine) when they fit
 * ivfpq.table_cache_mb; otherwise leave q->term_tables NULL and the scan
 * computes full distance tables per list.
 */
static void
IvfpqBuildTermTables(IvfpqQuantizer *q, MemoryContext context)
{
	ivfpq::core::QuantizerView view = IvfpqView(q);
	Size		per_list;
	float	   *mean;
	uint8	   *tables;
	const float *prepared = q->prepared;
	int			lists = q->lists;

	if (q->metric == IVFPQ_METRIC_IP || ivfpq_table_cache_mb <= 0)
		return;
	q->term_tables_tried = true;
	per_list = ivfpq::core::TermTableBytes(view);
	if ((double) per_list * lists > (double) ivfpq_table_cache_mb * 1024 * 1024)
		return;
	mean = (float *) MemoryContextAlloc(context, sizeof(float) * q->dim);
	tables = (uint8 *) MemoryContextAllocHuge(context, per_list * lists);
	IvfpqCallCore("ivfpq quantizer cache", [&]() {
		ivfpq::core::CentroidMean(view, mean);
		for (int list = 0; list < lists; list++)
			ivfpq::core::ComputeTermTable(view, prepared, mean, list, tables + per_list * list);
	});
	q->centroid_mean = mean;
	q->term_tables = tables;
	q->term_table_bytes = per_list;
}

/*
 * The quantizer of an index: from the cache if still current (same
 * relfilenode and build id as the metapage says), else read from its pages.
 * With pin = true the entry is protected from eviction until
 * IvfpqUnpinQuantizer or the end of the transaction.
 */
IvfpqQuantizer *
IvfpqGetQuantizer(Relation index, bool pin)
{
	IvfpqMetaPageData meta;
	IvfpqQuantizer *q = NULL;
	MemoryContext context;
	MemoryContext old_context;
	Size		centroid_count;
	Size		codebook_count;

	IvfpqReadMeta(index, &meta);

	for (int i = 0; i < quantizer_cache_count; i++)
	{
		IvfpqQuantizer *entry = quantizer_cache[i];

		if (entry->index_oid != RelationGetRelid(index))
			continue;
		if (entry->relfilenode == index->rd_node.relNode && entry->build_id == meta.build_id)
		{
			q = entry;
			break;
		}
		/* A stale entry (REINDEX, TRUNCATE, retrain): drop it unless in use. */
		if (entry->pin_count == 0)
		{
			IvfpqFreeCacheSlot(i);
			i--;
		}
	}

	if (q == NULL)
	{
		if (quantizer_cache_context == NULL)
			quantizer_cache_context = AllocSetContextCreate(TopMemoryContext, "ivfpq quantizer cache",
															ALLOCSET_SMALL_SIZES);
		if (!quantizer_xact_callback_registered)
		{
			RegisterXactCallback(IvfpqQuantizerXactCallback, NULL);
			quantizer_xact_callback_registered = true;
		}
		/* Evict an unpinned entry when full. */
		if (quantizer_cache_count >= IVFPQ_CACHE_SLOTS)
		{
			for (int i = 0; i < quantizer_cache_count; i++)
				if (quantizer_cache[i]->pin_count == 0)
				{
					IvfpqFreeCacheSlot(i);
					break;
				}
		}
		if (quantizer_cache_count >= IVFPQ_CACHE_SLOTS)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("too many ivfpq indexes in use by one query (limit %d)",
							IVFPQ_CACHE_SLOTS)));

		context = AllocSetContextCreate(quantizer_cache_context, "ivfpq quantizer",
										ALLOCSET_DEFAULT_SIZES);
		old_context = MemoryContextSwitchTo(context);
		q = (IvfpqQuantizer *) palloc0(sizeof(IvfpqQuantizer));
		q->context = context;
		q->index_oid = RelationGetRelid(index);
		q->relfilenode = index->rd_node.relNode;
		q->build_id = meta.build_id;
		q->dim = (int) meta.shape.dim;
		q->lists = (int) meta.shape.lists;
		q->m = (int) meta.shape.m;
		q->nbits = (int) meta.shape.nbits;
		q->metric = (int) meta.shape.metric;
		q->trained = meta.trained != 0;
		q->list_page_capacity = (int) meta.list_page_capacity;
		q->directory_start = meta.directory_start;
		centroid_count = (Size) meta.shape.lists * meta.shape.dim;
		codebook_count = (Size) meta.shape.dim << meta.shape.nbits;
		q->centroids = (float *) palloc_extended(sizeof(float) * Max(centroid_count, 1), MCXT_ALLOC_HUGE);
		q->codebooks = (float *) palloc_extended(sizeof(float) * Max(codebook_count, 1), MCXT_ALLOC_HUGE);
		MemoryContextSwitchTo(old_context);
		if (q->trained)
		{
			ivfpq::core::QuantizerView view;
			float	   *prepared;

			IvfpqLoadFloats(index, context, &meta, q->centroids, centroid_count,
							q->codebooks, codebook_count);
			view = IvfpqView(q);
			q->prepared = (float *) MemoryContextAllocHuge(context,
														   sizeof(float) * ivfpq::core::PreparedQuantizerFloats(view));
			prepared = q->prepared;
			IvfpqCallCore("ivfpq quantizer cache", [&]() {
				ivfpq::core::PrepareQuantizer(view, prepared);
			});
			IvfpqBuildTermTables(q, context);
		}
		quantizer_cache[quantizer_cache_count++] = q;
	}
	/* The cache may have been loaded while ivfpq.table_cache_mb was 0. */
	if (q->trained && !q->term_tables_tried && ivfpq_table_cache_mb > 0)
		IvfpqBuildTermTables(q, q->context);
	if (pin)
		q->pin_count++;
	return q;
}

/* Release a pin taken by IvfpqGetQuantizer. */
void
IvfpqUnpinQuantizer(IvfpqQuantizer *q)
{
	if (q->pin_count > 0)
		q->pin_count--;
}
