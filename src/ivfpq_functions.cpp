/*
 * ivfpq_functions.cpp
 *		SQL-callable utility functions that expose the core directly: k-means
 *		on an array of vectors, and the name of the active distance kernels.
 */
#include "ivfpq.h"
#include "ivfpq_vector.h"

extern "C"
{
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

PG_FUNCTION_INFO_V1(ivfpq_kmeans);
PG_FUNCTION_INFO_V1(ivfpq_kernels);
}

/*
 * ivfpq_kmeans(vectors vector[], k int, iterations int) returns vector[]:
 * FAISS k-means over the array elements; NULL elements are an error.
 */
extern "C" Datum
ivfpq_kmeans(PG_FUNCTION_ARGS)
{
	ArrayType  *input = PG_GETARG_ARRAYTYPE_P(0);
	int32		k = PG_GETARG_INT32(1);
	int32		iterations = PG_GETARG_INT32(2);
	Oid			element_type = ARR_ELEMTYPE(input);
	int16		typlen;
	bool		typbyval;
	char		typalign;
	Datum	   *elements;
	bool	   *nulls;
	int			count;
	int			dim = 0;
	float	   *points;
	float	   *centroids;
	Datum	   *result_elements;

	if (ARR_NDIM(input) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("ivfpq_kmeans expects a one-dimensional array of vectors")));
	if (k < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("number of clusters must be at least 1")));
	if (iterations < 1 || iterations > 10000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("iterations must be between 1 and 10000")));

	get_typlenbyvalalign(element_type, &typlen, &typbyval, &typalign);
	deconstruct_array(input, element_type, typlen, typbyval, typalign,
					  &elements, &nulls, &count);
	if (count == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ivfpq_kmeans needs at least one vector")));

	for (int i = 0; i < count; i++)
	{
		Vector	   *v;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("array of vectors must not contain nulls")));
		v = DatumGetVector(elements[i]);
		if (i == 0)
			dim = v->dim;
		else if (v->dim != dim)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("different vector dimensions %d and %d", dim, v->dim)));
		elements[i] = PointerGetDatum(v);
	}

	points = (float *) palloc_extended(sizeof(float) * (Size) count * dim, MCXT_ALLOC_HUGE);
	for (int i = 0; i < count; i++)
		memcpy(points + (Size) i * dim, ((Vector *) DatumGetPointer(elements[i]))->x,
			   sizeof(float) * dim);
	centroids = (float *) palloc_extended(sizeof(float) * (Size) k * dim, MCXT_ALLOC_HUGE);

	/* One OpenMP thread: with more, idle OpenMP workers spin against OpenBLAS's. */
	IvfpqCallCore("ivfpq k-means", [&]() {
		ivfpq::core::KMeans(points, (size_t) count, (size_t) dim, (size_t) k,
							iterations, 1234, 1, centroids);
	});

	result_elements = (Datum *) palloc(sizeof(Datum) * k);
	for (int c = 0; c < k; c++)
	{
		Vector	   *v = IvfpqInitVector(dim);

		memcpy(v->x, centroids + (Size) c * dim, sizeof(float) * dim);
		result_elements[c] = PointerGetDatum(v);
	}
	PG_RETURN_ARRAYTYPE_P(construct_array(result_elements, k, element_type,
										  typlen, typbyval, typalign));
}

/* ivfpq_kernels() returns text: which distance kernels this CPU runs. */
extern "C" Datum
ivfpq_kernels(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(ivfpq::core::ActiveKernelName()));
}
