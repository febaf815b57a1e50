/*
 * ivfpq_verify.cpp
 *		ivfpq_verify(index regclass, heapallindexed boolean): an amcheck-style
 *		check of an ivfpq index, one result row (block, list, problem) per
 *		problem found and none when the index is healthy.
 *
 *		It checks the metapage (magic, format, a sane shape), the types of
 *		the fixed pages, that the centroids and codebooks are finite, every
 *		list chain (pages inside the list area, of type list, no cycle, no page
 *		in two lists, counts within the page's capacity, the directory's tail
 *		hint on the chain), that every page of the list area is on a chain or
 *		deleted or never written, and that every entry's heap TID lies inside
 *		the table and appears once.  With heapallindexed it also checks that
 *		every entry points at a used heap slot, and reads the table as
 *		CREATE INDEX would to check that every row the index should hold has
 *		an entry.
 *
 *		It holds ShareLock on the table (writes and VACUUM wait, reads go on,
 *		as with amcheck's bt_index_parent_check), so the index does not change
 *		under it.  The index owner and roles with the privileges of
 *		pg_stat_scan_tables may call it.
 */
#include <cmath>

#include "ivfpq_am.h"

extern "C"
{
#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/index.h"
#include "catalog/pg_authid.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(ivfpq_verify);
}

typedef struct IvfpqVerifyState
{
	Tuplestorestate *store;
	TupleDesc	tupdesc;
	Relation	index;
	Relation	heap;
	BlockNumber heap_blocks;
	int			metric;
	ItemPointerData *tids;		/* every entry's heap TID, sorted before the heap pass */
	int64		ntids;
	int64		max_tids;
} IvfpqVerifyState;

/* One result row; block or list < 0 gives NULL. */
static void
IvfpqProblem(IvfpqVerifyState *vs, int64 block, int64 list, const char *fmt,...) pg_attribute_printf(4, 5);

static void
IvfpqProblem(IvfpqVerifyState *vs, int64 block, int64 list, const char *fmt,...)
{
	Datum		values[3];
	bool		nulls[3] = {block < 0, list < 0, false};
	StringInfoData text;

	initStringInfo(&text);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&text, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&text, needed);
	}
	values[0] = Int64GetDatum(block);
	values[1] = Int32GetDatum((int32) list);
	values[2] = CStringGetTextDatum(text.data);
	tuplestore_putvalues(vs->store, vs->tupdesc, values, nulls);
}

static const char *
IvfpqPageTypeName(uint16 type)
{
	switch (type)
	{
		case IVFPQ_PAGE_META:
			return "meta";
		case IVFPQ_PAGE_FLOATS:
			return "centroid/codebook";
		case IVFPQ_PAGE_DIRECTORY:
			return "directory";
		case IVFPQ_PAGE_LIST:
			return "list";
		case IVFPQ_PAGE_DELETED:
			return "deleted";
	}
	return "unknown";
}

/* Is the page an ivfpq page of this type?  Reports it if not. */
static bool
IvfpqCheckPageType(IvfpqVerifyState *vs, Page page, BlockNumber block, int64 list, uint16 type)
{
	IvfpqPageOpaque opaque;

	if (PageIsNew(page))
	{
		IvfpqProblem(vs, block, list, "%s page expected, found a never-written page", IvfpqPageTypeName(type));
		return false;
	}
	if (PageGetSpecialSize(page) != MAXALIGN(sizeof(IvfpqPageOpaqueData)))
	{
		IvfpqProblem(vs, block, list, "%s page expected, found special space of %d bytes",
					 IvfpqPageTypeName(type), (int) PageGetSpecialSize(page));
		return false;
	}
	opaque = IvfpqPageGetOpaque(page);
	if (opaque->page_id != IVFPQ_PAGE_ID)
	{
		IvfpqProblem(vs, block, list, "page id is 0x%04x, not 0x%04x", opaque->page_id, IVFPQ_PAGE_ID);
		return false;
	}
	if (opaque->page_type != type)
	{
		IvfpqProblem(vs, block, list, "%s page expected, found a %s page", IvfpqPageTypeName(type),
					 IvfpqPageTypeName(opaque->page_type));
		return false;
	}
	return true;
}

/* Check the metapage; false if the rest cannot be read. */
static bool
IvfpqVerifyMeta(IvfpqVerifyState *vs, IvfpqMetaPageData *meta, BlockNumber nblocks)
{
	Buffer		buffer = ReadBuffer(vs->index, IVFPQ_METAPAGE_BLKNO);
	bool		ok;
	const IvfpqShapeData *s = &meta->shape;

	LockBuffer(buffer, BUFFER_LOCK_SHARE);
	ok = IvfpqCheckPageType(vs, BufferGetPage(buffer), IVFPQ_METAPAGE_BLKNO, -1, IVFPQ_PAGE_META);
	if (ok)
		memcpy(meta, IvfpqPageGetMeta(BufferGetPage(buffer)), sizeof(IvfpqMetaPageData));
	UnlockReleaseBuffer(buffer);
	if (!ok)
		return false;

	if (meta->magic != IVFPQ_MAGIC)
	{
		IvfpqProblem(vs, 0, -1, "metapage magic is 0x%08x, not 0x%08x", meta->magic, IVFPQ_MAGIC);
		return false;
	}
	if (meta->version != IVFPQ_VERSION && meta->version != IVFPQ_VERSION_FAST_SCAN)
	{
		IvfpqProblem(vs, 0, -1, "page format %u, this build reads %d and %d", meta->version, IVFPQ_VERSION,
					 IVFPQ_VERSION_FAST_SCAN);
		return false;
	}
	if (meta->version != (uint32) IvfpqFormatVersion(s))
	{
		IvfpqProblem(vs, 0, -1, "page format %u with %d-bit codes", meta->version, s->nbits);
		return false;
	}
	ok = true;
	if (s->lists < 1 || s->lists > IVFPQ_MAX_LISTS || s->m < 1 || s->m > IVFPQ_MAX_M ||
		!(s->nbits == 8 || (s->nbits == 4 && s->m % 2 == 0)) || s->metric < IVFPQ_METRIC_L2 || s->metric > IVFPQ_METRIC_COSINE ||
		s->dim < 0 || (meta->trained && (s->dim == 0 || s->dim % s->m != 0)))
	{
		IvfpqProblem(vs, 0, -1, "impossible shape: dimensions %d, lists %d, m %d, nbits %d, metric %d, trained %u",
					 s->dim, s->lists, s->m, s->nbits, s->metric, meta->trained);
		return false;
	}
	if ((int) meta->filter_columns != IvfpqIndexFilterColumns(vs->index))
	{
		IvfpqProblem(vs, 0, -1, "%u filter columns, the index has %d",
					 meta->filter_columns, IvfpqIndexFilterColumns(vs->index));
		return false;
	}
	if ((int) meta->list_page_capacity != IvfpqListPageCapacity(s->m, s->nbits, (int) meta->filter_columns))
	{
		IvfpqProblem(vs, 0, -1, "list page capacity %u, %d expected for m = %d, nbits = %d and %u filter columns",
					 meta->list_page_capacity, IvfpqListPageCapacity(s->m, s->nbits, (int) meta->filter_columns),
					 s->m, s->nbits, meta->filter_columns);
		ok = false;
	}
	if (meta->directory_start >= nblocks || IvfpqFirstListBlock(meta) > nblocks ||
		(meta->trained && (meta->centroid_start >= nblocks || meta->codebook_start >= nblocks)))
	{
		IvfpqProblem(vs, 0, -1, "fixed pages outside the index's %u blocks (centroids %u, codebooks %u, directory %u)",
					 nblocks, meta->centroid_start, meta->codebook_start, meta->directory_start);
		ok = false;
	}
	return ok;
}

/* Page types of the fixed pages, and finite centroids and codebooks. */
static void
IvfpqVerifyFixedPages(IvfpqVerifyState *vs, const IvfpqMetaPageData *meta)
{
	BlockNumber first_list = IvfpqFirstListBlock(meta);
	bool		floats_ok = true;

	for (BlockNumber block = 1; block < first_list; block++)
	{
		Buffer		buffer = ReadBuffer(vs->index, block);
		uint16		type = block >= meta->directory_start ? IVFPQ_PAGE_DIRECTORY : IVFPQ_PAGE_FLOATS;

		LockBuffer(buffer, BUFFER_LOCK_SHARE);
		if (!IvfpqCheckPageType(vs, BufferGetPage(buffer), block, -1, type) && type == IVFPQ_PAGE_FLOATS)
			floats_ok = false;
		UnlockReleaseBuffer(buffer);
	}
	if (meta->trained && floats_ok)
	{
		Size		ncentroids = IvfpqCentroidFloats(&meta->shape);
		Size		ncodebook = IvfpqCodebookFloats(&meta->shape);
		float	   *centroids = (float *) palloc_extended(sizeof(float) * ncentroids, MCXT_ALLOC_HUGE);
		float	   *codebooks = (float *) palloc_extended(sizeof(float) * ncodebook, MCXT_ALLOC_HUGE);
		Size		bad = 0;

		IvfpqReadQuantizerArrays(vs->index, meta, centroids, codebooks);
		for (Size i = 0; i < ncentroids; i++)
			bad += !std::isfinite(centroids[i]);
		if (bad > 0)
			IvfpqProblem(vs, meta->centroid_start, -1, "%zu of %zu centroid values are not finite", bad, ncentroids);
		bad = 0;
		for (Size i = 0; i < ncodebook; i++)
			bad += !std::isfinite(codebooks[i]);
		if (bad > 0)
			IvfpqProblem(vs, meta->codebook_start, -1, "%zu of %zu codebook values are not finite", bad, ncodebook);
		pfree(centroids);
		pfree(codebooks);
	}
}

static void
IvfpqRememberTid(IvfpqVerifyState *vs, ItemPointer tid)
{
	if (vs->ntids == vs->max_tids)
	{
		vs->max_tids = Max(vs->max_tids * 2, 1024);
		vs->tids = (ItemPointerData *) repalloc_huge(vs->tids, sizeof(ItemPointerData) * vs->max_tids);
	}
	vs->tids[vs->ntids++] = *tid;
}

/* Walk one list's chain; owner[] marks the pages seen on chains so far. */
static void
IvfpqVerifyList(IvfpqVerifyState *vs, const IvfpqMetaPageData *meta, int list, int32 *owner,
				BlockNumber nblocks)
{
	IvfpqDirEntryData entry;
	BlockNumber first_list = IvfpqFirstListBlock(meta);
	int			capacity = (int) meta->list_page_capacity;
	IvfpqListLayout layout = IvfpqMetaLayout(meta);
	Size		expected_lower = MAXALIGN(SizeOfPageHeaderData) + IvfpqListLayoutBytes(&layout);
	BlockNumber block;

	IvfpqReadDirEntry(vs->index, meta->directory_start, list, &entry);
	if (entry.first_block == InvalidBlockNumber)
	{
		if (entry.tail_block != InvalidBlockNumber)
			IvfpqProblem(vs, -1, list, "empty list has tail hint %u", entry.tail_block);
		return;
	}
	for (block = entry.first_block; block != InvalidBlockNumber;)
	{
		Buffer		buffer;
		Page		page;
		IvfpqPageOpaque opaque;
		BlockNumber next;

		if (block < first_list || block >= nblocks)
		{
			IvfpqProblem(vs, block, list, "chain links to block %u, outside the list area [%u, %u)",
						 block, first_list, nblocks);
			return;
		}
		if (owner[block - first_list] == list)
		{
			IvfpqProblem(vs, block, list, "chain has a cycle through block %u", block);
			return;
		}
		if (owner[block - first_list] >= 0)
		{
			IvfpqProblem(vs, block, list, "page is on the chains of lists %d and %d",
						 owner[block - first_list], list);
			return;
		}
		owner[block - first_list] = list;

		buffer = ReadBuffer(vs->index, block);
		LockBuffer(buffer, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buffer);
		if (!IvfpqCheckPageType(vs, page, block, list, IVFPQ_PAGE_LIST))
		{
			UnlockReleaseBuffer(buffer);
			return;
		}
		opaque = IvfpqPageGetOpaque(page);
		if (opaque->list_plus_one != 0 && opaque->list_plus_one != (uint32) list + 1)
			IvfpqProblem(vs, block, list, "page of list %u in the chain of list %d",
						 opaque->list_plus_one - 1, list);
		if (opaque->entry_count > capacity)
			IvfpqProblem(vs, block, list, "%d entries on a page that holds %d", opaque->entry_count, capacity);
		else
		{
			ItemPointer tids = IvfpqListTids(page);

			if (opaque->inserted > opaque->entry_count)
				IvfpqProblem(vs, block, list, "%d entries added since the build of %d on the page",
							 opaque->inserted, opaque->entry_count);
			if (((PageHeader) page)->pd_lower != expected_lower)
				IvfpqProblem(vs, block, list, "pd_lower is %d, %zu expected", ((PageHeader) page)->pd_lower,
							 expected_lower);
			for (int i = 0; i < opaque->entry_count; i++)
			{
				ItemPointer tid = &tids[i];

				if (!ItemPointerIsValid(tid) || ItemPointerGetOffsetNumberNoCheck(tid) > MaxHeapTuplesPerPage ||
					ItemPointerGetBlockNumberNoCheck(tid) >= vs->heap_blocks)
					IvfpqProblem(vs, block, list, "entry %d points at heap TID (%u,%u), outside table \"%s\" (%u blocks)",
								 i, ItemPointerGetBlockNumberNoCheck(tid), ItemPointerGetOffsetNumberNoCheck(tid),
								 RelationGetRelationName(vs->heap), vs->heap_blocks);
				else
					IvfpqRememberTid(vs, tid);
			}
		}
		next = opaque->next_block;
		UnlockReleaseBuffer(buffer);
		block = next;
		CHECK_FOR_INTERRUPTS();
	}
	if (entry.tail_block == InvalidBlockNumber || entry.tail_block < first_list ||
		entry.tail_block >= nblocks || owner[entry.tail_block - first_list] != list)
		IvfpqProblem(vs, -1, list, "tail hint %u is not a page of the list", entry.tail_block);
}

/* Pages of the list area on no chain must be deleted or never written. */
static void
IvfpqVerifyUnreached(IvfpqVerifyState *vs, const IvfpqMetaPageData *meta, const int32 *owner, BlockNumber nblocks)
{
	BlockNumber first_list = IvfpqFirstListBlock(meta);

	for (BlockNumber block = first_list; block < nblocks; block++)
	{
		Buffer		buffer;
		Page		page;

		if (owner[block - first_list] >= 0)
			continue;
		buffer = ReadBuffer(vs->index, block);
		LockBuffer(buffer, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buffer);
		if (!PageIsNew(page) && PageGetSpecialSize(page) == MAXALIGN(sizeof(IvfpqPageOpaqueData)) &&
			IvfpqPageGetOpaque(page)->page_id == IVFPQ_PAGE_ID &&
			IvfpqPageGetOpaque(page)->page_type == IVFPQ_PAGE_LIST)
			IvfpqProblem(vs, block, -1, "list page with %d entries is on no list's chain",
						 IvfpqPageGetOpaque(page)->entry_count);
		else if (!PageIsNew(page) && IvfpqCheckPageType(vs, page, block, -1, IVFPQ_PAGE_DELETED) &&
				 IvfpqPageGetOpaque(page)->entry_count != 0)
			IvfpqProblem(vs, block, -1, "deleted page holds %d entries", IvfpqPageGetOpaque(page)->entry_count);
		UnlockReleaseBuffer(buffer);
		CHECK_FOR_INTERRUPTS();
	}
}

static int
IvfpqCompareTids(const void *a, const void *b)
{
	return ItemPointerCompare((ItemPointer) a, (ItemPointer) b);
}

/*
 * heapallindexed: every entry must point at a used line pointer of the
 * table (a live row, a dead one VACUUM has yet to remove, or the redirect at
 * the root of a HOT chain).  An entry at an unused slot is one VACUUM should
 * have removed: a new row may take that slot.  vs->tids is sorted.
 */
static void
IvfpqVerifyEntriesPointAtRows(IvfpqVerifyState *vs)
{
	BufferAccessStrategy strategy = GetAccessStrategy(BAS_BULKREAD);
	int64		i = 0;

	while (i < vs->ntids)
	{
		BlockNumber block = ItemPointerGetBlockNumber(&vs->tids[i]);
		Buffer		buffer = ReadBufferExtended(vs->heap, MAIN_FORKNUM, block, RBM_NORMAL, strategy);
		Page		page;
		OffsetNumber max_offset;

		LockBuffer(buffer, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buffer);
		max_offset = PageIsNew(page) ? 0 : PageGetMaxOffsetNumber(page);
		for (; i < vs->ntids && ItemPointerGetBlockNumber(&vs->tids[i]) == block; i++)
		{
			OffsetNumber offset = ItemPointerGetOffsetNumber(&vs->tids[i]);

			if (offset > max_offset || !ItemIdIsUsed(PageGetItemId(page, offset)))
				IvfpqProblem(vs, -1, -1, "an entry points at heap TID (%u,%u) of \"%s\", an unused slot",
							 block, offset, RelationGetRelationName(vs->heap));
		}
		UnlockReleaseBuffer(buffer);
		CHECK_FOR_INTERRUPTS();
	}
	FreeAccessStrategy(strategy);
}

/* heapallindexed: each row the index should hold must have an entry. */
static void
IvfpqHeapRowCallback(Relation index, ItemPointer tid, Datum *values, bool *isnull, bool tupleIsAlive,
					 void *state)
{
	IvfpqVerifyState *vs = (IvfpqVerifyState *) state;

	if (isnull[0])
		return;
	if (vs->metric == IVFPQ_METRIC_COSINE)
	{
		Vector	   *v = DatumGetVector(values[0]);

		if (ivfpq::core::SquaredNorm(v->x, (size_t) v->dim) == 0)
			return;				/* zero vectors are not indexed under cosine */
	}
	if (bsearch(tid, vs->tids, vs->ntids, sizeof(ItemPointerData), IvfpqCompareTids) == NULL)
		IvfpqProblem(vs, -1, -1, "heap row (%u,%u) of \"%s\" has no index entry", ItemPointerGetBlockNumber(tid),
					 ItemPointerGetOffsetNumber(tid), RelationGetRelationName(vs->heap));
}

/* ivfpq_verify(index regclass, heapallindexed boolean) returns setof (block, list, problem). */
extern "C" Datum
ivfpq_verify(PG_FUNCTION_ARGS)
{
	Oid			index_oid = PG_GETARG_OID(0);
	bool		heapallindexed = PG_GETARG_BOOL(1);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	IvfpqVerifyState vs;
	Oid			heap_oid;
	IvfpqMetaPageData meta;
	BlockNumber nblocks;

	InitMaterializedSRF(fcinfo, 0);
	MemSet(&vs, 0, sizeof(vs));
	vs.store = rsinfo->setResult;
	vs.tupdesc = rsinfo->setDesc;

	/* Privileges before any lock: the check blocks writers of the table. */
	heap_oid = IndexGetRelation(index_oid, true);
	if (!OidIsValid(heap_oid))
	{
		char	   *name = get_rel_name(index_oid);

		if (name == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("relation with OID %u does not exist", index_oid)));
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not an index", name)));
	}
	if (!pg_class_ownercheck(index_oid, GetUserId()) &&
		!has_privs_of_role(GetUserId(), ROLE_PG_STAT_SCAN_TABLES))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to verify index \"%s\"", get_rel_name(index_oid)),
				 errdetail("Only the owner of the index or roles with the privileges of pg_stat_scan_tables may verify it.")));

	/* Table first, then index, as amcheck and REINDEX lock them. */
	vs.heap = table_open(heap_oid, ShareLock);
	vs.index = index_open(index_oid, AccessShareLock);
	if (IndexGetRelation(index_oid, false) != heap_oid)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("index \"%s\" changed its table while being opened", RelationGetRelationName(vs.index))));
	if (vs.index->rd_indam == NULL || vs.index->rd_indam->ambuild != ivfpqbuild)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not an ivfpq index", RelationGetRelationName(vs.index))));
	if (!vs.index->rd_index->indisvalid)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot verify index \"%s\"", RelationGetRelationName(vs.index)),
				 errdetail("The index is not valid (an interrupted CREATE INDEX CONCURRENTLY or REINDEX CONCURRENTLY)."),
				 errhint("Drop it or REINDEX it.")));

	nblocks = RelationGetNumberOfBlocks(vs.index);
	vs.heap_blocks = RelationGetNumberOfBlocks(vs.heap);
	vs.max_tids = 1024;
	vs.tids = (ItemPointerData *) palloc_extended(sizeof(ItemPointerData) * vs.max_tids, MCXT_ALLOC_HUGE);

	if (nblocks == 0)
		IvfpqProblem(&vs, -1, -1, "index has no pages");
	else if (IvfpqVerifyMeta(&vs, &meta, nblocks))
	{
		BlockNumber first_list = IvfpqFirstListBlock(&meta);
		int32	   *owner = (int32 *) palloc_extended(sizeof(int32) * Max(nblocks - first_list, 1), MCXT_ALLOC_HUGE);

		vs.metric = meta.shape.metric;
		for (BlockNumber i = 0; i < nblocks - first_list; i++)
			owner[i] = -1;
		IvfpqVerifyFixedPages(&vs, &meta);
		for (int list = 0; list < meta.shape.lists; list++)
			IvfpqVerifyList(&vs, &meta, list, owner, nblocks);
		IvfpqVerifyUnreached(&vs, &meta, owner, nblocks);

		/* Each heap TID at most once. */
		qsort(vs.tids, vs.ntids, sizeof(ItemPointerData), IvfpqCompareTids);
		for (int64 i = 1; i < vs.ntids; i++)
		{
			if (ItemPointerEquals(&vs.tids[i - 1], &vs.tids[i]) &&
				(i == 1 || !ItemPointerEquals(&vs.tids[i - 2], &vs.tids[i])))
				IvfpqProblem(&vs, -1, -1, "heap TID (%u,%u) has more than one entry",
							 ItemPointerGetBlockNumber(&vs.tids[i]), ItemPointerGetOffsetNumber(&vs.tids[i]));
		}
		if (heapallindexed)
		{
			IndexInfo  *info = BuildIndexInfo(vs.index);

			IvfpqVerifyEntriesPointAtRows(&vs);

			/* What CREATE INDEX would index (SnapshotAny: recently dead rows too). */
			table_index_build_scan(vs.heap, vs.index, info, true, false, IvfpqHeapRowCallback, &vs, NULL);
		}
	}

	index_close(vs.index, AccessShareLock);
	table_close(vs.heap, ShareLock);
	return (Datum) 0;
}
