/*
 * ivfpq_vector.cpp
 *		The vector type: text and binary I/O (wire-compatible with pgvector),
 *		typmod, casts to and from arrays, distances, arithmetic, comparison,
 *		hashing and the support functions of the avg/sum aggregates.
 *
 * Distances use the core kernels (which never throw, so they are called
 * directly, not through IvfpqCallCore).  Every function keeps only
 * plain-old-data locals, so an ereport longjmp skips no destructor.
 */
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "ivfpq_vector.h"

extern "C"
{
#include "access/toast_compression.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "common/shortest_dec.h"
#include "libpq/pqformat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(vector_in);
PG_FUNCTION_INFO_V1(vector_out);
PG_FUNCTION_INFO_V1(vector_typmod_in);
PG_FUNCTION_INFO_V1(vector_typmod_out);
PG_FUNCTION_INFO_V1(vector_recv);
PG_FUNCTION_INFO_V1(vector_send);
PG_FUNCTION_INFO_V1(vector);
PG_FUNCTION_INFO_V1(array_to_vector);
PG_FUNCTION_INFO_V1(vector_to_float4);
PG_FUNCTION_INFO_V1(l2_distance);
PG_FUNCTION_INFO_V1(vector_l2_squared_distance);
PG_FUNCTION_INFO_V1(inner_product);
PG_FUNCTION_INFO_V1(vector_negative_inner_product);
PG_FUNCTION_INFO_V1(cosine_distance);
PG_FUNCTION_INFO_V1(l1_distance);
PG_FUNCTION_INFO_V1(vector_dims);
PG_FUNCTION_INFO_V1(vector_norm);
PG_FUNCTION_INFO_V1(l2_normalize);
PG_FUNCTION_INFO_V1(vector_add);
PG_FUNCTION_INFO_V1(vector_sub);
PG_FUNCTION_INFO_V1(vector_mul);
PG_FUNCTION_INFO_V1(vector_concat);
PG_FUNCTION_INFO_V1(subvector);
PG_FUNCTION_INFO_V1(vector_lt);
PG_FUNCTION_INFO_V1(vector_le);
PG_FUNCTION_INFO_V1(vector_eq);
PG_FUNCTION_INFO_V1(vector_ne);
PG_FUNCTION_INFO_V1(vector_ge);
PG_FUNCTION_INFO_V1(vector_gt);
PG_FUNCTION_INFO_V1(vector_cmp);
PG_FUNCTION_INFO_V1(vector_hash);
PG_FUNCTION_INFO_V1(vector_hash_extended);
PG_FUNCTION_INFO_V1(vector_accum);
PG_FUNCTION_INFO_V1(vector_combine);
PG_FUNCTION_INFO_V1(vector_avg);
}

using ivfpq::core::CosineDistance;
using ivfpq::core::InnerProduct;
using ivfpq::core::L2SquaredDistance;

/* ---------- shared helpers ---------- */

extern "C" Vector *
IvfpqInitVector(int dim)
{
	Vector	   *result;
	Size		size = VECTOR_SIZE(dim);

	result = (Vector *) palloc0(size);
	SET_VARSIZE(result, size);
	result->dim = (int16) dim;
	return result;
}

extern "C" Vector *
DatumGetVectorBuffered(Datum value, VectorDecodeBuffer *buffer)
{
	struct varlena *raw = (struct varlena *) DatumGetPointer(value);

	if (VARATT_IS_COMPRESSED(raw) &&
		VARDATA_COMPRESSED_GET_COMPRESS_METHOD(raw) == TOAST_PGLZ_COMPRESSION_ID)
	{
		Size		raw_size = VARDATA_COMPRESSED_GET_EXTSIZE(raw);
		Size		need = VARHDRSZ + raw_size + ivfpq::core::kPglzSlack;

		if (need > buffer->capacity)
		{
			if (buffer->context == NULL)
				buffer->context = CurrentMemoryContext;
			if (buffer->data != NULL)
				pfree(buffer->data);
			buffer->data = (char *) MemoryContextAlloc(buffer->context, Max(need, (Size) 4096));
			buffer->capacity = Max(need, (Size) 4096);
		}
		if (ivfpq::core::PglzDecompress((const uint8_t *) VARDATA_4B_C(raw),
										VARSIZE_4B(raw) - VARHDRSZ_COMPRESSED,
										(uint8_t *) buffer->data + VARHDRSZ, raw_size) &&
			VARHDRSZ + raw_size >= offsetof(Vector, x) &&
			VECTOR_SIZE(((Vector *) buffer->data)->dim) == VARHDRSZ + raw_size)
		{
			SET_VARSIZE(buffer->data, VARHDRSZ + raw_size);
			return (Vector *) buffer->data;
		}
		/* Malformed, or not the size its dimensions say: the server's way. */
	}
	return DatumGetVector(value);
}

extern "C" void
IvfpqCheckDim(int dim)
{
	if (dim < 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("vector must have at least 1 dimension")));
	if (dim > IVFPQ_VECTOR_MAX_DIM)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("vector cannot have more than %d dimensions",
						IVFPQ_VECTOR_MAX_DIM)));
}

extern "C" void
IvfpqCheckSameDims(const Vector *a, const Vector *b)
{
	if (a->dim != b->dim)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("different vector dimensions %d and %d", a->dim, b->dim)));
}

/* ereport unless typmod is unset (-1) or equals dim. */
static void
CheckExpectedDim(int32 typmod, int dim)
{
	if (typmod != -1 && typmod != dim)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("expected %d dimensions, not %d", typmod, dim)));
}

/* ereport if a vector element is NaN or infinite. */
static void
CheckElement(float value)
{
	if (std::isnan(value))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("NaN not allowed in vector")));
	if (std::isinf(value))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("infinite value not allowed in vector")));
}

/* ereport if an arithmetic result overflowed to infinity. */
static void
CheckArithmeticResult(const Vector *result)
{
	for (int i = 0; i < result->dim; i++)
	{
		if (std::isinf(result->x[i]))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("value out of range: overflow")));
	}
}

/* The whitespace accepted around numbers, brackets and commas. */
static inline bool
VectorIsSpace(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' ||
		ch == '\v' || ch == '\f';
}

/* Raise the syntax error of vector_in for input literal, with a detail. */
static void
ReportVectorSyntax(const char *literal, const char *detail)
	pg_attribute_noreturn();

static void
ReportVectorSyntax(const char *literal, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("invalid input syntax for type vector: \"%s\"", literal),
			 detail ? errdetail("%s", detail) : 0));
	pg_unreachable();
}

/* ---------- text I/O ---------- */

/* Parse '[x1, x2, ...]' into a vector, checking the typmod (args: text, oid, typmod). */
Datum
vector_in(PG_FUNCTION_ARGS)
{
	char	   *literal = PG_GETARG_CSTRING(0);
	int32		typmod = PG_GETARG_INT32(2);
	const char *pos = literal;
	float	   *values;
	int			capacity = 16;
	int			dim = 0;
	Vector	   *result;

	while (VectorIsSpace(*pos))
		pos++;
	if (*pos != '[')
		ReportVectorSyntax(literal, "A vector literal begins with \"[\".");
	pos++;
	while (VectorIsSpace(*pos))
		pos++;
	if (*pos == ']')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("vector must have at least 1 dimension")));

	values = (float *) palloc(sizeof(float) * capacity);
	for (;;)
	{
		char	   *number_end;
		float		value;

		while (VectorIsSpace(*pos))
			pos++;
		if (*pos == '\0')
			ReportVectorSyntax(literal, "Unexpected end of input.");

		errno = 0;
		value = strtof(pos, &number_end);
		if (number_end == pos)
			ReportVectorSyntax(literal, "Expected a number.");

		/* Overflow is an error, as for real; underflow rounds towards zero. */
		if (errno == ERANGE && std::isinf(value))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("\"%.*s\" is out of range for type vector",
							(int) (number_end - pos), pos)));
		CheckElement(value);

		if (dim == IVFPQ_VECTOR_MAX_DIM)
			IvfpqCheckDim(dim + 1);
		if (dim == capacity)
		{
			capacity *= 2;
			values = (float *) repalloc(values, sizeof(float) * capacity);
		}
		values[dim++] = value;

		pos = number_end;
		while (VectorIsSpace(*pos))
			pos++;
		if (*pos == ',')
		{
			pos++;
			continue;
		}
		if (*pos == ']')
		{
			pos++;
			break;
		}
		if (*pos == '\0')
			ReportVectorSyntax(literal, "Unexpected end of input.");
		ReportVectorSyntax(literal, "Expected \",\" or \"]\" after a number.");
	}

	while (VectorIsSpace(*pos))
		pos++;
	if (*pos != '\0')
		ReportVectorSyntax(literal, "Only whitespace may follow the closing \"]\".");

	CheckExpectedDim(typmod, dim);

	result = IvfpqInitVector(dim);
	memcpy(result->x, values, sizeof(float) * dim);
	pfree(values);
	PG_RETURN_VECTOR_P(result);
}

/* Print a vector as '[x1,x2,...]' with the shortest text that round-trips. */
Datum
vector_out(PG_FUNCTION_ARGS)
{
	Vector	   *vec = PG_GETARG_VECTOR_P(0);
	char	   *buffer;
	char	   *pos;

	/* Each value takes at most FLOAT_SHORTEST_DECIMAL_LEN - 1 chars plus a separator. */
	buffer = (char *) palloc(FLOAT_SHORTEST_DECIMAL_LEN * vec->dim + 2);
	pos = buffer;
	*pos++ = '[';
	for (int i = 0; i < vec->dim; i++)
	{
		if (i > 0)
			*pos++ = ',';
		pos += float_to_shortest_decimal_bufn(vec->x[i], pos);
	}
	*pos++ = ']';
	*pos = '\0';
	PG_FREE_IF_COPY(vec, 0);
	PG_RETURN_CSTRING(buffer);
}

/* Turn the modifier of vector(n) into the typmod n. */
Datum
vector_typmod_in(PG_FUNCTION_ARGS)
{
	ArrayType  *modifiers = PG_GETARG_ARRAYTYPE_P(0);
	int32	   *values;
	int			count;

	values = ArrayGetIntegerTypmods(modifiers, &count);
	if (count != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid type modifier"),
				 errdetail("Type vector takes exactly one modifier, its number of dimensions.")));
	if (values[0] < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dimensions for type vector must be at least 1")));
	if (values[0] > IVFPQ_VECTOR_MAX_DIM)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dimensions for type vector cannot exceed %d",
						IVFPQ_VECTOR_MAX_DIM)));
	PG_RETURN_INT32(values[0]);
}

/* Print the typmod as "(n)", or nothing when unset. */
Datum
vector_typmod_out(PG_FUNCTION_ARGS)
{
	int32		typmod = PG_GETARG_INT32(0);

	if (typmod < 0)
		PG_RETURN_CSTRING(pstrdup(""));
	PG_RETURN_CSTRING(psprintf("(%d)", typmod));
}

/* ---------- binary I/O ---------- */

/* Read int16 dim, int16 unused (0), then dim float4 values, in network order. */
Datum
vector_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int32		typmod = PG_GETARG_INT32(2);
	int16		dim;
	int16		unused;
	Vector	   *result;

	dim = (int16) pq_getmsgint(buf, sizeof(int16));
	unused = (int16) pq_getmsgint(buf, sizeof(int16));

	IvfpqCheckDim(dim);
	CheckExpectedDim(typmod, dim);
	if (unused != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("unused field of a binary vector must be 0, not %d", unused)));

	result = IvfpqInitVector(dim);
	for (int i = 0; i < dim; i++)
	{
		result->x[i] = pq_getmsgfloat4(buf);
		CheckElement(result->x[i]);
	}
	PG_RETURN_VECTOR_P(result);
}

/* Write the binary form read by vector_recv. */
Datum
vector_send(PG_FUNCTION_ARGS)
{
	Vector	   *vec = PG_GETARG_VECTOR_P(0);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendint16(&buf, (uint16) vec->dim);
	pq_sendint16(&buf, (uint16) vec->unused);
	for (int i = 0; i < vec->dim; i++)
		pq_sendfloat4(&buf, vec->x[i]);
	PG_FREE_IF_COPY(vec, 0);
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* ---------- casts ---------- */

/* Length coercion for vector(n): check the dimensions against the typmod. */
Datum
vector(PG_FUNCTION_ARGS)
{
	Vector	   *vec = PG_GETARG_VECTOR_P(0);
	int32		typmod = PG_GETARG_INT32(1);

	CheckExpectedDim(typmod, vec->dim);
	PG_RETURN_VECTOR_P(vec);
}

/* Cast a one-dimensional int4[], float4[], float8[] or numeric[] to a vector. */
Datum
array_to_vector(PG_FUNCTION_ARGS)
{
	ArrayType  *array = PG_GETARG_ARRAYTYPE_P(0);
	int32		typmod = PG_GETARG_INT32(1);
	Oid			element_type = ARR_ELEMTYPE(array);
	int16		element_length;
	bool		element_byval;
	char		element_align;
	Datum	   *elements;
	bool	   *nulls;
	int			count;
	Vector	   *result;

	if (ARR_NDIM(array) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("array must be 1-D")));
	if (element_type != INT4OID && element_type != FLOAT4OID &&
		element_type != FLOAT8OID && element_type != NUMERICOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("unsupported array type %s for a cast to vector",
						format_type_be(element_type))));

	get_typlenbyvalalign(element_type, &element_length, &element_byval, &element_align);
	deconstruct_array(array, element_type, element_length, element_byval,
					  element_align, &elements, &nulls, &count);

	IvfpqCheckDim(count);
	CheckExpectedDim(typmod, count);
	for (int i = 0; i < count; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("array must not contain nulls")));
	}

	result = IvfpqInitVector(count);
	for (int i = 0; i < count; i++)
	{
		float		value = 0;

		switch (element_type)
		{
			case INT4OID:
				value = (float) DatumGetInt32(elements[i]);
				break;
			case FLOAT4OID:
				value = DatumGetFloat4(elements[i]);
				break;
			case FLOAT8OID:
				{
					double		wide = DatumGetFloat8(elements[i]);

					value = (float) wide;
					if (std::isinf(value) && std::isfinite(wide))
						ereport(ERROR,
								(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
								 errmsg("\"%g\" is out of range for type vector", wide)));
					break;
				}
			case NUMERICOID:
				/* numeric_float4 reports out-of-range values itself. */
				value = DatumGetFloat4(DirectFunctionCall1(numeric_float4, elements[i]));
				break;
		}
		CheckElement(value);
		result->x[i] = value;
	}
	pfree(elements);
	pfree(nulls);
	PG_RETURN_VECTOR_P(result);
}

/* Cast a vector to real[]. */
Datum
vector_to_float4(PG_FUNCTION_ARGS)
{
	Vector	   *vec = PG_GETARG_VECTOR_P(0);
	Datum	   *elements;
	ArrayType  *result;

	elements = (Datum *) palloc(sizeof(Datum) * vec->dim);
	for (int i = 0; i < vec->dim; i++)
		elements[i] = Float4GetDatum(vec->x[i]);
	result = construct_array(elements, vec->dim, FLOAT4OID, sizeof(float4),
							 true, TYPALIGN_INT);
	pfree(elements);
	PG_FREE_IF_COPY(vec, 0);
	PG_RETURN_ARRAYTYPE_P(result);
}

/* ---------- distances ---------- */

/*
 * The distance functions only read their arguments and return a number, so
 * a compressed argument (a heap row under default storage, when the executor
 * evaluates ORDER BY e <-> q for the rows an index scan returns, or in a
 * sequential scan) is decoded into a buffer kept for the backend, one per
 * argument position, instead of a fresh allocation by the server's decoder.
 */
static VectorDecodeBuffer distance_args[2];

static Vector *
DistanceArg(FunctionCallInfo fcinfo, int n)
{
	if (distance_args[n].context == NULL)
		distance_args[n].context = TopMemoryContext;
	return DatumGetVectorBuffered(PG_GETARG_DATUM(n), &distance_args[n]);
}

/* Euclidean distance. */
Datum
l2_distance(PG_FUNCTION_ARGS)
{
	Vector	   *a = DistanceArg(fcinfo, 0);
	Vector	   *b = DistanceArg(fcinfo, 1);

	IvfpqCheckSameDims(a, b);
	PG_RETURN_FLOAT8(std::sqrt((double) L2SquaredDistance(a->x, b->x, a->dim)));
}

/* Squared Euclidean distance (the ordering distance of L2 indexes). */
Datum
vector_l2_squared_distance(PG_FUNCTION_ARGS)
{
	Vector	   *a = DistanceArg(fcinfo, 0);
	Vector	   *b = DistanceArg(fcinfo, 1);

	IvfpqCheckSameDims(a, b);
	PG_RETURN_FLOAT8((double) L2SquaredDistance(a->x, b->x, a->dim));
}

/* Inner (dot) product. */
Datum
inner_product(PG_FUNCTION_ARGS)
{
	Vector	   *a = DistanceArg(fcinfo, 0);
	Vector	   *b = DistanceArg(fcinfo, 1);

	IvfpqCheckSameDims(a, b);
	PG_RETURN_FLOAT8((double) InnerProduct(a->x, b->x, a->dim));
}

/* Negated inner product, so that smaller means closer (operator <#>). */
Datum
vector_negative_inner_product(PG_FUNCTION_ARGS)
{
	Vector	   *a = DistanceArg(fcinfo, 0);
	Vector	   *b = DistanceArg(fcinfo, 1);

	IvfpqCheckSameDims(a, b);
	PG_RETURN_FLOAT8(-(double) InnerProduct(a->x, b->x, a->dim));
}

/* Cosine distance 1 - cos(a, b); NaN when either vector is zero. */
Datum
cosine_distance(PG_FUNCTION_ARGS)
{
	Vector	   *a = DistanceArg(fcinfo, 0);
	Vector	   *b = DistanceArg(fcinfo, 1);

	IvfpqCheckSameDims(a, b);
	PG_RETURN_FLOAT8(CosineDistance(a->x, b->x, a->dim));
}

/* Manhattan (taxicab) distance. */
Datum
l1_distance(PG_FUNCTION_ARGS)
{
	Vector	   *a = DistanceArg(fcinfo, 0);
	Vector	   *b = DistanceArg(fcinfo, 1);
	float		distance = 0;

	IvfpqCheckSameDims(a, b);
	for (int i = 0; i < a->dim; i++)
		distance += std::fabs(a->x[i] - b->x[i]);
	PG_RETURN_FLOAT8((double) distance);
}

/* Number of dimensions. */
Datum
vector_dims(PG_FUNCTION_ARGS)
{
	Vector	   *vec = PG_GETARG_VECTOR_P(0);

	PG_RETURN_INT32(vec->dim);
}

/* Euclidean norm, accumulated in double precision. */
Datum
vector_norm(PG_FUNCTION_ARGS)
{
	Vector	   *vec = PG_GETARG_VECTOR_P(0);
	double		sum = 0;

	for (int i = 0; i < vec->dim; i++)
		sum += (double) vec->x[i] * (double) vec->x[i];
	PG_RETURN_FLOAT8(std::sqrt(sum));
}

/* The vector scaled to unit length; a zero vector is returned unchanged. */
Datum
l2_normalize(PG_FUNCTION_ARGS)
{
	Vector	   *vec = PG_GETARG_VECTOR_P(0);
	Vector	   *result = IvfpqInitVector(vec->dim);
	double		sum = 0;

	for (int i = 0; i < vec->dim; i++)
		sum += (double) vec->x[i] * (double) vec->x[i];
	if (sum > 0)
	{
		double		norm = std::sqrt(sum);

		for (int i = 0; i < vec->dim; i++)
			result->x[i] = (float) (vec->x[i] / norm);
	}
	PG_RETURN_VECTOR_P(result);
}

/* ---------- arithmetic ---------- */

/* Element-wise sum. */
Datum
vector_add(PG_FUNCTION_ARGS)
{
	Vector	   *a = PG_GETARG_VECTOR_P(0);
	Vector	   *b = PG_GETARG_VECTOR_P(1);
	Vector	   *result;

	IvfpqCheckSameDims(a, b);
	result = IvfpqInitVector(a->dim);
	for (int i = 0; i < a->dim; i++)
		result->x[i] = a->x[i] + b->x[i];
	CheckArithmeticResult(result);
	PG_RETURN_VECTOR_P(result);
}

/* Element-wise difference. */
Datum
vector_sub(PG_FUNCTION_ARGS)
{
	Vector	   *a = PG_GETARG_VECTOR_P(0);
	Vector	   *b = PG_GETARG_VECTOR_P(1);
	Vector	   *result;

	IvfpqCheckSameDims(a, b);
	result = IvfpqInitVector(a->dim);
	for (int i = 0; i < a->dim; i++)
		result->x[i] = a->x[i] - b->x[i];
	CheckArithmeticResult(result);
	PG_RETURN_VECTOR_P(result);
}

/* Element-wise product. */
Datum
vector_mul(PG_FUNCTION_ARGS)
{
	Vector	   *a = PG_GETARG_VECTOR_P(0);
	Vector	   *b = PG_GETARG_VECTOR_P(1);
	Vector	   *result;

	IvfpqCheckSameDims(a, b);
	result = IvfpqInitVector(a->dim);
	for (int i = 0; i < a->dim; i++)
		result->x[i] = a->x[i] * b->x[i];
	CheckArithmeticResult(result);
	PG_RETURN_VECTOR_P(result);
}

/* Concatenation a || b. */
Datum
vector_concat(PG_FUNCTION_ARGS)
{
	Vector	   *a = PG_GETARG_VECTOR_P(0);
	Vector	   *b = PG_GETARG_VECTOR_P(1);
	Vector	   *result;

	IvfpqCheckDim(a->dim + b->dim);
	result = IvfpqInitVector(a->dim + b->dim);
	memcpy(result->x, a->x, sizeof(float) * a->dim);
	memcpy(result->x + a->dim, b->x, sizeof(float) * b->dim);
	PG_RETURN_VECTOR_P(result);
}

/* The count elements starting at 1-based position start (clipped to the vector). */
Datum
subvector(PG_FUNCTION_ARGS)
{
	Vector	   *vec = PG_GETARG_VECTOR_P(0);
	int64		start = PG_GETARG_INT32(1);
	int64		count = PG_GETARG_INT32(2);
	int64		end = start + count;	/* exclusive; int64 cannot overflow */
	Vector	   *result;

	if (count < 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("vector must have at least 1 dimension")));
	if (start < 1)
		start = 1;
	if (end > (int64) vec->dim + 1)
		end = (int64) vec->dim + 1;
	IvfpqCheckDim((int) Max(end - start, 0));

	result = IvfpqInitVector((int) (end - start));
	memcpy(result->x, vec->x + (start - 1), sizeof(float) * (end - start));
	PG_RETURN_VECTOR_P(result);
}

/* ---------- comparison and hashing ---------- */

/* Order element by element, then a shorter vector before a longer one. */
static int
VectorCompare(const Vector *a, const Vector *b)
{
	int			common = Min(a->dim, b->dim);

	for (int i = 0; i < common; i++)
	{
		if (a->x[i] < b->x[i])
			return -1;
		if (a->x[i] > b->x[i])
			return 1;
	}
	if (a->dim != b->dim)
		return a->dim < b->dim ? -1 : 1;
	return 0;
}

/* Compare the two vector arguments and free detoasted copies. */
static int
VectorCompareArgs(FunctionCallInfo fcinfo)
{
	Vector	   *a = PG_GETARG_VECTOR_P(0);
	Vector	   *b = PG_GETARG_VECTOR_P(1);
	int			result = VectorCompare(a, b);

	PG_FREE_IF_COPY(a, 0);
	PG_FREE_IF_COPY(b, 1);
	return result;
}

/* a < b */
Datum
vector_lt(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(VectorCompareArgs(fcinfo) < 0);
}

/* a <= b */
Datum
vector_le(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(VectorCompareArgs(fcinfo) <= 0);
}

/* a = b */
Datum
vector_eq(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(VectorCompareArgs(fcinfo) == 0);
}

/* a <> b */
Datum
vector_ne(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(VectorCompareArgs(fcinfo) != 0);
}

/* a >= b */
Datum
vector_ge(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(VectorCompareArgs(fcinfo) >= 0);
}

/* a > b */
Datum
vector_gt(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(VectorCompareArgs(fcinfo) > 0);
}

/* btree support: -1, 0 or 1. */
Datum
vector_cmp(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(VectorCompareArgs(fcinfo));
}

/*
 * The bytes to hash for vec: dim, unused (always 0) and the values, with -0
 * rewritten as +0 because the two compare equal.  Returns a pointer into vec
 * when no rewrite is needed, else a palloc'd copy.
 */
static const unsigned char *
VectorHashBytes(const Vector *vec, int *length)
{
	Vector	   *copy;

	*length = (int) (VECTOR_SIZE(vec->dim) - offsetof(Vector, dim));
	for (int i = 0; i < vec->dim; i++)
	{
		if (vec->x[i] == 0 && std::signbit(vec->x[i]))
		{
			copy = IvfpqInitVector(vec->dim);
			for (int j = 0; j < vec->dim; j++)
				copy->x[j] = vec->x[j] == 0 ? 0.0f : vec->x[j];
			return (const unsigned char *) &copy->dim;
		}
	}
	return (const unsigned char *) &vec->dim;
}

/* hash support function 1: 32-bit hash consistent with =. */
Datum
vector_hash(PG_FUNCTION_ARGS)
{
	Vector	   *vec = PG_GETARG_VECTOR_P(0);
	const unsigned char *bytes;
	int			length;

	bytes = VectorHashBytes(vec, &length);
	return hash_any(bytes, length);
}

/* hash support function 2: seeded 64-bit hash (seed 0 agrees with vector_hash). */
Datum
vector_hash_extended(PG_FUNCTION_ARGS)
{
	Vector	   *vec = PG_GETARG_VECTOR_P(0);
	uint64		seed = (uint64) PG_GETARG_INT64(1);
	const unsigned char *bytes;
	int			length;

	bytes = VectorHashBytes(vec, &length);
	return hash_any_extended(bytes, length, seed);
}

/* ---------- aggregates: avg(vector) and sum(vector) ---------- */

/*
 * The avg state is a float8[] holding the row count followed by the running
 * per-dimension sums; '{0}' before the first row.  Returns its elements and
 * sets *length, after checking the array is what the aggregate built.
 */
static float8 *
AverageState(ArrayType *state, int *length)
{
	if (ARR_NDIM(state) != 1 || ARR_DIMS(state)[0] < 1 || ARR_HASNULL(state) ||
		ARR_ELEMTYPE(state) != FLOAT8OID)
		elog(ERROR, "avg(vector) expected a one-dimensional float8 state array without nulls");
	*length = ARR_DIMS(state)[0];
	return (float8 *) ARR_DATA_PTR(state);
}

/* Build a float8[] state of length elements. */
static ArrayType *
MakeAverageState(const float8 *values, int length)
{
	Datum	   *elements = (Datum *) palloc(sizeof(Datum) * length);
	ArrayType  *result;

	for (int i = 0; i < length; i++)
		elements[i] = Float8GetDatum(values[i]);
	result = construct_array(elements, length, FLOAT8OID, sizeof(float8),
							 FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	pfree(elements);
	return result;
}

/* avg transition: count the row and add its values to the sums. */
Datum
vector_accum(PG_FUNCTION_ARGS)
{
	ArrayType  *state = PG_GETARG_ARRAYTYPE_P(0);
	Vector	   *vec = PG_GETARG_VECTOR_P(1);
	float8	   *values;
	float8	   *sums;
	int			length;

	values = AverageState(state, &length);
	sums = (float8 *) palloc0(sizeof(float8) * (vec->dim + 1));
	if (values[0] > 0)
	{
		if (length - 1 != vec->dim)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("different vector dimensions %d and %d", length - 1, vec->dim)));
		memcpy(sums, values, sizeof(float8) * length);
	}
	sums[0] += 1;
	for (int i = 0; i < vec->dim; i++)
		sums[i + 1] += (double) vec->x[i];
	PG_RETURN_ARRAYTYPE_P(MakeAverageState(sums, vec->dim + 1));
}

/* avg combine: merge two partial states (parallel aggregation). */
Datum
vector_combine(PG_FUNCTION_ARGS)
{
	ArrayType  *state_a = PG_GETARG_ARRAYTYPE_P(0);
	ArrayType  *state_b = PG_GETARG_ARRAYTYPE_P(1);
	float8	   *values_a;
	float8	   *values_b;
	float8	   *sums;
	int			length_a;
	int			length_b;

	values_a = AverageState(state_a, &length_a);
	values_b = AverageState(state_b, &length_b);
	if (values_b[0] == 0)
		PG_RETURN_ARRAYTYPE_P(MakeAverageState(values_a, length_a));
	if (values_a[0] == 0)
		PG_RETURN_ARRAYTYPE_P(MakeAverageState(values_b, length_b));
	if (length_a != length_b)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("different vector dimensions %d and %d", length_a - 1, length_b - 1)));
	sums = (float8 *) palloc(sizeof(float8) * length_a);
	for (int i = 0; i < length_a; i++)
		sums[i] = values_a[i] + values_b[i];
	PG_RETURN_ARRAYTYPE_P(MakeAverageState(sums, length_a));
}

/* avg final: the sums divided by the count, or NULL for no rows. */
Datum
vector_avg(PG_FUNCTION_ARGS)
{
	ArrayType  *state = PG_GETARG_ARRAYTYPE_P(0);
	float8	   *values;
	int			length;
	Vector	   *result;

	values = AverageState(state, &length);
	if (values[0] == 0)
		PG_RETURN_NULL();
	IvfpqCheckDim(length - 1);
	result = IvfpqInitVector(length - 1);
	for (int i = 1; i < length; i++)
		result->x[i - 1] = (float) (values[i] / values[0]);
	CheckArithmeticResult(result);
	PG_RETURN_VECTOR_P(result);
}
