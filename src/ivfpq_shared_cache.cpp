/*
 * ivfpq_shared_cache.cpp
 *		The quantizer cache shared by all backends: one copy of an index's
 *		centroids, codebooks, prepared codebooks and per-list distance terms
 *		in shared memory, however many connections use the index.
 *
 * With ivfpq in shared_preload_libraries, the server reserves
 * ivfpq.shared_cache_mb of shared memory at start: a table of slots and a
 * dynamic shared area (DSA) created in place, never larger than that.  A
 * backend that needs an index's quantizer (ivfpq_cache.cpp) first looks for
 * it here; on a miss it reads it from the index pages as before and then
 * publishes a copy, evicting the least recently used entries no backend is
 * using.  Its own cache entry then keeps only a few pointers into the shared
 * copy.  When the shared area cannot take an entry (larger than the whole
 * area, or everything pinned), the backend keeps its private copy, bounded
 * per backend by ivfpq.cache_mb as without preloading.
 *
 * Lifetime: a backend pins a slot the first time it uses it in a
 * transaction and unpins it at the transaction's end (or at exit), so a slot
 * is freed only when no running transaction uses it.  A slot is keyed by
 * (database, index OID) and current while the relfilenode and build id match
 * the metapage; a stale slot still pinned is retired (no longer found) and
 * freed by its last user.  Each slot carries a generation, so a backend's
 * entry that outlived its slot (evicted between two transactions) notices
 * and reads the index again.
 *
 * Term tables are computed lazily by whichever backend first probes a list;
 * two backends may compute the same list at once, writing identical bytes,
 * and the list's flag is set after a write barrier, read before a read
 * barrier.  One LWLock guards the slot table; it is held only for lookups,
 * pins and the copy of a newly published entry, never across a page read or
 * anything that can raise an error.
 */
#include "ivfpq_am.h"

extern "C"
{
#include "access/xact.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/dsa.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/rel.h"

PGDLLEXPORT Datum ivfpq_shared_cache(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum ivfpq_shared_cache_stats(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(ivfpq_shared_cache);
PG_FUNCTION_INFO_V1(ivfpq_shared_cache_stats);
}

int			ivfpq_shared_cache_mb = 256;
bool		ivfpq_shared_cache_enabled = true;

#define IVFPQ_SHARED_TRANCHE "ivfpq shared cache"

typedef struct IvfpqSharedSlot
{
	uint64		generation;		/* 0 = free */
	Oid			database;
	Oid			index_oid;
	Oid			relfilenode;
	uint64		build_id;
	bool		retired;		/* stale but pinned: freed by its last user */
	int			pins;			/* transactions using it now */
	uint64		last_used;		/* clock at the last pin (LRU) */
	uint64		hits;			/* backends that found it here */
	dsa_pointer chunk;
	Size		bytes;
	IvfpqShapeData shape;
	int			list_page_capacity;
	int			filter_columns;
	BlockNumber directory_start;
	Size		prepared_floats;
	Size		term_table_bytes;	/* 0: no term tables */
	dsa_pointer coarse_bound;	/* core PrepareCoarseBound() data, or Invalid:
								 * added by the first backend that prepares it */
} IvfpqSharedSlot;

typedef struct IvfpqSharedControl
{
	int			area_tranche;
	int			slot_count;
	Size		area_bytes;
	uint64		clock;
	uint64		next_generation;
	uint64		evictions;
	uint64		refusals;		/* publications that did not fit */
	Size		area_offset;	/* of the DSA, from the start of this struct */
	IvfpqSharedSlot slots[FLEXIBLE_ARRAY_MEMBER];
} IvfpqSharedControl;

/* Where a shared entry's arrays lie in its chunk. */
typedef struct IvfpqSharedParts
{
	Size		centroids;
	Size		codebooks;
	Size		prepared;
	Size		mean;
	Size		built;
	Size		tables;
	Size		total;
} IvfpqSharedParts;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool shared_requested = false;
static IvfpqSharedControl *control = NULL;
static LWLock *control_lock = NULL;
static dsa_area *area = NULL;

/* This backend's pins: slot numbers, released at transaction end. */
static int *pinned_slots = NULL;
static int	pinned_count = 0;
static int	pinned_room = 0;
static uint64 pin_epoch = 1;	/* advanced at each release */
static bool exit_callback_registered = false;

/* One slot per 64 kB of the area, at least 64 and at most 65536. */
static int
IvfpqSharedSlotCount(void)
{
	return (int) Min(Max((int64) ivfpq_shared_cache_mb * 16, 64), 65536);
}

static Size
IvfpqSharedAreaBytes(void)
{
	return Max((Size) ivfpq_shared_cache_mb * 1024 * 1024, dsa_minimum_size());
}

static Size
IvfpqSharedControlBytes(void)
{
	return MAXALIGN(add_size(offsetof(IvfpqSharedControl, slots),
							 mul_size(IvfpqSharedSlotCount(), sizeof(IvfpqSharedSlot))));
}

static void
IvfpqSharedRequest(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(add_size(IvfpqSharedControlBytes(), IvfpqSharedAreaBytes()));
	RequestNamedLWLockTranche(IVFPQ_SHARED_TRANCHE, 1);
}

static void
IvfpqSharedStartup(void)
{
	bool		found;
	Size		control_bytes = IvfpqSharedControlBytes();

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	control = (IvfpqSharedControl *) ShmemInitStruct(IVFPQ_SHARED_TRANCHE,
													 add_size(control_bytes, IvfpqSharedAreaBytes()),
													 &found);
	if (!found)
	{
		dsa_area   *created;

		memset(control, 0, control_bytes);
		control->slot_count = IvfpqSharedSlotCount();
		control->area_bytes = IvfpqSharedAreaBytes();
		control->area_offset = control_bytes;
		control->next_generation = 1;
		control->area_tranche = LWLockNewTrancheId();
		created = dsa_create_in_place((char *) control + control_bytes, control->area_bytes,
									  control->area_tranche, NULL);
		dsa_pin(created);
		/* Never more than the reserved memory: no extra DSM segments. */
		dsa_set_size_limit(created, control->area_bytes);
		dsa_detach(created);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* GUCs and, at preload, the shared memory request; from _PG_init. */
void
IvfpqSharedCacheInit(void)
{
	DefineCustomBoolVariable("ivfpq.shared_cache",
							 "Uses the shared quantizer cache when there is one.",
							 "Off: this session reads and keeps its own copies of quantizers, as without preloading.",
							 &ivfpq_shared_cache_enabled, true, PGC_USERSET, 0, NULL, NULL, NULL);

	/*
	 * A PGC_POSTMASTER variable can only be defined while preloading: later,
	 * Postgres ends the backend with a FATAL error.  Loaded by CREATE
	 * EXTENSION or a first query there is no shared cache to size anyway.
	 */
	if (!process_shared_preload_libraries_in_progress)
		return;
	DefineCustomIntVariable("ivfpq.shared_cache_mb",
							"Shared memory for quantizers cached by all backends together.",
							"Takes effect only with ivfpq in shared_preload_libraries; 0 disables the shared cache "
							"(each backend then keeps its own copies, up to ivfpq.cache_mb).",
							&ivfpq_shared_cache_mb, 256, 0, 1024 * 1024,
							PGC_POSTMASTER, GUC_UNIT_MB, NULL, NULL, NULL);
	if (ivfpq_shared_cache_mb <= 0)
		return;
	shared_requested = true;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = IvfpqSharedRequest;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = IvfpqSharedStartup;
}

static void IvfpqSharedDrop(IvfpqSharedSlot *slot);

/* Release this backend's pins (transaction end, or exit). */
void
IvfpqSharedRelease(void)
{
	if (pinned_count == 0)
		return;
	LWLockAcquire(control_lock, LW_EXCLUSIVE);
	for (int i = 0; i < pinned_count; i++)
	{
		IvfpqSharedSlot *slot = &control->slots[pinned_slots[i]];

		Assert(slot->pins > 0);
		slot->pins--;
		if (slot->pins == 0 && slot->retired)
		{
			slot->retired = false;
			IvfpqSharedDrop(slot);
		}
	}
	LWLockRelease(control_lock);
	pinned_count = 0;
	pin_epoch++;
}

static void
IvfpqSharedExit(int code, Datum arg)
{
	if (control_lock != NULL)
		IvfpqSharedRelease();
}

/*
 * Attach this backend to the shared cache on first use: true if there is
 * one and this session uses it.
 */
static bool
IvfpqSharedAvailable(void)
{
	if (!shared_requested || control == NULL || !ivfpq_shared_cache_enabled)
		return false;
	if (area == NULL)
	{
		MemoryContext old_context = MemoryContextSwitchTo(TopMemoryContext);
		void	   *place = (char *) control + control->area_offset;

		control_lock = &(GetNamedLWLockTranche(IVFPQ_SHARED_TRANCHE))[0].lock;
		LWLockRegisterTranche(control->area_tranche, "ivfpq shared cache area");
		pinned_room = 16;
		pinned_slots = (int *) palloc(sizeof(int) * pinned_room);
		area = dsa_attach_in_place(place, NULL);
		dsa_pin_mapping(area);
		on_shmem_exit(dsa_on_shmem_exit_release_in_place, PointerGetDatum(place));
		MemoryContextSwitchTo(old_context);
	}
	if (!exit_callback_registered)
	{
		/* Runs before the exit's transaction abort: releasing twice is a no-op. */
		before_shmem_exit(IvfpqSharedExit, 0);
		exit_callback_registered = true;
	}
	return true;
}

static void
IvfpqSharedOffsets(const IvfpqSharedSlot *slot, IvfpqSharedParts *parts)
{
	Size		offset = 0;

	parts->centroids = offset;
	offset += MAXALIGN(sizeof(float) * IvfpqCentroidFloats(&slot->shape));
	parts->codebooks = offset;
	offset += MAXALIGN(sizeof(float) * IvfpqCodebookFloats(&slot->shape));
	parts->prepared = offset;
	offset += MAXALIGN(sizeof(float) * slot->prepared_floats);
	parts->mean = offset;
	offset += MAXALIGN(sizeof(float) * slot->shape.dim);
	parts->built = offset;
	offset += MAXALIGN(sizeof(bool) * slot->shape.lists);
	parts->tables = offset = TYPEALIGN(64, offset);
	offset += slot->term_table_bytes * slot->shape.lists;
	parts->total = offset;
}

/* Point a local entry's arrays at a slot's chunk (the lock is held). */
static void
IvfpqSharedView(IvfpqQuantizer *q, int slot_number)
{
	IvfpqSharedSlot *slot = &control->slots[slot_number];
	IvfpqSharedParts parts;
	char	   *base = (char *) dsa_get_address(area, slot->chunk);

	IvfpqSharedOffsets(slot, &parts);
	q->centroids = (float *) (base + parts.centroids);
	q->codebooks = (float *) (base + parts.codebooks);
	q->prepared = (float *) (base + parts.prepared);
	q->term_tables_tried = true;
	if (slot->term_table_bytes > 0)
	{
		q->centroid_center = (float *) (base + parts.mean);
		q->term_built = (bool *) (base + parts.built);
		q->term_tables = (uint8 *) (base + parts.tables);
		q->term_table_bytes = slot->term_table_bytes;
	}
	else
	{
		q->centroid_center = NULL;
		q->term_built = NULL;
		q->term_tables = NULL;
		q->term_table_bytes = 0;
	}
	q->shared_slot = slot_number;
	q->shared_generation = slot->generation;
}

/* Record a pin taken on a slot (the lock is held; no error may be raised). */
static void
IvfpqSharedPinSlot(IvfpqQuantizer *q, int slot_number)
{
	IvfpqSharedSlot *slot = &control->slots[slot_number];

	slot->pins++;
	slot->last_used = ++control->clock;
	pinned_slots[pinned_count++] = slot_number;
	q->shared_epoch = pin_epoch;
}

/* Make room for one more pin before taking the lock. */
static void
IvfpqSharedReservePin(void)
{
	if (pinned_count == pinned_room)
	{
		pinned_room *= 2;
		pinned_slots = (int *) repalloc(pinned_slots, sizeof(int) * pinned_room);
	}
}

/* Free or retire a slot (the lock is held). */
static void
IvfpqSharedDrop(IvfpqSharedSlot *slot)
{
	if (slot->pins > 0)
		slot->retired = true;
	else
	{
		dsa_free(area, slot->chunk);
		if (DsaPointerIsValid(slot->coarse_bound))
			dsa_free(area, slot->coarse_bound);
		slot->generation = 0;
	}
}

/* The current slot of an index, or -1; stale ones are dropped (the lock is held). */
static int
IvfpqSharedFindSlot(Oid index_oid, Oid relfilenode, uint64 build_id)
{
	for (int i = 0; i < control->slot_count; i++)
	{
		IvfpqSharedSlot *slot = &control->slots[i];

		if (slot->generation == 0 || slot->retired || slot->database != MyDatabaseId ||
			slot->index_oid != index_oid)
			continue;
		if (slot->relfilenode == relfilenode && slot->build_id == build_id)
			return i;
		IvfpqSharedDrop(slot);	/* REINDEX, TRUNCATE, retrain */
	}
	return -1;
}

/*
 * Pin a local entry's slot for this transaction: false if the slot no
 * longer holds it (evicted since), and the caller must read the index again.
 */
bool
IvfpqSharedPin(IvfpqQuantizer *q)
{
	IvfpqSharedSlot *slot;
	bool		ok;

	if (q->shared_epoch == pin_epoch)
		return true;			/* pinned already in this transaction */
	if (!IvfpqSharedAvailable())
		return false;
	IvfpqSharedReservePin();
	LWLockAcquire(control_lock, LW_EXCLUSIVE);
	slot = &control->slots[q->shared_slot];
	ok = slot->generation == q->shared_generation && !slot->retired;
	if (ok)
		IvfpqSharedPinSlot(q, q->shared_slot);
	LWLockRelease(control_lock);
	return ok;
}

/*
 * A new local entry (in a new context under the caller's memory context)
 * viewing the shared copy of an index's quantizer, pinned; or NULL if the
 * shared cache has none (or is not in use).  Only trained quantizers are
 * shared.
 */
IvfpqQuantizer *
IvfpqSharedFind(Relation index, const IvfpqMetaPageData *meta)
{
	IvfpqQuantizer *q;
	int			slot_number;
	MemoryContext context;

	if (!meta->trained || !IvfpqSharedAvailable())
		return NULL;
	context = AllocSetContextCreate(CurrentMemoryContext, "ivfpq quantizer", ALLOCSET_SMALL_SIZES);
	MemoryContextSetIdentifier(context, MemoryContextStrdup(context, RelationGetRelationName(index)));
	q = (IvfpqQuantizer *) MemoryContextAllocZero(context, sizeof(IvfpqQuantizer));
	q->context = context;
	IvfpqSharedReservePin();

	LWLockAcquire(control_lock, LW_EXCLUSIVE);
	slot_number = IvfpqSharedFindSlot(RelationGetRelid(index), index->rd_node.relNode, meta->build_id);
	if (slot_number >= 0)
	{
		IvfpqSharedSlot *slot = &control->slots[slot_number];

		slot->hits++;
		IvfpqSharedPinSlot(q, slot_number);
		IvfpqSharedView(q, slot_number);
	}
	LWLockRelease(control_lock);
	if (slot_number < 0)
	{
		MemoryContextDelete(context);
		return NULL;
	}
	q->index_oid = RelationGetRelid(index);
	q->relfilenode = index->rd_node.relNode;
	q->build_id = meta->build_id;
	q->shape = meta->shape;
	q->trained = true;
	q->list_page_capacity = (int) meta->list_page_capacity;
	q->filter_columns = (int) meta->filter_columns;
	q->directory_start = meta->directory_start;
	return q;
}

/* The least recently used slot no one uses (not keep), or -1 (the lock is held). */
static int
IvfpqSharedVictim(int keep)
{
	int			victim = -1;

	for (int i = 0; i < control->slot_count; i++)
	{
		IvfpqSharedSlot *slot = &control->slots[i];

		if (i == keep || slot->generation == 0 || slot->pins > 0)
			continue;
		if (victim < 0 || slot->last_used < control->slots[victim].last_used)
			victim = i;
	}
	return victim;
}

/*
 * Publish a privately loaded, trained quantizer: copy it into the shared
 * area (evicting unused entries to make room), pin it, point q at the copy
 * and free the private arrays.  False (q unchanged) if there is no shared
 * cache or the entry does not fit; true also when another backend published
 * the same quantizer meanwhile (q then views that one).
 */
bool
IvfpqSharedPublish(IvfpqQuantizer *q)
{
	IvfpqSharedSlot want;
	IvfpqSharedParts parts;
	float	   *mean = NULL;
	int			slot_number = -1;
	bool		published = false;
	ivfpq::core::QuantizerView view;
	void	   *private_arrays[6];

	if (!q->trained || q->shared_slot >= 0 || !IvfpqSharedAvailable())
		return false;

	view = IvfpqView(q);
	memset(&want, 0, sizeof(want));
	want.database = MyDatabaseId;
	want.index_oid = q->index_oid;
	want.relfilenode = q->relfilenode;
	want.build_id = q->build_id;
	want.shape = q->shape;
	want.list_page_capacity = q->list_page_capacity;
	want.filter_columns = q->filter_columns;
	want.directory_start = q->directory_start;
	want.prepared_floats = ivfpq::core::PreparedQuantizerFloats(view);
	/* Room for the terms under the same rule as a private entry's. */
	want.term_table_bytes = IvfpqTermTableRoom(q);
	if (want.term_table_bytes > 0)
	{
		mean = q->centroid_center;
		if (mean == NULL)
		{
			float	   *computed = (float *) MemoryContextAlloc(q->context, sizeof(float) * q->shape.dim);

			IvfpqCallCore("ivfpq quantizer cache", [&]() {
				ivfpq::core::CentroidCenter(view, computed);
			});
			mean = computed;
		}
	}
	IvfpqSharedOffsets(&want, &parts);
	want.bytes = parts.total;
	if (parts.total >= control->area_bytes)
	{
		LWLockAcquire(control_lock, LW_EXCLUSIVE);
		control->refusals++;
		LWLockRelease(control_lock);
		return false;
	}
	IvfpqSharedReservePin();

	/* The private arrays, freed once q views the shared copy. */
	private_arrays[0] = q->centroids;
	private_arrays[1] = q->codebooks;
	private_arrays[2] = q->prepared;
	private_arrays[3] = mean;
	private_arrays[4] = q->term_tables;
	private_arrays[5] = q->term_built;

	LWLockAcquire(control_lock, LW_EXCLUSIVE);
	slot_number = IvfpqSharedFindSlot(q->index_oid, q->relfilenode, q->build_id);
	if (slot_number >= 0)
	{
		/* Published by another backend since we looked. */
		control->slots[slot_number].hits++;
		IvfpqSharedPinSlot(q, slot_number);
		IvfpqSharedView(q, slot_number);
		published = true;
	}
	else
	{
		dsa_pointer chunk = InvalidDsaPointer;

		for (int i = 0; i < control->slot_count && slot_number < 0; i++)
			if (control->slots[i].generation == 0)
				slot_number = i;
		if (slot_number < 0)
		{
			slot_number = IvfpqSharedVictim(-1);
			if (slot_number >= 0)
			{
				IvfpqSharedDrop(&control->slots[slot_number]);
				control->evictions++;
			}
		}
		while (slot_number >= 0)
		{
			int			victim;

			chunk = dsa_allocate_extended(area, parts.total, DSA_ALLOC_HUGE | DSA_ALLOC_NO_OOM);
			if (DsaPointerIsValid(chunk))
				break;
			victim = IvfpqSharedVictim(slot_number);
			if (victim < 0)
				break;
			IvfpqSharedDrop(&control->slots[victim]);
			control->evictions++;
		}
		if (slot_number >= 0 && DsaPointerIsValid(chunk))
		{
			IvfpqSharedSlot *slot = &control->slots[slot_number];
			char	   *base = (char *) dsa_get_address(area, chunk);

			memcpy(base + parts.centroids, q->centroids, sizeof(float) * IvfpqCentroidFloats(&q->shape));
			memcpy(base + parts.codebooks, q->codebooks, sizeof(float) * IvfpqCodebookFloats(&q->shape));
			memcpy(base + parts.prepared, q->prepared, sizeof(float) * want.prepared_floats);
			if (want.term_table_bytes > 0)
			{
				memcpy(base + parts.mean, mean, sizeof(float) * q->shape.dim);
				memset(base + parts.built, 0, sizeof(bool) * q->shape.lists);
			}
			*slot = want;
			slot->chunk = chunk;
			slot->coarse_bound = InvalidDsaPointer;
			slot->generation = control->next_generation++;
			IvfpqSharedPinSlot(q, slot_number);
			IvfpqSharedView(q, slot_number);
			published = true;
		}
		else
			control->refusals++;
	}
	LWLockRelease(control_lock);
	if (published)
		for (int i = 0; i < (int) lengthof(private_arrays); i++)
			if (private_arrays[i] != NULL)
				pfree(private_arrays[i]);
	return published;
}

/*
 * The coarse bound of a shared entry (pinned by this transaction): the shared
 * copy if a backend has published one, else NULL.
 */
const float *
IvfpqSharedCoarseBound(IvfpqQuantizer *q)
{
	const float *bound = NULL;
	IvfpqSharedSlot *slot;

	Assert(q->shared_slot >= 0 && q->shared_epoch == pin_epoch);
	LWLockAcquire(control_lock, LW_SHARED);
	slot = &control->slots[q->shared_slot];
	if (slot->generation == q->shared_generation && DsaPointerIsValid(slot->coarse_bound))
		bound = (const float *) dsa_get_address(area, slot->coarse_bound);
	LWLockRelease(control_lock);
	return bound;
}

/*
 * Offer a coarse bound this backend prepared (floats long) to a shared entry
 * pinned by this transaction: the shared copy (this one, or one another
 * backend published first), or NULL when the area has no room for it, and
 * the caller keeps its own.  Never evicts: the bound only saves time.
 */
const float *
IvfpqSharedPublishCoarseBound(IvfpqQuantizer *q, const float *bound, Size floats)
{
	const float *shared_bound = NULL;
	IvfpqSharedSlot *slot;

	Assert(q->shared_slot >= 0 && q->shared_epoch == pin_epoch);
	LWLockAcquire(control_lock, LW_EXCLUSIVE);
	slot = &control->slots[q->shared_slot];
	if (slot->generation == q->shared_generation)
	{
		if (!DsaPointerIsValid(slot->coarse_bound))
		{
			dsa_pointer chunk = dsa_allocate_extended(area, sizeof(float) * floats,
													  DSA_ALLOC_HUGE | DSA_ALLOC_NO_OOM);

			if (DsaPointerIsValid(chunk))
			{
				memcpy(dsa_get_address(area, chunk), bound, sizeof(float) * floats);
				slot->coarse_bound = chunk;
				slot->bytes += sizeof(float) * floats;
			}
		}
		if (DsaPointerIsValid(slot->coarse_bound))
			shared_bound = (const float *) dsa_get_address(area, slot->coarse_bound);
	}
	LWLockRelease(control_lock);
	return shared_bound;
}

/*
 * ivfpq_shared_cache(): one row per entry of the shared quantizer cache, of
 * all databases; ivfpq_shared_cache_stats(): one row for the whole cache
 * (SQL in sql/install/58_shared_cache.sql).  No rows without a shared cache.
 */
typedef struct IvfpqSharedRow
{
	IvfpqSharedSlot slot;
	int64		lists_with_terms;
} IvfpqSharedRow;

Datum
ivfpq_shared_cache(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	IvfpqSharedRow *rows;
	int			count = 0;

	InitMaterializedSRF(fcinfo, 0);
	if (!shared_requested || control == NULL)
		PG_RETURN_VOID();
	if (area == NULL && !IvfpqSharedAvailable())
		PG_RETURN_VOID();
	rows = (IvfpqSharedRow *) palloc(sizeof(IvfpqSharedRow) * control->slot_count);
	LWLockAcquire(control_lock, LW_SHARED);
	for (int i = 0; i < control->slot_count; i++)
	{
		IvfpqSharedSlot *slot = &control->slots[i];
		IvfpqSharedRow *row;

		if (slot->generation == 0)
			continue;
		row = &rows[count++];
		row->slot = *slot;
		row->lists_with_terms = 0;
		if (slot->term_table_bytes > 0)
		{
			IvfpqSharedParts parts;
			const bool *built;

			IvfpqSharedOffsets(slot, &parts);
			built = (const bool *) ((char *) dsa_get_address(area, slot->chunk) + parts.built);
			for (int list = 0; list < slot->shape.lists; list++)
				row->lists_with_terms += built[list] ? 1 : 0;
		}
	}
	LWLockRelease(control_lock);

	for (int i = 0; i < count; i++)
	{
		IvfpqSharedSlot *slot = &rows[i].slot;
		Datum		values[8];
		bool		nulls[8] = {false};

		values[0] = ObjectIdGetDatum(slot->database);
		values[1] = ObjectIdGetDatum(slot->index_oid);
		values[2] = Int64GetDatum((int64) slot->bytes);
		values[3] = Int32GetDatum(slot->pins);
		values[4] = BoolGetDatum(slot->retired);
		values[5] = Int64GetDatum((int64) slot->hits);
		values[6] = Int32GetDatum(slot->shape.lists);
		values[7] = Int64GetDatum(rows[i].lists_with_terms);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}

Datum
ivfpq_shared_cache_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[6];
	bool		nulls[6] = {false};
	int64		used = 0;
	int64		entries = 0;

	InitMaterializedSRF(fcinfo, 0);
	if (!shared_requested || control == NULL)
		PG_RETURN_VOID();
	if (area == NULL && !IvfpqSharedAvailable())
		PG_RETURN_VOID();
	LWLockAcquire(control_lock, LW_SHARED);
	for (int i = 0; i < control->slot_count; i++)
		if (control->slots[i].generation != 0)
		{
			used += (int64) control->slots[i].bytes;
			entries++;
		}
	values[0] = Int64GetDatum((int64) control->area_bytes);
	values[1] = Int64GetDatum(used);
	values[2] = Int64GetDatum(entries);
	values[3] = Int32GetDatum(control->slot_count);
	values[4] = Int64GetDatum((int64) control->evictions);
	values[5] = Int64GetDatum((int64) control->refusals);
	LWLockRelease(control_lock);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	PG_RETURN_VOID();
}
