/*
 * quantizer.cpp
 *		Using a trained IVF_PQ quantizer: assigning vectors to lists, PQ
 *		encoding of residuals, centroid distances for probing and per-list
 *		distance tables, plus the nearest-codeword kernels training shares.
 *
 * Hot loops come in an AVX2+FMA variant (per-function target attributes,
 * never -march flags) and a portable one, chosen at run time through
 * ActiveKernelsAreAvx2().  Batches of list assignments against very many
 * centroids go through BLAS sgemm (x . c for all pairs) followed by our own
 * argmin pass.
 */
#include <algorithm>
#include <cmath>
#include <cstring>
#include <immintrin.h>
#include <limits>
#include <string>
#include <vector>

#include <omp.h>

#include "core_error.h"
#include "kernels.h"
#include "omp_threads.h"
#include "pq_kernels.h"

/* Fortran BLAS, provided by OpenBLAS (FAISS links against it as well). */
extern "C" int sgemm_(const char *transa, const char *transb, const int *m,
					  const int *n, const int *k, const float *alpha,
					  const float *a, const int *lda, const float *b,
					  const int *ldb, const float *beta, float *c,
					  const int *ldc);

namespace ivfpq::core {

namespace {

/* Below this many rows a batch call skips BLAS / codebook preparation. */
constexpr size_t kSmallBatchRows = 16;

/* Rows per OpenMP work item when encoding, and rows between interrupt checks. */
constexpr size_t kEncodeBatchRows = 64;
constexpr size_t kInterruptCheckRows = 8192;

/* Upper bound on the floats of one sgemm result block in AssignLists. */
constexpr size_t kAssignBlockFloats = size_t(1) << 20;

/*
 * AssignLists batches use a transposed copy of the centroids (our kernel)
 * up to this size, 16 MB; beyond it they use BLAS, which needs no copy.  Our
 * kernel is as fast as OpenBLAS here, and does not leave BLAS threads
 * spinning against the OpenMP threads of the EncodeResiduals call that
 * usually follows (that cost ~30% of build encoding time on 2 cores).
 */
constexpr size_t kTransposedCentroidsMaxFloats = size_t(4) << 20;

/* Checks that a view describes a usable trained quantizer. */
void
CheckQuantizer(const QuantizerView &q)
{
	if (q.dim == 0 || q.lists == 0 || q.m == 0 || q.dim % q.m != 0 ||
		!(q.nbits == 8 || (q.nbits == 4 && q.m % 2 == 0)))
		ThrowInvalid("invalid quantizer (dimensions " + std::to_string(q.dim) +
					 ", lists " + std::to_string(q.lists) + ", m " + std::to_string(q.m) +
					 ", nbits " + std::to_string(q.nbits) + ")");
	if (q.centroids == nullptr || q.codebooks == nullptr)
		ThrowInvalid("quantizer has no centroids or codebooks");
}

/* Throws unless list is a valid list number of q. */
void
CheckList(const QuantizerView &q, int32_t list)
{
	if (list < 0 || size_t(list) >= q.lists)
		ThrowInvalid("list number " + std::to_string(list) + " is out of range (lists = " +
					 std::to_string(q.lists) + ")");
}

/* ---------- portable kernels ---------- */

/* Index of the smallest norms[c] - 2 dots[c], lowest index on ties. */
size_t
ArgminNormMinusTwoDotPortable(const float *norms, const float *dots, size_t k)
{
	size_t		best = 0;
	float		best_value = std::numeric_limits<float>::infinity();

	for (size_t c = 0; c < k; c++)
	{
		float		value = norms[c] - 2 * dots[c];

		if (value < best_value)
		{
			best_value = value;
			best = c;
		}
	}
	return best;
}

/* Index of the smallest of k values, lowest index on ties. */
size_t
ArgminPortable(const float *values, size_t k)
{
	size_t		best = 0;

	for (size_t c = 1; c < k; c++)
		if (values[c] < values[best])
			best = c;
	return best;
}

/* table[c] = ||r - codebook[c]||^2 for the ksub codewords of one subspace. */
void
L2TablePortable(const float *r, const float *codebook, size_t ksub, size_t dsub,
				float *table)
{
	for (size_t c = 0; c < ksub; c++)
	{
		const float *codeword = codebook + c * dsub;
		float		sum = 0;

		for (size_t d = 0; d < dsub; d++)
		{
			float		diff = r[d] - codeword[d];

			sum += diff * diff;
		}
		table[c] = sum;
	}
}

/* table[c] = -(q . codebook[c]) for the ksub codewords of one subspace. */
void
InnerProductTablePortable(const float *q, const float *codebook, size_t ksub,
						  size_t dsub, float *table)
{
	for (size_t c = 0; c < ksub; c++)
	{
		const float *codeword = codebook + c * dsub;
		float		sum = 0;

		for (size_t d = 0; d < dsub; d++)
			sum += q[d] * codeword[d];
		table[c] = -sum;
	}
}

/*
 * Table of one subspace from a transposed codebook and its norms:
 * ||v||^2 + ||c||^2 - 2 v.c (SQUARED) or -(v . c), 8 codewords per step.
 */
void
PreparedTablePortable(const float *v, const float *transposed, const float *norms,
					  size_t dsub, size_t ksub, bool squared, float *table)
{
	float		v_norm = 0;

	for (size_t d = 0; d < dsub; d++)
		v_norm += v[d] * v[d];
	for (size_t c = 0; c < ksub; c += 8)
	{
		float		acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};

		for (size_t d = 0; d < dsub; d++)
		{
			float		value = v[d];
			const float *column = transposed + d * ksub + c;

			for (int u = 0; u < 8; u++)
				acc[u] += value * column[u];
		}
		for (int u = 0; u < 8; u++)
			table[c + u] = squared ? norms[c + u] + v_norm - 2 * acc[u] : -acc[u];
	}
}

/*
 * NearestCodewords with plain loops, 8 codewords per step so that the
 * compiler can keep the partial sums in registers (or SSE vectors).
 */
void
NearestCodewordsPortable(const float *x, size_t stride, size_t n,
						 const float *transposed, const float *norms,
						 size_t dsub, size_t kpad, int32_t *nearest_out)
{
	for (size_t i = 0; i < n; i++)
	{
		const float *row = x + i * stride;
		float		best_distance = std::numeric_limits<float>::infinity();
		size_t		best = 0;

		for (size_t c = 0; c < kpad; c += 8)
		{
			float		acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};

			for (size_t d = 0; d < dsub; d++)
			{
				float		value = row[d];
				const float *column = transposed + d * kpad + c;

				for (int u = 0; u < 8; u++)
					acc[u] += value * column[u];
			}
			for (int u = 0; u < 8; u++)
			{
				float		distance = norms[c + u] - 2 * acc[u];

				if (distance < best_distance)
				{
					best_distance = distance;
					best = c + u;
				}
			}
		}
		nearest_out[i] = int32_t(best);
	}
}

/* ---------- AVX2 + FMA kernels ---------- */

/* Lane l of the result is the sum of the 8 lanes of s[l]. */
__attribute__((target("avx2,fma"))) inline __m256
HorizontalSums8(const __m256 *s)
{
	__m256		t0 = _mm256_hadd_ps(s[0], s[1]);
	__m256		t1 = _mm256_hadd_ps(s[2], s[3]);
	__m256		t2 = _mm256_hadd_ps(s[4], s[5]);
	__m256		t3 = _mm256_hadd_ps(s[6], s[7]);
	__m256		u0 = _mm256_hadd_ps(t0, t1);
	__m256		u1 = _mm256_hadd_ps(t2, t3);

	return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
						 _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* Mask selecting the first 'count' (0..7) lanes, for masked tail loads. */
__attribute__((target("avx2,fma"))) inline __m256i
TailMask(size_t count)
{
	return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(count)),
							  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/*
 * Index of the smallest lane over best/best_index, lowest codeword index on
 * ties (each lane saw a different subset of codewords).
 */
__attribute__((target("avx2,fma"))) inline int32_t
ArgminLanes(__m256 best, __m256i best_index)
{
	alignas(32) float values[8];
	alignas(32) int32_t indexes[8];
	int			winner = 0;

	_mm256_store_ps(values, best);
	_mm256_store_si256(reinterpret_cast<__m256i *>(indexes), best_index);
	for (int l = 1; l < 8; l++)
		if (values[l] < values[winner] ||
			(values[l] == values[winner] && indexes[l] < indexes[winner]))
			winner = l;
	return indexes[winner];
}

/* AVX2 ArgminNormMinusTwoDotPortable. */
__attribute__((target("avx2,fma"))) size_t
ArgminNormMinusTwoDotAvx2(const float *norms, const float *dots, size_t k)
{
	__m256		best = _mm256_set1_ps(std::numeric_limits<float>::infinity());
	__m256i		best_index = _mm256_setzero_si256();
	__m256i		index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
	const __m256i eight = _mm256_set1_epi32(8);
	const __m256 two = _mm256_set1_ps(2.0f);
	size_t		c = 0;

	for (; c + 8 <= k; c += 8)
	{
		__m256		value = _mm256_fnmadd_ps(two, _mm256_loadu_ps(dots + c),
											 _mm256_loadu_ps(norms + c));
		__m256		less = _mm256_cmp_ps(value, best, _CMP_LT_OQ);

		best = _mm256_blendv_ps(best, value, less);
		best_index = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(best_index),
														  _mm256_castsi256_ps(index), less));
		index = _mm256_add_epi32(index, eight);
	}

	size_t		winner = c > 0 ? size_t(ArgminLanes(best, best_index)) : 0;
	float		winner_value = c > 0 ? norms[winner] - 2 * dots[winner]
		: std::numeric_limits<float>::infinity();

	for (; c < k; c++)
	{
		float		value = norms[c] - 2 * dots[c];

		if (value < winner_value)
		{
			winner_value = value;
			winner = c;
		}
	}
	return winner;
}

/*
 * AVX2 ArgminPortable (the first of equal minima).  Four independent
 * compare-and-blend chains over 32 values a step: one chain would wait on
 * the compare of the step before (the encoder calls this m times a row).
 */
__attribute__((target("avx2,fma"))) size_t
ArgminAvx2(const float *values, size_t k)
{
	const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
	__m256		best[4];
	__m256i		best_index[4];
	__m256i		index[4];
	size_t		c = 0;

	for (int a = 0; a < 4; a++)
	{
		best[a] = _mm256_set1_ps(std::numeric_limits<float>::infinity());
		best_index[a] = _mm256_setzero_si256();
		index[a] = _mm256_add_epi32(lanes, _mm256_set1_epi32(8 * a));
	}
	for (; c + 32 <= k; c += 32)
	{
		for (int a = 0; a < 4; a++)
		{
			__m256		value = _mm256_loadu_ps(values + c + 8 * a);
			__m256		less = _mm256_cmp_ps(value, best[a], _CMP_LT_OQ);

			best[a] = _mm256_blendv_ps(best[a], value, less);
			best_index[a] = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(best_index[a]),
																 _mm256_castsi256_ps(index[a]), less));
			index[a] = _mm256_add_epi32(index[a], _mm256_set1_epi32(32));
		}
	}
	/* Merge the chains lane by lane: the smaller value, or the earlier index of equal ones. */
	for (int a = 1; a < 4; a++)
	{
		__m256		less = _mm256_cmp_ps(best[a], best[0], _CMP_LT_OQ);
		__m256		equal = _mm256_cmp_ps(best[a], best[0], _CMP_EQ_OQ);
		__m256		earlier = _mm256_castsi256_ps(_mm256_cmpgt_epi32(best_index[0], best_index[a]));
		__m256		take = _mm256_or_ps(less, _mm256_and_ps(equal, earlier));

		best[0] = _mm256_blendv_ps(best[0], best[a], take);
		best_index[0] = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(best_index[0]),
															 _mm256_castsi256_ps(best_index[a]), take));
	}
	index[0] = _mm256_add_epi32(lanes, _mm256_set1_epi32(int(c)));
	for (; c + 8 <= k; c += 8)
	{
		__m256		value = _mm256_loadu_ps(values + c);
		__m256		less = _mm256_cmp_ps(value, best[0], _CMP_LT_OQ);

		best[0] = _mm256_blendv_ps(best[0], value, less);
		best_index[0] = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(best_index[0]),
															 _mm256_castsi256_ps(index[0]), less));
		index[0] = _mm256_add_epi32(index[0], _mm256_set1_epi32(8));
	}

	size_t		winner = c > 0 ? size_t(ArgminLanes(best[0], best_index[0])) : 0;

	for (; c < k; c++)
		if (values[c] < values[winner])
			winner = c;
	return winner;
}

/*
 * Distance table of one subspace, 8 codewords at a time: each codeword gets
 * a vector of partial sums over its dimensions (8 per step, a masked load for
 * the tail), and one transpose-and-add turns the 8 vectors into 8 results.
 * SQUARED selects ||r - c||^2 (true) or -(r . c) (false).
 */
template <bool SQUARED>
__attribute__((target("avx2,fma"))) inline void
SubspaceTableAvx2(const float *r, const float *codebook, size_t ksub, size_t dsub,
				  float *table)
{
	size_t		full = dsub / 8 * 8;
	size_t		tail = dsub - full;
	__m256i		mask = TailMask(tail);
	__m256		r_tail = _mm256_maskload_ps(r + full, mask);
	size_t		c = 0;

	for (; c + 8 <= ksub; c += 8)
	{
		__m256		sums[8];

#pragma GCC unroll 8
		for (int u = 0; u < 8; u++)
		{
			const float *codeword = codebook + (c + u) * dsub;
			__m256		acc = _mm256_setzero_ps();

			for (size_t d = 0; d < full; d += 8)
			{
				if (SQUARED)
				{
					__m256		diff = _mm256_sub_ps(_mm256_loadu_ps(r + d),
													 _mm256_loadu_ps(codeword + d));

					acc = _mm256_fmadd_ps(diff, diff, acc);
				}
				else
					acc = _mm256_fmadd_ps(_mm256_loadu_ps(r + d),
										  _mm256_loadu_ps(codeword + d), acc);
			}
			if (tail != 0)
			{
				__m256		cw_tail = _mm256_maskload_ps(codeword + full, mask);

				if (SQUARED)
				{
					__m256		diff = _mm256_sub_ps(r_tail, cw_tail);

					acc = _mm256_fmadd_ps(diff, diff, acc);
				}
				else
					acc = _mm256_fmadd_ps(r_tail, cw_tail, acc);
			}
			sums[u] = acc;
		}

		__m256		result = HorizontalSums8(sums);

		if (!SQUARED)
			result = _mm256_sub_ps(_mm256_setzero_ps(), result);
		_mm256_storeu_ps(table + c, result);
	}
	/* ksub is a power of two; this only matters for ksub < 8. */
	if (c < ksub)
	{
		if (SQUARED)
			L2TablePortable(r, codebook + c * dsub, ksub - c, dsub, table + c);
		else
			InnerProductTablePortable(r, codebook + c * dsub, ksub - c, dsub, table + c);
	}
}

/*
 * One step of the nearest-codeword kernel: codewords [c, c + 8 * GROUPS) for
 * ROWS vectors.  Every column loaded from the transposed codebook feeds ROWS
 * FMAs, and ROWS x GROUPS independent accumulators hide the FMA latency;
 * each row keeps a running per-lane minimum with its codeword index.
 */
template <int ROWS, int GROUPS>
__attribute__((target("avx2,fma"))) inline void
NearestStepAvx2(const float *x, size_t stride, const float *transposed,
				const float *norms, size_t dsub, size_t kpad, size_t c,
				__m256 *best, __m256i *best_index)
{
	const __m256 two = _mm256_set1_ps(2.0f);
	__m256		acc[ROWS][GROUPS];

#pragma GCC unroll 16
	for (int r = 0; r < ROWS; r++)
#pragma GCC unroll 16
		for (int g = 0; g < GROUPS; g++)
			acc[r][g] = _mm256_setzero_ps();
	for (size_t d = 0; d < dsub; d++)
	{
		__m256		column[GROUPS];

#pragma GCC unroll 16
		for (int g = 0; g < GROUPS; g++)
			column[g] = _mm256_loadu_ps(transposed + d * kpad + c + 8 * g);
#pragma GCC unroll 16
		for (int r = 0; r < ROWS; r++)
		{
			__m256		value = _mm256_broadcast_ss(x + r * stride + d);

#pragma GCC unroll 16
			for (int g = 0; g < GROUPS; g++)
				acc[r][g] = _mm256_fmadd_ps(value, column[g], acc[r][g]);
		}
	}
#pragma GCC unroll 16
	for (int g = 0; g < GROUPS; g++)
	{
		__m256		norm = _mm256_loadu_ps(norms + c + 8 * g);
		__m256i		index = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
											 _mm256_set1_epi32(int(c + 8 * g)));

#pragma GCC unroll 16
		for (int r = 0; r < ROWS; r++)
		{
			__m256		distance = _mm256_fnmadd_ps(two, acc[r][g], norm);
			__m256		less = _mm256_cmp_ps(distance, best[r], _CMP_LT_OQ);

			best[r] = _mm256_blendv_ps(best[r], distance, less);
			best_index[r] = _mm256_castps_si256(
				_mm256_blendv_ps(_mm256_castsi256_ps(best_index[r]),
								 _mm256_castsi256_ps(index), less));
		}
	}
}

/* Nearest codeword of ROWS vectors, 8 * GROUPS codewords per step. */
template <int ROWS, int GROUPS>
__attribute__((target("avx2,fma"))) inline void
NearestRowsAvx2(const float *x, size_t stride, const float *transposed,
				const float *norms, size_t dsub, size_t kpad, int32_t *nearest_out)
{
	__m256		best[ROWS];
	__m256i		best_index[ROWS];
	size_t		c = 0;

#pragma GCC unroll 16
	for (int r = 0; r < ROWS; r++)
	{
		best[r] = _mm256_set1_ps(std::numeric_limits<float>::infinity());
		best_index[r] = _mm256_setzero_si256();
	}
	for (; c + 8 * GROUPS <= kpad; c += 8 * GROUPS)
		NearestStepAvx2<ROWS, GROUPS>(x, stride, transposed, norms, dsub, kpad, c,
									  best, best_index);
	for (; c < kpad; c += 8)
		NearestStepAvx2<ROWS, 1>(x, stride, transposed, norms, dsub, kpad, c,
								 best, best_index);
#pragma GCC unroll 16
	for (int r = 0; r < ROWS; r++)
		nearest_out[r] = ArgminLanes(best[r], best_index[r]);
}

/*
 * NearestCodewords, 4 rows x 16 codewords per step (8 accumulators).  On
 * Zen 5 this runs at ~37 G multiply-adds/s per core against ~16 G for one
 * row x 8 codewords; 6 x 16 is no faster.
 */
__attribute__((target("avx2,fma"))) void
NearestCodewordsAvx2(const float *x, size_t stride, size_t n,
					 const float *transposed, const float *norms,
					 size_t dsub, size_t kpad, int32_t *nearest_out)
{
	size_t		i = 0;

	for (; i + 4 <= n; i += 4)
		NearestRowsAvx2<4, 2>(x + i * stride, stride, transposed, norms,
													  dsub, kpad, nearest_out + i);
	if (n == 1 && i == 0)
	{
		/* One row (an insert): 64 codewords a step keep 8 FMA chains busy. */
		NearestRowsAvx2<1, 8>(x, stride, transposed, norms, dsub, kpad, nearest_out);
		return;
	}
	for (; i < n; i++)
		NearestRowsAvx2<1, 2>(x + i * stride, stride, transposed, norms, dsub, kpad,
										   nearest_out + i);
}

/*
 * One step of the prepared table kernel: codewords [c, c + 8 * GROUPS),
 * GROUPS independent accumulators fed by one broadcast per dimension.
 */
template <bool SQUARED, int GROUPS>
__attribute__((target("avx2,fma"))) inline void
PreparedTableStepAvx2(const float *v, const float *transposed, const float *norms,
					  size_t dsub, size_t ksub, size_t c, float v_norm, float *table)
{
	__m256		acc[GROUPS];

#pragma GCC unroll 16
	for (int g = 0; g < GROUPS; g++)
		acc[g] = _mm256_setzero_ps();
	for (size_t d = 0; d < dsub; d++)
	{
		__m256		value = _mm256_broadcast_ss(v + d);
		const float *column = transposed + d * ksub + c;

#pragma GCC unroll 16
		for (int g = 0; g < GROUPS; g++)
			acc[g] = _mm256_fmadd_ps(value, _mm256_loadu_ps(column + 8 * g), acc[g]);
	}
#pragma GCC unroll 16
	for (int g = 0; g < GROUPS; g++)
	{
		__m256		result;

		if (SQUARED)
			result = _mm256_fnmadd_ps(_mm256_set1_ps(2.0f), acc[g],
									  _mm256_add_ps(_mm256_loadu_ps(norms + c + 8 * g),
													_mm256_set1_ps(v_norm)));
		else
			result = _mm256_sub_ps(_mm256_setzero_ps(), acc[g]);
		_mm256_storeu_ps(table + c + 8 * g, result);
	}
}

/* AVX2 PreparedTablePortable, 64 codewords per step. */
template <bool SQUARED>
__attribute__((target("avx2,fma"))) void
PreparedTableAvx2(const float *v, const float *transposed, const float *norms,
				  size_t dsub, size_t ksub, float *table)
{
	float		v_norm = 0;
	size_t		c = 0;

	if (SQUARED)
		for (size_t d = 0; d < dsub; d++)
			v_norm += v[d] * v[d];
	for (; c + 64 <= ksub; c += 64)
		PreparedTableStepAvx2<SQUARED, 8>(v, transposed, norms, dsub, ksub, c, v_norm, table);
	for (; c < ksub; c += 8)
		PreparedTableStepAvx2<SQUARED, 1>(v, transposed, norms, dsub, ksub, c, v_norm, table);
}

/* ---------- dispatch helpers ---------- */

/* Distance table of subspace j of r (L2) or q (inner product): ksub values. */
void
SubspaceTable(const QuantizerView &q, const float *vector, bool squared, size_t j, float *sub_table)
{
	size_t		dsub = SubDim(q);
	size_t		ksub = CodebookSize(q);
	bool		avx2 = ActiveKernelsAreAvx2();
	const float *sub_vector = vector + j * dsub;
	const float *codebook = q.codebooks + j * ksub * dsub;

	if (avx2 && squared)
		SubspaceTableAvx2<true>(sub_vector, codebook, ksub, dsub, sub_table);
	else if (avx2)
		SubspaceTableAvx2<false>(sub_vector, codebook, ksub, dsub, sub_table);
	else if (squared)
		L2TablePortable(sub_vector, codebook, ksub, dsub, sub_table);
	else
		InnerProductTablePortable(sub_vector, codebook, ksub, dsub, sub_table);
}

/* Distance table for all m subspaces of r (L2) or q (inner product). */
void
SubspaceTables(const QuantizerView &q, const float *vector, bool squared, float *table)
{
	for (size_t j = 0; j < q.m; j++)
		SubspaceTable(q, vector, squared, j, table + j * CodebookSize(q));
}

/* Transposed codebook of sub-quantizer j inside a prepared quantizer. */
const float *
PreparedTransposed(const QuantizerView &q, const float *prepared, size_t j)
{
	return prepared + j * SubDim(q) * CodebookSize(q);
}

/* Codeword norms of sub-quantizer j inside a prepared quantizer. */
const float *
PreparedNorms(const QuantizerView &q, const float *prepared, size_t j)
{
	return prepared + (q.dim + j) * CodebookSize(q);
}

/* SubspaceTable() from a prepared quantizer. */
void
SubspaceTablePrepared(const QuantizerView &q, const float *prepared, const float *vector,
					  bool squared, size_t j, float *sub_table)
{
	size_t		dsub = SubDim(q);
	size_t		ksub = CodebookSize(q);
	const float *sub_vector = vector + j * dsub;
	const float *transposed = PreparedTransposed(q, prepared, j);
	const float *norms = PreparedNorms(q, prepared, j);

	if (ActiveKernelsAreAvx2() && squared)
		PreparedTableAvx2<true>(sub_vector, transposed, norms, dsub, ksub, sub_table);
	else if (ActiveKernelsAreAvx2())
		PreparedTableAvx2<false>(sub_vector, transposed, norms, dsub, ksub, sub_table);
	else
		PreparedTablePortable(sub_vector, transposed, norms, dsub, ksub, squared, sub_table);
}

/* SubspaceTables() from a prepared quantizer. */
void
SubspaceTablesPrepared(const QuantizerView &q, const float *prepared, const float *vector,
					   bool squared, float *table)
{
	for (size_t j = 0; j < q.m; j++)
		SubspaceTablePrepared(q, prepared, vector, squared, j, table + j * CodebookSize(q));
}

/* Throws unless a prepared quantizer was passed. */
void
CheckPrepared(const float *prepared)
{
	if (prepared == nullptr)
		ThrowInvalid("prepared quantizer is missing");
}

/* residual_out = x - centroid[list]. */
void
Residual(const QuantizerView &q, const float *x, int32_t list, float *residual_out)
{
	const float *centroid = q.centroids + size_t(list) * q.dim;

	for (size_t d = 0; d < q.dim; d++)
		residual_out[d] = x[d] - centroid[d];
}

/* Nearest centroid of one vector with the dispatched L2 kernel. */
int32_t
NearestCentroidDirect(const QuantizerView &q, const float *x)
{
	size_t		best = 0;
	float		best_distance = std::numeric_limits<float>::infinity();

	for (size_t c = 0; c < q.lists; c++)
	{
		float		distance = L2SquaredDistance(x, q.centroids + c * q.dim, q.dim);

		if (distance < best_distance)
		{
			best_distance = distance;
			best = c;
		}
	}
	return int32_t(best);
}

/* AssignLists for large batches: sgemm blocks of x . c, then argmin. */
void
AssignListsBlas(const QuantizerView &q, const float *x, size_t n, int32_t *lists_out)
{
	bool		avx2 = ActiveKernelsAreAvx2();
	size_t		block_rows = std::max<size_t>(1, std::min<size_t>(4096, kAssignBlockFloats / q.lists));
	std::vector<float> norms(q.lists);
	std::vector<float> dots(block_rows * q.lists);

	for (size_t c = 0; c < q.lists; c++)
		norms[c] = SquaredNorm(q.centroids + c * q.dim, q.dim);

	for (size_t start = 0; start < n; start += block_rows)
	{
		size_t		rows = std::min(block_rows, n - start);
		int			lists_int = int(q.lists);
		int			rows_int = int(rows);
		int			dim_int = int(q.dim);
		float		one = 1.0f;
		float		zero = 0.0f;

		CheckInterrupt();

		/*
		 * Column-major view: dots (lists x rows) = centroids^T (lists x dim)
		 * times x (dim x rows); that is row-major rows x lists.
		 */
		sgemm_("T", "N", &lists_int, &rows_int, &dim_int, &one, q.centroids, &dim_int,
			   x + start * q.dim, &dim_int, &zero, dots.data(), &lists_int);

		for (size_t i = 0; i < rows; i++)
		{
			const float *row_dots = dots.data() + i * q.lists;

			lists_out[start + i] = int32_t(avx2
										   ? ArgminNormMinusTwoDotAvx2(norms.data(), row_dots, q.lists)
										   : ArgminNormMinusTwoDotPortable(norms.data(), row_dots, q.lists));
		}
	}
}

/*
 * AssignLists for large batches with our own kernel: centroids transposed
 * once per call, then batches of rows in parallel (OpenMP).
 */
void
AssignListsTransposed(const QuantizerView &q, const float *x, size_t n, int32_t *lists_out)
{
	size_t		kpad = PaddedCodewords(q.lists);
	std::vector<float> transposed(q.dim * kpad);
	std::vector<float> norms(kpad);

	TransposeCodebook(q.centroids, q.lists, q.dim, transposed.data(), norms.data());
	for (size_t start = 0; start < n; start += kInterruptCheckRows)
	{
		size_t		end = std::min(n, start + kInterruptCheckRows);
		long		batches = long((end - start + kEncodeBatchRows - 1) / kEncodeBatchRows);

		CheckInterrupt();
#pragma omp parallel for schedule(dynamic) if (batches > 1)
		for (long batch = 0; batch < batches; batch++)
		{
			size_t		first = start + size_t(batch) * kEncodeBatchRows;
			size_t		rows = std::min(kEncodeBatchRows, end - first);

			NearestCodewords(x + first * q.dim, q.dim, rows, transposed.data(), norms.data(),
							 q.dim, kpad, lists_out + first);
		}
	}
}

/*
 * EncodeResiduals for a few rows: one distance table per row (from the
 * prepared quantizer if there is one), then argmin.
 */
void
EncodeResidualsDirect(const QuantizerView &q, const float *prepared, const float *x,
					  const int32_t *lists, size_t n, uint8_t *codes_out)
{
	size_t		ksub = CodebookSize(q);
	float	   *residual = ThreadScratch(q.dim + ksub);
	float	   *sub_table = residual + q.dim;	/* one subspace's table: stays in L1 */
	bool		avx2 = ActiveKernelsAreAvx2();
	size_t		code_bytes = CodeBytes(q.m, q.nbits);

	for (size_t i = 0; i < n; i++)
	{
		Residual(q, x + i * q.dim, lists[i], residual);
		for (size_t j = 0; j < q.m; j++)
		{
			if (prepared != nullptr)
			{
				/* Distances and argmin in one pass, no table in memory. */
				int32_t		nearest;

				NearestCodewords(residual + j * SubDim(q), q.dim, 1,
								 PreparedTransposed(q, prepared, j), PreparedNorms(q, prepared, j),
								 SubDim(q), ksub, &nearest);
				SetCodeValue(codes_out + i * code_bytes, j, q.nbits, uint8_t(nearest));
				continue;
			}
			SubspaceTable(q, residual, true, j, sub_table);
			SetCodeValue(codes_out + i * code_bytes, j, q.nbits,
						 uint8_t(avx2 ? ArgminAvx2(sub_table, ksub)
								 : ArgminPortable(sub_table, ksub)));
		}
	}
}

/*
 * EncodeResiduals for large batches: rows are encoded in batches in
 * parallel (OpenMP), sub-quantizer by sub-quantizer so that each transposed
 * codebook of the prepared quantizer stays in L1 across a batch.
 */
void
EncodeResidualsBatch(const QuantizerView &q, const float *prepared, const float *x,
					 const int32_t *lists, size_t n, uint8_t *codes_out)
{
	size_t		dsub = SubDim(q);
	size_t		ksub = CodebookSize(q);
	int			threads = omp_get_max_threads();
	std::vector<float> residuals(size_t(threads) * kEncodeBatchRows * q.dim);
	std::vector<int32_t> nearest(size_t(threads) * kEncodeBatchRows);
	size_t		code_bytes = CodeBytes(q.m, q.nbits);

	for (size_t start = 0; start < n; start += kInterruptCheckRows)
	{
		size_t		end = std::min(n, start + kInterruptCheckRows);
		long		batches = long((end - start + kEncodeBatchRows - 1) / kEncodeBatchRows);

		CheckInterrupt();
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (batches > 1)
		for (long batch = 0; batch < batches; batch++)
		{
			int			thread = omp_get_thread_num();
			size_t		first = start + size_t(batch) * kEncodeBatchRows;
			size_t		rows = std::min(kEncodeBatchRows, end - first);
			float	   *batch_residuals = residuals.data() + size_t(thread) * kEncodeBatchRows * q.dim;
			int32_t    *batch_nearest = nearest.data() + size_t(thread) * kEncodeBatchRows;

			for (size_t i = 0; i < rows; i++)
				Residual(q, x + (first + i) * q.dim, lists[first + i],
						 batch_residuals + i * q.dim);
			for (size_t j = 0; j < q.m; j++)
			{
				NearestCodewords(batch_residuals + j * dsub, q.dim, rows,
								 PreparedTransposed(q, prepared, j), PreparedNorms(q, prepared, j),
								 dsub, ksub, batch_nearest);
				for (size_t i = 0; i < rows; i++)
					SetCodeValue(codes_out + (first + i) * code_bytes, j, q.nbits,
								 uint8_t(batch_nearest[i]));
			}
		}
	}
}

}							/* namespace */

/* Scratch buffer of this thread (see pq_kernels.h). */
float *
ThreadScratch(size_t floats)
{
	thread_local std::vector<float> scratch;

	if (scratch.size() < floats)
		scratch.resize(floats);
	return scratch.data();
}

/* Transposes one codebook and computes its norms (see pq_kernels.h). */
void
TransposeCodebook(const float *codebook, size_t k, size_t dsub,
				  float *transposed_out, float *norms_out)
{
	size_t		kpad = PaddedCodewords(k);

	for (size_t c = 0; c < kpad; c++)
	{
		double		norm = 0;

		for (size_t d = 0; d < dsub; d++)
		{
			float		value = c < k ? codebook[c * dsub + d] : 0.0f;

			transposed_out[d * kpad + c] = value;
			norm += double(value) * value;
		}
		norms_out[c] = c < k ? float(norm) : std::numeric_limits<float>::infinity();
	}
}

/* Nearest codeword of each vector: dispatches to AVX2 or portable code. */
void
NearestCodewords(const float *x, size_t stride, size_t n, const float *transposed,
				 const float *norms, size_t dsub, size_t kpad, int32_t *nearest_out)
{
	if (ActiveKernelsAreAvx2())
		NearestCodewordsAvx2(x, stride, n, transposed, norms, dsub, kpad, nearest_out);
	else
		NearestCodewordsPortable(x, stride, n, transposed, norms, dsub, kpad, nearest_out);
}

/*
 * Nearest centroid of each vector: direct kernels for a few rows, the
 * transposed-centroid kernel for batches, BLAS for very large quantizers.
 */
void
AssignLists(const QuantizerView &q, const float *x, size_t n, int32_t *lists_out)
{
	CheckQuantizer(q);
	if (n == 0)
		return;
	if (n < kSmallBatchRows)
	{
		for (size_t i = 0; i < n; i++)
			lists_out[i] = NearestCentroidDirect(q, x + i * q.dim);
		return;
	}
	if (q.lists * q.dim <= kTransposedCentroidsMaxFloats)
		AssignListsTransposed(q, x, n, lists_out);
	else
		AssignListsBlas(q, x, n, lists_out);
}

/* Size of a prepared quantizer in floats (see ivfpq_core.h). */
size_t
PreparedQuantizerFloats(const QuantizerView &q)
{
	return (q.dim + q.m) * CodebookSize(q);
}

/* Transposes every codebook of q and computes the codeword norms. */
void
PrepareQuantizer(const QuantizerView &q, float *prepared_out)
{
	size_t		dsub;
	size_t		ksub;

	CheckQuantizer(q);
	dsub = SubDim(q);
	ksub = CodebookSize(q);
	for (size_t j = 0; j < q.m; j++)
		TransposeCodebook(q.codebooks + j * ksub * dsub, ksub, dsub,
						  prepared_out + j * dsub * ksub, prepared_out + (q.dim + j) * ksub);
}

/* PQ codes of the residuals of n vectors against their lists' centroids. */
void
EncodeResiduals(const QuantizerView &q, const float *x, const int32_t *lists,
				size_t n, uint8_t *codes_out)
{
	CheckQuantizer(q);
	for (size_t i = 0; i < n; i++)
		CheckList(q, lists[i]);
	if (n == 0)
		return;
	if (n < kSmallBatchRows)
		EncodeResidualsDirect(q, nullptr, x, lists, n, codes_out);
	else
	{
		std::vector<float> prepared(PreparedQuantizerFloats(q));

		PrepareQuantizer(q, prepared.data());
		EncodeResidualsBatch(q, prepared.data(), x, lists, n, codes_out);
	}
}

/* Lists and codes of a batch on this process's share of the threads. */
void
AssignAndEncode(const QuantizerView &q, const float *x, size_t n, int participants,
				int32_t *lists_out, uint8_t *codes_out)
{
	int			threads = participants > 1 ? std::max(1, omp_get_max_threads() / participants) : 0;
	OmpThreadsScope scope(threads);

	AssignLists(q, x, n, lists_out);
	EncodeResiduals(q, x, lists_out, n, codes_out);
}

/* EncodeResiduals() with the codebooks already prepared. */
void
EncodeResidualsPrepared(const QuantizerView &q, const float *prepared, const float *x,
						const int32_t *lists, size_t n, uint8_t *codes_out)
{
	CheckQuantizer(q);
	CheckPrepared(prepared);
	for (size_t i = 0; i < n; i++)
		CheckList(q, lists[i]);
	if (n == 0)
		return;
	if (n < kSmallBatchRows)
		EncodeResidualsDirect(q, prepared, x, lists, n, codes_out);
	else
		EncodeResidualsBatch(q, prepared, x, lists, n, codes_out);
}

/* Ordering distance from the query to every centroid. */
void
CentroidDistances(const QuantizerView &q, const float *query, float *distances_out)
{
	CheckQuantizer(q);
	for (size_t c = 0; c < q.lists; c++)
	{
		const float *centroid = q.centroids + c * q.dim;

		if (q.metric == Metric::InnerProduct)
			distances_out[c] = -InnerProduct(query, centroid, q.dim);
		else
			distances_out[c] = L2SquaredDistance(query, centroid, q.dim);
	}
}

/* Per-list ADC distance table (and bias) of a query. */
void
ComputeDistanceTable(const QuantizerView &q, const float *query, int32_t list,
					 float *table_out, float *bias_out)
{
	CheckQuantizer(q);
	CheckList(q, list);
	if (q.metric == Metric::InnerProduct)
	{
		SubspaceTables(q, query, false, table_out);
		*bias_out = -InnerProduct(query, q.centroids + size_t(list) * q.dim, q.dim);
	}
	else
	{
		float	   *residual = ThreadScratch(q.dim);

		Residual(q, query, list, residual);
		SubspaceTables(q, residual, true, table_out);
		*bias_out = 0.0f;
	}
}

/* ComputeDistanceTable() with the codebooks already prepared. */
void
ComputeDistanceTablePrepared(const QuantizerView &q, const float *prepared,
							 const float *query, int32_t list, float *table_out,
							 float *bias_out)
{
	CheckQuantizer(q);
	CheckPrepared(prepared);
	CheckList(q, list);
	if (q.metric == Metric::InnerProduct)
	{
		SubspaceTablesPrepared(q, prepared, query, false, table_out);
		*bias_out = -InnerProduct(query, q.centroids + size_t(list) * q.dim, q.dim);
	}
	else
	{
		float	   *residual = ThreadScratch(q.dim);

		Residual(q, query, list, residual);
		SubspaceTablesPrepared(q, prepared, residual, true, table_out);
		*bias_out = 0.0f;
	}
}

}							/* namespace ivfpq::core */
