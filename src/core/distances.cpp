/*
 * distances.cpp
 *		Vector distance kernels with runtime CPU dispatch: AVX2+FMA where the
 *		CPU has them, portable loops otherwise.  Never compiled with
 *		-march=native; the AVX2 functions use per-function target attributes.
 */
#include <cmath>
#include <immintrin.h>

#include "core_error.h"
#include "kernels.h"

namespace ivfpq::core {

namespace {

/* ---------- portable ---------- */

float
L2SquaredPortable(const float *a, const float *b, size_t dim)
{
	/* Four partial sums let the compiler keep several adds in flight. */
	float		s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	size_t		i = 0;

	for (; i + 4 <= dim; i += 4)
	{
		float		d0 = a[i] - b[i];
		float		d1 = a[i + 1] - b[i + 1];
		float		d2 = a[i + 2] - b[i + 2];
		float		d3 = a[i + 3] - b[i + 3];

		s0 += d0 * d0;
		s1 += d1 * d1;
		s2 += d2 * d2;
		s3 += d3 * d3;
	}
	for (; i < dim; i++)
	{
		float		d = a[i] - b[i];

		s0 += d * d;
	}
	return (s0 + s1) + (s2 + s3);
}

float
InnerProductPortable(const float *a, const float *b, size_t dim)
{
	float		s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	size_t		i = 0;

	for (; i + 4 <= dim; i += 4)
	{
		s0 += a[i] * b[i];
		s1 += a[i + 1] * b[i + 1];
		s2 += a[i + 2] * b[i + 2];
		s3 += a[i + 3] * b[i + 3];
	}
	for (; i < dim; i++)
		s0 += a[i] * b[i];
	return (s0 + s1) + (s2 + s3);
}

/* ---------- AVX2 + FMA ---------- */

__attribute__((target("avx2,fma"))) inline float
HorizontalSum(__m256 v)
{
	__m128		lo = _mm256_castps256_ps128(v);
	__m128		hi = _mm256_extractf128_ps(v, 1);

	lo = _mm_add_ps(lo, hi);
	lo = _mm_hadd_ps(lo, lo);
	lo = _mm_hadd_ps(lo, lo);
	return _mm_cvtss_f32(lo);
}

__attribute__((target("avx2,fma"))) float
L2SquaredAvx2(const float *a, const float *b, size_t dim)
{
	__m256		acc0 = _mm256_setzero_ps();
	__m256		acc1 = _mm256_setzero_ps();
	size_t		i = 0;

	for (; i + 16 <= dim; i += 16)
	{
		__m256		d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
		__m256		d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));

		acc0 = _mm256_fmadd_ps(d0, d0, acc0);
		acc1 = _mm256_fmadd_ps(d1, d1, acc1);
	}
	for (; i + 8 <= dim; i += 8)
	{
		__m256		d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));

		acc0 = _mm256_fmadd_ps(d0, d0, acc0);
	}
	float		sum = HorizontalSum(_mm256_add_ps(acc0, acc1));

	for (; i < dim; i++)
	{
		float		d = a[i] - b[i];

		sum += d * d;
	}
	return sum;
}

__attribute__((target("avx2,fma"))) float
InnerProductAvx2(const float *a, const float *b, size_t dim)
{
	__m256		acc0 = _mm256_setzero_ps();
	__m256		acc1 = _mm256_setzero_ps();
	size_t		i = 0;

	for (; i + 16 <= dim; i += 16)
	{
		acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
		acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
	}
	for (; i + 8 <= dim; i += 8)
		acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
	float		sum = HorizontalSum(_mm256_add_ps(acc0, acc1));

	for (; i < dim; i++)
		sum += a[i] * b[i];
	return sum;
}

bool
CpuHasAvx2()
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

const KernelTable portable_kernels = {
	"portable", L2SquaredPortable, InnerProductPortable,
};

const KernelTable avx2_kernels = {
	"avx2+fma", L2SquaredAvx2, InnerProductAvx2,
};

const KernelTable *
DefaultKernels()
{
	return CpuHasAvx2() ? &avx2_kernels : &portable_kernels;
}

}							/* namespace */

const KernelTable *active_kernels = DefaultKernels();

bool
UseKernels(KernelSet set)
{
	switch (set)
	{
		case KernelSet::Auto:
			active_kernels = DefaultKernels();
			return true;
		case KernelSet::Portable:
			active_kernels = &portable_kernels;
			return true;
		case KernelSet::Avx2:
			if (!CpuHasAvx2())
				return false;
			active_kernels = &avx2_kernels;
			return true;
	}
	return false;
}

bool
ActiveKernelsAreAvx2()
{
	return active_kernels == &avx2_kernels;
}

const char *
ActiveKernelName()
{
	return active_kernels->name;
}

float
L2SquaredDistance(const float *a, const float *b, size_t dim)
{
	return active_kernels->l2_squared(a, b, dim);
}

float
InnerProduct(const float *a, const float *b, size_t dim)
{
	return active_kernels->inner_product(a, b, dim);
}

float
SquaredNorm(const float *a, size_t dim)
{
	return active_kernels->inner_product(a, a, dim);
}

double
CosineDistance(const float *a, const float *b, size_t dim)
{
	double		dot = active_kernels->inner_product(a, b, dim);
	double		norm_a = active_kernels->inner_product(a, a, dim);
	double		norm_b = active_kernels->inner_product(b, b, dim);
	double		similarity;

	if (norm_a == 0 || norm_b == 0)
		return std::nan("");
	similarity = dot / std::sqrt(norm_a * norm_b);
	/* Rounding can push the ratio a hair outside [-1, 1]. */
	if (similarity > 1)
		similarity = 1;
	else if (similarity < -1)
		similarity = -1;
	return 1 - similarity;
}

}							/* namespace ivfpq::core */
