/*
 * ivfpq_vector.h
 *		The on-disk/in-memory layout of the vector type, identical to pgvector's
 *		(varlena header, int16 dimensions, int16 unused, float4 values).
 */
#ifndef IVFPQ_VECTOR_H
#define IVFPQ_VECTOR_H

#include "ivfpq.h"

#define IVFPQ_VECTOR_MAX_DIM 16000

typedef struct Vector
{
	int32		vl_len_;		/* varlena header (do not touch directly) */
	int16		dim;			/* number of dimensions */
	int16		unused;			/* reserved, always zero */
	float		x[FLEXIBLE_ARRAY_MEMBER];
} Vector;

#define VECTOR_SIZE(dim)		(offsetof(Vector, x) + sizeof(float) * (dim))
#define DatumGetVector(d)		((Vector *) PG_DETOAST_DATUM(d))
#define PG_GETARG_VECTOR_P(n)	DatumGetVector(PG_GETARG_DATUM(n))
#define PG_RETURN_VECTOR_P(v)	PG_RETURN_POINTER(v)

/*
 * A buffer that DatumGetVectorBuffered() decodes compressed heap vectors
 * into, reused from row to row: zero-initialize it; it grows in 'context'.
 */
typedef struct VectorDecodeBuffer
{
	MemoryContext context;
	char	   *data;
	Size		capacity;
} VectorDecodeBuffer;

/*
 * The vector in a heap datum, for reading only.  A value stored inline and
 * pglz-compressed (what the default storage makes of vectors that compress)
 * is decoded by the core's decoder into 'buffer', valid until the next call;
 * anything else is detoasted as DatumGetVector() does.  The heap re-rank and
 * the build call this for every row they read.
 */
extern "C" Vector *DatumGetVectorBuffered(Datum value, VectorDecodeBuffer *buffer);

/* Allocate a zeroed vector of dim dimensions in the current memory context. */
extern "C" Vector *IvfpqInitVector(int dim);

/* ereport unless dim is within 1..IVFPQ_VECTOR_MAX_DIM. */
extern "C" void IvfpqCheckDim(int dim);

/* ereport unless a and b have the same number of dimensions. */
extern "C" void IvfpqCheckSameDims(const Vector *a, const Vector *b);

#endif							/* IVFPQ_VECTOR_H */
