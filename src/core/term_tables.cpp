/*
 * term_tables.cpp
 *		Precomputed per-list "term tables" for L2 residual ADC: the
 *		technique of FAISS's IndexIVFPQ "precomputed tables"
 *		(use_precomputed_table), here centred on the centroids' median and
 *		stored in 8 bits.
 *
 * For a query q, list centroid c and codeword r_jk of sub-quantizer j:
 *	 ||q_j - c_j - r_jk||^2 = ||q_j - c_j||^2 + (||r_jk||^2 + 2 c_j.r_jk) - 2 q_j.r_jk
 * The middle term depends only on the list and the codeword, so it can be
 * computed once per list (a term table); the last term only on the query (the
 * query terms, once per scan); the first summed over j is the query's
 * squared distance to the centroid, which the scan already has.  Both parts
 * are taken relative to a centre mu of the centroids (c = mu + delta):
 *	 term = ||r_jk||^2 + 2 delta_j.r_jk,   query term = -2 (q_j - mu_j).r_jk
 * so the stored part stays small even when the data sit far from the origin.
 * The centre is the per-dimension median of the centroids, not their mean: a
 * centroid trained on one outlier row would drag a mean far from every other
 * list, inflate every delta, and with it the 8-bit step of every term table
 * (a daily partition with one such row lost its PQ order entirely).  Building a
 * list's distance table then costs m x ksub additions instead of a pass over
 * all codewords.  Term tables are stored quantized to 8 bits with a per
 * sub-quantizer offset and scale (as FAISS's fast-scan quantizes its tables),
 * which keeps them small enough to cache for every list.
 */
#include <algorithm>
#include <cmath>
#include <vector>

#include <immintrin.h>

#include "core_error.h"
#include "kernels.h"

namespace ivfpq::core {

namespace {

/* View of the same quantizer with the inner-product metric. */
QuantizerView
InnerProductView(const QuantizerView &q)
{
	QuantizerView view = q;

	view.metric = Metric::InnerProduct;
	return view;
}

void
CheckTermMetric(const QuantizerView &q)
{
	if (q.metric == Metric::InnerProduct)
		ThrowInvalid("term tables are only used for L2 and cosine indexes");
}

/*
 * One list's term table: m scales and m offsets (float), then m x ksub 8-bit
 * terms; term_jk = offset_j + scale_j * byte_jk.  The one place that knows it.
 */
template <typename Float, typename Byte>
struct TermTableParts
{
	Float	   *scales;
	Float	   *offsets;
	Byte	   *codes;
};

TermTableParts<const float, const uint8_t>
SplitTermTable(const uint8_t *terms, size_t m)
{
	const float *scales = reinterpret_cast<const float *>(terms);

	return {scales, scales + m, terms + 2 * m * sizeof(float)};
}

TermTableParts<float, uint8_t>
SplitTermTable(uint8_t *terms, size_t m)
{
	float	   *scales = reinterpret_cast<float *>(terms);

	return {scales, scales + m, terms + 2 * m * sizeof(float)};
}

/* table[j * ksub + k] = offset_j + scale_j * term[j][k] + query_terms[...] (portable). */
void
TableFromTermsPortable(const uint8_t *terms, const float *query_terms, size_t m, size_t ksub,
					   float *table)
{
	auto		parts = SplitTermTable(terms, m);
	const float *scales = parts.scales;
	const float *offsets = parts.offsets;
	const uint8_t *codes = parts.codes;

	for (size_t j = 0; j < m; j++)
		for (size_t k = 0; k < ksub; k++)
			table[j * ksub + k] = offsets[j] + scales[j] * codes[j * ksub + k] +
				query_terms[j * ksub + k];
}

__attribute__((target("avx2,fma"))) void
TableFromTermsAvx2(const uint8_t *terms, const float *query_terms, size_t m, size_t ksub,
				   float *table)
{
	auto		parts = SplitTermTable(terms, m);
	const float *scales = parts.scales;
	const float *offsets = parts.offsets;
	const uint8_t *codes = parts.codes;

	for (size_t j = 0; j < m; j++)
	{
		__m256		scale = _mm256_set1_ps(scales[j]);
		__m256		offset = _mm256_set1_ps(offsets[j]);
		const uint8_t *row = codes + j * ksub;
		const float *qrow = query_terms + j * ksub;
		float	   *out = table + j * ksub;

		for (size_t k = 0; k < ksub; k += 8)
		{
			__m128i		bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i *>(row + k));
			__m256		values = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
			__m256		base = _mm256_add_ps(offset, _mm256_loadu_ps(qrow + k));

			_mm256_storeu_ps(out + k, _mm256_fmadd_ps(values, scale, base));
		}
	}
}

}							/* namespace */

size_t
TermTableBytes(const QuantizerView &q)
{
	return q.m * (CodebookSize(q) + 2 * sizeof(float));
}

/* The per-dimension median of the centroids (see the file header). */
void
CentroidCenter(const QuantizerView &q, float *mean_out)
{
	std::vector<float> column(q.lists);

	for (size_t d = 0; d < q.dim; d++)
	{
		for (size_t l = 0; l < q.lists; l++)
			column[l] = q.centroids[l * q.dim + d];
		std::nth_element(column.begin(), column.begin() + q.lists / 2, column.end());
		mean_out[d] = q.lists ? column[q.lists / 2] : 0.0f;
	}
}

/*
 * The range one sub-quantizer's terms are quantized over: min to max, but
 * not beyond far fences (quartiles -/+ IVFPQ_TERM_FENCE interquartile
 * ranges).  Codebooks are shared by all lists, and a codeword trained on an
 * outlier row (far from all others) has a term hundreds of times larger than
 * the rest: spreading 256 steps up to it would round every other term of
 * every list to the same few steps and make the ADC order meaningless.
 * Terms beyond the fences saturate: such a codeword's distance is
 * underestimated, so an outlier row may enter the re-rank set, where its
 * exact distance sends it back.
 */
static void
TermRange(const float *row, size_t ksub, float *lo_out, float *hi_out)
{
	const float fence = 8.0f;
	std::vector<float> sorted(row, row + ksub);
	float		q1,
				q3,
				spread;

	std::sort(sorted.begin(), sorted.end());
	q1 = sorted[ksub / 4];
	q3 = sorted[ksub * 3 / 4];
	spread = q3 - q1;
	*lo_out = std::max(sorted.front(), q1 - fence * spread);
	*hi_out = std::min(sorted.back(), q3 + fence * spread);
	if (!(*hi_out > *lo_out))
	{
		*lo_out = sorted.front();
		*hi_out = sorted.back();
	}
}

void
ComputeTermTable(const QuantizerView &q, const float *prepared, const float *mean, int32_t list,
				 uint8_t *out)
{
	size_t		ksub = CodebookSize(q);
	size_t		m = q.m;
	std::vector<float> products(m * ksub);
	std::vector<float> delta(q.dim);
	float		unused_bias;
	auto		parts = SplitTermTable(out, m);
	float	   *scales = parts.scales;
	float	   *offsets = parts.offsets;
	uint8_t    *codes = parts.codes;

	CheckTermMetric(q);
	if (list < 0 || size_t(list) >= q.lists)
		ThrowInvalid("list number out of range");
	/* products = -(delta_j . r_jk) */
	for (size_t d = 0; d < q.dim; d++)
		delta[d] = q.centroids[size_t(list) * q.dim + d] - mean[d];
	ComputeDistanceTablePrepared(InnerProductView(q), prepared, delta.data(), list,
								 products.data(), &unused_bias);
	for (size_t j = 0; j < m; j++)
	{
		const float *norms = prepared + (q.dim + j) * ksub;	/* ||r_jk||^2 */
		float	   *row = products.data() + j * ksub;
		float		lo,
					hi;

		for (size_t k = 0; k < ksub; k++)
			row[k] = norms[k] - 2 * row[k];
		TermRange(row, ksub, &lo, &hi);
		offsets[j] = lo;
		scales[j] = hi > lo ? (hi - lo) / 255.0f : 0.0f;
		for (size_t k = 0; k < ksub; k++)
		{
			float		step = scales[j] > 0 ? std::round((row[k] - lo) / scales[j]) : 0.0f;

			codes[j * ksub + k] = uint8_t(std::clamp(step, 0.0f, 255.0f));
		}
	}
}

void
ComputeQueryTerms(const QuantizerView &q, const float *prepared, const float *mean,
				  const float *query, float *query_terms_out)
{
	size_t		count = q.m * CodebookSize(q);
	float		unused_bias;
	std::vector<float> centered(q.dim);

	CheckTermMetric(q);
	/* -((q_j - mu_j) . r_jk), then doubled */
	for (size_t d = 0; d < q.dim; d++)
		centered[d] = query[d] - mean[d];
	ComputeDistanceTablePrepared(InnerProductView(q), prepared, centered.data(), 0,
								 query_terms_out, &unused_bias);
	for (size_t i = 0; i < count; i++)
		query_terms_out[i] *= 2;
}

void
TableFromTerms(const QuantizerView &q, const uint8_t *term_table, const float *query_terms,
			   float *table_out)
{
	size_t		ksub = CodebookSize(q);

	if (ActiveKernelsAreAvx2() && ksub % 8 == 0)
		TableFromTermsAvx2(term_table, query_terms, q.m, ksub, table_out);
	else
		TableFromTermsPortable(term_table, query_terms, q.m, ksub, table_out);
}

}							/* namespace ivfpq::core */
