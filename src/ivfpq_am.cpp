/*
 * ivfpq_am.cpp
 *		The access method handler: capabilities, reloptions, cost estimate,
 *		opclass validation and build phase names.
 */
#include <cfloat>

#include "ivfpq_am.h"

extern "C"
{
#include "access/amvalidate.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "catalog/pg_amop.h"
#include "catalog/pg_amproc.h"
#include "catalog/pg_opclass.h"
#include "catalog/pg_type.h"
#include "commands/vacuum.h"
#include "commands/progress.h"
#include "optimizer/optimizer.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/selfuncs.h"
#include "utils/spccache.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(ivfpqhandler);
PG_FUNCTION_INFO_V1(ivfpq_metric_l2);
PG_FUNCTION_INFO_V1(ivfpq_metric_ip);
PG_FUNCTION_INFO_V1(ivfpq_metric_cosine);
}

static relopt_kind ivfpq_relopt_kind;

/* codebooks_from must parse as a (possibly schema-qualified) name. */
static void
IvfpqValidateCodebooksFrom(const char *value)
{
	if (value != NULL)
		(void) stringToQualifiedNameList(value);
}

/* Register the index options; called once from _PG_init. */
void
IvfpqInitReloptions(void)
{
	ivfpq_relopt_kind = add_reloption_kind();
	add_int_reloption(ivfpq_relopt_kind, "lists",
					  "Number of inverted lists (0 = derived from the table size)",
					  0, 0, IVFPQ_MAX_LISTS, AccessExclusiveLock);
	add_int_reloption(ivfpq_relopt_kind, "m",
					  "Bytes per PQ code; must divide the dimensions (0 = derived)",
					  0, 0, IVFPQ_MAX_M, AccessExclusiveLock);
	add_int_reloption(ivfpq_relopt_kind, "nbits",
					  "Bits per sub-quantizer code: 8 (256 codewords) or 4 (16 codewords, fast scan)",
					  IVFPQ_DEFAULT_NBITS, 1, 16, AccessExclusiveLock);
	add_int_reloption(ivfpq_relopt_kind, "sample_rows",
					  "Rows sampled to train centroids and codebooks (0 = derived)",
					  0, 0, 10000000, AccessExclusiveLock);
	/* Only read by the next build, so changing it need not block queries. */
	add_string_reloption(ivfpq_relopt_kind, "codebooks_from",
						 "Trained ivfpq index whose centroids and codebooks a build copies instead of training",
						 NULL, IvfpqValidateCodebooksFrom, ShareUpdateExclusiveLock);
}

/* Parse and validate WITH (...) options. */
static bytea *
ivfpqoptions(Datum reloptions, bool validate)
{
	static const relopt_parse_elt tab[] = {
		{"lists", RELOPT_TYPE_INT, offsetof(IvfpqOptions, lists)},
		{"m", RELOPT_TYPE_INT, offsetof(IvfpqOptions, m)},
		{"nbits", RELOPT_TYPE_INT, offsetof(IvfpqOptions, nbits)},
		{"sample_rows", RELOPT_TYPE_INT, offsetof(IvfpqOptions, sample_rows)},
		{"codebooks_from", RELOPT_TYPE_STRING, offsetof(IvfpqOptions, codebooks_from_offset)},
	};
	IvfpqOptions *options;

	options = (IvfpqOptions *) build_reloptions(reloptions, validate, ivfpq_relopt_kind,
												sizeof(IvfpqOptions), tab, lengthof(tab));
	if (validate && options != NULL && options->nbits != 8 && options->nbits != 4)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("nbits = %d is not supported", options->nbits),
				 errdetail("ivfpq stores 8-bit PQ codes (256 codewords per sub-quantizer) or 4-bit ones (16 codewords, scanned with in-register tables)."),
				 errhint("Omit nbits or set nbits = 8 or nbits = 4.")));
	return (bytea *) options;
}

/* The codebooks_from option, or NULL when not set. */
const char *
IvfpqOptionsCodebooksFrom(const IvfpqOptions *options)
{
	if (options == NULL || options->codebooks_from_offset == 0)
		return NULL;
	return (const char *) options + options->codebooks_from_offset;
}

/* The SQL name of a metric (ivfpq_index_stats, messages). */
const char *
IvfpqMetricName(int metric)
{
	switch (metric)
	{
		case IVFPQ_METRIC_IP:
			return "inner_product";
		case IVFPQ_METRIC_COSINE:
			return "cosine";
		default:
			return "l2";
	}
}

/* The metric of an index, from its opclass's metric support function. */
int
IvfpqGetMetric(Relation index)
{
	FmgrInfo   *proc = index_getprocinfo(index, 1, IVFPQ_METRIC_PROC);
	int			metric = DatumGetInt32(FunctionCall1(proc, (Datum) 0));

	if (metric < IVFPQ_METRIC_L2 || metric > IVFPQ_METRIC_COSINE)
		elog(ERROR, "ivfpq: unknown metric %d from opclass", metric);
	return metric;
}

/* The core's description of a shape. */
ivfpq::core::QuantizerShape
IvfpqCoreShape(const IvfpqShapeData *shape)
{
	ivfpq::core::QuantizerShape core_shape;

	core_shape.dim = (size_t) shape->dim;
	core_shape.lists = (size_t) shape->lists;
	core_shape.m = (size_t) shape->m;
	core_shape.nbits = (size_t) shape->nbits;
	core_shape.metric = (ivfpq::core::Metric) shape->metric;
	return core_shape;
}

/* Core view over centroids and codebooks owned by the caller. */
ivfpq::core::QuantizerView
IvfpqMakeView(const IvfpqShapeData *shape, const float *centroids, const float *codebooks)
{
	ivfpq::core::QuantizerView view;

	static_cast<ivfpq::core::QuantizerShape &>(view) = IvfpqCoreShape(shape);
	view.centroids = centroids;
	view.codebooks = codebooks;
	return view;
}

/* Core view over a cached quantizer. */
ivfpq::core::QuantizerView
IvfpqView(const IvfpqQuantizer *q)
{
	return IvfpqMakeView(&q->shape, q->centroids, q->codebooks);
}

/*
 * Dimensions whose distance costs about one cpu_operator_cost: the kernels
 * compare 8 floats per SIMD instruction, and an operator call of the
 * executor costs about as much as 64 of those lanes.
 */
#define IVFPQ_DIMS_PER_OPERATOR 64

/*
 * Cost.  The first batch (distances to all centroids, the probed lists,
 * the re-rank of the best candidates) is computed before the first row, so
 * it is startup cost.  Every further row costs a heap fetch and an exact
 * distance (the iterative scan re-ranks the next candidates and probes
 * further lists), so returning all rows is far dearer than the first batch:
 * with LIMIT k the planner then prefers a MergeAppend of partitions' index
 * scans (the sum of their startup costs) over sorting everything they would
 * return.  Without an ORDER BY distance the index is useless: a prohibitive
 * cost.
 *
 * The numbers: genericcostestimate charges for the index pages and entries
 * of the probed fraction (ivfpq.probes / lists) of the index.  On top of it:
 * one distance to every centroid, and for each of the ivfpq.rerank best
 * candidates (then for every other row) a heap fetch plus an exact distance.
 * Those fetches go to scattered heap pages (the candidates are sorted by
 * block, but a hundred candidates among millions of rows rarely share a
 * page), so each is a random page read of the table's tablespace, not a
 * sequential one.
 */
static void
ivfpqcostestimate(PlannerInfo *root, IndexPath *path, double loop_count,
				  Cost *indexStartupCost, Cost *indexTotalCost,
				  Selectivity *indexSelectivity, double *indexCorrelation,
				  double *indexPages)
{
	GenericCosts costs;
	Relation	index;
	IvfpqMetaPageData meta;
	double		ratio;
	double		tuples = path->indexinfo->tuples;
	double		first_batch;
	Selectivity filter_selectivity = 1.0;
	List	   *filter_quals;
	double		heap_random_page_cost;
	double		distance_cost;
	double		fetch_cost;

	if (path->indexorderbys == NIL)
	{
		*indexStartupCost = DBL_MAX / 1e6;
		*indexTotalCost = DBL_MAX / 1e6;
		*indexSelectivity = 0;
		*indexCorrelation = 0;
		*indexPages = 0;
		return;
	}

	index = index_open(path->indexinfo->indexoid, NoLock);
	IvfpqReadMeta(index, &meta);
	index_close(index, NoLock);

	/*
	 * Conditions on filter columns: the scan returns only the rows that
	 * pass, and probes lists until it has a batch of them, so the more
	 * selective they are the more of the index it reads.
	 */
	filter_quals = get_quals_from_indexclauses(path->indexclauses);
	if (filter_quals != NIL)
		filter_selectivity = Max(clauselist_selectivity(root, filter_quals, path->indexinfo->rel->relid,
														JOIN_INNER, NULL), 1e-9);
	tuples *= filter_selectivity;
	first_batch = Min((double) ivfpq_rerank, tuples);

	ratio = meta.shape.lists > 0 ? (double) ivfpq_probes / meta.shape.lists / filter_selectivity : 1.0;
	if (ratio > 1.0 || !meta.trained)
		ratio = 1.0;

	MemSet(&costs, 0, sizeof(costs));
	costs.numIndexTuples = path->indexinfo->tuples * ratio;
	genericcostestimate(root, path, loop_count, &costs);

	distance_cost = cpu_operator_cost * Max(1, meta.shape.dim / IVFPQ_DIMS_PER_OPERATOR);
	get_tablespace_page_costs(path->indexinfo->rel->reltablespace, &heap_random_page_cost, NULL);
	fetch_cost = heap_random_page_cost + distance_cost;

	*indexStartupCost = costs.indexTotalCost + meta.shape.lists * distance_cost + first_batch * fetch_cost;
	*indexTotalCost = *indexStartupCost + Max(tuples - first_batch, 0) * fetch_cost;
	*indexSelectivity = costs.indexSelectivity;
	*indexCorrelation = 0;
	*indexPages = costs.numIndexPages;
}

/*
 * A filter column's opclass: search operators with the btree strategy
 * numbers (1 <, 2 <=, 3 =, 4 >=, 5 >) returning boolean, the left side of
 * the opclass's type, no support functions.
 */
static bool
IvfpqValidateFilterOpclass(Oid opfamilyoid, Oid opcintype, const char *opclassname)
{
	bool		result = true;
	CatCList   *proclist = SearchSysCacheList1(AMPROCNUM, ObjectIdGetDatum(opfamilyoid));
	CatCList   *oprlist;
	bool		has_equal = false;

	for (int i = 0; i < proclist->n_members; i++)
	{
		Form_pg_amproc proc = (Form_pg_amproc) GETSTRUCT(&proclist->members[i]->tuple);

		if (proc->amproclefttype != opcintype)
			continue;
		ereport(INFO,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("ivfpq filter operator class \"%s\" contains function %s: filter columns have no support functions",
						opclassname, format_procedure(proc->amproc))));
		result = false;
	}
	ReleaseSysCacheList(proclist);

	oprlist = SearchSysCacheList1(AMOPSTRATEGY, ObjectIdGetDatum(opfamilyoid));
	for (int i = 0; i < oprlist->n_members; i++)
	{
		Form_pg_amop op = (Form_pg_amop) GETSTRUCT(&oprlist->members[i]->tuple);

		if (op->amoplefttype != opcintype)
			continue;
		if (op->amopstrategy < 1 || op->amopstrategy > 5 || op->amoppurpose != AMOP_SEARCH ||
			!IvfpqFilterTypeSupported(op->amoprighttype) ||
			!check_amop_signature(op->amopopr, BOOLOID, opcintype, op->amoprighttype))
		{
			ereport(INFO,
					(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
					 errmsg("ivfpq filter operator class \"%s\" contains invalid operator %s: only search strategies 1 to 5 returning boolean",
							opclassname, format_operator(op->amopopr))));
			result = false;
		}
		else if (op->amopstrategy == 3 && op->amoprighttype == opcintype)
			has_equal = true;
	}
	ReleaseSysCacheList(oprlist);
	if (!has_equal)
	{
		ereport(INFO,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("ivfpq filter operator class \"%s\" is missing its = operator (strategy 3)", opclassname)));
		result = false;
	}
	return result;
}

/*
 * amvalidate: an ivfpq opclass has one ORDER BY operator (strategy 1,
 * vector x vector -> float8, sorted by a btree family that can sort float8)
 * and support function 2, the metric tag (internal -> int4).  Support
 * function 1 (an exact distance) was required by version 0.1 and never
 * called; opclasses created then still carry it, so it is accepted when its
 * signature is right, and not required.  Problems are reported as INFO, as
 * the built-in access methods do.
 */
static bool
ivfpqvalidate(Oid opclassoid)
{
	bool		result = true;
	HeapTuple	classtup;
	Form_pg_opclass classform;
	Oid			opfamilyoid;
	Oid			opcintype;
	char	   *opclassname;
	CatCList   *proclist;
	CatCList   *oprlist;
	bool		has_metric = false;
	bool		has_order_by = false;

	classtup = SearchSysCache1(CLAOID, ObjectIdGetDatum(opclassoid));
	if (!HeapTupleIsValid(classtup))
		elog(ERROR, "cache lookup failed for operator class %u", opclassoid);
	classform = (Form_pg_opclass) GETSTRUCT(classtup);
	opfamilyoid = classform->opcfamily;
	opcintype = classform->opcintype;
	opclassname = NameStr(classform->opcname);

	if (IvfpqFilterTypeSupported(opcintype))
	{
		result = IvfpqValidateFilterOpclass(opfamilyoid, opcintype, opclassname);
		ReleaseSysCache(classtup);
		return result;
	}

	proclist = SearchSysCacheList1(AMPROCNUM, ObjectIdGetDatum(opfamilyoid));
	for (int i = 0; i < proclist->n_members; i++)
	{
		Form_pg_amproc proc = (Form_pg_amproc) GETSTRUCT(&proclist->members[i]->tuple);
		bool		ok;

		if (proc->amproclefttype != opcintype || proc->amprocrighttype != opcintype)
			continue;			/* another opclass of the family */
		if (proc->amprocnum == IVFPQ_METRIC_PROC)
		{
			ok = check_amproc_signature(proc->amproc, INT4OID, true, 1, 1, INTERNALOID);
			has_metric = true;
		}
		else if (proc->amprocnum == IVFPQ_RETIRED_DISTANCE_PROC)
			ok = check_amproc_signature(proc->amproc, FLOAT8OID, true, 2, 2, opcintype, opcintype);
		else
		{
			ereport(INFO,
					(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
					 errmsg("ivfpq operator class \"%s\" contains function %s with invalid support number %d",
							opclassname, format_procedure(proc->amproc), proc->amprocnum)));
			result = false;
			continue;
		}
		if (!ok)
		{
			ereport(INFO,
					(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
					 errmsg("ivfpq operator class \"%s\" contains function %s with wrong signature for support number %d",
							opclassname, format_procedure(proc->amproc), proc->amprocnum)));
			result = false;
		}
	}
	ReleaseSysCacheList(proclist);

	oprlist = SearchSysCacheList1(AMOPSTRATEGY, ObjectIdGetDatum(opfamilyoid));
	for (int i = 0; i < oprlist->n_members; i++)
	{
		Form_pg_amop op = (Form_pg_amop) GETSTRUCT(&oprlist->members[i]->tuple);

		if (op->amoplefttype != opcintype || op->amoprighttype != opcintype)
			continue;
		if (op->amopstrategy != 1 || op->amoppurpose != AMOP_ORDER ||
			!opfamily_can_sort_type(op->amopsortfamily, FLOAT8OID) ||
			!check_amop_signature(op->amopopr, FLOAT8OID, opcintype, opcintype))
		{
			ereport(INFO,
					(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
					 errmsg("ivfpq operator class \"%s\" contains invalid operator %s: only strategy 1, ORDER BY, returning float8",
							opclassname, format_operator(op->amopopr))));
			result = false;
		}
		else
			has_order_by = true;
	}
	ReleaseSysCacheList(oprlist);

	if (!has_metric || !has_order_by)
	{
		ereport(INFO,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("ivfpq operator class \"%s\" is missing %s",
						opclassname, !has_metric ? "support function 2 (the metric)" : "its ORDER BY operator")));
		result = false;
	}
	ReleaseSysCache(classtup);
	return result;
}

/* Names of our build sub-phases in pg_stat_progress_create_index. */
static char *
ivfpqbuildphasename(int64 phasenum)
{
	switch (phasenum)
	{
		case PROGRESS_CREATEIDX_SUBPHASE_INITIALIZE:
			return (char *) "initializing";
		case IVFPQ_PHASE_SAMPLE:
			return (char *) "sampling rows";
		case IVFPQ_PHASE_TRAIN:
			return (char *) "training centroids and codebooks";
		case IVFPQ_PHASE_ENCODE:
			return (char *) "assigning and encoding rows";
		case IVFPQ_PHASE_SORT:
			return (char *) "sorting codes by list";
		case IVFPQ_PHASE_WRITE:
			return (char *) "writing lists";
		default:
			return NULL;
	}
}

/* The handler: what ivfpq can do and where each callback lives. */
extern "C" Datum
ivfpqhandler(PG_FUNCTION_ARGS)
{
	IndexAmRoutine *amroutine = makeNode(IndexAmRoutine);

	amroutine->amstrategies = 0;
	amroutine->amsupport = IVFPQ_NUM_PROCS;
	amroutine->amoptsprocnum = 0;
	amroutine->amcanorder = false;
	amroutine->amcanorderbyop = true;
	amroutine->amcanbackward = false;
	amroutine->amcanunique = false;
	amroutine->amcanmulticol = true;	/* the vector, then filter columns */
	amroutine->amoptionalkey = true;
	amroutine->amsearcharray = false;	/* PG 15 would not use it with ORDER BY (ivfpq_filter.cpp) */
	amroutine->amsearchnulls = true;	/* IS [NOT] NULL on filter columns */
	amroutine->amstorage = false;
	amroutine->amclusterable = false;
	amroutine->ampredlocks = false;
	amroutine->amcanparallel = false;
	amroutine->amcaninclude = false;
	amroutine->amusemaintenanceworkmem = true;
	amroutine->amparallelvacuumoptions = VACUUM_OPTION_PARALLEL_BULKDEL;
	amroutine->amkeytype = InvalidOid;

	amroutine->ambuild = ivfpqbuild;
	amroutine->ambuildempty = ivfpqbuildempty;
	amroutine->aminsert = ivfpqinsert;
	amroutine->ambulkdelete = ivfpqbulkdelete;
	amroutine->amvacuumcleanup = ivfpqvacuumcleanup;
	amroutine->amcanreturn = NULL;
	amroutine->amcostestimate = ivfpqcostestimate;
	amroutine->amoptions = ivfpqoptions;
	amroutine->amproperty = NULL;
	amroutine->ambuildphasename = ivfpqbuildphasename;
	amroutine->amvalidate = ivfpqvalidate;
	amroutine->amadjustmembers = NULL;
	amroutine->ambeginscan = ivfpqbeginscan;
	amroutine->amrescan = ivfpqrescan;
	amroutine->amgettuple = ivfpqgettuple;
	amroutine->amgetbitmap = NULL;
	amroutine->amendscan = ivfpqendscan;
	amroutine->ammarkpos = NULL;
	amroutine->amrestrpos = NULL;
	amroutine->amestimateparallelscan = NULL;
	amroutine->aminitparallelscan = NULL;
	amroutine->amparallelrescan = NULL;

	PG_RETURN_POINTER(amroutine);
}

/* Metric tags, used as support function 2 of the opclasses. */
extern "C" Datum
ivfpq_metric_l2(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(IVFPQ_METRIC_L2);
}

extern "C" Datum
ivfpq_metric_ip(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(IVFPQ_METRIC_IP);
}

extern "C" Datum
ivfpq_metric_cosine(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(IVFPQ_METRIC_COSINE);
}
