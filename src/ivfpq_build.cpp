/*
 * ivfpq_build.cpp
 *		CREATE INDEX for ivfpq: sample the heap by blocks, train coarse
 *		centroids (FAISS k-means) and residual PQ codebooks (the core's own
 *		k-means), or copy both from another index (codebooks_from); assign and
 *		encode every row (in parallel when workers are granted), sort the codes
 *		by list, write the list pages, write the metapage last, and WAL-log
 *		the new relation in one pass (log_newpage_range).
 *
 * An empty table (or one whose sample has no rows) gets an "untrained" index:
 * a single list whose entries carry no code; scans then rank the rows by exact
 * distances from the heap.  It keeps working as rows arrive; REINDEX trains it.
 * The init fork of an unlogged table's index is such an index too.
 */
#include <cmath>

#include "ivfpq_am.h"

extern "C"
{
#include "access/parallel.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xloginsert.h"
#include "access/relation.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_type.h"
#include "commands/progress.h"
#include "common/pg_prng.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "optimizer/optimizer.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/datum.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "storage/smgr.h"
#include "utils/sampling.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplesort.h"
}

/* Rows assigned and encoded per call into the core. */
#define IVFPQ_ENCODE_BATCH 1024

/*
 * Training sample: 64 rows per list (FAISS warns below 39) and at least 64
 * per PQ codeword (256 codewords); when lists is derived from the table
 * size, a fixed default.  Under a tight maintenance_work_mem the sample may
 * shrink, but not below 4 rows per list or IVFPQ_SAMPLE_ROWS_MIN rows.
 */
#define IVFPQ_SAMPLE_ROWS_PER_LIST		64
#define IVFPQ_SAMPLE_ROWS_FLOOR			16384
#define IVFPQ_SAMPLE_ROWS_DEFAULT		65536
#define IVFPQ_SAMPLE_ROWS_PER_LIST_MIN	4
#define IVFPQ_SAMPLE_ROWS_MIN			1024

/*
 * Training effort: at most this many k-means iterations for the coarse
 * centroids and for each sub-quantizer, each k-means stopping early once an
 * iteration lowers its objective by less than IVFPQ_TRAIN_TOLERANCE of it,
 * and at most this many residual rows to train the PQ on (recall matched
 * FAISS's own IndexIVFPQ training at these values; more rows cost time
 * without recall).  On Fashion-MNIST (lists 256, m 56, 16384 rows) the
 * tolerance stops the coarse k-means after 12 or 13 iterations and the
 * sub-quantizers after 18 on average; recall@10 at a given probes and
 * rerank stays within the spread between training samples.  Fixed seeds
 * make builds reproducible.
 */
#define IVFPQ_COARSE_ITERATIONS		20
#define IVFPQ_PQ_ITERATIONS			20
#define IVFPQ_TRAIN_TOLERANCE		1e-3
#define IVFPQ_PQ_TRAIN_ROWS			65536
#define IVFPQ_TRAIN_SEED			1234
#define IVFPQ_SAMPLE_SEED			0x5eed		/* reservoir sampling of rows */
#define IVFPQ_BLOCK_SAMPLER_SEED	0x1f2e3d4c	/* choice of sampled blocks */

/* List entries written between interrupt checks. */
#define IVFPQ_WRITE_CHECK_INTERVAL	10000

/* Where the fixed pages of a new index went (step 3 of a build). */
typedef struct IvfpqFixedPages
{
	BlockNumber centroid_start; /* Invalid for an untrained index */
	BlockNumber codebook_start; /* Invalid for an untrained index */
	BlockNumber directory_start;
} IvfpqFixedPages;

typedef struct IvfpqBuildState
{
	Relation	heap;
	Relation	index;
	IndexInfo  *index_info;
	IvfpqShapeData shape;		/* shape.dim is 0 until known (untyped column) */
	bool		trained;
	bool		inherited;		/* centroids/codebooks copied from another index */
	int			list_page_capacity;
	int			filter_columns;	/* index columns after the vector */

	/* sampling (reservoir over the rows of the sampled blocks) */
	float	   *sample;
	int64		sample_target;
	int64		sample_count;
	int64		rows_seen;
	int64		rows_stored_compressed;	/* sampled rows whose vector is compressed/TOASTed */
	pg_prng_state prng;

	/* trained quantizer */
	float	   *centroids;
	float	   *codebooks;

	/* encoding */
	float	   *batch;
	ItemPointerData *batch_tids;
	int32	   *batch_lists;
	uint8	   *batch_codes;
	uint8	   *batch_filters;	/* per row: the filter columns' payload bytes */
	int			batch_count;
	int			participants;	/* processes encoding at once (0: serial build) */
	Tuplesortstate *sort;
	TupleDesc	sort_desc;
	TupleTableSlot *sort_slot;
	double		indexed_rows;
	int64		skipped_zero_rows;

	MemoryContext tmp_context;
	VectorDecodeBuffer decode;	/* compressed heap vectors (DatumGetVectorBuffered) */

	/* parallel encoding (NULL when serial) */
	struct IvfpqLeader *leader;
} IvfpqBuildState;

/*
 * Shared state of a parallel build, in the DSM segment.  A parallel table
 * scan descriptor follows it; centroids and codebooks have their own keys.
 */
typedef struct IvfpqShared
{
	Oid			heap_oid;
	Oid			index_oid;
	bool		is_concurrent;
	int			participants;	/* tuplesort participants, leader included */
	IvfpqShapeData shape;
	bool		trained;
	int			sort_mem_per_participant;	/* kB */

	ConditionVariable workers_done_cv;
	slock_t		mutex;
	int			participants_done;
	double		indexed_rows;
	int64		skipped_zero_rows;
} IvfpqShared;

#define ParallelTableScanFromIvfpqShared(shared) \
	((ParallelTableScanDesc) ((char *) (shared) + BUFFERALIGN(sizeof(IvfpqShared))))

#define IVFPQ_KEY_SHARED		UINT64CONST(0xA0F1F0C000000001)
#define IVFPQ_KEY_TUPLESORT		UINT64CONST(0xA0F1F0C000000002)
#define IVFPQ_KEY_CENTROIDS		UINT64CONST(0xA0F1F0C000000003)
#define IVFPQ_KEY_CODEBOOKS		UINT64CONST(0xA0F1F0C000000004)
#define IVFPQ_KEY_QUERY_TEXT	UINT64CONST(0xA0F1F0C000000005)

/* What the leader keeps of a parallel build. */
typedef struct IvfpqLeader
{
	ParallelContext *pcxt;
	int			participants;
	IvfpqShared *shared;
	Sharedsort *sharedsort;
	Snapshot	snapshot;
} IvfpqLeader;

extern "C" PGDLLEXPORT void IvfpqParallelBuildMain(dsm_segment *seg, shm_toc *toc);

/* Dimensions declared by the column's typmod, or 0. */
static int
IvfpqDeclaredDim(Relation index)
{
	int32		typmod = TupleDescAttr(RelationGetDescr(index), 0)->atttypmod;

	return typmod > 0 ? typmod : 0;
}

/* Default m: the divisor of dim closest to dim / 8 (8-dim sub-vectors). */
static int
IvfpqDefaultM(int dim)
{
	int			best = 1;
	double		best_score = 1e30;

	for (int m = 1; m <= dim && m <= IVFPQ_MAX_M; m++)
	{
		double		score;

		if (dim % m != 0)
			continue;
		score = fabs(log((double) (dim / m) / 8.0));
		/* On a tie prefer the longer sub-vector (smaller code). */
		if (score < best_score - 1e-9)
		{
			best = m;
			best_score = score;
		}
	}
	return best;
}

/*
 * Default m for 4-bit codes: the same code bytes as the 8-bit default (twice
 * its sub-quantizers) when that divides the dimensions, else the even divisor
 * whose sub-vectors come closest to 4 dimensions; 0 if dim is odd.
 */
static int
IvfpqDefaultM4(int dim)
{
	int			doubled = 2 * IvfpqDefaultM(dim);
	int			best = 0;
	double		best_score = 1e30;

	if (doubled <= dim && doubled <= IVFPQ_MAX_M && dim % doubled == 0)
		return doubled;
	for (int m = 2; m <= dim && m <= IVFPQ_MAX_M; m += 2)
	{
		double		score;

		if (dim % m != 0)
			continue;
		score = fabs(log((double) (dim / m) / 4.0));
		if (score < best_score - 1e-9)
		{
			best = m;
			best_score = score;
		}
	}
	return best;
}

/* Default lists: rows / 1000 up to 1M rows, sqrt(rows) beyond. */
static int
IvfpqDefaultLists(double rows)
{
	double		lists = rows <= 1000000 ? rows / 1000 : sqrt(rows);

	return (int) Max(1, Min(lists, (double) IVFPQ_MAX_LISTS));
}

/* Copy a heap vector into dst (normalising for cosine); false to skip the row. */
static bool
IvfpqTakeVector(IvfpqBuildState *state, Datum value, float *dst)
{
	Vector	   *v = DatumGetVectorBuffered(value, &state->decode);
	bool		is_zero = false;

	if (state->shape.dim == 0)
		state->shape.dim = v->dim;
	if (v->dim != state->shape.dim)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("expected %d dimensions, not %d", state->shape.dim, v->dim),
				 errdetail("All vectors in an ivfpq index must have the same dimensions.")));
	memcpy(dst, v->x, sizeof(float) * state->shape.dim);
	if ((Pointer) v != DatumGetPointer(value) && (char *) v != state->decode.data)
		pfree(v);
	if (state->shape.metric == IVFPQ_METRIC_COSINE)
	{
		IvfpqNormalize(dst, state->shape.dim, &is_zero);
		if (is_zero)
			return false;		/* no direction: cosine distance undefined */
	}
	return true;
}

/* Reservoir-sample one row of a sampled block. */
static void
IvfpqSampleCallback(Relation index, ItemPointer tid, Datum *values, bool *isnull,
					bool tupleIsAlive, void *arg)
{
	IvfpqBuildState *state = (IvfpqBuildState *) arg;
	int64		slot;
	MemoryContext old_context;

	if (isnull[0])
		return;
	if (VARATT_IS_COMPRESSED(DatumGetPointer(values[0])) || VARATT_IS_EXTERNAL(DatumGetPointer(values[0])))
		state->rows_stored_compressed++;
	if (state->sample == NULL)
	{
		if (state->shape.dim == 0)
		{
			old_context = MemoryContextSwitchTo(state->tmp_context);
			state->shape.dim = DatumGetVector(values[0])->dim;
			MemoryContextSwitchTo(old_context);
			MemoryContextReset(state->tmp_context);
		}
		state->sample = (float *) palloc_extended(sizeof(float) * state->sample_target * state->shape.dim,
												  MCXT_ALLOC_HUGE);
	}

	state->rows_seen++;
	if (state->sample_count < state->sample_target)
		slot = state->sample_count;
	else
	{
		slot = (int64) pg_prng_uint64_range(&state->prng, 0, (uint64) state->rows_seen - 1);
		if (slot >= state->sample_target)
			return;
	}
	old_context = MemoryContextSwitchTo(state->tmp_context);
	{
		float	   *row = (float *) palloc(sizeof(float) * state->shape.dim);

		if (IvfpqTakeVector(state, values[0], row))
		{
			memcpy(state->sample + slot * state->shape.dim, row, sizeof(float) * state->shape.dim);
			if (slot == state->sample_count)
				state->sample_count++;
		}
	}
	MemoryContextSwitchTo(old_context);
	MemoryContextReset(state->tmp_context);
}

/*
 * Sample up to sample_target rows from randomly chosen blocks.  Returns the
 * estimated number of rows in the table.
 */
static double
IvfpqSampleRows(IvfpqBuildState *state)
{
	BlockNumber nblocks = RelationGetNumberOfBlocks(state->heap);
	BlockSamplerData sampler;
	BlockNumber sampled_blocks = 0;

	pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, IVFPQ_PHASE_SAMPLE);
	if (nblocks == 0)
		return 0;

	/* As ANALYZE: about one block per wanted row, every block if few. */
	BlockSampler_Init(&sampler, nblocks, (int) Min(state->sample_target, (int64) INT_MAX), IVFPQ_BLOCK_SAMPLER_SEED);
	while (BlockSampler_HasMore(&sampler))
	{
		BlockNumber block = BlockSampler_Next(&sampler);

		CHECK_FOR_INTERRUPTS();
		table_index_build_range_scan(state->heap, state->index, state->index_info,
									 false, true, false, block, 1,
									 IvfpqSampleCallback, state, NULL);
		sampled_blocks++;
	}
	return sampled_blocks > 0 ? (double) state->rows_seen * nblocks / sampled_blocks : 0;
}

/* Training parameters for this build. */
static ivfpq::core::TrainConfig
IvfpqMakeTrainConfig(const IvfpqBuildState *state)
{
	ivfpq::core::TrainConfig config;

	static_cast<ivfpq::core::QuantizerShape &>(config) = IvfpqCoreShape(&state->shape);
	config.coarse_iterations = IVFPQ_COARSE_ITERATIONS;
	config.pq_iterations = IVFPQ_PQ_ITERATIONS;
	config.max_pq_rows = IVFPQ_PQ_TRAIN_ROWS;
	config.tolerance = IVFPQ_TRAIN_TOLERANCE;
	config.seed = IVFPQ_TRAIN_SEED;
	config.threads = Max(1, max_parallel_maintenance_workers + 1);
	return config;
}

/* Train centroids and codebooks on the sample (the core, through the guard). */
static void
IvfpqTrain(IvfpqBuildState *state)
{
	ivfpq::core::TrainConfig config = IvfpqMakeTrainConfig(state);
	Size		centroid_count = IvfpqCentroidFloats(&state->shape);
	Size		codebook_count = IvfpqCodebookFloats(&state->shape);
	float	   *sample = state->sample;
	size_t		sample_rows = (size_t) state->sample_count;

	pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, IVFPQ_PHASE_TRAIN);

	state->centroids = (float *) palloc_extended(sizeof(float) * centroid_count, MCXT_ALLOC_HUGE);
	state->codebooks = (float *) palloc_extended(sizeof(float) * codebook_count, MCXT_ALLOC_HUGE);
	{
		float	   *centroids = state->centroids;
		float	   *codebooks = state->codebooks;

		IvfpqCallCore("ivfpq training", [&]() {
			ivfpq::core::Train(config, sample, sample_rows, centroids, codebooks);
		});
	}
}

/* Assign and encode the buffered rows, then feed them to the sort. */
static void
IvfpqFlushBatch(IvfpqBuildState *state)
{
	int			n = state->batch_count;
	int			code_bytes = (int) ivfpq::core::CodeBytes((size_t) state->shape.m,
											  (size_t) state->shape.nbits);

	if (n == 0)
		return;
	if (state->trained)
	{
		ivfpq::core::QuantizerView view =
			IvfpqMakeView(&state->shape, state->centroids, state->codebooks);
		float	   *batch = state->batch;
		int32	   *lists = state->batch_lists;
		uint8	   *codes = state->batch_codes;
		int			participants = state->participants;

		IvfpqCallCore("ivfpq encoding", [&]() {
			ivfpq::core::AssignAndEncode(view, batch, (size_t) n, participants, lists, codes);
		});
	}
	else
	{
		memset(state->batch_lists, 0, sizeof(int32) * n);
		memset(state->batch_codes, 0, (Size) n * code_bytes);
	}

	for (int i = 0; i < n; i++)
	{
		TupleTableSlot *slot = state->sort_slot;
		Size		filter_bytes = (Size) state->filter_columns * IVFPQ_FILTER_VALUE_BYTES;
		Size		payload_bytes = sizeof(ItemPointerData) + code_bytes + filter_bytes;
		bytea	   *payload = (bytea *) palloc(VARHDRSZ + payload_bytes);

		SET_VARSIZE(payload, VARHDRSZ + payload_bytes);
		memcpy(VARDATA(payload), &state->batch_tids[i], sizeof(ItemPointerData));
		memcpy(VARDATA(payload) + sizeof(ItemPointerData),
			   state->batch_codes + (Size) i * code_bytes, code_bytes);
		if (filter_bytes > 0)
			memcpy(VARDATA(payload) + sizeof(ItemPointerData) + code_bytes,
				   state->batch_filters + (Size) i * filter_bytes, filter_bytes);

		ExecClearTuple(slot);
		slot->tts_values[0] = Int32GetDatum(state->batch_lists[i]);
		slot->tts_isnull[0] = false;
		slot->tts_values[1] = PointerGetDatum(payload);
		slot->tts_isnull[1] = false;
		ExecStoreVirtualTuple(slot);
		tuplesort_puttupleslot(state->sort, slot);
		pfree(payload);
	}
	state->indexed_rows += n;
	state->batch_count = 0;
	pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_DONE, (int64) state->indexed_rows);
}

/* Allocate the encoding batch buffers (dim must be known, or 0 for lazily). */
static void
IvfpqAllocateBatch(IvfpqBuildState *state)
{
	if (state->shape.dim > 0)
		state->batch = (float *) palloc_extended(sizeof(float) * IVFPQ_ENCODE_BATCH * state->shape.dim,
												 MCXT_ALLOC_HUGE);
	state->batch_tids = (ItemPointerData *) palloc(sizeof(ItemPointerData) * IVFPQ_ENCODE_BATCH);
	state->batch_lists = (int32 *) palloc(sizeof(int32) * IVFPQ_ENCODE_BATCH);
	state->batch_codes = (uint8 *) palloc((Size) IVFPQ_ENCODE_BATCH * Max(state->shape.m, 1));
	state->filter_columns = IvfpqIndexFilterColumns(state->index);
	if (state->filter_columns > 0)
		state->batch_filters = (uint8 *) palloc((Size) IVFPQ_ENCODE_BATCH * state->filter_columns *
												IVFPQ_FILTER_VALUE_BYTES);
}

/* Heap scan callback of the encoding pass: buffer one row. */
static void
IvfpqBuildCallback(Relation index, ItemPointer tid, Datum *values, bool *isnull,
				   bool tupleIsAlive, void *arg)
{
	IvfpqBuildState *state = (IvfpqBuildState *) arg;
	MemoryContext old_context;
	bool		keep;

	if (isnull[0])
		return;
	old_context = MemoryContextSwitchTo(state->tmp_context);
	if (state->shape.dim == 0)
		state->shape.dim = DatumGetVector(values[0])->dim;
	MemoryContextSwitchTo(old_context);
	if (state->batch == NULL)
		state->batch = (float *) palloc_extended(sizeof(float) * IVFPQ_ENCODE_BATCH * state->shape.dim,
												 MCXT_ALLOC_HUGE);
	old_context = MemoryContextSwitchTo(state->tmp_context);
	keep = IvfpqTakeVector(state, values[0], state->batch + (Size) state->batch_count * state->shape.dim);
	MemoryContextSwitchTo(old_context);
	MemoryContextReset(state->tmp_context);
	if (!keep)
	{
		state->skipped_zero_rows++;
		return;
	}
	if (state->filter_columns > 0)
		IvfpqEncodeFilterValues(index, values, isnull,
								state->batch_filters +
								(Size) state->batch_count * state->filter_columns * IVFPQ_FILTER_VALUE_BYTES);
	state->batch_tids[state->batch_count++] = *tid;
	if (state->batch_count == IVFPQ_ENCODE_BATCH)
		IvfpqFlushBatch(state);
}

/* Allocate the directory pages, every list empty. */
static BlockNumber
IvfpqAllocateDirectory(Relation index, ForkNumber fork, int lists)
{
	int			pages = (lists + IVFPQ_DIR_ENTRIES_PER_PAGE - 1) / IVFPQ_DIR_ENTRIES_PER_PAGE;
	BlockNumber first = InvalidBlockNumber;

	for (int p = 0; p < pages; p++)
	{
		Buffer		buffer = IvfpqNewBuffer(index, fork);
		Page		page = BufferGetPage(buffer);
		IvfpqDirEntry entries;
		int			count = Min((int) IVFPQ_DIR_ENTRIES_PER_PAGE, lists - p * (int) IVFPQ_DIR_ENTRIES_PER_PAGE);

		if (first == InvalidBlockNumber)
			first = BufferGetBlockNumber(buffer);
		IvfpqInitPage(page, IVFPQ_PAGE_DIRECTORY);
		entries = (IvfpqDirEntry) PageGetContents(page);
		for (int i = 0; i < count; i++)
		{
			entries[i].first_block = InvalidBlockNumber;
			entries[i].tail_block = InvalidBlockNumber;
		}
		((PageHeader) page)->pd_lower = MAXALIGN(SizeOfPageHeaderData) + sizeof(IvfpqDirEntryData) * count;
		MarkBufferDirty(buffer);
		UnlockReleaseBuffer(buffer);
	}
	return first;
}

/* Store the final first/tail blocks of every list in the directory pages. */
static void
IvfpqWriteDirectory(Relation index, ForkNumber fork, BlockNumber directory_start,
					const IvfpqDirEntryData *entries, int lists)
{
	for (int list = 0; list < lists; list += IVFPQ_DIR_ENTRIES_PER_PAGE)
	{
		Buffer		buffer = ReadBufferExtended(index, fork,
												directory_start + list / IVFPQ_DIR_ENTRIES_PER_PAGE,
												RBM_NORMAL, NULL);
		int			count = Min((int) IVFPQ_DIR_ENTRIES_PER_PAGE, lists - list);

		LockBuffer(buffer, BUFFER_LOCK_EXCLUSIVE);
		memcpy(PageGetContents(BufferGetPage(buffer)), entries + list, sizeof(IvfpqDirEntryData) * count);
		MarkBufferDirty(buffer);
		UnlockReleaseBuffer(buffer);
	}
}

/* Read the sorted (list, tid, code) stream and write list page chains. */
static void
IvfpqWriteLists(IvfpqBuildState *state, BlockNumber directory_start)
{
	Relation	index = state->index;
	IvfpqListLayout layout;
	IvfpqDirEntryData *entries;
	TupleTableSlot *slot = MakeSingleTupleTableSlot(state->sort_desc, &TTSOpsMinimalTuple);
	Buffer		buffer = InvalidBuffer;
	Page		page = NULL;
	int			current_list = -1;
	double		written = 0;

	layout.capacity = state->list_page_capacity;
	layout.m = state->shape.m;
	layout.nbits = state->shape.nbits;
	layout.filter_columns = IvfpqIndexFilterColumns(index);
	pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, IVFPQ_PHASE_WRITE);
	entries = (IvfpqDirEntryData *) palloc(sizeof(IvfpqDirEntryData) * state->shape.lists);
	for (int i = 0; i < state->shape.lists; i++)
	{
		entries[i].first_block = InvalidBlockNumber;
		entries[i].tail_block = InvalidBlockNumber;
	}

	while (tuplesort_gettupleslot(state->sort, true, false, slot, NULL))
	{
		bool		isnull;
		int			list = DatumGetInt32(slot_getattr(slot, 1, &isnull));
		bytea	   *payload = DatumGetByteaPP(slot_getattr(slot, 2, &isnull));
		char	   *data = VARDATA_ANY(payload);
		IvfpqPageOpaque opaque;

		if (list != current_list || IvfpqPageGetOpaque(page)->entry_count >= layout.capacity)
		{
			Buffer		next = IvfpqNewBuffer(index, MAIN_FORKNUM);
			BlockNumber next_block = BufferGetBlockNumber(next);

			if (BufferIsValid(buffer))
			{
				if (list == current_list)
					IvfpqPageGetOpaque(page)->next_block = next_block;
				MarkBufferDirty(buffer);
				UnlockReleaseBuffer(buffer);
			}
			buffer = next;
			page = BufferGetPage(buffer);
			IvfpqInitListPage(page, &layout, list);
			if (list != current_list)
				entries[list].first_block = next_block;
			entries[list].tail_block = next_block;
			current_list = list;
		}
		opaque = IvfpqPageGetOpaque(page);
		{
			ItemPointerData tid;

			memcpy(&tid, data, sizeof(ItemPointerData));
			IvfpqStoreEntry(page, &layout, opaque->entry_count, &tid,
							(const uint8 *) data + sizeof(ItemPointerData));
		}
		opaque->entry_count++;
		written++;
		if ((int64) written % IVFPQ_WRITE_CHECK_INTERVAL == 0)
			CHECK_FOR_INTERRUPTS();
	}
	if (BufferIsValid(buffer))
	{
		MarkBufferDirty(buffer);
		UnlockReleaseBuffer(buffer);
	}
	ExecDropSingleTupleTableSlot(slot);
	IvfpqWriteDirectory(index, MAIN_FORKNUM, directory_start, entries, state->shape.lists);
	pfree(entries);
}

/* A fresh id for a set of centroids/codebooks, so caches notice a change. */
static uint64
IvfpqNewBuildId(void)
{
	return (uint64) GetCurrentTimestamp() ^ ((uint64) MyProcPid << 40) ^ pg_prng_uint64(&pg_global_prng_state);
}

/* The shape of an untrained index: one list, codes of one (unused) byte. */
static IvfpqShapeData
IvfpqUntrainedShape(int dim, int metric)
{
	IvfpqShapeData shape;

	shape.dim = dim;
	shape.lists = 1;
	shape.m = 1;
	shape.nbits = IVFPQ_DEFAULT_NBITS;
	shape.metric = metric;
	return shape;
}

/*
 * Step 3 of every build: allocate block 0 for the metapage (written last by
 * IvfpqWriteMeta), then the centroid and codebook pages (trained indexes
 * only: pass NULL arrays for an untrained one) and an empty list directory.
 * Pages are not WAL-logged here: the caller logs the whole fork at the end.
 */
static void
IvfpqWriteFixedPages(Relation index, ForkNumber fork, const IvfpqShapeData *shape,
					 const float *centroids, const float *codebooks, IvfpqFixedPages *layout)
{
	Buffer		meta_buffer = IvfpqNewBuffer(index, fork);

	Assert(BufferGetBlockNumber(meta_buffer) == IVFPQ_METAPAGE_BLKNO);
	UnlockReleaseBuffer(meta_buffer);
	layout->centroid_start = InvalidBlockNumber;
	layout->codebook_start = InvalidBlockNumber;
	if (centroids != NULL)
	{
		IvfpqWriteFloatPages(index, fork, centroids, IvfpqCentroidFloats(shape),
							 &layout->centroid_start);
		IvfpqWriteFloatPages(index, fork, codebooks, IvfpqCodebookFloats(shape),
							 &layout->codebook_start);
	}
	layout->directory_start = IvfpqAllocateDirectory(index, fork, shape->lists);
}

/*
 * Fill and write the metapage, the one place that does: the last step of
 * every build (ivfpqbuild, ivfpqbuildempty).  Not WAL-logged here.
 */
static void
IvfpqWriteMeta(Relation index, ForkNumber fork, const IvfpqShapeData *shape,
			   const IvfpqFixedPages *layout, bool trained, bool inherited,
			   uint64 training_rows, uint64 build_rows)
{
	Buffer		buffer = ReadBufferExtended(index, fork, IVFPQ_METAPAGE_BLKNO, RBM_NORMAL, NULL);
	Page		page;
	IvfpqMetaPage meta;

	LockBuffer(buffer, BUFFER_LOCK_EXCLUSIVE);
	page = BufferGetPage(buffer);
	IvfpqInitPage(page, IVFPQ_PAGE_META);
	meta = IvfpqPageGetMeta(page);
	MemSet(meta, 0, sizeof(IvfpqMetaPageData));
	meta->magic = IVFPQ_MAGIC;
	meta->version = IvfpqFormatVersion(shape);
	meta->shape = *shape;
	meta->trained = trained ? 1 : 0;
	meta->inherited = inherited ? 1 : 0;
	meta->centroid_start = layout->centroid_start;
	meta->codebook_start = layout->codebook_start;
	meta->directory_start = layout->directory_start;
	meta->filter_columns = (uint32) IvfpqIndexFilterColumns(index);
	meta->list_page_capacity = (uint32) IvfpqListPageCapacity(shape->m, shape->nbits, (int) meta->filter_columns);
	meta->training_rows = training_rows;
	meta->build_rows = build_rows;
	meta->build_id = IvfpqNewBuildId();
	meta->built_at = GetCurrentTimestamp();
	((PageHeader) page)->pd_lower = MAXALIGN(SizeOfPageHeaderData) + sizeof(IvfpqMetaPageData);
	MarkBufferDirty(buffer);
	UnlockReleaseBuffer(buffer);
}

/* Resolve lists / m / nbits from the options and the data; errors on bad values. */
static void
IvfpqResolveOptions(IvfpqBuildState *state, const IvfpqOptions *options, double estimated_rows)
{
	int			dim = state->shape.dim;

	bool		four_bit = options->nbits == 4;
	int			default_m = four_bit ? IvfpqDefaultM4(dim) : IvfpqDefaultM(dim);

	state->shape.nbits = options->nbits;
	state->shape.lists = options->lists > 0 ? options->lists : IvfpqDefaultLists(estimated_rows);
	if (four_bit && default_m == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("nbits = 4 needs an even number of dimensions, not %d", dim),
				 errdetail("4-bit codes pack two sub-quantizers per byte, so m must be even and divide the dimensions."),
				 errhint("Use nbits = 8.")));
	state->shape.m = options->m > 0 ? options->m : default_m;
	if (state->shape.m > dim)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("m = %d is larger than the %d dimensions", state->shape.m, dim),
				 errhint("Choose m as a divisor of %d, such as %d.", dim, default_m)));
	if (dim % state->shape.m != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("m = %d does not divide the %d dimensions", state->shape.m, dim),
				 errhint("Choose m as a divisor of %d, such as %d.", dim, default_m)));
	if (four_bit && state->shape.m % 2 != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("m = %d must be even with nbits = 4", state->shape.m),
				 errdetail("4-bit codes pack two sub-quantizers per byte."),
				 errhint("Choose an even divisor of %d, such as %d.", dim, default_m)));
}

/* The sort descriptor: (list int4, entry bytea = heap TID + code). */
static TupleDesc
IvfpqSortDesc(void)
{
	TupleDesc	desc = CreateTemplateTupleDesc(2);

	TupleDescInitEntry(desc, (AttrNumber) 1, "list", INT4OID, -1, 0);
	TupleDescInitEntry(desc, (AttrNumber) 2, "entry", BYTEAOID, -1, 0);
	return desc;
}

/* A tuplesort ordered by list; coordinate is NULL for a serial build. */
static Tuplesortstate *
IvfpqBeginSort(TupleDesc desc, int work_mem_kb, SortCoordinate coordinate)
{
	AttrNumber	sort_key = 1;
	Oid			sort_operator = Int4LessOperator;
	Oid			sort_collation = InvalidOid;
	bool		nulls_first = false;

	return tuplesort_begin_heap(desc, 1, &sort_key, &sort_operator, &sort_collation,
								&nulls_first, work_mem_kb, coordinate, TUPLESORT_NONE);
}

/*
 * One participant of a parallel build (a worker, or the leader taking part):
 * scan its share of the heap, encode, sort its codes into its own run.
 */
static void
IvfpqParallelScanAndSort(IvfpqBuildState *state, IvfpqShared *shared, Sharedsort *sharedsort,
						 bool progress)
{
	SortCoordinate coordinate = (SortCoordinate) palloc0(sizeof(SortCoordinateData));
	TableScanDesc scan;

	/*
	 * Encoding threads are shared among the participants.  A worker may read
	 * the planned count before the leader corrects it to the launched one;
	 * there are at least two (the leader takes part).
	 */
	SpinLockAcquire(&shared->mutex);
	state->participants = Max(shared->participants, 2);
	SpinLockRelease(&shared->mutex);
	coordinate->isWorker = true;
	coordinate->nParticipants = -1;
	coordinate->sharedsort = sharedsort;
	state->sort_desc = IvfpqSortDesc();
	state->sort = IvfpqBeginSort(state->sort_desc, shared->sort_mem_per_participant, coordinate);
	state->sort_slot = MakeSingleTupleTableSlot(state->sort_desc, &TTSOpsVirtual);

	scan = table_beginscan_parallel(state->heap, ParallelTableScanFromIvfpqShared(shared));
	table_index_build_scan(state->heap, state->index, state->index_info, true, progress,
						   IvfpqBuildCallback, state, scan);
	IvfpqFlushBatch(state);
	tuplesort_performsort(state->sort);

	SpinLockAcquire(&shared->mutex);
	shared->participants_done++;
	shared->indexed_rows += state->indexed_rows;
	shared->skipped_zero_rows += state->skipped_zero_rows;
	SpinLockRelease(&shared->mutex);
	ConditionVariableSignal(&shared->workers_done_cv);

	tuplesort_end(state->sort);
	state->sort = NULL;
	ExecDropSingleTupleTableSlot(state->sort_slot);
	state->sort_slot = NULL;
}

/* Entry point of a parallel worker (found by name through CreateParallelContext). */
extern "C" void
IvfpqParallelBuildMain(dsm_segment *seg, shm_toc *toc)
{
	IvfpqShared *shared = (IvfpqShared *) shm_toc_lookup(toc, IVFPQ_KEY_SHARED, false);
	Sharedsort *sharedsort = (Sharedsort *) shm_toc_lookup(toc, IVFPQ_KEY_TUPLESORT, false);
	char	   *query_text = (char *) shm_toc_lookup(toc, IVFPQ_KEY_QUERY_TEXT, true);
	LOCKMODE	heap_lock = shared->is_concurrent ? ShareUpdateExclusiveLock : ShareLock;
	LOCKMODE	index_lock = shared->is_concurrent ? RowExclusiveLock : AccessExclusiveLock;
	IvfpqBuildState state;

	debug_query_string = query_text;
	pgstat_report_activity(STATE_RUNNING, debug_query_string);

	MemSet(&state, 0, sizeof(state));
	state.decode.context = CurrentMemoryContext;
	state.heap = table_open(shared->heap_oid, heap_lock);
	state.index = index_open(shared->index_oid, index_lock);
	state.index_info = BuildIndexInfo(state.index);
	state.index_info->ii_Concurrent = shared->is_concurrent;
	state.shape = shared->shape;
	state.trained = shared->trained;
	if (state.trained)
	{
		state.centroids = (float *) shm_toc_lookup(toc, IVFPQ_KEY_CENTROIDS, false);
		state.codebooks = (float *) shm_toc_lookup(toc, IVFPQ_KEY_CODEBOOKS, false);
	}
	state.tmp_context = AllocSetContextCreate(CurrentMemoryContext, "ivfpq build temporary",
											  ALLOCSET_DEFAULT_SIZES);
	IvfpqAllocateBatch(&state);
	tuplesort_attach_shared(sharedsort, seg);

	IvfpqParallelScanAndSort(&state, shared, sharedsort, false);

	index_close(state.index, index_lock);
	table_close(state.heap, heap_lock);
}

/*
 * Try to set up a parallel encoding pass with up to 'requested' workers.
 * On success state->leader is set; otherwise the build stays serial.
 */
static void
IvfpqBeginParallel(IvfpqBuildState *state, bool is_concurrent, int requested)
{
	ParallelContext *pcxt;
	Snapshot	snapshot;
	Size		shared_bytes;
	Size		sort_bytes;
	Size		centroid_bytes = sizeof(float) * IvfpqCentroidFloats(&state->shape);
	Size		codebook_bytes = sizeof(float) * IvfpqCodebookFloats(&state->shape);
	Size		query_bytes = debug_query_string ? strlen(debug_query_string) + 1 : 0;
	IvfpqShared *shared;
	Sharedsort *sharedsort;
	IvfpqLeader *leader;
	int			keys = 3;

	EnterParallelMode();
	pcxt = CreateParallelContext("ivfpq", "IvfpqParallelBuildMain", requested);

	snapshot = is_concurrent ? RegisterSnapshot(GetTransactionSnapshot()) : SnapshotAny;
	shared_bytes = add_size(BUFFERALIGN(sizeof(IvfpqShared)), table_parallelscan_estimate(state->heap, snapshot));
	sort_bytes = tuplesort_estimate_shared(requested + 1);
	shm_toc_estimate_chunk(&pcxt->estimator, shared_bytes);
	shm_toc_estimate_chunk(&pcxt->estimator, sort_bytes);
	if (state->trained)
	{
		shm_toc_estimate_chunk(&pcxt->estimator, centroid_bytes);
		shm_toc_estimate_chunk(&pcxt->estimator, codebook_bytes);
		keys += 2;
	}
	if (query_bytes > 0)
		shm_toc_estimate_chunk(&pcxt->estimator, query_bytes);
	shm_toc_estimate_keys(&pcxt->estimator, keys);

	InitializeParallelDSM(pcxt);
	if (pcxt->seg == NULL)
	{
		if (IsMVCCSnapshot(snapshot))
			UnregisterSnapshot(snapshot);
		DestroyParallelContext(pcxt);
		ExitParallelMode();
		return;
	}

	shared = (IvfpqShared *) shm_toc_allocate(pcxt->toc, shared_bytes);
	shared->heap_oid = RelationGetRelid(state->heap);
	shared->index_oid = RelationGetRelid(state->index);
	shared->is_concurrent = is_concurrent;
	shared->participants = requested + 1;
	shared->shape = state->shape;
	shared->trained = state->trained;
	shared->sort_mem_per_participant = Max(maintenance_work_mem / (requested + 1), 64);
	ConditionVariableInit(&shared->workers_done_cv);
	SpinLockInit(&shared->mutex);
	shared->participants_done = 0;
	shared->indexed_rows = 0;
	shared->skipped_zero_rows = 0;
	table_parallelscan_initialize(state->heap, ParallelTableScanFromIvfpqShared(shared), snapshot);

	sharedsort = (Sharedsort *) shm_toc_allocate(pcxt->toc, sort_bytes);
	tuplesort_initialize_shared(sharedsort, requested + 1, pcxt->seg);

	shm_toc_insert(pcxt->toc, IVFPQ_KEY_SHARED, shared);
	shm_toc_insert(pcxt->toc, IVFPQ_KEY_TUPLESORT, sharedsort);
	if (state->trained)
	{
		float	   *centroids = (float *) shm_toc_allocate(pcxt->toc, centroid_bytes);
		float	   *codebooks = (float *) shm_toc_allocate(pcxt->toc, codebook_bytes);

		memcpy(centroids, state->centroids, centroid_bytes);
		memcpy(codebooks, state->codebooks, codebook_bytes);
		shm_toc_insert(pcxt->toc, IVFPQ_KEY_CENTROIDS, centroids);
		shm_toc_insert(pcxt->toc, IVFPQ_KEY_CODEBOOKS, codebooks);
	}
	if (query_bytes > 0)
	{
		char	   *query_text = (char *) shm_toc_allocate(pcxt->toc, query_bytes);

		memcpy(query_text, debug_query_string, query_bytes);
		shm_toc_insert(pcxt->toc, IVFPQ_KEY_QUERY_TEXT, query_text);
	}

	LaunchParallelWorkers(pcxt);

	leader = (IvfpqLeader *) palloc0(sizeof(IvfpqLeader));
	leader->pcxt = pcxt;
	leader->participants = pcxt->nworkers_launched + 1;	/* the leader takes part */
	leader->shared = shared;
	leader->sharedsort = sharedsort;
	leader->snapshot = snapshot;

	/* Workers that did not start must not be waited for. */
	SpinLockAcquire(&shared->mutex);
	shared->participants = leader->participants;
	SpinLockRelease(&shared->mutex);
	WaitForParallelWorkersToAttach(pcxt);
	state->leader = leader;
	ereport(DEBUG1,
			(errmsg_internal("ivfpq build of \"%s\": %d of %d parallel workers launched",
							 RelationGetRelationName(state->index), pcxt->nworkers_launched, requested)));
}

/*
 * Parallel encoding pass: the leader scans its share too, waits for every
 * participant, then opens the merged sort over all their runs.
 */
static void
IvfpqParallelEncode(IvfpqBuildState *state)
{
	IvfpqLeader *leader = state->leader;
	IvfpqShared *shared = leader->shared;
	SortCoordinate coordinate;

	IvfpqParallelScanAndSort(state, shared, leader->sharedsort, true);

	for (;;)
	{
		bool		done;

		SpinLockAcquire(&shared->mutex);
		done = shared->participants_done >= leader->participants;
		SpinLockRelease(&shared->mutex);
		if (done)
			break;
		ConditionVariableSleep(&shared->workers_done_cv, WAIT_EVENT_PARALLEL_CREATE_INDEX_SCAN);
	}
	ConditionVariableCancelSleep();

	state->indexed_rows = shared->indexed_rows;
	state->skipped_zero_rows = shared->skipped_zero_rows;

	coordinate = (SortCoordinate) palloc0(sizeof(SortCoordinateData));
	coordinate->isWorker = false;
	coordinate->nParticipants = leader->participants;
	coordinate->sharedsort = leader->sharedsort;
	state->sort_desc = IvfpqSortDesc();
	state->sort = IvfpqBeginSort(state->sort_desc, maintenance_work_mem, coordinate);
	state->sort_slot = MakeSingleTupleTableSlot(state->sort_desc, &TTSOpsVirtual);
}

/* Tear down the parallel context after the lists are written. */
static void
IvfpqEndParallel(IvfpqLeader *leader)
{
	WaitForParallelWorkersToFinish(leader->pcxt);
	if (IsMVCCSnapshot(leader->snapshot))
		UnregisterSnapshot(leader->snapshot);
	DestroyParallelContext(leader->pcxt);
	ExitParallelMode();
}

/*
 * The index must be on a plain vector column, then optionally scalar filter
 * columns (ivfpq_filter.cpp), and still empty.
 */
static void
IvfpqCheckBuildable(Relation index, IndexInfo *index_info)
{
	IvfpqCheckFilterColumns(index);
	if (index_info->ii_IndexAttrNumbers[0] == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("ivfpq indexes plain vector columns only, not expressions")));
	if (RelationGetNumberOfBlocks(index) != 0)
		elog(ERROR, "index \"%s\" already contains data", RelationGetRelationName(index));
}

/*
 * How many rows to train on: the option, or IVFPQ_SAMPLE_ROWS_PER_LIST per
 * list with a floor, cut down to what fits maintenance_work_mem next to the
 * training's own needs.  Errors if not even the minimum fits.
 */
static int64
IvfpqSampleTarget(const IvfpqBuildState *state, const IvfpqOptions *options)
{
	Size		budget = (Size) maintenance_work_mem * 1024;
	Size		row_bytes = sizeof(float) * (Size) Max(state->shape.dim, 1);
	int64		wanted_rows;

	if (options && options->sample_rows > 0)
		wanted_rows = options->sample_rows;
	else if (options && options->lists > 0)
		wanted_rows = Max((int64) options->lists * IVFPQ_SAMPLE_ROWS_PER_LIST, IVFPQ_SAMPLE_ROWS_FLOOR);
	else
		wanted_rows = IVFPQ_SAMPLE_ROWS_DEFAULT;
	if (state->shape.dim > 0 && (Size) wanted_rows * row_bytes > budget / 2)
	{
		int64		fit = (int64) (budget / 2 / row_bytes);
		int64		lists = (options && options->lists > 0) ? options->lists : 1;
		int64		minimum = Max(lists * IVFPQ_SAMPLE_ROWS_PER_LIST_MIN, IVFPQ_SAMPLE_ROWS_MIN);

		if (fit < minimum)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("memory required to sample training rows is %zu MB, maintenance_work_mem is %d MB",
							(Size) minimum * row_bytes * 2 / (1024 * 1024) + 1, maintenance_work_mem / 1024),
					 errhint("Increase maintenance_work_mem, or lower lists or sample_rows.")));
		wanted_rows = fit;
	}
	return wanted_rows;
}

/* NOTICEs about what the sample found: compressed vectors, an empty table. */
static void
IvfpqReportSample(const IvfpqBuildState *state)
{
	/* The rerank reads every candidate's vector: say so if that means decompressing. */
	if (state->rows_seen > 0 && state->rows_stored_compressed * 2 > state->rows_seen)
		ereport(NOTICE,
				(errmsg("most vectors of table \"%s\" are stored compressed or out of line",
						RelationGetRelationName(state->heap)),
				 errdetail("Index scans re-rank candidates with their full vectors; each one must then be decompressed or fetched from TOAST, which slows queries."),
				 errhint("For vectors of up to about 2000 dimensions, ALTER TABLE %s SET (toast_tuple_target = 8160) stores rows written afterwards inline and uncompressed; to keep them compressed, SET COMPRESSION lz4 on the vector column, which decompresses much faster than the default pglz.",
						 RelationGetRelationName(state->heap))));
	if (state->sample_count == 0)
		ereport(NOTICE,
				(errmsg("ivfpq index \"%s\" created on an empty table: it is untrained",
						RelationGetRelationName(state->index)),
				 errdetail("Rows added later are indexed, but searched by exact distance until the index is trained."),
				 errhint("Run REINDEX INDEX %s after loading data, or create it WITH (codebooks_from = ...) naming a trained ivfpq index.",
						 RelationGetRelationName(state->index))));
}

/*
 * Train on the sample (memory budget checked first), then free the sample.
 * A sample smaller than the lists or a codebook still trains, with a NOTICE.
 */
static void
IvfpqTrainChecked(IvfpqBuildState *state)
{
	ivfpq::core::TrainConfig config = IvfpqMakeTrainConfig(state);
	Size		budget = (Size) maintenance_work_mem * 1024;
	Size		needed;
	size_t		sample_rows = (size_t) state->sample_count;
	size_t		bytes = 0;

	if (state->sample_count < state->shape.lists || state->sample_count < (1 << state->shape.nbits))
		ereport(NOTICE,
				(errmsg("ivfpq index \"%s\" trained on only %lld rows for %d lists",
						RelationGetRelationName(state->index), (long long) state->sample_count,
						state->shape.lists),
				 errdetail("Search quality will be poor until the index is rebuilt on more data."),
				 errhint("Create the index after loading data, or lower lists.")));
	IvfpqCallCore("ivfpq training", [&]() {
		bytes = ivfpq::core::TrainingMemoryBytes(config, sample_rows);
	});
	needed = bytes + (Size) state->sample_count * sizeof(float) * state->shape.dim;
	if (needed > budget)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("memory required to train the index is %zu MB, maintenance_work_mem is %d MB",
						needed / (1024 * 1024) + 1, maintenance_work_mem / 1024),
				 errhint("Increase maintenance_work_mem, or lower lists or sample_rows.")));
	IvfpqTrain(state);
	pfree(state->sample);
	state->sample = NULL;
}

/* Steps 1 and 2 of a build that trains: sample, resolve the shape, train. */
static void
IvfpqSampleAndTrain(IvfpqBuildState *state, const IvfpqOptions *options)
{
	double		estimated_rows;

	state->sample_target = IvfpqSampleTarget(state, options);
	estimated_rows = IvfpqSampleRows(state);
	pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_TOTAL, (int64) estimated_rows);
	IvfpqReportSample(state);
	if (state->shape.dim > IVFPQ_VECTOR_MAX_DIM)
		elog(ERROR, "vector dimensions %d out of range", state->shape.dim);

	state->trained = state->sample_count > 0;
	if (state->shape.dim > 0)
		IvfpqResolveOptions(state, options, estimated_rows);	/* validates m even when untrained */
	if (!state->trained)
		state->shape = IvfpqUntrainedShape(state->shape.dim, state->shape.metric);
	state->list_page_capacity = IvfpqListPageCapacity(state->shape.m, state->shape.nbits,
													  IvfpqIndexFilterColumns(state->index));
	if (state->trained)
		IvfpqTrainChecked(state);
}

/*
 * Steps 1 and 2 of a build WITH (codebooks_from = 'index'): copy the
 * centroids and codebooks of that trained ivfpq index instead of training.
 * Dimensions, metric and any lists/m given must match it.  The source stays
 * locked (AccessShareLock) until the end of the transaction.
 */
static void
IvfpqInheritQuantizer(IvfpqBuildState *state, const IvfpqOptions *options, const char *source_name)
{
	RangeVar   *source_rv = makeRangeVarFromNameList(stringToQualifiedNameList(source_name));
	Oid			source_oid = RangeVarGetRelid(source_rv, AccessShareLock, true);
	Relation	source;
	IvfpqMetaPageData meta;
	const char *index_name = RelationGetRelationName(state->index);

	if (!OidIsValid(source_oid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("index \"%s\" named by codebooks_from does not exist", source_name)));
	if (source_oid == RelationGetRelid(state->index))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("index \"%s\" cannot take its codebooks from itself", index_name),
				 errhint("ALTER INDEX %s RESET (codebooks_from) to train it on its own rows.", index_name)));
	source = relation_open(source_oid, AccessShareLock);
	if (source->rd_rel->relkind != RELKIND_INDEX || source->rd_indam == NULL ||
		source->rd_indam->ambuild != ivfpqbuild)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" named by codebooks_from is not an ivfpq index", source_name)));
	IvfpqReadMeta(source, &meta);
	if (!meta.trained)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ivfpq index \"%s\" named by codebooks_from is not trained", source_name),
				 errhint("REINDEX it once its table has rows.")));
	if (meta.shape.metric != state->shape.metric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("index \"%s\" uses metric %s, index \"%s\" uses %s",
						source_name, IvfpqMetricName(meta.shape.metric),
						index_name, IvfpqMetricName(state->shape.metric)),
				 errhint("Both indexes must use the same operator class.")));
	if (state->shape.dim > 0 && meta.shape.dim != state->shape.dim)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("index \"%s\" has %d dimensions, column of index \"%s\" has %d",
						source_name, meta.shape.dim, index_name, state->shape.dim)));
	if (options->m > 0 && options->m != meta.shape.m)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("m = %d does not match m = %d of index \"%s\"", options->m, meta.shape.m, source_name),
				 errhint("Omit m with codebooks_from: the codebooks decide it.")));
	if (options->nbits == 4 && meta.shape.nbits != 4)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("nbits = %d does not match nbits = %d of index \"%s\"",
						options->nbits, meta.shape.nbits, source_name),
				 errhint("Omit nbits with codebooks_from: the codebooks decide it.")));
	if (options->lists > 0 && options->lists != meta.shape.lists)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lists = %d does not match lists = %d of index \"%s\"",
						options->lists, meta.shape.lists, source_name),
				 errhint("Omit lists with codebooks_from: the centroids decide it.")));

	state->shape = meta.shape;
	state->trained = true;
	state->inherited = true;
	state->sample_count = (int64) meta.training_rows;
	state->list_page_capacity = IvfpqListPageCapacity(state->shape.m, state->shape.nbits,
													  IvfpqIndexFilterColumns(state->index));
	state->centroids = (float *) palloc_extended(sizeof(float) * IvfpqCentroidFloats(&meta.shape),
												 MCXT_ALLOC_HUGE);
	state->codebooks = (float *) palloc_extended(sizeof(float) * IvfpqCodebookFloats(&meta.shape),
												 MCXT_ALLOC_HUGE);
	IvfpqReadQuantizerArrays(source, &meta, state->centroids, state->codebooks);
	relation_close(source, NoLock);
}

/*
 * Step 4: assign and encode every row into a sort by list, in parallel when
 * Postgres grants workers.
 */
static void
IvfpqEncodeAll(IvfpqBuildState *state)
{
	Relation	heap = state->heap;

	pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, IVFPQ_PHASE_ENCODE);
	IvfpqAllocateBatch(state);
	if (state->shape.dim > 0 && RelationGetNumberOfBlocks(heap) > 0)
	{
		int			workers = plan_create_index_workers(RelationGetRelid(heap),
														RelationGetRelid(state->index));

		if (workers > 0)
			IvfpqBeginParallel(state, state->index_info->ii_Concurrent, workers);
	}
	if (state->leader != NULL)
		IvfpqParallelEncode(state);
	else
	{
		state->sort_desc = IvfpqSortDesc();
		state->sort = IvfpqBeginSort(state->sort_desc, maintenance_work_mem, NULL);
		state->sort_slot = MakeSingleTupleTableSlot(state->sort_desc, &TTSOpsVirtual);
		if (RelationGetNumberOfBlocks(heap) > 0)
		{
			table_index_build_scan(heap, state->index, state->index_info, true, true,
								   IvfpqBuildCallback, state, NULL);
			IvfpqFlushBatch(state);
		}
	}
}

/* Step 5: sort (merging the participants' runs when parallel), write the lists. */
static void
IvfpqSortAndWriteLists(IvfpqBuildState *state, BlockNumber directory_start)
{
	pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, IVFPQ_PHASE_SORT);
	tuplesort_performsort(state->sort);
	IvfpqWriteLists(state, directory_start);
	tuplesort_end(state->sort);
	ExecDropSingleTupleTableSlot(state->sort_slot);
	if (state->leader != NULL)
		IvfpqEndParallel(state->leader);
}

/*
 * ambuild: sample and train (or inherit the quantizer of another index),
 * write the fixed pages, encode every row, write the lists, and write the
 * metapage last; then WAL-log the whole relation at once.
 */
IndexBuildResult *
ivfpqbuild(Relation heap, Relation index, IndexInfo *indexInfo)
{
	IvfpqBuildState state;
	IvfpqOptions *options = (IvfpqOptions *) index->rd_options;
	IvfpqOptions no_options;
	const char *source_name;
	IvfpqFixedPages layout;
	IndexBuildResult *result;

	IvfpqCheckBuildable(index, indexInfo);
	if (options == NULL)
	{
		MemSet(&no_options, 0, sizeof(no_options));
		no_options.nbits = IVFPQ_DEFAULT_NBITS;
		options = &no_options;
	}

	MemSet(&state, 0, sizeof(state));
	state.decode.context = CurrentMemoryContext;
	state.heap = heap;
	state.index = index;
	state.index_info = indexInfo;
	state.shape.metric = IvfpqGetMetric(index);
	state.shape.dim = IvfpqDeclaredDim(index);
	state.tmp_context = AllocSetContextCreate(CurrentMemoryContext, "ivfpq build temporary",
											  ALLOCSET_DEFAULT_SIZES);
	pg_prng_seed(&state.prng, IVFPQ_SAMPLE_SEED);

	/* 1-2. sample and train, or inherit */
	source_name = IvfpqOptionsCodebooksFrom(options);
	if (source_name != NULL)
		IvfpqInheritQuantizer(&state, options, source_name);
	else
		IvfpqSampleAndTrain(&state, options);

	/* 3. fixed pages: metapage (filled last), centroids, codebooks, directory */
	IvfpqWriteFixedPages(index, MAIN_FORKNUM, &state.shape,
						 state.trained ? state.centroids : NULL,
						 state.trained ? state.codebooks : NULL, &layout);

	/* 4-5. encode every row, sort by list, write the lists */
	IvfpqEncodeAll(&state);
	IvfpqSortAndWriteLists(&state, layout.directory_start);

	/* 6. metapage last: the index is complete once it says so */
	IvfpqWriteMeta(index, MAIN_FORKNUM, &state.shape, &layout, state.trained, state.inherited,
				   (uint64) state.sample_count, (uint64) state.indexed_rows);
	if (RelationNeedsWAL(index))
		log_newpage_range(index, MAIN_FORKNUM, 0, RelationGetNumberOfBlocks(index), true);

	if (state.skipped_zero_rows > 0)
		ereport(NOTICE,
				(errmsg("%lld zero vectors were not indexed", (long long) state.skipped_zero_rows),
				 errdetail("Cosine distance is undefined for a vector of norm zero.")));

	MemoryContextDelete(state.tmp_context);
	result = (IndexBuildResult *) palloc(sizeof(IndexBuildResult));
	result->heap_tuples = state.indexed_rows + state.skipped_zero_rows;
	result->index_tuples = state.indexed_rows;
	return result;
}

/* ambuildempty: the init fork of an unlogged table's index (untrained). */
void
ivfpqbuildempty(Relation index)
{
	IvfpqShapeData shape = IvfpqUntrainedShape(IvfpqDeclaredDim(index), IvfpqGetMetric(index));
	IvfpqFixedPages layout;

	IvfpqWriteFixedPages(index, INIT_FORKNUM, &shape, NULL, NULL, &layout);
	IvfpqWriteMeta(index, INIT_FORKNUM, &shape, &layout, false, false, 0, 0);
	log_newpage_range(index, INIT_FORKNUM, 0, smgrnblocks(RelationGetSmgr(index), INIT_FORKNUM), true);
}
