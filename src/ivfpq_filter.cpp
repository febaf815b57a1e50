/*
 * ivfpq_filter.cpp
 *		Filter columns: the scalar columns after the vector in a multicolumn
 *		index, CREATE INDEX ... USING ivfpq (embedding, category), whose
 *		conditions the scan checks on the list pages before re-ranking.
 *
 * A filtered query, WHERE category = 3 ORDER BY embedding <-> $1 LIMIT 10,
 * would otherwise re-rank the nearest candidates of all categories and let
 * the executor drop most of them: the first batch then holds few rows that
 * pass, and the query returns rows from farther down the candidate list.
 * With the column in the index, every entry carries the row's value and the
 * scan keeps only the entries that pass (as Milvus does with a bitset before
 * ranking), so the re-rank depth (ivfpq.rerank) is spent on rows the query
 * wants, and the scan probes further lists until it has enough of them.
 *
 * Values are stored as order-preserving int64 keys: integers, dates and
 * timestamps as themselves; float4 and float8 as the bits of the
 * double, negative values flipped, -0 as 0 and NaN above +Infinity, as
 * Postgres orders them.  So the conditions of a column (=, <, <=, >=, >,
 * IS NULL, IS NOT NULL) come down to an interval of keys and whether NULL
 * passes, whatever the type.
 *
 * IN lists (= ANY (array)) stay above the scan: Postgres 15 does not plan an
 * array condition on an index column after the first together with an
 * ORDER BY (indxpath.c keeps index order only without such "lower"
 * ScalarArrayOpExprs), so the executor checks them on the rows returned.  The operator classes of the SQL
 * script put int2, int4 and int8 in one family (and float4 with float8), so
 * a condition may compare a column with a constant of another width: both
 * sides convert to the key exactly, as the built-in cross-type operators
 * compare.
 */
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>

#include "ivfpq_am.h"

extern "C"
{
#include "access/skey.h"
#include "access/stratnum.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
}

/* One filter column's compiled conditions. */
typedef struct IvfpqColumnFilter
{
	int			column;			/* filter column, 0 = the index's second column */
	bool		want_null;		/* IS NULL */
	bool		want_not_null;	/* any condition on a value, or IS NOT NULL */
	int64		lo;				/* keys in [lo, hi] pass */
	int64		hi;
} IvfpqColumnFilter;

struct IvfpqFilter
{
	bool		impossible;		/* no row can pass (x = NULL, lo > hi) */
	int			count;
	IvfpqColumnFilter columns[FLEXIBLE_ARRAY_MEMBER];
};

/* Index columns after the vector column. */
int
IvfpqIndexFilterColumns(Relation index)
{
	return IndexRelationGetNumberOfKeyAttributes(index) - 1;
}

/* Types a filter column may have (their opclasses are in the SQL script). */
bool
IvfpqFilterTypeSupported(Oid type)
{
	switch (type)
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case FLOAT4OID:
		case FLOAT8OID:
		case DATEOID:
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			return true;
		default:
			return false;
	}
}

static Oid
IvfpqIndexColumnType(Relation index, int attno)
{
	return TupleDescAttr(RelationGetDescr(index), attno - 1)->atttypid;
}

/*
 * CREATE INDEX: the vector column first, then only supported scalar
 * columns.  (The operator classes already restrict the types; this says
 * what is wrong when the columns are in the wrong places.)
 */
void
IvfpqCheckFilterColumns(Relation index)
{
	int			natts = IndexRelationGetNumberOfKeyAttributes(index);

	if (IvfpqFilterTypeSupported(IvfpqIndexColumnType(index, 1)))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("the first column of an ivfpq index must be its vector column"),
				 errhint("Put the vector column first and filter columns after it, as in "
						 "USING ivfpq (embedding, category).")));
	for (int attno = 2; attno <= natts; attno++)
		if (!IvfpqFilterTypeSupported(IvfpqIndexColumnType(index, attno)))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("column %d of an ivfpq index has type %s, which cannot be a filter column",
							attno, format_type_be(IvfpqIndexColumnType(index, attno))),
					 errdetail("An ivfpq index holds one vector column, first; the columns after it "
							   "are filter columns of type smallint, integer, bigint, real, "
							   "double precision, date, timestamp or timestamptz.")));
}

/* The order-preserving key of a float8: see the file header. */
static int64
IvfpqDoubleKey(double value)
{
	int64		bits;

	if (std::isnan(value))
		value = std::numeric_limits<double>::quiet_NaN();
	else if (value == 0)
		value = 0;				/* -0 = 0 */
	memcpy(&bits, &value, sizeof(bits));
	if (std::isnan(value))
		bits &= INT64_MAX;		/* the positive quiet NaN: above +Infinity */
	return bits >= 0 ? bits : bits ^ INT64_MAX;
}

/* The key of a value of a supported type. */
static int64
IvfpqFilterKey(Oid type, Datum value)
{
	switch (type)
	{
		case INT2OID:
			return DatumGetInt16(value);
		case INT4OID:
			return DatumGetInt32(value);
		case INT8OID:
			return DatumGetInt64(value);
		case FLOAT4OID:
			return IvfpqDoubleKey((double) DatumGetFloat4(value));
		case FLOAT8OID:
			return IvfpqDoubleKey(DatumGetFloat8(value));
		case DATEOID:
			return DatumGetDateADT(value);
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			return DatumGetTimestamp(value);
		default:
			elog(ERROR, "ivfpq: type %u is not a filter column type", type);
			return 0;
	}
}

/*
 * The payload bytes of a row's filter columns (values[1..]): per column the
 * int64 key, then 1 if NULL (IVFPQ_FILTER_VALUE_BYTES).
 */
void
IvfpqEncodeFilterValues(Relation index, const Datum *values, const bool *isnull, uint8 *out)
{
	int			natts = IndexRelationGetNumberOfKeyAttributes(index);

	for (int attno = 2; attno <= natts; attno++)
	{
		int64		key = 0;

		if (!isnull[attno - 1])
			key = IvfpqFilterKey(IvfpqIndexColumnType(index, attno), values[attno - 1]);
		memcpy(out, &key, sizeof(int64));
		out[sizeof(int64)] = isnull[attno - 1] ? 1 : 0;
		out += IVFPQ_FILTER_VALUE_BYTES;
	}
}

/* Narrow a column's interval by one comparison with a key; false if nothing can pass. */
static bool
IvfpqNarrow(IvfpqColumnFilter *f, StrategyNumber strategy, int64 key)
{
	switch (strategy)
	{
		case BTLessStrategyNumber:
			if (key == INT64_MIN)
				return false;
			f->hi = Min(f->hi, key - 1);
			break;
		case BTLessEqualStrategyNumber:
			f->hi = Min(f->hi, key);
			break;
		case BTEqualStrategyNumber:
			f->lo = Max(f->lo, key);
			f->hi = Min(f->hi, key);
			break;
		case BTGreaterEqualStrategyNumber:
			f->lo = Max(f->lo, key);
			break;
		case BTGreaterStrategyNumber:
			if (key == INT64_MAX)
				return false;
			f->lo = Max(f->lo, key + 1);
			break;
		default:
			elog(ERROR, "ivfpq: unknown filter strategy %d", strategy);
	}
	return f->lo <= f->hi;
}

/* One scan key on a filter column; false if no row can pass it. */
static bool
IvfpqCompileKey(IvfpqColumnFilter *f, ScanKey key, Oid column_type)
{
	Oid			arg_type = OidIsValid(key->sk_subtype) ? key->sk_subtype : column_type;

	if (key->sk_flags & SK_ISNULL)
	{
		if (key->sk_flags & SK_SEARCHNULL)
			f->want_null = true;
		else if (key->sk_flags & SK_SEARCHNOTNULL)
			f->want_not_null = true;
		else
			return false;		/* a comparison with NULL is never true */
		return !(f->want_null && f->want_not_null);
	}
	f->want_not_null = true;
	if (f->want_null)
		return false;

	/* amsearcharray is off: Postgres 15 plans no = ANY (array) on a later column with an ORDER BY. */
	if (key->sk_flags & SK_SEARCHARRAY)
		elog(ERROR, "ivfpq: array scan key on a filter column");
	return IvfpqNarrow(f, key->sk_strategy, IvfpqFilterKey(arg_type, key->sk_argument));
}

/*
 * The scan's conditions on filter columns, compiled in the current memory
 * context; NULL when there are none.
 */
IvfpqFilter *
IvfpqCompileFilter(Relation index, ScanKey keys, int nkeys)
{
	int			columns = IvfpqIndexFilterColumns(index);
	IvfpqFilter *filter;
	int		   *slot_of;

	if (nkeys == 0 || columns == 0)
		return NULL;
	filter = (IvfpqFilter *) palloc0(offsetof(IvfpqFilter, columns) + sizeof(IvfpqColumnFilter) * columns);
	slot_of = (int *) palloc(sizeof(int) * columns);
	for (int c = 0; c < columns; c++)
		slot_of[c] = -1;
	for (int i = 0; i < nkeys; i++)
	{
		ScanKey		key = &keys[i];
		int			column = key->sk_attno - 2;
		IvfpqColumnFilter *f;

		if (column < 0 || column >= columns)
			elog(ERROR, "ivfpq: scan key on index column %d", key->sk_attno);
		if (slot_of[column] < 0)
		{
			slot_of[column] = filter->count++;
			f = &filter->columns[slot_of[column]];
			f->column = column;
			f->lo = INT64_MIN;
			f->hi = INT64_MAX;
		}
		f = &filter->columns[slot_of[column]];
		if (!IvfpqCompileKey(f, key, IvfpqIndexColumnType(index, key->sk_attno)))
			filter->impossible = true;
	}
	return filter;
}

bool
IvfpqFilterImpossible(const IvfpqFilter *filter)
{
	return filter != NULL && filter->impossible;
}

/*
 * Which of the first n entries of a list page pass the filter: pass[i] for
 * each; returns how many pass.
 */
int
IvfpqFilterPage(const IvfpqFilter *filter, Page page, const IvfpqListLayout *layout, int n, bool *pass)
{
	int			passed = 0;

	for (int i = 0; i < n; i++)
		pass[i] = true;
	for (int c = 0; c < filter->count; c++)
	{
		const IvfpqColumnFilter *f = &filter->columns[c];
		const int64 *keys = IvfpqListFilterKeys(page, layout, f->column);
		const uint8 *nulls = IvfpqListFilterNulls(page, layout, f->column);

		for (int i = 0; i < n; i++)
		{
			bool		is_null = (nulls[i / 8] >> (i % 8)) & 1;
			bool		ok;

			if (f->want_null)
				ok = is_null;
			else if (is_null)
				ok = !f->want_not_null;
			else
				ok = keys[i] >= f->lo && keys[i] <= f->hi;
			pass[i] = pass[i] && ok;
		}
	}
	for (int i = 0; i < n; i++)
		passed += pass[i];
	return passed;
}
