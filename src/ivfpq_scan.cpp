/*
 * ivfpq_scan.cpp
 *		Ordered index scan: distances to all centroids, probe the nearest
 *		ivfpq.probes lists with per-list ADC distance tables over the packed
 *		codes, keep the candidates, re-rank the best ivfpq.rerank of them with
 *		exact distances from the heap (MVCC snapshot, TIDs in block order,
 *		prefetched) and return rows in exact-distance order.
 *
 * PQ distances are not lower bounds of true distances, so they never go to
 * the executor's reorder queue: rows are returned with xs_recheckorderby =
 * false, each batch sorted by its exact distance.  When the executor asks for
 * more rows than a batch holds (a selective WHERE, a large LIMIT) the scan
 * re-ranks the next-best candidates and then probes further lists, up to
 * ivfpq.max_probes (iterative scan).  Successive batches are each in order;
 * across batches the order is relaxed, as with pgvector's iterative scans.
 *
 * With conditions on filter columns (a multicolumn index, ivfpq_filter.cpp)
 * only the entries that pass them enter the candidate pool, and the scan
 * probes lists until the pool holds IVFPQ_FILTER_POOL_FACTOR batches.
 *
 * No index page is pinned between calls: a list page is read under a share
 * lock and its entries are copied out.
 */
#include <algorithm>
#include <cmath>
#include <limits>

#include "ivfpq_am.h"
#include "select_smallest.h"

extern "C"
{
#include "access/relscan.h"
#include "access/tableam.h"
#include "executor/tuptable.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
}

/* Rows returned per batch when ivfpq.rerank = 0 (approximate order). */
#define IVFPQ_UNRANKED_BATCH 256

/*
 * Heap prefetching for the rerank.  A prefetch costs a buffer-table lookup
 * even when the page is already in shared buffers, which is most of the time
 * for a hot table; after a batch whose pages were all cached, skip
 * prefetching for this many candidates, then look again.
 */
#define IVFPQ_PREFETCH_SKIP 4096

/*
 * A filtered scan (conditions on filter columns) probes lists until its pool
 * of passing candidates holds this many batches (IvfpqStartScan).
 */
#define IVFPQ_FILTER_POOL_FACTOR 2

/*
 * Pool cut: once the pool holds IVFPQ_CUT_TRIGGER times this many batches
 * (at least IVFPQ_CUT_MIN candidates), only the best ones stay (IvfpqCutPool).
 */
#define IVFPQ_CUT_BATCHES 4
#define IVFPQ_CUT_MIN 1024
#define IVFPQ_CUT_TRIGGER 4		/* cut when the pool holds this many times what it keeps */
#define IVFPQ_CUT_SAMPLE 256	/* distances sampled to place the cut */

/* The least a scan re-ranks per batch when it shares ivfpq.rerank with siblings. */
#define IVFPQ_MIN_SHARED_RERANK 10

/* Candidates re-ranked between interrupt checks (a power of two). */
#define IVFPQ_RERANK_CHECK_INTERVAL 64

static int	prefetch_skip_remaining = 0;	/* per backend */

typedef struct IvfpqCandidate
{
	ItemPointerData tid;
	float		distance;		/* ADC ordering distance */
} IvfpqCandidate;

typedef struct IvfpqResult
{
	ItemPointerData tid;
	double		distance;		/* value of the ORDER BY operator */
} IvfpqResult;

typedef struct IvfpqScanOpaqueData
{
	MemoryContext scan_context;		/* lives as long as the scan */
	MemoryContext batch_context;	/* reset for every batch */
	IvfpqQuantizer *q;
	bool		started;
	int			probes;
	int			rerank;
	int			lists_limit;	/* how many lists the scan may probe in all */
	AttrNumber	heap_attno;
	int			dim;			/* dimensions of the query */

	/* conditions on filter columns (ivfpq_filter.cpp), or NULL */
	IvfpqFilter *filter;
	bool	   *pass;			/* per entry of a page: passes the filter */
	bool		no_rows;		/* the conditions exclude every row */

	/* query */
	float	   *query_raw;		/* as given (exact distances) */
	float	   *query;			/* as indexed (normalized for cosine) */

	/* lists in probe order */
	int32	   *list_order;
	float	   *centroid_distances;
	int			list_order_sorted;	/* prefix of list_order that is sorted */
	bool		distances_pending;	/* centroid_distances known only for that prefix */
	int			next_list;

	/* ADC */
	float	   *table;
	float	   *query_terms;	/* with cached term tables: per-query part */
	bool		table_valid;	/* inner product: the one table is computed */
	uint8	   *fast_lut;		/* 4-bit codes: the list's table quantized to 8 bits */
	float	   *refine_heap;	/* 4-bit codes: the best refined distances (FastScanRefine) */
	size_t		refine_capacity;
	size_t		refine_count;
	VectorDecodeBuffer decode;	/* compressed heap vectors of the re-rank */
	float	   *adc;

	/* candidate pool */
	IvfpqCandidate *pool;
	int64		pool_count;
	int64		pool_capacity;
	int64		pool_next;		/* candidates before this were consumed */

	/* current batch */
	IvfpqResult *batch;
	int			batch_count;
	int			batch_next;

	/*
	 * Re-ranked rows wait in the batch until no unconsumed candidate is
	 * likely to be closer: until their exact distance is at most the
	 * smallest ADC distance left in the pool (on the operator's scale;
	 * +infinity when the pool is empty).  A row that is not yet due makes
	 * the next batch be re-ranked and merged in first.
	 */
	double		next_candidate_distance;
	int64		returned;		/* rows returned so far */

	/*
	 * Pool cut (trained 8-bit codes, no filter columns): copying every
	 * probed entry into the pool costs more than scanning its code.  Once
	 * the pool holds IVFPQ_CUT_TRIGGER x cut_keep candidates, before any is
	 * consumed, only the best cut_keep (and their ties) stay; pool_cut
	 * becomes the largest distance kept and entries farther than it are no
	 * longer copied in (cut_dropped counts them).  So the pool holds exactly the entries of
	 * the probed lists at most pool_cut away.  When it runs dry with entries
	 * dropped, the probed lists are scanned again for the entries farther
	 * than pool_cut (pool_floor), and cutting stops.
	 */
	bool		cut_enabled;
	int64		cut_keep;
	int64		cut_dropped;
	float		pool_cut;		/* +infinity: no cut */
	float		pool_floor;		/* -infinity: no floor */
	uint16	   *window;			/* per page: entries within the window */
	float	   *cut_scratch;	/* IvfpqCutPool's distances */
	int64		cut_scratch_size;

	/* heap access */
	TupleTableSlot *slot;
	IndexFetchTableData *fetch;
} IvfpqScanOpaqueData;

typedef IvfpqScanOpaqueData *IvfpqScanOpaque;

static double IvfpqAdcToOperatorScale(int metric, float adc);

/* ambeginscan: allocate scan state; the work starts at the first tuple. */
IndexScanDesc
ivfpqbeginscan(Relation index, int nkeys, int norderbys)
{
	IndexScanDesc scan = RelationGetIndexScan(index, nkeys, norderbys);
	IvfpqScanOpaque so = (IvfpqScanOpaque) palloc0(sizeof(IvfpqScanOpaqueData));

	so->scan_context = AllocSetContextCreate(CurrentMemoryContext, "ivfpq scan",
											 ALLOCSET_DEFAULT_SIZES);
	so->decode.context = so->scan_context;
	so->batch_context = AllocSetContextCreate(so->scan_context, "ivfpq scan batch",
											  ALLOCSET_DEFAULT_SIZES);
	so->heap_attno = index->rd_index->indkey.values[0];
	scan->opaque = so;
	scan->xs_orderbyvals = (Datum *) palloc0(sizeof(Datum) * Max(norderbys, 1));
	scan->xs_orderbynulls = (bool *) palloc(sizeof(bool) * Max(norderbys, 1));
	for (int i = 0; i < Max(norderbys, 1); i++)
		scan->xs_orderbynulls[i] = true;
	return scan;
}

/* Forget everything computed for the previous query. */
static void
IvfpqResetScan(IvfpqScanOpaque so)
{
	if (so->q != NULL)
	{
		IvfpqUnpinQuantizer(so->q);
		so->q = NULL;
	}
	so->started = false;
	so->query = so->query_raw = NULL;
	so->list_order = NULL;
	so->centroid_distances = NULL;
	so->table = so->adc = NULL;
	so->fast_lut = NULL;
	so->refine_heap = NULL;
	so->refine_capacity = so->refine_count = 0;
	so->query_terms = NULL;
	so->table_valid = false;
	so->pool = NULL;
	so->batch = NULL;
	so->pool_count = so->pool_capacity = so->pool_next = 0;
	so->batch_count = so->batch_next = 0;
	so->next_candidate_distance = std::numeric_limits<double>::infinity();
	so->returned = 0;
	so->next_list = so->list_order_sorted = 0;
	so->distances_pending = false;
	so->filter = NULL;
	so->pass = NULL;
	so->no_rows = false;
	so->cut_enabled = false;
	so->cut_keep = 0;
	so->cut_dropped = 0;
	so->pool_cut = std::numeric_limits<float>::infinity();
	so->pool_floor = -std::numeric_limits<float>::infinity();
	so->window = NULL;
	so->cut_scratch = NULL;
	so->cut_scratch_size = 0;
	so->decode.data = NULL;
	so->decode.capacity = 0;
	/* Everything above lived in the scan context (slot/fetch do not). */
	MemoryContextReset(so->scan_context);
	so->batch_context = AllocSetContextCreate(so->scan_context, "ivfpq scan batch",
											  ALLOCSET_DEFAULT_SIZES);
}

/* amrescan: take the new ORDER BY argument. */
void
ivfpqrescan(IndexScanDesc scan, ScanKey keys, int nkeys, ScanKey orderbys, int norderbys)
{
	IvfpqScanOpaque so = (IvfpqScanOpaque) scan->opaque;

	IvfpqResetScan(so);
	if (keys && scan->numberOfKeys > 0)
		memmove(scan->keyData, keys, scan->numberOfKeys * sizeof(ScanKeyData));
	if (orderbys && scan->numberOfOrderBys > 0)
		memmove(scan->orderByData, orderbys, scan->numberOfOrderBys * sizeof(ScanKeyData));
}

/* Sort list_order[from, to) by centroid distance. */
static void
IvfpqSortLists(IvfpqScanOpaque so, int from, int middle, int to)
{
	const float *distances = so->centroid_distances;
	auto		closer = [distances](int32 a, int32 b) {
		return distances[a] < distances[b] || (distances[a] == distances[b] && a < b);
	};

	std::partial_sort(so->list_order + from, so->list_order + middle, so->list_order + to, closer);
	so->list_order_sorted = middle;
}

/* Ensure room for n more candidates in the pool. */
static void
IvfpqReservePool(IvfpqScanOpaque so, int64 n)
{
	if (so->pool_count + n <= so->pool_capacity)
		return;
	{
		int64		capacity = Max(so->pool_capacity * 2, so->pool_count + n);
		MemoryContext old_context = MemoryContextSwitchTo(so->scan_context);

		if (so->pool == NULL)
			so->pool = (IvfpqCandidate *) palloc_extended(sizeof(IvfpqCandidate) * capacity, MCXT_ALLOC_HUGE);
		else
			so->pool = (IvfpqCandidate *) repalloc_huge(so->pool, sizeof(IvfpqCandidate) * capacity);
		so->pool_capacity = capacity;
		MemoryContextSwitchTo(old_context);
	}
}

/*
 * Keep the best cut_keep candidates of the pool (nothing consumed yet) and
 * their ties, in their order; the largest distance kept becomes pool_cut.
 */
static void
IvfpqCutPool(IvfpqScanOpaque so)
{
	IvfpqCandidate *pool = so->pool;
	int64		count = so->pool_count;
	int64		keep = so->cut_keep;
	int64		n = 0;
	float	   *d;
	float		cut;

	Assert(so->pool_next == 0 && count > keep);
	if (so->cut_scratch_size < count)
	{
		if (so->cut_scratch != NULL)
			pfree(so->cut_scratch);
		so->cut_scratch = (float *) MemoryContextAllocHuge(so->scan_context, sizeof(float) * count * 2);
		so->cut_scratch_size = count * 2;
	}
	d = so->cut_scratch;

	/*
	 * The cut from a sample of IVFPQ_CUT_SAMPLE distances, aimed a little
	 * above the keep-th smallest; exact (nth_element) only if the sample's
	 * cut would keep fewer than 'keep'.
	 */
	{
		int64		step = Max(count / IVFPQ_CUT_SAMPLE, (int64) 1);
		int64		samples = 0;
		int64		rank;

		for (int64 i = 0; i < count; i += step)
			d[samples++] = pool[i].distance;
		rank = Min(samples - 1, (int64) ((double) keep / (double) count * samples * 1.25) + 1);
		std::nth_element(d, d + rank, d + samples);
		cut = d[rank];
		for (int64 i = 0; i < count; i++)
			n += !(pool[i].distance > cut);
		if (n < keep)
		{
			for (int64 i = 0; i < count; i++)
				d[i] = pool[i].distance;
			std::nth_element(d, d + keep - 1, d + count);
			cut = d[keep - 1];
		}
		n = 0;
	}
	for (int64 i = 0; i < count; i++)
	{
		pool[n] = pool[i];
		n += !(pool[i].distance > cut);
	}
	so->cut_dropped += count - n;
	so->pool_count = n;
	so->pool_cut = Min(cut, so->pool_cut);
}

/* Scan one list: ADC distances of all its entries into the pool. */
static void
IvfpqScanList(IndexScanDesc scan, int list)
{
	IvfpqScanOpaque so = (IvfpqScanOpaque) scan->opaque;
	IvfpqQuantizer *q = so->q;
	Relation	index = scan->indexRelation;
	IvfpqListLayout layout = IvfpqQuantizerLayout(q);
	size_t		m = (size_t) q->shape.m;
	size_t		ksub = (size_t) 1 << q->shape.nbits;
	float		bias = 0;
	ivfpq::core::FastScanTable fast_table = {NULL, m, 0, 0};
	BlockNumber first_block;
	Buffer		buffer;

	if (q->trained && q->shape.metric == IVFPQ_METRIC_IP)
	{
		/* Inner-product tables do not depend on the list: built once per scan. */
		if (!so->table_valid)
		{
			ivfpq::core::QuantizerView view = IvfpqView(q);
			const float *prepared = q->prepared;
			const float *query = so->query;
			float	   *table = so->table;
			float		unused_bias;

			IvfpqCallCore("ivfpq scan", [&]() {
				ivfpq::core::ComputeDistanceTablePrepared(view, prepared, query, list, table,
														  &unused_bias);
			});
			so->table_valid = true;
		}
		bias = so->centroid_distances[list];	/* -(query . centroid) */
	}
	else if (q->trained && so->query_terms != NULL)
	{
		/* Cached per-list terms + this query's terms; bias = |query - centroid|^2. */
		ivfpq::core::QuantizerView view = IvfpqView(q);
		const uint8 *terms = IvfpqListTermTable(q, list);
		const float *query_terms = so->query_terms;
		float	   *table = so->table;

		IvfpqCallCore("ivfpq scan", [&]() {
			ivfpq::core::TableFromTerms(view, terms, query_terms, table);
		});
		bias = so->centroid_distances[list];
	}
	else if (q->trained)
	{
		ivfpq::core::QuantizerView view = IvfpqView(q);
		const float *prepared = q->prepared;
		const float *query = so->query;
		float	   *table = so->table;

		IvfpqCallCore("ivfpq scan", [&]() {
			ivfpq::core::ComputeDistanceTablePrepared(view, prepared, query, list, table, &bias);
		});
	}

	/*
	 * 4-bit codes: the table quantized to 8 bits for the in-register kernel
	 * (its distances only choose the candidates; the re-rank is exact).
	 */
	if (q->trained && q->shape.nbits == 4)
	{
		const float *table = so->table;
		uint8	   *lut = so->fast_lut;

		IvfpqCallCore("ivfpq scan", [&]() {
			ivfpq::core::QuantizeFastScanTable(table, m, bias, lut, &fast_table.step,
											   &fast_table.offset);
		});
		fast_table.lut = lut;
	}

	/* Lock coupling along the chain: ivfpq_pages.cpp states the rule. */
	first_block = IvfpqListFirstBlock(index, q, list);
	if (first_block == InvalidBlockNumber)
		return;
	buffer = ReadBuffer(index, first_block);
	LockBuffer(buffer, BUFFER_LOCK_SHARE);
	while (BufferIsValid(buffer))
	{
		Page		page;
		IvfpqPageOpaque opaque;
		int			n;
		int			passed;

		page = BufferGetPage(buffer);
		opaque = IvfpqPageGetOpaque(page);
		n = opaque->entry_count;
		passed = n;
		if (n > 0 && so->filter != NULL)
			passed = IvfpqFilterPage(so->filter, page, &layout, n, so->pass);
		if (passed > 0)
		{
			ItemPointer tids = IvfpqListTids(page);
			IvfpqCandidate *out;
			int			k = 0;

			IvfpqReservePool(so, passed);
			out = so->pool + so->pool_count;
			if (q->trained && fast_table.lut != NULL)
			{
				/*
				 * Fast distances for every entry, then float ADC distances
				 * for those that may be among the scan's best: the batch is
				 * chosen as precisely as with the float table.
				 */
				const uint8 *codes = IvfpqListCodes(page, layout.capacity);
				const float *table = so->table;
				const bool *pass = so->filter != NULL ? so->pass : NULL;
				float	   *adc = so->adc;

				IvfpqCallCore("ivfpq scan", [&]() {
					ivfpq::core::FastScanDistances(fast_table, codes, (size_t) n, adc);
					ivfpq::core::FastScanRefine(fast_table, table, bias, codes, (size_t) n, pass,
												adc, so->refine_heap, so->refine_capacity,
												&so->refine_count);
				});
			}
			else if (q->trained)
			{
				const uint8 *codes = IvfpqListCodes(page, layout.capacity);
				const float *table = so->table;
				float	   *adc = so->adc;

				IvfpqCallCore("ivfpq scan", [&]() {
					ivfpq::core::ScanBlockedCodes(table, m, ksub, codes, (size_t) n, bias, adc);
				});
			}
			if (so->cut_enabled || so->pool_floor > -std::numeric_limits<float>::infinity())
			{
				/*
				 * Cut pool (no filter columns): the entries within the window,
				 * found without a branch per entry, then only their TIDs read.
				 */
				float		cut = so->pool_cut;
				float		floor = so->pool_floor;
				const float *adc = so->adc;
				uint16	   *window = so->window;
				int			w = 0;

				if (floor > -std::numeric_limits<float>::infinity())
				{
					for (int i = 0; i < n; i++)
					{
						window[w] = (uint16) i;
						w += adc[i] > floor;	/* the first pass kept the others */
					}
				}
				else
				{
					for (int i = 0; i < n; i++)
					{
						window[w] = (uint16) i;
						w += !(adc[i] > cut);
					}
					so->cut_dropped += n - w;
				}
				for (int j = 0; j < w; j++)
				{
					out[j].tid = tids[window[j]];
					out[j].distance = adc[window[j]];
				}
				k = w;
			}
			else
			{
				for (int i = 0; i < n; i++)
				{
					if (so->filter != NULL && !so->pass[i])
						continue;
					out[k].tid = tids[i];
					out[k].distance = q->trained ? so->adc[i] : 0;
					k++;
				}
				Assert(k == passed);
			}
			so->pool_count += k;
			if (so->cut_enabled && so->pool_next == 0 && so->pool_count >= IVFPQ_CUT_TRIGGER * so->cut_keep)
				IvfpqCutPool(so);
		}
		buffer = IvfpqChainNext(index, buffer, BUFFER_LOCK_SHARE, NULL);
	}
	CHECK_FOR_INTERRUPTS();
}

/* Make list_order sorted by centroid distance at least up to 'end'. */
static void
IvfpqEnsureListOrder(IvfpqScanOpaque so, int end)
{
	if (end > so->list_order_sorted)
	{
		if (so->distances_pending)
		{
			/* Past the lists the coarse bound chose: every centroid's distance now. */
			ivfpq::core::QuantizerView view = IvfpqView(so->q);
			const float *query = so->query;
			float	   *distances = so->centroid_distances;

			IvfpqCallCore("ivfpq scan", [&]() {
				ivfpq::core::CentroidDistances(view, query, distances);
			});
			so->distances_pending = false;
		}
		IvfpqSortLists(so, so->list_order_sorted, so->lists_limit, so->q->shape.lists);
	}
}

/* Probe the next 'count' lists in centroid order. */
static void
IvfpqProbeMore(IndexScanDesc scan, int count)
{
	IvfpqScanOpaque so = (IvfpqScanOpaque) scan->opaque;
	int			end = Min(so->next_list + count, so->lists_limit);

	IvfpqEnsureListOrder(so, end);
	for (; so->next_list < end; so->next_list++)
		IvfpqScanList(scan, so->list_order[so->next_list]);
}

/*
 * The pool ran dry with entries dropped by the cut: probe the lists probed so
 * far again for the entries farther than the cut, and stop cutting.
 */
static void
IvfpqRescanDropped(IndexScanDesc scan)
{
	IvfpqScanOpaque so = (IvfpqScanOpaque) scan->opaque;

	so->cut_enabled = false;
	so->pool_floor = so->pool_cut;
	so->pool_cut = std::numeric_limits<float>::infinity();
	so->cut_dropped = 0;
	for (int i = 0; i < so->next_list; i++)
		IvfpqScanList(scan, so->list_order[i]);
	so->pool_floor = -std::numeric_limits<float>::infinity();
}

/*
 * Distance from the query to the centroid of the next list to probe, on the
 * operator's scale (L2 and cosine).
 */
static double
IvfpqNextListDistance(IvfpqScanOpaque so)
{
	IvfpqEnsureListOrder(so, so->next_list + 1);
	return IvfpqAdcToOperatorScale(so->q->shape.metric,
								   so->centroid_distances[so->list_order[so->next_list]]);
}

/*
 * Candidates re-ranked per batch: ivfpq.rerank, shared among the ivfpq scans
 * a MergeAppend merges (ivfpq_siblings.cpp says why that keeps the recall),
 * but never fewer than IVFPQ_MIN_SHARED_RERANK: a partition holding several
 * of the nearest rows must still find them in its first batch.
 */
static int
IvfpqBatchRerank(Oid index_oid)
{
	int			siblings;

	if (ivfpq_rerank == 0 || !ivfpq_share_rerank)
		return ivfpq_rerank;
	siblings = IvfpqSiblingScans(index_oid);
	if (siblings <= 1)
		return ivfpq_rerank;
	return Max((ivfpq_rerank + siblings - 1) / siblings, Min(ivfpq_rerank, IVFPQ_MIN_SHARED_RERANK));
}

/* First call of a scan: read the query, rank the lists, probe the first ones. */
static void
IvfpqStartScan(IndexScanDesc scan)
{
	IvfpqScanOpaque so = (IvfpqScanOpaque) scan->opaque;
	Relation	index = scan->indexRelation;
	MemoryContext old_context;
	IvfpqQuantizer *q;
	int			dim;
	Vector	   *query_vector = NULL;

	if (scan->numberOfOrderBys == 0 || scan->orderByData[0].sk_attno != 1)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("ivfpq index scans need ORDER BY a distance operator")));
	if (scan->xs_snapshot == NULL || !IsMVCCSnapshot(scan->xs_snapshot))
		elog(ERROR, "ivfpq index scans require an MVCC snapshot");

	so->q = q = IvfpqGetQuantizer(index, true, true);
	so->probes = ivfpq_probes;
	so->rerank = IvfpqBatchRerank(RelationGetRelid(index));

	old_context = MemoryContextSwitchTo(so->scan_context);

	if (!(scan->orderByData[0].sk_flags & SK_ISNULL))
		query_vector = DatumGetVector(scan->orderByData[0].sk_argument);
	dim = q->shape.dim > 0 ? q->shape.dim : (query_vector ? query_vector->dim : 1);
	so->dim = dim;
	so->query_raw = (float *) palloc0(sizeof(float) * dim);
	so->query = (float *) palloc0(sizeof(float) * dim);
	if (query_vector != NULL)
	{
		if (q->shape.dim > 0 && query_vector->dim != q->shape.dim)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("expected %d dimensions, not %d", q->shape.dim, query_vector->dim)));
		memcpy(so->query_raw, query_vector->x, sizeof(float) * dim);
		memcpy(so->query, query_vector->x, sizeof(float) * dim);
		if (q->shape.metric == IVFPQ_METRIC_COSINE)
		{
			bool		is_zero;

			IvfpqNormalize(so->query, dim, &is_zero);
		}
	}
	/* A NULL query orders nothing; scan as if for the zero vector. */

	so->list_order = (int32 *) palloc(sizeof(int32) * q->shape.lists);
	for (int i = 0; i < q->shape.lists; i++)
		so->list_order[i] = i;
	so->centroid_distances = (float *) palloc0(sizeof(float) * q->shape.lists);
	so->adc = (float *) palloc(sizeof(float) * Max(q->list_page_capacity, 1));
	so->filter = IvfpqCompileFilter(index, scan->keyData, scan->numberOfKeys);
	if (so->filter != NULL)
		so->pass = (bool *) palloc(sizeof(bool) * Max(q->list_page_capacity, 1));
	so->no_rows = IvfpqFilterImpossible(so->filter);
	so->cut_enabled = ivfpq_pool_cut && q->trained && q->shape.nbits == 8 && so->filter == NULL;
	so->cut_keep = Max((int64) IVFPQ_CUT_BATCHES * (so->rerank > 0 ? so->rerank : IVFPQ_UNRANKED_BATCH),
					   (int64) IVFPQ_CUT_MIN);
	if (so->cut_enabled)
		so->window = (uint16 *) palloc(sizeof(uint16) * Max(q->list_page_capacity, 1));

	if (q->trained)
	{
		ivfpq::core::QuantizerView view = IvfpqView(q);
		const float *query = so->query;
		float	   *distances = so->centroid_distances;
		int			lists = q->shape.lists;
		int			first_lists;
		const float *bound = NULL;

		so->lists_limit = ivfpq_max_probes > 0 ? Max(ivfpq_max_probes, so->probes) : lists;
		so->lists_limit = Min(so->lists_limit, lists);
		first_lists = Min(so->probes, so->lists_limit);
		so->table = (float *) palloc(sizeof(float) * ((Size) q->shape.m << q->shape.nbits));
		if (q->shape.nbits == 4)
		{
			so->fast_lut = (uint8 *) palloc((Size) q->shape.m * ivfpq::core::kFastScanKsub);
			so->refine_capacity = (size_t) (so->rerank > 0 ? so->rerank : IVFPQ_UNRANKED_BATCH);
			so->refine_heap = (float *) palloc(sizeof(float) * so->refine_capacity);
		}
		if (q->shape.metric != IVFPQ_METRIC_IP && first_lists < lists)
			bound = IvfpqCoarseBound(q);
		if (bound != NULL)
		{
			/*
			 * The first lists to probe through the coarse bound, without
			 * reading every centroid; the other lists' distances only if
			 * the scan goes on past them (IvfpqProbeMore).
			 */
			int32	   *top = (int32 *) palloc(sizeof(int32) * first_lists);
			float	   *top_distances = (float *) palloc(sizeof(float) * first_lists);
			bool	   *taken = (bool *) palloc0(sizeof(bool) * lists);
			size_t		reads = 0;
			int			n = 0;

			IvfpqCallCore("ivfpq scan", [&]() {
				reads = ivfpq::core::NearestListsBounded(view, bound, query, (size_t) first_lists,
														 top, top_distances);
			});
			IvfpqCoarseBoundReads(q, reads);
			for (int i = 0; i < first_lists; i++)
			{
				so->list_order[n++] = top[i];
				distances[top[i]] = top_distances[i];
				taken[top[i]] = true;
			}
			for (int list = 0; list < lists; list++)
				if (!taken[list])
					so->list_order[n++] = list;
			so->list_order_sorted = first_lists;
			so->distances_pending = true;
		}
		else
			IvfpqCallCore("ivfpq scan", [&]() {
				ivfpq::core::CentroidDistances(view, query, distances);
			});
		if (q->term_tables != NULL && ivfpq_table_cache_mb > 0)
		{
			const float *prepared = q->prepared;
			const float *mean = q->centroid_center;
			float	   *query_terms;

			so->query_terms = query_terms = (float *) palloc(sizeof(float) * ((Size) q->shape.m << q->shape.nbits));
			IvfpqCallCore("ivfpq scan", [&]() {
				ivfpq::core::ComputeQueryTerms(view, prepared, mean, query, query_terms);
			});
		}
	}
	else
		so->lists_limit = q->shape.lists;		/* untrained: exact search over everything */
	MemoryContextSwitchTo(old_context);

	if (!so->distances_pending)
	{
		so->list_order_sorted = 0;
		IvfpqSortLists(so, 0, Min(so->probes, so->lists_limit), q->shape.lists);
	}
	if (so->no_rows)
		so->lists_limit = 0;
	IvfpqProbeMore(scan, q->trained ? so->probes : q->shape.lists);

	/*
	 * With conditions on filter columns the pool holds only rows that pass
	 * them, and the first lists may hold few: probe on until the pool holds
	 * IVFPQ_FILTER_POOL_FACTOR batches, so the first batch is still chosen
	 * by the PQ distances from more candidates than it takes.  The nearest
	 * rows that pass lie farther out the more selective the filter, and the
	 * lists probed follow it.
	 */
	if (so->filter != NULL)
	{
		int64		wanted = (int64) IVFPQ_FILTER_POOL_FACTOR * (so->rerank > 0 ? so->rerank : IVFPQ_UNRANKED_BATCH);

		while (so->pool_count < wanted && so->next_list < so->lists_limit)
			IvfpqProbeMore(scan, so->probes);
	}
	so->started = true;
	pgstat_count_index_scan(index);
}

/* Exact ORDER BY value between the raw query and a heap vector. */
static double
IvfpqExactDistance(int metric, const float *query, const Vector *v)
{
	switch (metric)
	{
		case IVFPQ_METRIC_IP:
			return -(double) ivfpq::core::InnerProduct(query, v->x, (size_t) v->dim);
		case IVFPQ_METRIC_COSINE:
			return ivfpq::core::CosineDistance(query, v->x, (size_t) v->dim);
		default:
			return sqrt((double) ivfpq::core::L2SquaredDistance(query, v->x, (size_t) v->dim));
	}
}

/* Convert an ADC ordering distance to the scale of the ORDER BY operator. */
static double
IvfpqAdcToOperatorScale(int metric, float adc)
{
	switch (metric)
	{
		case IVFPQ_METRIC_IP:
			return adc;
		case IVFPQ_METRIC_COSINE:
			return Max(adc, 0.0f) / 2;		/* unit vectors: |a-b|^2 = 2 (1 - cos) */
		default:
			return sqrt(Max(adc, 0.0f));
	}
}

/* Candidate order: ADC distance (a function object, so std::sort inlines it). */
struct IvfpqCandidateCloser
{
	bool		operator() (const IvfpqCandidate &a, const IvfpqCandidate &b) const
	{
		return a.distance < b.distance;
	}
};

/*
 * Choose the batch: move the best 'take' unconsumed candidates to the front
 * of the unconsumed part of the pool (unordered among themselves).
 */
static void
IvfpqChooseCandidates(IvfpqCandidate *first, int64 take, int64 remaining)
{
	IvfpqCallCore("ivfpq scan", [&]() {
		ivfpq::core::SelectSmallest(first, take, remaining);
	});
}

/* Without rerank: the batch is the candidates in ADC order, on the operator's scale. */
static void
IvfpqApproximateBatch(IvfpqScanOpaque so, IvfpqCandidate *first, int64 take)
{
	int			metric = so->q->shape.metric;

	std::sort(first, first + take, IvfpqCandidateCloser());
	for (int64 i = 0; i < take; i++)
	{
		so->batch[i].tid = first[i].tid;
		so->batch[i].distance = IvfpqAdcToOperatorScale(metric, first[i].distance);
	}
	so->batch_count = (int) take;
}

/*
 * Prefetch the heap blocks of the candidates (sorted by TID).  A prefetch
 * costs a buffer-table lookup even for a cached page, so after a batch whose
 * pages were all in shared buffers skip IVFPQ_PREFETCH_SKIP candidates.
 */
static void
IvfpqPrefetchHeap(Relation heap, const IvfpqCandidate *first, int64 take)
{
	BlockNumber last_prefetched = InvalidBlockNumber;
	bool		any_io = false;

	if (prefetch_skip_remaining > 0)
	{
		prefetch_skip_remaining -= (int) Min(take, (int64) prefetch_skip_remaining);
		return;
	}
	for (int64 i = 0; i < take; i++)
	{
		BlockNumber block = ItemPointerGetBlockNumber(&first[i].tid);

		if (block != last_prefetched)
		{
			PrefetchBufferResult result = PrefetchBuffer(heap, MAIN_FORKNUM, block);

			any_io |= result.initiated_io || !BufferIsValid(result.recent_buffer);
			last_prefetched = block;
		}
	}
	if (!any_io)
		prefetch_skip_remaining = IVFPQ_PREFETCH_SKIP;
}

/*
 * Heap re-rank: fetch each candidate (sorted by TID) with the scan's MVCC
 * snapshot, drop rows that are invisible, NULL or of other dimensions, and
 * store the exact distance of the others in the batch.
 */
static void
IvfpqRerankFromHeap(IndexScanDesc scan, IvfpqCandidate *first, int64 take)
{
	IvfpqScanOpaque so = (IvfpqScanOpaque) scan->opaque;
	int			metric = so->q->shape.metric;

	for (int64 i = 0; i < take; i++)
	{
		bool		call_again = false;
		bool		all_dead = false;
		bool		isnull;
		Datum		value;
		Vector	   *v;

		if ((i & (IVFPQ_RERANK_CHECK_INTERVAL - 1)) == IVFPQ_RERANK_CHECK_INTERVAL - 1)
			CHECK_FOR_INTERRUPTS();
		if (!table_index_fetch_tuple(so->fetch, &first[i].tid, scan->xs_snapshot,
									 so->slot, &call_again, &all_dead))
			continue;			/* not visible to this snapshot */
		value = slot_getattr(so->slot, so->heap_attno, &isnull);
		if (isnull)
			continue;
		v = DatumGetVectorBuffered(value, &so->decode);
		if (v->dim != so->dim)
			continue;			/* untyped column with mixed dimensions */
		so->batch[so->batch_count].tid = first[i].tid;
		so->batch[so->batch_count].distance = IvfpqExactDistance(metric, so->query_raw, v);
		so->batch_count++;
	}
	ExecClearTuple(so->slot);
}

/* Sort the batch by exact distance; NaN (cosine with a zero vector) last, as in ORDER BY. */
static void
IvfpqSortBatch(IvfpqScanOpaque so)
{
	std::sort(so->batch, so->batch + so->batch_count, [](const IvfpqResult &a, const IvfpqResult &b) {
		if (std::isnan(a.distance))
			return false;
		if (std::isnan(b.distance))
			return true;
		return a.distance < b.distance;
	});
}

/*
 * Make the next batch from the best unconsumed candidates: choose them; with
 * rerank, prefetch and fetch them from the heap in block order and sort by
 * exact distance; without, sort them by ADC distance.
 */
static void
IvfpqNextBatch(IndexScanDesc scan)
{
	IvfpqScanOpaque so = (IvfpqScanOpaque) scan->opaque;
	IvfpqQuantizer *q = so->q;
	int64		remaining;
	bool		exact = so->rerank > 0 || !q->trained;
	int64		take;
	IvfpqCandidate *first;
	MemoryContext old_context;

	int64		carried = so->batch_count - so->batch_next;
	IvfpqResult *carry = NULL;

	/*
	 * Fewer candidates left than a batch while the cut dropped some: fetch
	 * those first, so the batch is what it would be without the cut.
	 */
	if (so->cut_dropped > 0 &&
		so->pool_count - so->pool_next < (so->rerank > 0 ? so->rerank : IVFPQ_UNRANKED_BATCH))
		IvfpqRescanDropped(scan);
	remaining = so->pool_count - so->pool_next;
	first = so->pool + so->pool_next;

	if (!q->trained)
		take = remaining;
	else if (so->rerank > 0)
		take = Min((int64) so->rerank, remaining);
	else
		take = Min((int64) IVFPQ_UNRANKED_BATCH, remaining);
	IvfpqChooseCandidates(first, take, remaining);
	/* After nth_element the candidate at 'take' is the smallest one left. */
	so->next_candidate_distance = take < remaining
		? IvfpqAdcToOperatorScale(q->shape.metric, first[take].distance)
		: so->cut_dropped > 0
		? IvfpqAdcToOperatorScale(q->shape.metric, so->pool_cut)	/* the dropped are farther */
		: std::numeric_limits<double>::infinity();

	/* Rows of the last batch not returned yet are merged with the new ones. */
	if (carried > 0)
	{
		carry = (IvfpqResult *) MemoryContextAllocHuge(so->scan_context, sizeof(IvfpqResult) * carried);
		memcpy(carry, so->batch + so->batch_next, sizeof(IvfpqResult) * carried);
	}
	MemoryContextReset(so->batch_context);
	old_context = MemoryContextSwitchTo(so->batch_context);
	so->batch = (IvfpqResult *) palloc_extended(sizeof(IvfpqResult) * Max(take + carried, 1),
												MCXT_ALLOC_HUGE);
	so->batch_count = 0;
	so->batch_next = 0;
	MemoryContextSwitchTo(old_context);
	if (carried > 0)
	{
		memcpy(so->batch, carry, sizeof(IvfpqResult) * carried);
		so->batch_count = (int) carried;
		pfree(carry);
	}

	if (!exact)
		IvfpqApproximateBatch(so, first, take);
	else
	{
		if (so->fetch == NULL)
		{
			/* Heap access state lives as long as the scan (ended in endscan). */
			old_context = MemoryContextSwitchTo(GetMemoryChunkContext(so));
			so->slot = table_slot_create(scan->heapRelation, NULL);
			so->fetch = table_index_fetch_begin(scan->heapRelation);
			MemoryContextSwitchTo(old_context);
		}
		std::sort(first, first + take, [](const IvfpqCandidate &a, const IvfpqCandidate &b) {
			return ItemPointerCompare(const_cast<ItemPointer>(&a.tid), const_cast<ItemPointer>(&b.tid)) < 0;
		});
		IvfpqPrefetchHeap(scan->heapRelation, first, take);
		old_context = MemoryContextSwitchTo(so->batch_context);
		IvfpqRerankFromHeap(scan, first, take);
		MemoryContextSwitchTo(old_context);
		IvfpqSortBatch(so);
	}
	so->pool_next += take;
}

/* amgettuple: the next row in (batch-wise) distance order. */
bool
ivfpqgettuple(IndexScanDesc scan, ScanDirection dir)
{
	IvfpqScanOpaque so = (IvfpqScanOpaque) scan->opaque;

	if (!so->started)
		IvfpqStartScan(scan);

	for (;;)
	{
		if (so->batch_next < so->batch_count)
		{
			IvfpqResult *r = &so->batch[so->batch_next];

			/*
			 * Re-ranked rows go out in exact order as far as the pool can
			 * tell: a row farther than the closest unconsumed candidate
			 * waits for the next batch (a filter above the scan that drops
			 * most rows would otherwise get rows out of order).
			 */
			if (so->rerank > 0 && so->q->trained &&
				(so->pool_next < so->pool_count || so->cut_dropped > 0) &&
				!(r->distance <= so->next_candidate_distance))
			{
				if (so->pool_next == so->pool_count)
					IvfpqRescanDropped(scan);	/* the closest left were cut */
				if (so->pool_next < so->pool_count)
					IvfpqNextBatch(scan);
				else
					so->next_candidate_distance = std::numeric_limits<double>::infinity();
				continue;
			}

			/*
			 * Once the scan has returned more rows than one batch (a filter
			 * above it is dropping rows), a row farther than the next
			 * list's centroid waits until that list is probed: the list
			 * likely holds closer rows.
			 */
			if (so->rerank > 0 && so->q->trained && so->returned >= so->rerank &&
				so->next_list < so->lists_limit && so->q->shape.metric != IVFPQ_METRIC_IP &&
				!(r->distance <= IvfpqNextListDistance(so)))
			{
				IvfpqProbeMore(scan, so->probes);
				continue;
			}
			so->batch_next++;
			so->returned++;

			scan->xs_heaptid = r->tid;
			scan->xs_recheck = false;
			scan->xs_recheckorderby = false;
			if (scan->numberOfOrderBys > 0)
			{
				scan->xs_orderbyvals[0] = Float8GetDatum(r->distance);
				scan->xs_orderbynulls[0] = false;
			}
			return true;
		}
		if (so->pool_next < so->pool_count)
		{
			IvfpqNextBatch(scan);
			continue;
		}
		if (so->cut_dropped > 0)
		{
			IvfpqRescanDropped(scan);
			continue;
		}
		if (so->next_list < so->lists_limit)
		{
			IvfpqProbeMore(scan, so->probes);
			continue;
		}
		return false;
	}
}

/* amendscan: release the heap fetch state, the quantizer pin and memory. */
void
ivfpqendscan(IndexScanDesc scan)
{
	IvfpqScanOpaque so = (IvfpqScanOpaque) scan->opaque;

	if (so->q != NULL)
		IvfpqUnpinQuantizer(so->q);
	if (so->fetch != NULL)
		table_index_fetch_end(so->fetch);
	if (so->slot != NULL)
		ExecDropSingleTupleTableSlot(so->slot);
	MemoryContextDelete(so->scan_context);
	pfree(so);
	scan->opaque = NULL;
}
