/*
 * ivfpq_am.h
 *		The ivfpq index access method: page layout, options, and the functions
 *		shared by the files of each AM phase (build, insert, scan, vacuum).
 *
 * Index layout (block numbers are fixed at build time, except list pages):
 *	block 0						metapage (IvfpqMetaPageData)
 *	centroid_start ...			coarse centroids, lists x dim float32, packed
 *								IVFPQ_FLOATS_PER_PAGE per page, consecutive pages
 *	codebook_start ...			PQ codebooks, m x ksub x dsub float32, same packing
 *	directory_start ...			list directory, IVFPQ_DIR_ENTRIES_PER_PAGE
 *								IvfpqDirEntryData per page, consecutive pages
 *	(anything after)			list pages: a chain per list, linked by next_block;
 *								pages VACUUM unlinked (IVFPQ_PAGE_DELETED), which
 *								the free space map hands out again once no
 *								transaction can still hold a pointer to them
 *
 * A list page holds up to meta->list_page_capacity entries (a multiple of
 * the core's CodeBlockEntries(nbits)): an array of heap TIDs, then the PQ
 * codes in the core's blocked layout (8-bit codes: blocks of 8 entries,
 * sub-quantizer major; 4-bit codes: the fast-scan layout, blocks of 32
 * entries), so the scan kernel reads
 * codes straight from the buffer; then, for an index with filter columns
 * (CREATE INDEX ... (embedding, category)), per filter column an int64 key
 * per entry and a null bitmap (ivfpq_filter.cpp).  pd_lower covers the whole
 * layout, so GenericXLog sees a standard page without a hole.
 *
 * Every page carries IvfpqPageOpaqueData in its special space, with a page id
 * so tools can recognise our pages.
 */
#ifndef IVFPQ_AM_H
#define IVFPQ_AM_H

#include "ivfpq.h"
#include "ivfpq_vector.h"

extern "C"
{
#include "access/amapi.h"
#include "access/generic_xlog.h"
#include "access/transam.h"
#include "access/reloptions.h"
#include "nodes/execnodes.h"
#include "storage/bufmgr.h"
#include "storage/bufpage.h"
#include "storage/itemptr.h"
#include "utils/relcache.h"
}

#define IVFPQ_MAGIC				0x49565051	/* "IVPQ" */
#define IVFPQ_VERSION			1
/*
 * Format 2 is format 1 whose list pages hold 4-bit codes in the fast-scan
 * layout (shape.nbits = 4).  Only such indexes are written as format 2, so
 * 8-bit indexes stay format 1 byte for byte, and a build that predates
 * 4-bit codes refuses a 4-bit index (page format check) instead of reading
 * its list pages with m-byte codes.
 */
#define IVFPQ_VERSION_FAST_SCAN	2

/* The page format of an index of this shape. */
#define IvfpqFormatVersion(shape)	((shape)->nbits == 4 ? IVFPQ_VERSION_FAST_SCAN : IVFPQ_VERSION)
#define IVFPQ_PAGE_ID			0xFF8A
#define IVFPQ_METAPAGE_BLKNO	0

/* page types (IvfpqPageOpaqueData.page_type) */
#define IVFPQ_PAGE_META			1
#define IVFPQ_PAGE_FLOATS		2	/* centroids or codebooks */
#define IVFPQ_PAGE_DIRECTORY	3
#define IVFPQ_PAGE_LIST			4
#define IVFPQ_PAGE_DELETED		5	/* unlinked from its list by VACUUM */

/*
 * Support functions of the opclasses.  Number 1 (an exact distance) was
 * declared by version 0.1 but never called: the scan computes exact
 * distances with the core's kernels.  It is no longer declared, and the
 * metric keeps number 2 so that a 0.1 catalog and this library agree.
 */
#define IVFPQ_RETIRED_DISTANCE_PROC	1	/* accepted, not required, never called */
#define IVFPQ_METRIC_PROC		2	/* returns the metric (IVFPQ_METRIC_*) as int4 */
#define IVFPQ_NUM_PROCS			2

/* metrics, same values as ivfpq::core::Metric */
#define IVFPQ_METRIC_L2			0
#define IVFPQ_METRIC_IP			1
#define IVFPQ_METRIC_COSINE		2

/* option limits */
#define IVFPQ_MAX_LISTS			65536
#define IVFPQ_MAX_M				1000
#define IVFPQ_DEFAULT_NBITS		8

/* build progress sub-phases (pg_stat_progress_create_index.phase) */
#define IVFPQ_PHASE_SAMPLE		2
#define IVFPQ_PHASE_TRAIN		3
#define IVFPQ_PHASE_ENCODE		4
#define IVFPQ_PHASE_SORT		5
#define IVFPQ_PHASE_WRITE		6

typedef struct IvfpqPageOpaqueData
{
	BlockNumber next_block;		/* next page of a list chain, or Invalid */
	uint16		entry_count;	/* list pages: entries in use */
	uint16		page_type;		/* IVFPQ_PAGE_* */
	uint16		inserted;		/* list pages: how many of the entries, the
								 * last ones on the page, were added by
								 * aminsert after the build (0 on pages
								 * written before version 0.3) */
	uint16		page_id;		/* IVFPQ_PAGE_ID */
	uint32		list_plus_one;	/* list pages: the list's number + 1 (0 on
								 * pages written before version 0.4; the
								 * special space was MAXALIGNed to 16 bytes
								 * already, so the layout is unchanged) */
} IvfpqPageOpaqueData;

static_assert(MAXALIGN(sizeof(IvfpqPageOpaqueData)) == 16,
			  "the special space of ivfpq pages must stay 16 bytes (on-disk format)");

typedef IvfpqPageOpaqueData *IvfpqPageOpaque;

#define IvfpqPageGetOpaque(page) ((IvfpqPageOpaque) PageGetSpecialPointer(page))

/*
 * The quantizer's shape, defined once for the glue: the metapage stores it,
 * and the build, the parallel build and the quantizer cache keep it.
 * IvfpqCoreShape() converts it to the core's QuantizerShape.  The five int32
 * fields sit where format 1 put five uint32s, so pages are unchanged.
 */
typedef struct IvfpqShapeData
{
	int32		dim;			/* 0 while unknown (build of an untyped column) */
	int32		lists;
	int32		m;				/* sub-quantizers = bytes per code */
	int32		nbits;			/* bits per sub-quantizer code */
	int32		metric;			/* IVFPQ_METRIC_* */
} IvfpqShapeData;

/* Floats of the coarse centroids (lists x dim) and of the PQ codebooks (m x ksub x dsub). */
static inline Size
IvfpqCentroidFloats(const IvfpqShapeData *shape)
{
	return (Size) shape->lists * shape->dim;
}

static inline Size
IvfpqCodebookFloats(const IvfpqShapeData *shape)
{
	return (Size) shape->dim << shape->nbits;
}

typedef struct IvfpqMetaPageData
{
	uint32		magic;
	uint32		version;
	IvfpqShapeData shape;
	uint32		trained;		/* 0: empty at build, no codebooks (exact scan) */
	BlockNumber centroid_start;
	BlockNumber codebook_start;
	BlockNumber directory_start;
	uint32		list_page_capacity; /* entries per list page */
	uint64		training_rows;	/* rows in the training sample */
	uint64		build_rows;		/* rows indexed by the build */
	uint64		build_id;		/* changes whenever centroids/codebooks change */
	/* added after format 1 shipped: older metapages read 0 here */
	uint32		inherited;		/* 1: centroids/codebooks copied from another index */
	TimestampTz built_at;		/* when the build finished (0: unknown) */
	uint32		filter_columns;	/* index columns after the vector (version 0.4;
								 * older metapages read 0: none) */
} IvfpqMetaPageData;

typedef IvfpqMetaPageData *IvfpqMetaPage;

#define IvfpqPageGetMeta(page) ((IvfpqMetaPage) PageGetContents(page))

typedef struct IvfpqDirEntryData
{
	BlockNumber first_block;	/* first page of the list, or Invalid */
	BlockNumber tail_block;		/* hint: last page (inserts go here) */
} IvfpqDirEntryData;

typedef IvfpqDirEntryData *IvfpqDirEntry;

/*
 * A deleted page's contents: the next transaction id when VACUUM unlinked it.
 * The page may be handed out again once no running transaction is older
 * (IvfpqPageIsRecyclable), because only such a transaction can have read a
 * pointer to it (an inserter's tail hint) before the unlink.
 */
typedef struct IvfpqDeletedPageData
{
	FullTransactionId delete_xid;
} IvfpqDeletedPageData;

/* Usable bytes of a page between the header and the special space. */
#define IVFPQ_PAGE_CONTENT_BYTES \
	(BLCKSZ - MAXALIGN(SizeOfPageHeaderData) - MAXALIGN(sizeof(IvfpqPageOpaqueData)))
#define IVFPQ_FLOATS_PER_PAGE		(IVFPQ_PAGE_CONTENT_BYTES / sizeof(float))
#define IVFPQ_DIR_ENTRIES_PER_PAGE	(IVFPQ_PAGE_CONTENT_BYTES / sizeof(IvfpqDirEntryData))

/*
 * The shape of a list page's entry arrays: entries per page, code bytes, and
 * filter columns.  An entry's "payload" (build sort, VACUUM, inserts) is its
 * code followed by IVFPQ_FILTER_VALUE_BYTES per filter column.
 */
typedef struct IvfpqListLayout
{
	int			capacity;
	int			m;				/* sub-quantizers */
	int			nbits;			/* bits per sub-quantizer code: 8 or 4 */
	int			filter_columns;
} IvfpqListLayout;

/* Bytes of one entry's PQ code (m, or m / 2 for 4-bit codes). */
static inline Size
IvfpqCodeBytes(const IvfpqListLayout *layout)
{
	return ivfpq::core::CodeBytes((size_t) layout->m, (size_t) layout->nbits);
}

/* A filter column's value in an entry payload: an int64 key, then 1 if NULL. */
#define IVFPQ_FILTER_VALUE_BYTES	(sizeof(int64) + 1)
#define IVFPQ_MAX_FILTER_COLUMNS	(INDEX_MAX_KEYS - 1)

static inline Size
IvfpqEntryPayloadBytes(const IvfpqListLayout *layout)
{
	return IvfpqCodeBytes(layout) + (Size) layout->filter_columns * IVFPQ_FILTER_VALUE_BYTES;
}

/* reloptions */
typedef struct IvfpqOptions
{
	int32		vl_len_;		/* varlena header */
	int			lists;			/* 0 = derive from the table size */
	int			m;				/* 0 = derive from the dimensions */
	int			nbits;
	int			sample_rows;	/* 0 = derive from lists */
	int			codebooks_from_offset;	/* source index name (string option), 0 = none */
} IvfpqOptions;

/*
 * Everything a backend needs of an index's quantizer, read once from its pages
 * and cached (ivfpq_cache.cpp).  Arrays live in the entry's memory context.
 */
typedef struct IvfpqQuantizer
{
	Oid			index_oid;
	Oid			relfilenode;
	uint64		build_id;
	IvfpqShapeData shape;
	bool		trained;
	int			list_page_capacity;
	int			filter_columns;	/* index columns after the vector */
	BlockNumber directory_start;
	float	   *centroids;		/* lists x dim */
	float	   *codebooks;		/* m x ksub x dsub */
	float	   *prepared;		/* core PrepareQuantizer() data, or NULL */
	float	   *centroid_center;	/* dim floats, with term_tables */
	uint8	   *term_tables;	/* lists x TermTableBytes, or NULL (not cached);
								 * a list's part is valid once term_built says so */
	Size		term_table_bytes;	/* bytes of one list's term table */
	bool		term_tables_tried;	/* allocated, or found not to fit */
	bool	   *term_built;		/* per list: its term table is computed (on the
								 * first probe of the list: IvfpqListTermTable) */
	float	   *coarse_bound;	/* core PrepareCoarseBound() data, or NULL */
	MemoryContext coarse_bound_context;	/* holds coarse_bound */
	bool		coarse_bound_tried;	/* built (or found useless): never again */
	uint64		coarse_uses;	/* rows assigned and scans started with this entry */
	uint64		bounded_searches;	/* of them, through the coarse bound */
	uint64		bounded_reads;	/* centroids read by those */
	BlockNumber *side_pages;	/* per list: this backend's side page (see
								 * ivfpq_insert.cpp), or Invalid; NULL = none yet */
	uint8	   *side_waits;		/* per list: waits for the tail since the last side page */
	BlockNumber *first_blocks;	/* per list: its first page once known, else Invalid;
								 * NULL = none known yet (IvfpqListFirstBlock) */
	int			shared_slot;	/* -1: private arrays; else the arrays live in this
								 * slot of the shared cache (ivfpq_shared_cache.cpp) */
	uint64		shared_generation;	/* the slot's generation when it was viewed */
	uint64		shared_epoch;	/* the backend's pin epoch when last pinned */
	int			pin_count;		/* scans using it in this transaction */
	uint64		last_used;		/* cache clock at the last lookup (LRU) */
	Size		bytes;			/* memory of the entry's context */
	MemoryContext context;
} IvfpqQuantizer;

/* ---------- ivfpq_am.cpp ---------- */
extern "C" Datum ivfpqhandler(PG_FUNCTION_ARGS);
extern void IvfpqInitReloptions(void);
extern int	IvfpqGetMetric(Relation index);
extern const char *IvfpqMetricName(int metric);
extern const char *IvfpqOptionsCodebooksFrom(const IvfpqOptions *options);
extern ivfpq::core::QuantizerShape IvfpqCoreShape(const IvfpqShapeData *shape);
extern ivfpq::core::QuantizerView IvfpqMakeView(const IvfpqShapeData *shape,
												const float *centroids, const float *codebooks);
extern ivfpq::core::QuantizerView IvfpqView(const IvfpqQuantizer *q);

/* ---------- ivfpq_pages.cpp ---------- */
extern void IvfpqInitPage(Page page, uint16 page_type);
extern Buffer IvfpqNewBuffer(Relation index, ForkNumber fork);
extern void IvfpqReadMeta(Relation index, IvfpqMetaPageData *meta);
extern Size IvfpqListCodeOffset(int capacity);
extern int	IvfpqListPageCapacity(int m, int nbits, int filter_columns);
extern IvfpqListLayout IvfpqMetaLayout(const IvfpqMetaPageData *meta);
extern Size IvfpqListLayoutBytes(const IvfpqListLayout *layout);
extern int64 *IvfpqListFilterKeys(Page page, const IvfpqListLayout *layout, int column);
extern uint8 *IvfpqListFilterNulls(Page page, const IvfpqListLayout *layout, int column);
extern void IvfpqStoreEntry(Page page, const IvfpqListLayout *layout, int slot, ItemPointer tid,
							const uint8 *payload);
extern void IvfpqLoadEntry(Page page, const IvfpqListLayout *layout, int slot, ItemPointer tid,
						   uint8 *payload);
extern void IvfpqClearEntry(Page page, const IvfpqListLayout *layout, int slot);
extern Buffer IvfpqNewListBuffer(Relation index);
extern Buffer IvfpqChainNext(Relation index, Buffer buffer, int lock_mode, BufferAccessStrategy strategy);
extern bool IvfpqPageIsRecyclable(Page page);
extern void IvfpqRefreshHorizons(void);
extern void IvfpqInitDeletedPage(Page page, BlockNumber next_block);
extern ItemPointer IvfpqListTids(Page page);
extern uint8 *IvfpqListCodes(Page page, int capacity);
extern void IvfpqInitListPage(Page page, const IvfpqListLayout *layout, int list);
extern void IvfpqWriteFloatPages(Relation index, ForkNumber fork, const float *values,
								 Size count, BlockNumber *first_block);
extern void IvfpqReadQuantizerArrays(Relation index, const IvfpqMetaPageData *meta,
									 float *centroids, float *codebooks);
extern void IvfpqReadDirEntry(Relation index, BlockNumber directory_start, int list,
							  IvfpqDirEntryData *entry);
extern int64 IvfpqCountListEntries(Relation index, BlockNumber directory_start, int list,
								   BufferAccessStrategy strategy, int64 *pages, int64 *inserted);
extern void IvfpqNormalize(float *x, int dim, bool *is_zero);

/* First block after the directory: list, deleted and free pages live from here. */
static inline BlockNumber
IvfpqFirstListBlock(const IvfpqMetaPageData *meta)
{
	return meta->directory_start +
		(BlockNumber) ((Max(meta->shape.lists, 1) + IVFPQ_DIR_ENTRIES_PER_PAGE - 1) / IVFPQ_DIR_ENTRIES_PER_PAGE);
}

/* ---------- ivfpq_filter.cpp ---------- */
typedef struct IvfpqFilter IvfpqFilter;
extern int	IvfpqIndexFilterColumns(Relation index);
extern bool IvfpqFilterTypeSupported(Oid type);
extern void IvfpqCheckFilterColumns(Relation index);
extern void IvfpqEncodeFilterValues(Relation index, const Datum *values, const bool *isnull,
									uint8 *out);
extern IvfpqFilter *IvfpqCompileFilter(Relation index, ScanKey keys, int nkeys);
extern bool IvfpqFilterImpossible(const IvfpqFilter *filter);
extern int	IvfpqFilterPage(const IvfpqFilter *filter, Page page, const IvfpqListLayout *layout,
							int n, bool *pass);

/* ---------- ivfpq_cache.cpp ---------- */
extern IvfpqQuantizer *IvfpqGetQuantizer(Relation index, bool pin, bool for_scan);
extern void IvfpqUnpinQuantizer(IvfpqQuantizer *q);
extern int32 IvfpqAssignList(IvfpqQuantizer *q, const float *x);
extern const float *IvfpqCoarseBound(IvfpqQuantizer *q);
extern BlockNumber IvfpqListFirstBlock(Relation index, IvfpqQuantizer *q, int list);
extern BlockNumber *IvfpqCacheListBlocks(IvfpqQuantizer *q);
extern IvfpqListLayout IvfpqQuantizerLayout(const IvfpqQuantizer *q);
extern const uint8 *IvfpqListTermTable(IvfpqQuantizer *q, int list);
extern Size IvfpqTermTableRoom(const IvfpqQuantizer *q);
extern void IvfpqCoarseBoundReads(IvfpqQuantizer *q, size_t reads);

/* ---------- ivfpq_shared_cache.cpp ---------- */
extern int	ivfpq_shared_cache_mb;
extern bool ivfpq_shared_cache_enabled;
extern void IvfpqSharedCacheInit(void);
extern IvfpqQuantizer *IvfpqSharedFind(Relation index, const IvfpqMetaPageData *meta);
extern bool IvfpqSharedPublish(IvfpqQuantizer *q);
extern bool IvfpqSharedPin(IvfpqQuantizer *q);
extern void IvfpqSharedRelease(void);
extern const float *IvfpqSharedCoarseBound(IvfpqQuantizer *q);
extern const float *IvfpqSharedPublishCoarseBound(IvfpqQuantizer *q, const float *bound, Size floats);

/* ---------- ivfpq_insert.cpp ---------- */
extern void IvfpqAppendEntry(Relation index, IvfpqQuantizer *q, int list,
							 ItemPointer tid, const uint8 *payload);

/* ---------- ivfpq_stats.cpp ---------- */
extern void IvfpqCheckReadable(Relation index, const char *function);

/* ---------- ivfpq_siblings.cpp ---------- */
extern void IvfpqSiblingsInit(void);
extern int	IvfpqSiblingScans(Oid index_oid);

/* ---------- phase entry points ---------- */
extern IndexBuildResult *ivfpqbuild(Relation heap, Relation index, IndexInfo *indexInfo);
extern void ivfpqbuildempty(Relation index);
extern bool ivfpqinsert(Relation index, Datum *values, bool *isnull, ItemPointer heap_tid,
						Relation heap, IndexUniqueCheck checkUnique, bool indexUnchanged,
						IndexInfo *indexInfo);
extern IndexBulkDeleteResult *ivfpqbulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
											  IndexBulkDeleteCallback callback, void *callback_state);
extern IndexBulkDeleteResult *ivfpqvacuumcleanup(IndexVacuumInfo *info, IndexBulkDeleteResult *stats);
extern IndexScanDesc ivfpqbeginscan(Relation index, int nkeys, int norderbys);
extern void ivfpqrescan(IndexScanDesc scan, ScanKey keys, int nkeys, ScanKey orderbys, int norderbys);
extern bool ivfpqgettuple(IndexScanDesc scan, ScanDirection dir);
extern void ivfpqendscan(IndexScanDesc scan);

#endif							/* IVFPQ_AM_H */
