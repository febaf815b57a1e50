/*
 * pq_kernels.h
 *		Core-internal nearest-codeword kernels shared by training (train.cpp)
 *		and encoding (quantizer.cpp), both defined in quantizer.cpp, and the
 *		per-thread scratch buffer.
 *
 * A "transposed codebook" holds k codewords of dsub floats as a dsub x kpad
 * matrix (kpad = k rounded up to a multiple of 8, padding columns zero) plus
 * kpad squared norms (padding norms +infinity, so padding never wins).  This
 * lets the AVX2 kernel evaluate ||c||^2 - 2 x.c for 8 codewords per FMA.
 */
#ifndef IVFPQ_CORE_PQ_KERNELS_H
#define IVFPQ_CORE_PQ_KERNELS_H

#include "core_error.h"

namespace ivfpq::core {

/* Codewords rounded up to whole groups of 8 (the SIMD width). */
inline size_t
PaddedCodewords(size_t k)
{
	return (k + 7) / 8 * 8;
}

/*
 * Transpose k row-major codewords (k x dsub) into transposed_out
 * (dsub x PaddedCodewords(k) floats) and write their squared norms to
 * norms_out (PaddedCodewords(k) floats).
 */
void		TransposeCodebook(const float *codebook, size_t k, size_t dsub,
							  float *transposed_out, float *norms_out);

/*
 * For each of n vectors (vector i starts at x + i * stride and has dsub
 * floats) write the index of the nearest codeword (L2; ties go to the lowest
 * index) of a transposed codebook to nearest_out[i].  Single-threaded.
 */
void		NearestCodewords(const float *x, size_t stride, size_t n,
							 const float *transposed, const float *norms,
							 size_t dsub, size_t kpad, int32_t *nearest_out);

/*
 * A buffer of at least 'floats' floats owned by the calling thread and
 * reused by every call on it (residuals, distance tables, the coarse bound's
 * per-search arrays).  Valid until the next call on the same thread, so a
 * function must not hold it across a call to another function that uses it.
 */
float	   *ThreadScratch(size_t floats);

}							/* namespace ivfpq::core */

#endif							/* IVFPQ_CORE_PQ_KERNELS_H */
