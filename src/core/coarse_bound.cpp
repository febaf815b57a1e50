/*
 * coarse_bound.cpp
 *		Nearest lists of one vector without reading every centroid: a lower
 *		bound on the distance to each centroid from a low-dimensional
 *		projection, and exact distances only where the bound cannot rule a
 *		centroid out.
 *
 * With the centroids' mean mu, an orthonormal basis Z (dim x width) of the
 * directions in which the centroids vary most, u = x - mu and v = c - mu:
 *	 ||x - c||^2 = ||Z'u - Z'v||^2 + ||Q u - Q v||^2,   Q = I - Z Z'
 *				>= ||Z'u - Z'v||^2 + (||Q u|| - ||Q v||)^2
 * (the reverse triangle inequality on the second term).  Z'v and ||Q v|| are
 * computed once per quantizer, so the bound of every centroid costs "width"
 * multiply-adds instead of "dim", and its data (width x lists floats) stays
 * in cache where the centroids (lists x dim) do not: at 1000 lists of 768
 * dimensions an insert's list assignment read 3 MB of centroids per row.
 *
 * Z comes from a randomized range finder (Halko, Martinsson and Tropp):
 * Gaussian start, three rounds of Y = V Z, Z = V'Y, orthonormalized, where V
 * holds the centred centroids.  Any orthonormal Z keeps the bound valid; a
 * good one makes it tight.  The result is exact: a centroid is skipped only
 * when its bound exceeds the count-th best exact distance found so far by
 * more than a float-rounding slack.
 */
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <immintrin.h>

#include "core_error.h"
#include "kernels.h"
#include "pq_kernels.h"

namespace ivfpq::core {

namespace {

/* Below these sizes every centroid is read anyway (they fit in L2). */
constexpr size_t kMinLists = 256;
constexpr size_t kMinCentroidFloats = size_t(1) << 18;	/* 1 MB */
constexpr size_t kMinDim = 64;

/* Power-iteration rounds of the range finder, and the centroids it looks at. */
constexpr int	kRangeRounds = 3;
constexpr size_t kRangeSample = 512;

/* The pieces of a prepared bound (see CoarseBoundFloats for the layout). */
struct BoundLayout
{
	size_t		width;
	size_t		kpad;
	const float *mean;			/* dim */
	const float *basis;			/* dim x width: row d holds Z[d][0..width) */
	const float *basis_t;		/* width x dim: Z' */
	const float *coords;		/* width x kpad: Z'v of every centroid, transposed */
	const float *remainders;	/* kpad: ||Q v||, padding +infinity */
};

BoundLayout
Layout(const QuantizerView &q, const float *bound)
{
	BoundLayout l;

	l.width = CoarseBoundWidth(q);
	l.kpad = PaddedCodewords(q.lists);
	l.mean = bound;
	l.basis = l.mean + q.dim;
	l.basis_t = l.basis + q.dim * l.width;
	l.coords = l.basis_t + q.dim * l.width;
	l.remainders = l.coords + l.width * l.kpad;
	return l;
}

/*
 * The kernels are plain loops that vectorize over their innermost index;
 * each is compiled twice, for the portable and the AVX2 kernel set.
 */
#define IVFPQ_BOUND_KERNEL __attribute__((always_inline)) inline

/* out[t] = sum_d u[d] * basis[d][t], t < width. */
IVFPQ_BOUND_KERNEL void
ProjectBody(const float *u, const float *basis, size_t dim, size_t width, float *out)
{
	for (size_t t = 0; t < width; t++)
		out[t] = 0;
	for (size_t d = 0; d < dim; d++)
	{
		const float *row = basis + d * width;
		float		value = u[d];

		for (size_t t = 0; t < width; t++)
			out[t] += value * row[t];
	}
}

/* bounds[c] = sum_t (a[t] - coords[t][c])^2 + (rho - remainders[c])^2. */
IVFPQ_BOUND_KERNEL void
BoundsBody(const float *a, float rho, const float *coords, const float *remainders,
		   size_t width, size_t kpad, float *bounds)
{
	for (size_t c = 0; c < kpad; c++)
	{
		float		diff = rho - remainders[c];

		bounds[c] = diff * diff;
	}
	for (size_t t = 0; t < width; t++)
	{
		const float *row = coords + t * kpad;
		float		value = a[t];

		for (size_t c = 0; c < kpad; c++)
		{
			float		diff = value - row[c];

			bounds[c] += diff * diff;
		}
	}
}

/* y[i][t] = sum_d v[i][d] * z[d][t] for n rows v (n x dim). */
IVFPQ_BOUND_KERNEL void
RowsTimesBasisBody(const float *v, size_t n, const float *z, size_t dim, size_t width, float *y)
{
	for (size_t i = 0; i < n; i++)
		ProjectBody(v + i * dim, z, dim, width, y + i * width);
}

/* z[d][t] = sum_i v[i][d] * y[i][t]. */
IVFPQ_BOUND_KERNEL void
RowsTransposedTimesBody(const float *v, size_t n, const float *y, size_t dim, size_t width,
						float *z)
{
	std::fill(z, z + dim * width, 0.0f);
	for (size_t i = 0; i < n; i++)
		for (size_t d = 0; d < dim; d++)
		{
			float		value = v[i * dim + d];
			float	   *row = z + d * width;
			const float *y_row = y + i * width;

			for (size_t t = 0; t < width; t++)
				row[t] += value * y_row[t];
		}
}

void
ProjectPortable(const float *u, const float *basis, size_t dim, size_t width, float *out)
{
	ProjectBody(u, basis, dim, width, out);
}

/* ProjectBody for width a multiple of 8 up to 64: one accumulator per 8 columns. */
__attribute__((target("avx2,fma"))) void
ProjectAvx2(const float *u, const float *basis, size_t dim, size_t width, float *out)
{
	__m256		acc[8];
	size_t		groups = width / 8;

	if (width % 8 != 0 || groups > 8)
	{
		ProjectBody(u, basis, dim, width, out);
		return;
	}
	for (size_t g = 0; g < groups; g++)
		acc[g] = _mm256_setzero_ps();
	for (size_t d = 0; d < dim; d++)
	{
		__m256		value = _mm256_broadcast_ss(u + d);
		const float *row = basis + d * width;

#pragma GCC unroll 8
		for (size_t g = 0; g < 8; g++)
			if (g < groups)
				acc[g] = _mm256_fmadd_ps(value, _mm256_loadu_ps(row + 8 * g), acc[g]);
	}
	for (size_t g = 0; g < groups; g++)
		_mm256_storeu_ps(out + 8 * g, acc[g]);
}

void
BoundsPortable(const float *a, float rho, const float *coords, const float *remainders,
			   size_t width, size_t kpad, float *bounds)
{
	BoundsBody(a, rho, coords, remainders, width, kpad, bounds);
}

/* BoundsBody, 32 centroids a step in four independent FMA chains (kpad is a multiple of 8). */
__attribute__((target("avx2,fma"))) void
BoundsAvx2(const float *a, float rho, const float *coords, const float *remainders,
		   size_t width, size_t kpad, float *bounds)
{
	const __m256 rho8 = _mm256_set1_ps(rho);
	size_t		c = 0;

	for (; c + 32 <= kpad; c += 32)
	{
		__m256		acc[4];

#pragma GCC unroll 4
		for (int g = 0; g < 4; g++)
		{
			__m256		diff = _mm256_sub_ps(rho8, _mm256_loadu_ps(remainders + c + 8 * g));

			acc[g] = _mm256_mul_ps(diff, diff);
		}
		for (size_t t = 0; t < width; t++)
		{
			__m256		value = _mm256_broadcast_ss(a + t);
			const float *row = coords + t * kpad + c;

#pragma GCC unroll 4
			for (int g = 0; g < 4; g++)
			{
				__m256		diff = _mm256_sub_ps(value, _mm256_loadu_ps(row + 8 * g));

				acc[g] = _mm256_fmadd_ps(diff, diff, acc[g]);
			}
		}
#pragma GCC unroll 4
		for (int g = 0; g < 4; g++)
			_mm256_storeu_ps(bounds + c + 8 * g, acc[g]);
	}
	for (; c < kpad; c += 8)
	{
		__m256		diff = _mm256_sub_ps(rho8, _mm256_loadu_ps(remainders + c));
		__m256		acc = _mm256_mul_ps(diff, diff);

		for (size_t t = 0; t < width; t++)
		{
			__m256		d8 = _mm256_sub_ps(_mm256_broadcast_ss(a + t),
										   _mm256_loadu_ps(coords + t * kpad + c));

			acc = _mm256_fmadd_ps(d8, d8, acc);
		}
		_mm256_storeu_ps(bounds + c, acc);
	}
}

void
RowsTimesBasisPortable(const float *v, size_t n, const float *z, size_t dim, size_t width, float *y)
{
	RowsTimesBasisBody(v, n, z, dim, width, y);
}

__attribute__((target("avx2,fma"))) void
RowsTimesBasisAvx2(const float *v, size_t n, const float *z, size_t dim, size_t width, float *y)
{
	for (size_t i = 0; i < n; i++)
		ProjectAvx2(v + i * dim, z, dim, width, y + i * width);
}

void
RowsTransposedTimesPortable(const float *v, size_t n, const float *y, size_t dim, size_t width,
							float *z)
{
	RowsTransposedTimesBody(v, n, y, dim, width, z);
}

/*
 * RowsTransposedTimesBody in tiles of 8 dimensions x 8 columns held in
 * registers over all rows (width is a multiple of 8; a dimension tail is
 * done one dimension at a time).
 */
__attribute__((target("avx2,fma"))) void
RowsTransposedTimesAvx2(const float *v, size_t n, const float *y, size_t dim, size_t width,
						float *z)
{
	size_t		d = 0;

	if (width % 8 != 0)
	{
		RowsTransposedTimesBody(v, n, y, dim, width, z);
		return;
	}
	for (; d + 8 <= dim; d += 8)
		for (size_t t = 0; t < width; t += 8)
		{
			__m256		acc[8];

#pragma GCC unroll 8
			for (int k = 0; k < 8; k++)
				acc[k] = _mm256_setzero_ps();
			for (size_t i = 0; i < n; i++)
			{
				__m256		y8 = _mm256_loadu_ps(y + i * width + t);
				const float *row = v + i * dim + d;

#pragma GCC unroll 8
				for (int k = 0; k < 8; k++)
					acc[k] = _mm256_fmadd_ps(_mm256_broadcast_ss(row + k), y8, acc[k]);
			}
#pragma GCC unroll 8
			for (int k = 0; k < 8; k++)
				_mm256_storeu_ps(z + (d + k) * width + t, acc[k]);
		}
	for (; d < dim; d++)
		for (size_t t = 0; t < width; t += 8)
		{
			__m256		acc = _mm256_setzero_ps();

			for (size_t i = 0; i < n; i++)
				acc = _mm256_fmadd_ps(_mm256_broadcast_ss(v + i * dim + d),
									  _mm256_loadu_ps(y + i * width + t), acc);
			_mm256_storeu_ps(z + d * width + t, acc);
		}
}

void
Project(const float *u, const float *basis, size_t dim, size_t width, float *out)
{
	if (ActiveKernelsAreAvx2())
		ProjectAvx2(u, basis, dim, width, out);
	else
		ProjectPortable(u, basis, dim, width, out);
}

/* r = u - Z a, from Z' (width x dim), vectorized over d. */
IVFPQ_BOUND_KERNEL void
OutsideBody(const float *u, const float *basis_t, const float *a, size_t dim, size_t width,
			float *r)
{
	for (size_t d = 0; d < dim; d++)
		r[d] = u[d];
	for (size_t t = 0; t < width; t++)
	{
		const float *row = basis_t + t * dim;
		float		value = a[t];

		for (size_t d = 0; d < dim; d++)
			r[d] -= value * row[d];
	}
}

void
OutsidePortable(const float *u, const float *basis_t, const float *a, size_t dim, size_t width,
				float *r)
{
	OutsideBody(u, basis_t, a, dim, width, r);
}

/* OutsideBody, 32 dimensions a step in four independent FMA chains. */
__attribute__((target("avx2,fma"))) void
OutsideAvx2(const float *u, const float *basis_t, const float *a, size_t dim, size_t width,
			float *r)
{
	size_t		d = 0;

	for (; d + 32 <= dim; d += 32)
	{
		__m256		acc[4];

#pragma GCC unroll 4
		for (int g = 0; g < 4; g++)
			acc[g] = _mm256_loadu_ps(u + d + 8 * g);
		for (size_t t = 0; t < width; t++)
		{
			__m256		value = _mm256_broadcast_ss(a + t);
			const float *row = basis_t + t * dim + d;

#pragma GCC unroll 4
			for (int g = 0; g < 4; g++)
				acc[g] = _mm256_fnmadd_ps(value, _mm256_loadu_ps(row + 8 * g), acc[g]);
		}
#pragma GCC unroll 4
		for (int g = 0; g < 4; g++)
			_mm256_storeu_ps(r + d + 8 * g, acc[g]);
	}
	for (; d < dim; d++)
	{
		float		value = u[d];

		for (size_t t = 0; t < width; t++)
			value -= a[t] * basis_t[t * dim + d];
		r[d] = value;
	}
}

/*
 * ||u - Z a||: the part of u outside the basis, computed from the difference
 * itself (not as ||u||^2 - ||a||^2, which cancels badly when it is small).
 * scratch holds dim floats.
 */
float
Remainder(const float *u, const float *basis_t, const float *a, size_t dim, size_t width,
		  float *scratch)
{
	double		sum = 0;

	if (ActiveKernelsAreAvx2())
		OutsideAvx2(u, basis_t, a, dim, width, scratch);
	else
		OutsidePortable(u, basis_t, a, dim, width, scratch);
	for (size_t d = 0; d < dim; d++)
		sum += double(scratch[d]) * scratch[d];
	return float(std::sqrt(sum));
}

/*
 * Orthonormalize the columns of z (dim x width, row-major) in place: modified
 * Gram-Schmidt, twice (float is enough: the bound tolerates an orthonormality
 * error of 1e-6 against its 1e-4 slack).  A column that loses almost all of
 * its norm (the centroids span fewer directions than width) becomes zero,
 * which keeps Z Z' a projection and the bound valid.
 */
void
Orthonormalize(float *z, size_t dim, size_t width)
{
	std::vector<float> cols(width * dim);

	for (size_t t = 0; t < width; t++)
		for (size_t d = 0; d < dim; d++)
			cols[t * dim + d] = z[d * width + t];
	for (size_t t = 0; t < width; t++)
	{
		float	   *col = cols.data() + t * dim;
		float		original = std::sqrt(SquaredNorm(col, dim));
		float		norm;

		for (int pass = 0; pass < 2; pass++)
			for (size_t s = 0; s < t; s++)
			{
				const float *other = cols.data() + s * dim;
				float		dot = InnerProduct(col, other, dim);

				for (size_t d = 0; d < dim; d++)
					col[d] -= dot * other[d];
			}
		norm = std::sqrt(SquaredNorm(col, dim));
		if (!(norm > 1e-4f * original) || !(norm > 0))
			std::fill(col, col + dim, 0.0f);
		else
			for (size_t d = 0; d < dim; d++)
				col[d] /= norm;
	}
	for (size_t t = 0; t < width; t++)
		for (size_t d = 0; d < dim; d++)
			z[d * width + t] = cols[t * dim + d];
}

}							/* namespace */

size_t
CoarseBoundWidth(const QuantizerView &q)
{
	if (q.lists < kMinLists || q.dim < kMinDim || q.lists * q.dim < kMinCentroidFloats)
		return 0;
	return q.dim >= 256 ? 64 : 32;
}

size_t
CoarseBoundFloats(const QuantizerView &q)
{
	size_t		width = CoarseBoundWidth(q);

	if (width == 0)
		return 0;
	return q.dim + 2 * q.dim * width + (width + 1) * PaddedCodewords(q.lists);
}

void
PrepareCoarseBound(const QuantizerView &q, float *bound_out)
{
	size_t		width = CoarseBoundWidth(q);
	size_t		kpad = PaddedCodewords(q.lists);
	bool		avx2 = ActiveKernelsAreAvx2();

	if (width == 0)
		ThrowInvalid("the quantizer is too small for a coarse bound");

	float	   *mean = bound_out;
	float	   *basis = mean + q.dim;
	float	   *basis_t = basis + q.dim * width;
	float	   *coords = basis_t + q.dim * width;
	float	   *remainders = coords + width * kpad;
	std::vector<double> sum(q.dim, 0.0);
	std::vector<float> centred(q.lists * q.dim);
	std::vector<float> y(q.lists * width);
	std::vector<float> outside(q.dim);
	std::mt19937 rng(20261202);
	std::normal_distribution<float> normal(0.0f, 1.0f);

	for (size_t c = 0; c < q.lists; c++)
		for (size_t d = 0; d < q.dim; d++)
			sum[d] += q.centroids[c * q.dim + d];
	for (size_t d = 0; d < q.dim; d++)
		mean[d] = float(sum[d] / double(q.lists));
	for (size_t c = 0; c < q.lists; c++)
		for (size_t d = 0; d < q.dim; d++)
			centred[c * q.dim + d] = q.centroids[c * q.dim + d] - mean[d];

	/*
	 * Range finder: Z <- orth(V'V Z), from a Gaussian Z, over an evenly
	 * spaced sample of the centroids (the directions of the many are those
	 * of a few hundred; the bound holds for any orthonormal Z).
	 */
	size_t		sample = std::min(q.lists, kRangeSample);
	std::vector<float> sampled(sample * q.dim);

	for (size_t i = 0; i < sample; i++)
		std::copy_n(centred.data() + (i * q.lists / sample) * q.dim, q.dim,
					sampled.data() + i * q.dim);
	for (size_t i = 0; i < q.dim * width; i++)
		basis[i] = normal(rng);
	Orthonormalize(basis, q.dim, width);
	for (int round = 0; round < kRangeRounds; round++)
	{
		CheckInterrupt();
		if (avx2)
		{
			RowsTimesBasisAvx2(sampled.data(), sample, basis, q.dim, width, y.data());
			RowsTransposedTimesAvx2(sampled.data(), sample, y.data(), q.dim, width, basis);
		}
		else
		{
			RowsTimesBasisPortable(sampled.data(), sample, basis, q.dim, width, y.data());
			RowsTransposedTimesPortable(sampled.data(), sample, y.data(), q.dim, width, basis);
		}
		Orthonormalize(basis, q.dim, width);
	}

	/* Every centroid's coordinates and remainder. */
	for (size_t d = 0; d < q.dim; d++)
		for (size_t t = 0; t < width; t++)
			basis_t[t * q.dim + d] = basis[d * width + t];
	if (avx2)
		RowsTimesBasisAvx2(centred.data(), q.lists, basis, q.dim, width, y.data());
	else
		RowsTimesBasisPortable(centred.data(), q.lists, basis, q.dim, width, y.data());
	for (size_t c = 0; c < kpad; c++)
	{
		bool		real = c < q.lists;

		for (size_t t = 0; t < width; t++)
			coords[t * kpad + c] = real ? y[c * width + t] : 0.0f;
		remainders[c] = real
			? Remainder(centred.data() + c * q.dim, basis_t, y.data() + c * width, q.dim, width,
						outside.data())
			: std::numeric_limits<float>::infinity();
	}
}

size_t
NearestListsBounded(const QuantizerView &q, const float *bound, const float *x,
					size_t count, int32_t *lists_out, float *distances_out)
{
	BoundLayout l = Layout(q, bound);
	size_t		seeds;
	float	   *scratch;
	float	   *bounds;
	float	   *u;
	float	   *a;
	float	   *outside;
	float		rho;
	float		u_norm;
	double		u_norm_exact = 0;
	size_t		found = 0;
	size_t		computed = 0;

	if (l.width == 0)
		ThrowInvalid("the quantizer has no coarse bound");
	count = std::min(count, q.lists);
	if (count == 0)
		return 0;

	scratch = ThreadScratch(l.kpad + 2 * q.dim + l.width);
	bounds = scratch;
	u = bounds + l.kpad;
	a = u + q.dim;
	outside = a + l.width;
	for (size_t d = 0; d < q.dim; d++)
	{
		u[d] = x[d] - l.mean[d];
		u_norm_exact += double(u[d]) * u[d];
	}
	u_norm = float(u_norm_exact);
	Project(u, l.basis, q.dim, l.width, a);

	/*
	 * ||Q u||^2 = ||u||^2 - ||a||^2 is accurate enough while it is not small
	 * against ||u||^2 (the usual case: most of a vector lies outside the
	 * centroids' few main directions); when it is, take the norm of u - Z a.
	 */
	{
		double		a_norm = 0;
		double		outside_norm;

		for (size_t t = 0; t < l.width; t++)
			a_norm += double(a[t]) * a[t];
		outside_norm = u_norm_exact - a_norm;
		if (outside_norm > 0.01 * u_norm_exact)
			rho = float(std::sqrt(outside_norm));
		else
			rho = Remainder(u, l.basis_t, a, q.dim, l.width, outside);
	}
	if (ActiveKernelsAreAvx2())
		BoundsAvx2(a, rho, l.coords, l.remainders, l.width, l.kpad, bounds);
	else
		BoundsPortable(a, rho, l.coords, l.remainders, l.width, l.kpad, bounds);

	/*
	 * Keep the count best (distance, list) pairs sorted by distance, then
	 * list.  The smallest bounds go first so that the threshold is tight
	 * before the pass over the rest.
	 */
	auto		offer = [&](size_t c) {
		float		distance = L2SquaredDistance(x, q.centroids + c * q.dim, q.dim);
		size_t		pos;

		computed++;
		if (found == count &&
			!(distance < distances_out[count - 1] ||
			  (distance == distances_out[count - 1] && int32_t(c) < lists_out[count - 1])))
			return;
		pos = found < count ? found++ : count - 1;
		while (pos > 0 && (distances_out[pos - 1] > distance ||
						   (distances_out[pos - 1] == distance && lists_out[pos - 1] > int32_t(c))))
		{
			distances_out[pos] = distances_out[pos - 1];
			lists_out[pos] = lists_out[pos - 1];
			pos--;
		}
		distances_out[pos] = distance;
		lists_out[pos] = int32_t(c);
	};
	/* Float slack of a bound against an exact distance (both are sums of squares near u_norm). */
	auto		threshold = [&]() {
		float		worst = distances_out[count - 1];

		return worst + 1e-4f * (worst + u_norm) + 1e-30f;
	};

	/* Seeds: the lists with the smallest bounds, as many as requested plus a few. */
	seeds = std::min(q.lists, count + 3);
	{
		thread_local std::vector<int32_t> seed_lists;
		thread_local std::vector<float> seed_bounds;

		seed_lists.assign(seeds, 0);
		seed_bounds.assign(seeds, std::numeric_limits<float>::infinity());
		for (size_t c = 0; c < q.lists; c++)
		{
			float		b = bounds[c];
			size_t		pos;

			if (!(b < seed_bounds[seeds - 1]))
				continue;
			pos = seeds - 1;
			while (pos > 0 && seed_bounds[pos - 1] > b)
			{
				seed_bounds[pos] = seed_bounds[pos - 1];
				seed_lists[pos] = seed_lists[pos - 1];
				pos--;
			}
			seed_bounds[pos] = b;
			seed_lists[pos] = int32_t(c);
		}
		for (size_t s = 0; s < seeds; s++)
		{
			if (std::isinf(seed_bounds[s]))
				break;
			offer(size_t(seed_lists[s]));
			bounds[seed_lists[s]] = -1.0f;	/* done: skip in the pass below */
		}
	}

	/* Every other list whose bound does not rule it out (seeds are marked -1). */
	{
		float		limit = found < count ? std::numeric_limits<float>::infinity() : threshold();

		for (size_t c = 0; c < q.lists; c++)
		{
			float		b = bounds[c];

			if (b < 0.0f || b > limit)
				continue;
			offer(c);
			limit = found < count ? std::numeric_limits<float>::infinity() : threshold();
		}
	}
	return computed;
}

}							/* namespace ivfpq::core */
