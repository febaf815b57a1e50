/*
 * ivfpq_cache.cpp
 *		The per-backend cache of quantizers: an index's centroids, codebooks,
 *		prepared codebooks and per-list distance terms, read from its pages
 *		once and kept for the next queries and inserts.
 *
 * Entries live in a hash table keyed by index OID, each in a memory context
 * of its own under "ivfpq quantizer cache" (TopMemoryContext).  An entry is
 * current while the index's relfilenode and the build id on its metapage are
 * unchanged (REINDEX, TRUNCATE and retraining change them).  The cache holds
 * at most ivfpq.cache_mb: when a new entry goes over, the least recently used
 * entries that no scan has pinned are evicted.  Pinned entries (in use by a
 * scan of this transaction) are never evicted, so a query over more
 * partitions than the budget holds still runs, over budget until it ends.
 * Pins are cleared at transaction end.
 *
 * With ivfpq preloaded, an entry's arrays (and its term tables and coarse
 * bound) usually live in the shared cache (ivfpq_shared_cache.cpp): the entry
 * then holds pointers into it, valid while the transaction pins the shared
 * slot, and only its per-backend parts (first pages, side pages) here.
 *
 * Errors: an entry is built in a context under the caller's (query-lifetime)
 * memory context and moved under the cache only once complete, so an error
 * or a cancel while it loads (reading pages, preparing codebooks, building
 * term tables) frees everything it had allocated.
 */
#include <malloc.h>

#include "ivfpq_am.h"

extern "C"
{
#include "access/xact.h"
#include "port/atomics.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/rel.h"
}

typedef struct IvfpqCacheEntry
{
	Oid			index_oid;		/* hash key */
	IvfpqQuantizer *q;
} IvfpqCacheEntry;

static HTAB *quantizer_cache = NULL;
static MemoryContext quantizer_cache_context = NULL;
static uint64 cache_clock = 0;
static Size cache_bytes = 0;		/* sum of the entries' bytes */

/* Freed at a transaction's end, worth handing back to the operating system. */
#define IVFPQ_TRIM_BYTES ((Size) 4 * 1024 * 1024)

/*
 * Entries replaced while pinned (the index was rebuilt during a transaction
 * that still scans the old quantizer): freed at transaction end.
 */
static List *retired_entries = NIL;

static void IvfpqCacheEvict(const IvfpqQuantizer *keep);

/* Free an entry's memory (the caller has removed it from the hash table). */
static void
IvfpqFreeQuantizer(IvfpqQuantizer *q)
{
	MemoryContextDelete(q->context);
}

/* Pins only protect entries within a transaction: clear them at its end. */
static void
IvfpqCacheXactCallback(XactEvent event, void *arg)
{
	HASH_SEQ_STATUS status;
	IvfpqCacheEntry *entry;
	ListCell   *cell;
	Size		freed = 0;

	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	IvfpqSharedRelease();		/* the shared cache's pins of this transaction */
	if (quantizer_cache != NULL)
	{
		hash_seq_init(&status, quantizer_cache);
		while ((entry = (IvfpqCacheEntry *) hash_seq_search(&status)) != NULL)
			entry->q->pin_count = 0;
	}
	foreach(cell, retired_entries)
	{
		freed += ((IvfpqQuantizer *) lfirst(cell))->bytes;
		IvfpqFreeQuantizer((IvfpqQuantizer *) lfirst(cell));
	}
	list_free(retired_entries);
	retired_entries = NIL;
	/* What a query kept over budget while it used it goes now, not at the next use. */
	if (quantizer_cache != NULL)
	{
		Size		before = cache_bytes;

		IvfpqCacheEvict(NULL);
		freed += before - cache_bytes;
	}

	/*
	 * glibc keeps freed memory in the process: without this the backend's
	 * resident memory would stay at the peak of its largest query (every
	 * partition it scanned pinned at once) and ivfpq.cache_mb would bound
	 * only the memory contexts, not what the operating system sees.
	 */
	if (freed >= IVFPQ_TRIM_BYTES)
		malloc_trim(0);
}

/* Create the hash table and its context on first use. */
static void
IvfpqCacheInit(void)
{
	HASHCTL		ctl;

	if (quantizer_cache != NULL)
		return;
	quantizer_cache_context = AllocSetContextCreate(TopMemoryContext, "ivfpq quantizer cache",
													ALLOCSET_SMALL_SIZES);
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(IvfpqCacheEntry);
	ctl.hcxt = quantizer_cache_context;
	quantizer_cache = hash_create("ivfpq quantizers", 64, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	RegisterXactCallback(IvfpqCacheXactCallback, NULL);
}

/*
 * Take an entry out of the cache: freed now when unpinned, else retired until
 * the transaction ends.
 */
static void
IvfpqCacheRemove(IvfpqQuantizer *q)
{
	Oid			index_oid = q->index_oid;

	(void) hash_search(quantizer_cache, &index_oid, HASH_REMOVE, NULL);
	cache_bytes -= q->bytes;
	if (q->pin_count > 0)
	{
		MemoryContext old_context = MemoryContextSwitchTo(quantizer_cache_context);

		retired_entries = lappend(retired_entries, q);
		MemoryContextSwitchTo(old_context);
	}
	else
		IvfpqFreeQuantizer(q);
}

/* Evict least recently used unpinned entries (not keep) while over ivfpq.cache_mb. */
static void
IvfpqCacheEvict(const IvfpqQuantizer *keep)
{
	Size		budget = (Size) ivfpq_cache_mb * 1024 * 1024;

	while (cache_bytes > budget)
	{
		HASH_SEQ_STATUS status;
		IvfpqCacheEntry *entry;
		IvfpqQuantizer *victim = NULL;

		hash_seq_init(&status, quantizer_cache);
		while ((entry = (IvfpqCacheEntry *) hash_seq_search(&status)) != NULL)
		{
			IvfpqQuantizer *q = entry->q;

			if (q == keep || q->pin_count > 0)
				continue;
			if (victim == NULL || q->last_used < victim->last_used)
				victim = q;
		}
		if (victim == NULL)
			break;				/* only pinned entries left: over budget until they are released */
		IvfpqCacheRemove(victim);
	}
}

/*
 * Bytes of one list's term table when the terms of all lists fit
 * ivfpq.table_cache_mb, else 0 (also for inner product, which has none, and
 * while the setting is 0).  The rule for private and shared entries alike.
 */
Size
IvfpqTermTableRoom(const IvfpqQuantizer *q)
{
	Size		per_list;

	if (ivfpq_table_cache_mb <= 0 || q->shape.metric == IVFPQ_METRIC_IP)
		return 0;
	/* 4-bit codes: a table of 16 codewords costs less than the terms would. */
	if (q->shape.nbits != 8)
		return 0;
	per_list = ivfpq::core::TermTableBytes(IvfpqView(q));
	if ((double) per_list * q->shape.lists > (double) ivfpq_table_cache_mb * 1024 * 1024)
		return 0;
	return per_list;
}

/*
 * Room for every list's distance terms (L2 and cosine; IndexIVFPQ's
 * "precomputed tables") when they fit ivfpq.table_cache_mb, allocated in
 * context; otherwise leave q->term_tables NULL and the scan computes full
 * distance tables per list.  A list's terms are computed when a scan first
 * probes it (IvfpqListTermTable), which costs about what the full table it
 * replaces does: computing all of them up front (0.36 s for 1000 lists at
 * m = 32 of 64 dimensions) was most of the first query of every new
 * connection, and a session that never probes a list never pays for it.
 * The pages of lists never probed are never touched, so they take no
 * physical memory either.
 */
static void
IvfpqBuildTermTables(IvfpqQuantizer *q, MemoryContext context)
{
	ivfpq::core::QuantizerView view = IvfpqView(q);
	Size		per_list;
	float	   *mean;
	uint8	   *tables;
	int			lists = q->shape.lists;

	if (ivfpq_table_cache_mb <= 0)
		return;					/* tried again once the setting allows */
	per_list = IvfpqTermTableRoom(q);
	if (per_list == 0)
	{
		q->term_tables_tried = true;	/* inner product, or too large */
		return;
	}
	mean = (float *) MemoryContextAlloc(context, sizeof(float) * q->shape.dim);
	tables = (uint8 *) MemoryContextAllocHuge(context, per_list * lists);
	q->term_built = (bool *) MemoryContextAllocZero(context, sizeof(bool) * lists);
	IvfpqCallCore("ivfpq quantizer cache", [&]() {
		ivfpq::core::CentroidCenter(view, mean);
	});
	q->centroid_center = mean;
	q->term_tables = tables;
	q->term_table_bytes = per_list;
	q->term_tables_tried = true;
}

/*
 * Build the quantizer of an index from its pages, in a new context under the
 * caller's memory context: an error frees it with the query.  The caller
 * moves it under the cache once it is complete.  The room for the term
 * tables only with with_terms (for a scan).
 */
static IvfpqQuantizer *
IvfpqLoadQuantizer(Relation index, const IvfpqMetaPageData *meta, bool with_terms)
{
	MemoryContext context = AllocSetContextCreate(CurrentMemoryContext, "ivfpq quantizer",
												  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old_context = MemoryContextSwitchTo(context);
	IvfpqQuantizer *q = (IvfpqQuantizer *) palloc0(sizeof(IvfpqQuantizer));
	Size		centroid_count = IvfpqCentroidFloats(&meta->shape);
	Size		codebook_count = IvfpqCodebookFloats(&meta->shape);

	MemoryContextSetIdentifier(context, pstrdup(RelationGetRelationName(index)));
	q->context = context;
	q->shared_slot = -1;
	q->index_oid = RelationGetRelid(index);
	q->relfilenode = index->rd_node.relNode;
	q->build_id = meta->build_id;
	q->shape = meta->shape;
	q->trained = meta->trained != 0;
	q->list_page_capacity = (int) meta->list_page_capacity;
	q->filter_columns = (int) meta->filter_columns;
	q->directory_start = meta->directory_start;
	q->centroids = (float *) palloc_extended(sizeof(float) * Max(centroid_count, 1), MCXT_ALLOC_HUGE);
	q->codebooks = (float *) palloc_extended(sizeof(float) * Max(codebook_count, 1), MCXT_ALLOC_HUGE);
	if (q->trained)
	{
		ivfpq::core::QuantizerView view;
		float	   *prepared;

		IvfpqReadQuantizerArrays(index, meta, q->centroids, q->codebooks);
		view = IvfpqView(q);
		q->prepared = prepared = (float *) palloc_extended(
			sizeof(float) * ivfpq::core::PreparedQuantizerFloats(view), MCXT_ALLOC_HUGE);
		IvfpqCallCore("ivfpq quantizer cache", [&]() {
			ivfpq::core::PrepareQuantizer(view, prepared);
		});
		if (with_terms)
			IvfpqBuildTermTables(q, context);
	}
	MemoryContextSwitchTo(old_context);
	return q;
}

/*
 * The quantizer of an index: from the cache if still current (same
 * relfilenode and build id as the metapage says), else read from its pages
 * and cached.  With pin = true the entry is protected from eviction until
 * IvfpqUnpinQuantizer or the end of the transaction.  With for_scan = true
 * the entry also gets room for its term tables (when ivfpq.table_cache_mb
 * allows), which only scans use, each list's computed on its first probe
 * (IvfpqListTermTable).  The result is owned by the cache: callers must not
 * free it.
 */
IvfpqQuantizer *
IvfpqGetQuantizer(Relation index, bool pin, bool for_scan)
{
	IvfpqMetaPageData meta;
	Oid			index_oid = RelationGetRelid(index);
	IvfpqCacheEntry *entry;
	IvfpqQuantizer *q = NULL;
	bool		found;

	IvfpqReadMeta(index, &meta);
	IvfpqCacheInit();

	entry = (IvfpqCacheEntry *) hash_search(quantizer_cache, &index_oid, HASH_FIND, NULL);
	if (entry != NULL)
	{
		if (entry->q->relfilenode != index->rd_node.relNode || entry->q->build_id != meta.build_id)
			IvfpqCacheRemove(entry->q);		/* stale: REINDEX, TRUNCATE, retrain */
		else if (entry->q->shared_slot >= 0 && !IvfpqSharedPin(entry->q))
			IvfpqCacheRemove(entry->q);		/* its shared copy was evicted */
		else
			q = entry->q;
	}

	if (q == NULL)
	{
		/*
		 * The shared cache's copy, else read from the pages and offered to
		 * the shared cache (kept private when it does not fit there).
		 */
		q = IvfpqSharedFind(index, &meta);
		if (q == NULL)
		{
			q = IvfpqLoadQuantizer(index, &meta, for_scan);
			(void) IvfpqSharedPublish(q);
		}
		/* Complete: hand it to the cache. */
		MemoryContextSetParent(q->context, quantizer_cache_context);
		q->bytes = MemoryContextMemAllocated(q->context, true);
		entry = (IvfpqCacheEntry *) hash_search(quantizer_cache, &index_oid, HASH_ENTER, &found);
		entry->q = q;
		cache_bytes += q->bytes;
	}
	else if (for_scan && q->trained && !q->term_tables_tried && ivfpq_table_cache_mb > 0)
	{
		/*
		 * Loaded by an insert (inserts never need the terms), or while
		 * ivfpq.table_cache_mb was 0: add the room for the terms now,
		 * leak-free.
		 */
		MemoryContext terms = AllocSetContextCreate(CurrentMemoryContext, "ivfpq quantizer terms",
													ALLOCSET_DEFAULT_SIZES);

		IvfpqBuildTermTables(q, terms);
		MemoryContextSetParent(terms, q->context);
		cache_bytes -= q->bytes;
		q->bytes = MemoryContextMemAllocated(q->context, true);
		cache_bytes += q->bytes;
	}

	q->last_used = ++cache_clock;
	if (pin)
		q->pin_count++;
	IvfpqCacheEvict(q);
	return q;
}

/* Account for a change in the memory of a cached entry. */
static void
IvfpqCacheRecount(IvfpqQuantizer *q)
{
	cache_bytes -= q->bytes;
	q->bytes = MemoryContextMemAllocated(q->context, true);
	cache_bytes += q->bytes;
}

/*
 * Rows a backend assigns (or scans it starts) with a cached quantizer before
 * it prepares the quantizer's coarse bound.  Preparing costs about as much
 * as assigning this many rows (or ranking the centroids for this many
 * queries) by reading every centroid (~25 ms against ~50 us a row at 1000
 * lists of 768 dimensions), so a session that inserts a few rows never pays
 * for it and one that inserts many pays at most twice the best cost (the
 * ski-rental argument).
 */
#define IVFPQ_COARSE_BOUND_AFTER 512

/*
 * Searches through the bound after which it is dropped if it read more
 * than half of the centroids a row on average: data without low-dimensional
 * structure, where the bound only adds its own cost.
 */
#define IVFPQ_COARSE_BOUND_TRIAL 256

/*
 * The coarse bound of a trained quantizer (see ivfpq_core.h), or NULL: NULL
 * until this entry has been used for IVFPQ_COARSE_BOUND_AFTER assignments or
 * scans, for quantizers too small to have one, and after the bound proved
 * useless.  Each call counts as one use.  The bound is built in its own
 * context and moved under the entry only when complete, so an error leaks
 * nothing.  An entry of the shared cache takes the bound another backend
 * published there, or publishes its own (kept private if the area is full).
 */
const float *
IvfpqCoarseBound(IvfpqQuantizer *q)
{
	q->coarse_uses++;
	if (!q->coarse_bound_tried && q->coarse_uses >= IVFPQ_COARSE_BOUND_AFTER)
	{
		ivfpq::core::QuantizerView view = IvfpqView(q);
		Size		floats = ivfpq::core::CoarseBoundFloats(view);

		q->coarse_bound_tried = true;
		if (floats > 0 && q->shared_slot >= 0)
			q->coarse_bound = (float *) IvfpqSharedCoarseBound(q);
		if (floats > 0 && q->coarse_bound == NULL)
		{
			MemoryContext bound_context = AllocSetContextCreate(CurrentMemoryContext,
																"ivfpq coarse bound",
																ALLOCSET_DEFAULT_SIZES);
			float	   *bound = (float *) MemoryContextAllocHuge(bound_context, sizeof(float) * floats);
			const float *shared_bound = NULL;

			IvfpqCallCore("ivfpq coarse bound", [&]() {
				ivfpq::core::PrepareCoarseBound(view, bound);
			});
			/* A shared entry's bound is shared too, when the area has room. */
			if (q->shared_slot >= 0)
				shared_bound = IvfpqSharedPublishCoarseBound(q, bound, floats);
			if (shared_bound != NULL)
			{
				MemoryContextDelete(bound_context);
				q->coarse_bound = (float *) shared_bound;
			}
			else
			{
				MemoryContextSetParent(bound_context, q->context);
				q->coarse_bound = bound;
				q->coarse_bound_context = bound_context;
				IvfpqCacheRecount(q);
			}
		}
	}
	return q->coarse_bound;
}

/*
 * Report how many centroids a search through the coarse bound read; after
 * IVFPQ_COARSE_BOUND_TRIAL searches the bound is dropped if they read more
 * than half of the centroids on average.
 */
void
IvfpqCoarseBoundReads(IvfpqQuantizer *q, size_t reads)
{
	q->bounded_searches++;
	q->bounded_reads += reads;
	if (q->bounded_searches == IVFPQ_COARSE_BOUND_TRIAL &&
		q->bounded_reads > q->bounded_searches * (uint64) q->shape.lists / 2)
	{
		if (q->coarse_bound_context != NULL)
			MemoryContextDelete(q->coarse_bound_context);	/* else the shared copy: just stop using it */
		q->coarse_bound = NULL;
		q->coarse_bound_context = NULL;
		IvfpqCacheRecount(q);
	}
}

/*
 * The nearest list of a vector (trained quantizer): through the coarse bound
 * when there is one, else by reading every centroid.  Both give the same
 * list.
 */
int32
IvfpqAssignList(IvfpqQuantizer *q, const float *x)
{
	ivfpq::core::QuantizerView view = IvfpqView(q);
	const float *bound = IvfpqCoarseBound(q);
	int32		list = 0;
	size_t		reads = 0;

	IvfpqCallCore("ivfpq insert", [&]() {
		if (bound != NULL)
		{
			float		distance;

			reads = ivfpq::core::NearestListsBounded(view, bound, x, 1, &list, &distance);
		}
		else
			ivfpq::core::AssignLists(view, x, 1, &list);
	});
	if (bound != NULL)
		IvfpqCoarseBoundReads(q, reads);
	return list;
}

/*
 * A per-list array of block numbers, all Invalid, that lives (and is
 * counted) with the cache entry: the first pages and side pages it keeps.
 */
BlockNumber *
IvfpqCacheListBlocks(IvfpqQuantizer *q)
{
	int			lists = Max(q->shape.lists, 1);
	BlockNumber *blocks = (BlockNumber *) MemoryContextAlloc(q->context, sizeof(BlockNumber) * lists);

	for (int i = 0; i < lists; i++)
		blocks[i] = InvalidBlockNumber;
	IvfpqCacheRecount(q);
	return blocks;
}

/*
 * The first page of a list, or Invalid while the list has none.  A list's
 * first page, once created (by the build, or by the first insert into an
 * empty list), is never unlinked or replaced for the life of the index's
 * relfilenode and build, which key the cache entry; so the cache keeps it
 * and a scan need not read the directory page for every list it probes.
 * Lists without a page are read from the directory each time.
 */
BlockNumber
IvfpqListFirstBlock(Relation index, IvfpqQuantizer *q, int list)
{
	IvfpqDirEntryData entry;

	if (q->first_blocks != NULL && q->first_blocks[list] != InvalidBlockNumber)
		return q->first_blocks[list];
	IvfpqReadDirEntry(index, q->directory_start, list, &entry);
	if (entry.first_block != InvalidBlockNumber)
	{
		if (q->first_blocks == NULL)
			q->first_blocks = IvfpqCacheListBlocks(q);
		q->first_blocks[list] = entry.first_block;
	}
	return entry.first_block;
}

/* Release a pin taken by IvfpqGetQuantizer. */
void
IvfpqUnpinQuantizer(IvfpqQuantizer *q)
{
	if (q->pin_count > 0)
		q->pin_count--;
}

/* The list page layout of the index a cached quantizer describes. */
IvfpqListLayout
IvfpqQuantizerLayout(const IvfpqQuantizer *q)
{
	IvfpqListLayout layout;

	layout.capacity = q->list_page_capacity;
	layout.m = Max(q->shape.m, 1);
	layout.nbits = q->shape.nbits;
	layout.filter_columns = q->filter_columns;
	return layout;
}

/*
 * A list's term table, computed on the first call for the list.  Cancelled
 * half-way, the list stays unmarked and is computed again next time.
 */
const uint8 *
IvfpqListTermTable(IvfpqQuantizer *q, int list)
{
	uint8	   *table = q->term_tables + q->term_table_bytes * list;

	/*
	 * In the shared cache another backend may compute the list at the same
	 * time: both write the same bytes, and the flag is set only after them.
	 */
	if (q->term_built[list])
		pg_read_barrier();
	else
	{
		ivfpq::core::QuantizerView view = IvfpqView(q);
		const float *prepared = q->prepared;
		const float *mean = q->centroid_center;

		IvfpqCallCore("ivfpq quantizer cache", [&]() {
			ivfpq::core::ComputeTermTable(view, prepared, mean, list, table);
		});
		pg_write_barrier();
		q->term_built[list] = true;
	}
	return table;
}
