/*
 * fast_scan.cpp
 *		4-bit PQ codes: the fast-scan block layout, the quantization of a
 *		list's distance table to 8 bits, and the scan kernel that looks the
 *		table up in registers (pshufb), with AVX2, SSSE3 and portable
 *		variants chosen at run time.  ivfpq_core.h describes the layout.
 *
 * The idea is FAISS's (IndexPQFastScan, "Quicker ADC" by André et al.): with
 * 16 codewords per sub-quantizer a sub-quantizer's table is 16 bytes once
 * quantized to 8 bits, so it fits one 128-bit lane and a byte shuffle looks
 * up 16 (SSSE3) or 32 (AVX2) codes at once.  Sums are kept in 16 bits; the
 * quantization leaves room for the sum over every sub-quantizer, so no
 * variant ever saturates or wraps and all of them return the same sums.
 */
#include <algorithm>
#include <cmath>
#include <cstring>
#include <immintrin.h>
#include <limits>

#include "core_error.h"
#include "kernels.h"

namespace ivfpq::core {

namespace {

/* Bytes of one fast-scan block (32 entries of m / 2 bytes). */
inline size_t
FastScanBlockBytes(size_t m)
{
	return kFastScanBlock * (m / 2);
}

/* ---------- portable ---------- */

/* Sums of the 32 entries of one block. */
void
BlockSumsPortable(const uint8_t *lut, size_t m, const uint8_t *block, uint16_t *sums)
{
	for (size_t i = 0; i < kFastScanBlock; i++)
	{
		size_t		byte = i % 16;
		int			shift = int(4 * (i / 16));
		uint32_t	sum = 0;

		for (size_t p = 0; p < m / 2; p++)
		{
			const uint8_t *group = block + 32 * p;

			sum += lut[(2 * p) * kFastScanKsub + ((group[byte] >> shift) & 0x0f)];
			sum += lut[(2 * p + 1) * kFastScanKsub + ((group[16 + byte] >> shift) & 0x0f)];
		}
		sums[i] = uint16_t(sum);
	}
}

/* ---------- SSSE3 ---------- */

/*
 * Sums of the 32 entries of one block into sums[0..31].  Per 16 table values
 * (bytes) two 16-bit accumulators: one adds the bytes as 16-bit words (even
 * entry + 256 x odd entry), one the odd bytes alone; the even sums are the
 * difference (exact modulo 2^16, and every true sum is below 2^16).
 */
__attribute__((target("ssse3"))) void
BlockSumsSsse3(const uint8_t *lut, size_t m, const uint8_t *block, uint16_t *sums)
{
	const __m128i low_nibbles = _mm_set1_epi8(0x0f);
	__m128i		lo_all = _mm_setzero_si128();	/* entries 0..15 */
	__m128i		lo_odd = _mm_setzero_si128();
	__m128i		hi_all = _mm_setzero_si128();	/* entries 16..31 */
	__m128i		hi_odd = _mm_setzero_si128();

	for (size_t j = 0; j < m; j++)
	{
		/* Sub-quantizer j: half j % 2 of group j / 2. */
		__m128i		codes = _mm_loadu_si128(reinterpret_cast<const __m128i *>(block + 16 * j));
		__m128i		table = _mm_loadu_si128(reinterpret_cast<const __m128i *>(lut + kFastScanKsub * j));
		__m128i		lo = _mm_shuffle_epi8(table, _mm_and_si128(codes, low_nibbles));
		__m128i		hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(codes, 4), low_nibbles));

		lo_all = _mm_add_epi16(lo_all, lo);
		lo_odd = _mm_add_epi16(lo_odd, _mm_srli_epi16(lo, 8));
		hi_all = _mm_add_epi16(hi_all, hi);
		hi_odd = _mm_add_epi16(hi_odd, _mm_srli_epi16(hi, 8));
	}

	__m128i		lo_even = _mm_sub_epi16(lo_all, _mm_slli_epi16(lo_odd, 8));
	__m128i		hi_even = _mm_sub_epi16(hi_all, _mm_slli_epi16(hi_odd, 8));

	_mm_storeu_si128(reinterpret_cast<__m128i *>(sums), _mm_unpacklo_epi16(lo_even, lo_odd));
	_mm_storeu_si128(reinterpret_cast<__m128i *>(sums + 8), _mm_unpackhi_epi16(lo_even, lo_odd));
	_mm_storeu_si128(reinterpret_cast<__m128i *>(sums + 16), _mm_unpacklo_epi16(hi_even, hi_odd));
	_mm_storeu_si128(reinterpret_cast<__m128i *>(sums + 24), _mm_unpackhi_epi16(hi_even, hi_odd));
}

/* ---------- AVX2 ---------- */

/* The 32 sums of one block, as four vectors of 8 (entries 0-7, 8-15, 16-23, 24-31). */
struct BlockSumsVectors
{
	__m128i		part[4];
};

/*
 * Sums of one block, two sub-quantizers per step: the lower lane of every
 * vector holds sub-quantizer 2p's values, the upper lane 2p + 1's, and the
 * lanes are added once at the end.  Same even/odd accumulation as SSSE3.
 */
__attribute__((target("avx2"))) inline BlockSumsVectors
BlockSumsAvx2(const uint8_t *lut, size_t m, const uint8_t *block)
{
	const __m256i low_nibbles = _mm256_set1_epi8(0x0f);
	__m256i		lo_all = _mm256_setzero_si256();
	__m256i		lo_odd = _mm256_setzero_si256();
	__m256i		hi_all = _mm256_setzero_si256();
	__m256i		hi_odd = _mm256_setzero_si256();

	for (size_t p = 0; p < m / 2; p++)
	{
		__m256i		codes = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(block + 32 * p));
		__m256i		table = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(lut + 32 * p));
		__m256i		lo = _mm256_shuffle_epi8(table, _mm256_and_si256(codes, low_nibbles));
		__m256i		hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(codes, 4),
																	 low_nibbles));

		lo_all = _mm256_add_epi16(lo_all, lo);
		lo_odd = _mm256_add_epi16(lo_odd, _mm256_srli_epi16(lo, 8));
		hi_all = _mm256_add_epi16(hi_all, hi);
		hi_odd = _mm256_add_epi16(hi_odd, _mm256_srli_epi16(hi, 8));
	}

	__m256i		lo_even = _mm256_sub_epi16(lo_all, _mm256_slli_epi16(lo_odd, 8));
	__m256i		hi_even = _mm256_sub_epi16(hi_all, _mm256_slli_epi16(hi_odd, 8));
	__m128i		le = _mm_add_epi16(_mm256_castsi256_si128(lo_even), _mm256_extracti128_si256(lo_even, 1));
	__m128i		lo = _mm_add_epi16(_mm256_castsi256_si128(lo_odd), _mm256_extracti128_si256(lo_odd, 1));
	__m128i		he = _mm_add_epi16(_mm256_castsi256_si128(hi_even), _mm256_extracti128_si256(hi_even, 1));
	__m128i		ho = _mm_add_epi16(_mm256_castsi256_si128(hi_odd), _mm256_extracti128_si256(hi_odd, 1));
	BlockSumsVectors result;

	result.part[0] = _mm_unpacklo_epi16(le, lo);
	result.part[1] = _mm_unpackhi_epi16(le, lo);
	result.part[2] = _mm_unpacklo_epi16(he, ho);
	result.part[3] = _mm_unpackhi_epi16(he, ho);
	return result;
}

__attribute__((target("avx2"))) void
BlockSumsAvx2Store(const uint8_t *lut, size_t m, const uint8_t *block, uint16_t *sums)
{
	BlockSumsVectors v = BlockSumsAvx2(lut, m, block);

	for (int k = 0; k < 4; k++)
		_mm_storeu_si128(reinterpret_cast<__m128i *>(sums + 8 * k), v.part[k]);
}

/*
 * Distances of one block straight from the sum vectors: offset + step * sum
 * (multiply then add, as the other variants: target "avx2" without "fma"
 * keeps the compiler from fusing them).
 */
__attribute__((target("avx2"))) void
BlockDistancesAvx2(const uint8_t *lut, size_t m, const uint8_t *block, float step, float offset,
				   float *out)
{
	BlockSumsVectors v = BlockSumsAvx2(lut, m, block);
	__m256		steps = _mm256_set1_ps(step);
	__m256		offsets = _mm256_set1_ps(offset);

	for (int k = 0; k < 4; k++)
	{
		__m256		sums = _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(v.part[k]));

		_mm256_storeu_ps(out + 8 * k, _mm256_add_ps(offsets, _mm256_mul_ps(steps, sums)));
	}
}

/*
 * Which of the 8 distances d[0..7] pass FastScanRefine's test
 * d - bound - 1e-5 |d| <= threshold: the same float operations as the
 * scalar test (no fused multiply-add), so the same answer, 8 at a time.
 */
__attribute__((target("avx2"))) int
RefineCandidatesAvx2(const float *d, float bound, float threshold)
{
	__m256		values = _mm256_loadu_ps(d);
	__m256		magnitude = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), values);
	__m256		low = _mm256_sub_ps(_mm256_sub_ps(values, _mm256_set1_ps(bound)),
									_mm256_mul_ps(_mm256_set1_ps(1e-5f), magnitude));

	return _mm256_movemask_ps(_mm256_cmp_ps(low, _mm256_set1_ps(threshold), _CMP_LE_OQ));
}

/* ---------- dispatch ---------- */

bool
CpuHas(const char *feature)
{
	static const bool avx2 = (__builtin_cpu_init(), __builtin_cpu_supports("avx2"));
	static const bool ssse3 = (__builtin_cpu_init(), __builtin_cpu_supports("ssse3"));

	return std::strcmp(feature, "avx2") == 0 ? avx2 : ssse3;
}

/* The second pass of QuantizeFastScanTable: each row less its minimum, scaled and rounded. */
void
QuantizeRowsPortable(const float *table, size_t m, float scale, uint8_t *lut_out)
{
	for (size_t j = 0; j < m; j++)
	{
		const float *row = table + j * kFastScanKsub;
		float		low = row[0];
		uint8_t    *out = lut_out + j * kFastScanKsub;

		for (size_t k = 1; k < kFastScanKsub; k++)
			low = std::min(low, row[k]);
		for (size_t k = 0; k < kFastScanKsub; k++)
		{
			/* Non-negative: rounding to nearest is truncation of value + 1/2. */
			float		value = (row[k] - low) * scale + 0.5f;

			out[k] = uint8_t(std::min(int(value), 255));
		}
	}
}

/*
 * QuantizeRowsPortable, 16 entries per
 * step: the same float operations as the scalar loop (subtract, multiply,
 * add 1/2, truncate; no fused multiply-add), so the same bytes.
 */
__attribute__((target("avx2"))) void
QuantizeRowsAvx2(const float *table, size_t m, float scale, uint8_t *lut_out)
{
	const __m256 scales = _mm256_set1_ps(scale);
	const __m256 half = _mm256_set1_ps(0.5f);

	for (size_t j = 0; j < m; j++)
	{
		const float *row = table + j * kFastScanKsub;
		__m256		a = _mm256_loadu_ps(row);
		__m256		b = _mm256_loadu_ps(row + 8);
		__m256		low = _mm256_min_ps(a, b);
		__m128		low4 = _mm_min_ps(_mm256_castps256_ps128(low), _mm256_extractf128_ps(low, 1));

		low4 = _mm_min_ps(low4, _mm_movehl_ps(low4, low4));
		low4 = _mm_min_ps(low4, _mm_shuffle_ps(low4, low4, 1));
		low = _mm256_broadcastss_ps(low4);

		__m256i		ia = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(a, low), scales), half));
		__m256i		ib = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(b, low), scales), half));
		/* 32-bit -> 16-bit -> 8-bit with unsigned saturation (values are >= 0). */
		__m256i		words = _mm256_permute4x64_epi64(_mm256_packus_epi32(ia, ib), 0xD8);
		__m128i		bytes = _mm_packus_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1));

		_mm_storeu_si128(reinterpret_cast<__m128i *>(lut_out + j * kFastScanKsub), bytes);
	}
}

/* The variant Auto stands for now (follows UseKernels(): Portable forces portable). */
FastScanKernel
ResolveKernel(FastScanKernel kernel)
{
	if (kernel != FastScanKernel::Auto)
	{
		if (!FastScanKernelSupported(kernel))
			ThrowInvalid("fast-scan kernel not supported on this CPU");
		return kernel;
	}
	if (ActiveKernelsAreAvx2())
		return FastScanKernel::Avx2;
	if (CpuHas("avx2"))
		return FastScanKernel::Portable;	/* portable kernels were asked for */
	if (CpuHas("ssse3"))
		return FastScanKernel::Ssse3;
	return FastScanKernel::Portable;
}

using BlockSumsFunction = void (*) (const uint8_t *, size_t, const uint8_t *, uint16_t *);

BlockSumsFunction
BlockSumsOf(FastScanKernel kernel)
{
	switch (kernel)
	{
		case FastScanKernel::Avx2:
			return BlockSumsAvx2Store;
		case FastScanKernel::Ssse3:
			return BlockSumsSsse3;
		default:
			return BlockSumsPortable;
	}
}

void
CheckFastScanTable(const FastScanTable &table)
{
	if (table.m == 0 || table.m % 2 != 0 || table.lut == nullptr)
		ThrowInvalid("fast-scan table needs an even number of sub-quantizers");
}

}							/* namespace */

namespace {

/* Scatter a packed 4-bit code into entry 'index' of a fast-scan area. */
void
StoreFastScanCode(uint8_t *blocks, size_t index, size_t m, const uint8_t *code)
{
	uint8_t    *block = blocks + index / kFastScanBlock * FastScanBlockBytes(m);
	size_t		lane = index % kFastScanBlock;
	size_t		byte = lane % 16;
	int			shift = int(4 * (lane / 16));
	uint8_t		keep = uint8_t(~(0x0f << shift));

	for (size_t j = 0; j < m; j++)
	{
		uint8_t    *target = block + 16 * j + byte;	/* half j % 2 of group j / 2 */

		*target = uint8_t((*target & keep) | (CodeValue(code, j, 4) << shift));
	}
}

/* Gather entry 'index' of a fast-scan area back into a packed 4-bit code. */
void
LoadFastScanCode(const uint8_t *blocks, size_t index, size_t m, uint8_t *code)
{
	const uint8_t *block = blocks + index / kFastScanBlock * FastScanBlockBytes(m);
	size_t		lane = index % kFastScanBlock;
	size_t		byte = lane % 16;
	int			shift = int(4 * (lane / 16));

	for (size_t j = 0; j < m; j++)
		SetCodeValue(code, j, 4, uint8_t((block[16 * j + byte] >> shift) & 0x0f));
}

}							/* namespace */

/* Entry 'index' of a blocked area of either code size, from a row-major code. */
void
StoreBlockedCode(uint8_t *blocks, size_t index, size_t m, size_t nbits, const uint8_t *code)
{
	if (nbits == 4)
		StoreFastScanCode(blocks, index, m, code);
	else
		StoreBlockedCode(blocks, index, m, code);
}

/* Entry 'index' of a blocked area of either code size, as a row-major code. */
void
LoadBlockedCode(const uint8_t *blocks, size_t index, size_t m, size_t nbits, uint8_t *code)
{
	if (nbits == 4)
		LoadFastScanCode(blocks, index, m, code);
	else
		LoadBlockedCode(blocks, index, m, code);
}

/* Largest difference between a fast-scan distance and the float ADC one. */
float
FastScanErrorBound(const FastScanTable &table, float distance)
{
	return float(table.m) * table.step * 0.5f * 1.001f +
		1e-5f * (std::fabs(distance) + std::fabs(table.offset));
}

/* Float ADC distance of one entry of a fast-scan area. */
float
FastScanEntryDistance(const float *table, size_t m, const uint8_t *blocks, size_t index, float bias)
{
	const uint8_t *block = blocks + index / kFastScanBlock * FastScanBlockBytes(m);
	size_t		lane = index % kFastScanBlock;
	const uint8_t *bytes = block + lane % 16;
	int			shift = int(4 * (lane / 16));
	float		sum = 0;

	for (size_t j = 0; j < m; j++)
		sum += table[j * kFastScanKsub + ((bytes[16 * j] >> shift) & 0x0f)];
	return bias + sum;
}

/* Float ADC distances for the entries that may enter the best heap_capacity. */
size_t
FastScanRefine(const FastScanTable &fast, const float *table, float bias, const uint8_t *blocks,
			   size_t n, const bool *pass, float *distances, float *heap, size_t heap_capacity,
			   size_t *heap_count)
{
	size_t		refined = 0;
	size_t		count = *heap_count;
	float		threshold = count < heap_capacity ? std::numeric_limits<float>::infinity() : heap[0];

	if (heap_capacity == 0)
		return 0;
	/* FastScanErrorBound(), its constant part hoisted. */
	float		bound = float(fast.m) * fast.step * 0.5f * 1.001f + 1e-5f * std::fabs(fast.offset);

	bool		groups = pass == nullptr && ResolveKernel(FastScanKernel::Auto) == FastScanKernel::Avx2;

	for (size_t i = 0; i < n; i++)
	{
		float		distance;

		/* Most entries fail the test: skip whole groups of 8 that do. */
		if (groups && i % 8 == 0 && i + 8 <= n &&
			RefineCandidatesAvx2(distances + i, bound, threshold) == 0)
		{
			i += 7;
			continue;
		}
		if (pass != nullptr && !pass[i])
			continue;
		if (distances[i] - bound - 1e-5f * std::fabs(distances[i]) > threshold)
			continue;
		distance = FastScanEntryDistance(table, fast.m, blocks, i, bias);
		distances[i] = distance;
		refined++;
		if (count < heap_capacity)
		{
			heap[count++] = distance;
			std::push_heap(heap, heap + count);
		}
		else if (distance < heap[0])
		{
			std::pop_heap(heap, heap + count);
			heap[count - 1] = distance;
			std::push_heap(heap, heap + count);
		}
		else
			continue;
		if (count == heap_capacity)
			threshold = heap[0];
	}
	*heap_count = count;
	return refined;
}

/* Quantize a 4-bit distance table to 8 bits (see ivfpq_core.h). */
void
QuantizeFastScanTable(const float *table, size_t m, float bias, uint8_t *lut_out,
					  float *step_out, float *offset_out, FastScanKernel kernel)
{
	double		min_sum = 0;
	double		span_sum = 0;
	float		span_max = 0;
	float		scale;

	/* Plain 16-wide loops: the compiler vectorizes them (a table is 2 kB at m = 32). */
	for (size_t j = 0; j < m; j++)
	{
		const float *row = table + j * kFastScanKsub;
		float		low = row[0];
		float		high = row[0];

		for (size_t k = 1; k < kFastScanKsub; k++)
		{
			low = std::min(low, row[k]);
			high = std::max(high, row[k]);
		}
		min_sum += low;
		span_sum += double(high) - double(low);
		span_max = std::max(span_max, high - low);
	}

	/*
	 * One scale for all sub-quantizers (sums add across them): the widest
	 * table spans 255 steps, unless the spans together would sum past what
	 * 16 bits hold; rounding adds at most half a step per sub-quantizer, so
	 * m steps are kept in reserve.
	 */
	scale = 1.0f;
	if (span_max > 0 && std::isfinite(span_max))
		scale = float(std::min(255.0 / span_max, double(65535 - m) / span_sum));
	if (ResolveKernel(kernel) == FastScanKernel::Avx2)
		QuantizeRowsAvx2(table, m, scale, lut_out);
	else
		QuantizeRowsPortable(table, m, scale, lut_out);
	*step_out = 1.0f / scale;
	*offset_out = float(double(bias) + min_sum);
}

bool
FastScanKernelSupported(FastScanKernel kernel)
{
	switch (kernel)
	{
		case FastScanKernel::Avx2:
			return CpuHas("avx2");
		case FastScanKernel::Ssse3:
			return CpuHas("ssse3");
		default:
			return true;
	}
}

const char *
FastScanKernelName()
{
	switch (ResolveKernel(FastScanKernel::Auto))
	{
		case FastScanKernel::Avx2:
			return "avx2";
		case FastScanKernel::Ssse3:
			return "ssse3";
		default:
			return "portable";
	}
}

/* Integer sums of n entries of a fast-scan area. */
void
FastScanSums(const FastScanTable &table, const uint8_t *blocks, size_t n, uint16_t *sums_out,
			 FastScanKernel kernel)
{
	BlockSumsFunction block_sums;
	size_t		block_bytes;

	CheckFastScanTable(table);
	block_sums = BlockSumsOf(ResolveKernel(kernel));
	block_bytes = FastScanBlockBytes(table.m);
	for (size_t start = 0; start < n; start += kFastScanBlock)
	{
		const uint8_t *block = blocks + start / kFastScanBlock * block_bytes;

		if (n - start >= kFastScanBlock)
			block_sums(table.lut, table.m, block, sums_out + start);
		else
		{
			uint16_t	sums[kFastScanBlock];

			block_sums(table.lut, table.m, block, sums);
			std::memcpy(sums_out + start, sums, (n - start) * sizeof(uint16_t));
		}
	}
}

/* ADC distances of n entries of a fast-scan area. */
void
FastScanDistances(const FastScanTable &table, const uint8_t *blocks, size_t n, float *out,
				  FastScanKernel kernel)
{
	FastScanKernel resolved;
	size_t		block_bytes;

	CheckFastScanTable(table);
	resolved = ResolveKernel(kernel);
	block_bytes = FastScanBlockBytes(table.m);
	for (size_t start = 0; start < n; start += kFastScanBlock)
	{
		const uint8_t *block = blocks + start / kFastScanBlock * block_bytes;
		size_t		count = std::min(kFastScanBlock, n - start);
		float		distances[kFastScanBlock];
		float	   *target = count == kFastScanBlock ? out + start : distances;

		if (resolved == FastScanKernel::Avx2)
			BlockDistancesAvx2(table.lut, table.m, block, table.step, table.offset, target);
		else
		{
			uint16_t	sums[kFastScanBlock];

			BlockSumsOf(resolved)(table.lut, table.m, block, sums);
			for (size_t i = 0; i < kFastScanBlock; i++)
				target[i] = table.offset + table.step * float(sums[i]);
		}
		if (target == distances)
			std::memcpy(out + start, distances, count * sizeof(float));
	}
}

}							/* namespace ivfpq::core */
