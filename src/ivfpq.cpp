/*
 * ivfpq.cpp
 *		Module load: GUCs, the interrupt bridge to the core, and the reporting
 *		half of the core-call guard.
 */
#include "ivfpq.h"
#include "ivfpq_am.h"

extern "C"
{
#include "utils/guc.h"

PG_MODULE_MAGIC;

void		_PG_init(void);
}

int			ivfpq_probes = 10;
int			ivfpq_rerank = 100;
int			ivfpq_max_probes = 0;
int			ivfpq_table_cache_mb = 128;
int			ivfpq_cache_mb = 256;
bool		ivfpq_share_rerank = false;
bool		ivfpq_pool_cut = true;

/*
 * Called by core loops and FAISS threads: only reads signal-set flags, never
 * calls Postgres.
 */
static bool
IvfpqInterruptRequested()
{
	return QueryCancelPending || ProcDiePending;
}

extern "C" void
IvfpqReportCoreFailure(const char *what, const ivfpq::core::Failure *failure)
{
	using ivfpq::core::ErrorKind;

	switch (failure->kind)
	{
		case ErrorKind::Cancelled:
			/* Let Postgres raise its own cancel / timeout / terminate error. */
			CHECK_FOR_INTERRUPTS();
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("canceling %s", what)));
			break;
		case ErrorKind::InvalidParameter:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: %s", what, failure->message)));
			break;
		case ErrorKind::DataException:
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("%s: %s", what, failure->message)));
			break;
		case ErrorKind::OutOfMemory:
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory during %s", what),
					 errdetail("%s", failure->message)));
			break;
		case ErrorKind::None:
		case ErrorKind::Internal:
		case ErrorKind::Unknown:
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("%s failed: %s", what, failure->message)));
			break;
	}
	pg_unreachable();
}

void
_PG_init(void)
{
	ivfpq::core::SetInterruptCheck(IvfpqInterruptRequested);

	DefineCustomIntVariable("ivfpq.probes",
							"Number of lists an ivfpq index scan probes first.",
							"Higher values find more true neighbours and cost more time.",
							&ivfpq_probes, 10, 1, 65536,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ivfpq.rerank",
							"Number of PQ candidates re-ranked with exact distances from the heap.",
							"0 returns rows in PQ (approximate) order without reading the heap.",
							&ivfpq_rerank, 100, 0, 100000,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ivfpq.max_probes",
							"Upper bound on lists an iterative scan may probe when more rows are asked for.",
							"0 means no bound (all lists).",
							&ivfpq_max_probes, 0, 0, 65536,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("ivfpq.table_cache_mb",
							"Memory for each L2/cosine index's precomputed distance terms (in the shared cache, or per backend).",
							"With the terms cached, a probed list's distance table costs m x 256 additions "
							"instead of a pass over all codewords.  A list's terms are computed when a scan first probes it.  "
							"0 disables the cache.",
							&ivfpq_table_cache_mb, 128, 0, 65536,
							PGC_USERSET, GUC_UNIT_MB, NULL, NULL, NULL);
	DefineCustomIntVariable("ivfpq.cache_mb",
							"Per-backend memory for quantizers (centroids, codebooks, distance terms) this backend keeps itself.",
							"Quantizers in the shared cache (ivfpq.shared_cache_mb) count only their few bytes here.  "
							"Least recently used entries are evicted beyond it; entries in use by the running query are kept.",
							&ivfpq_cache_mb, 256, 0, 1024 * 1024,
							PGC_USERSET, GUC_UNIT_MB, NULL, NULL, NULL);
	DefineCustomBoolVariable("ivfpq.share_rerank",
							 "Shares ivfpq.rerank among the partitions' index scans of one ordered query.",
							 "Under a MergeAppend of N ivfpq index scans each re-ranks ivfpq.rerank / N "
							 "candidates per batch (at least 10) instead of ivfpq.rerank.",
							 &ivfpq_share_rerank, false, PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("ivfpq.pool_cut",
							 "Keeps only the best candidates of an ivfpq index scan once it has many (for tests and measurement).",
							 "On, a scan of 8-bit codes without filter columns stops copying entries that cannot be among "
							 "its next few batches, and probes its lists again if it ever needs them; the rows returned "
							 "are the same either way.",
							 &ivfpq_pool_cut, true, PGC_USERSET, GUC_NOT_IN_SAMPLE, NULL, NULL, NULL);
	IvfpqWorkerInit();
	IvfpqSiblingsInit();
	IvfpqSharedCacheInit();
	MarkGUCPrefixReserved("ivfpq");

	IvfpqInitReloptions();
}
