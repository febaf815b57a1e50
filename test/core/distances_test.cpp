/*
 * distances_test.cpp
 *		Distance kernels (every kernel set) against plain double-precision loops.
 */
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernel_sets.h"

#include "ivfpq_core.h"

using namespace ivfpq::core;

namespace {

double
ReferenceL2Squared(const std::vector<float> &a, const std::vector<float> &b)
{
	double		sum = 0;

	for (size_t i = 0; i < a.size(); i++)
		sum += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
	return sum;
}

double
ReferenceInnerProduct(const std::vector<float> &a, const std::vector<float> &b)
{
	double		sum = 0;

	for (size_t i = 0; i < a.size(); i++)
		sum += double(a[i]) * b[i];
	return sum;
}

std::vector<float>
RandomVector(std::mt19937 &rng, size_t dim)
{
	std::normal_distribution<float> normal(0.0f, 1.0f);
	std::vector<float> v(dim);

	for (auto &x : v)
		x = normal(rng);
	return v;
}

class DistanceKernels : public KernelSetTest
{
};

TEST_P(DistanceKernels, MatchReferenceOnAllLengths)
{
	std::mt19937 rng(42);

	/* Every length up to 70 exercises all tail paths, then some big ones. */
	std::vector<size_t> dims;
	for (size_t d = 1; d <= 70; d++)
		dims.push_back(d);
	for (size_t d : {127, 128, 129, 768, 784, 1536, 16000})
		dims.push_back(d);

	for (size_t dim : dims)
	{
		auto		a = RandomVector(rng, dim);
		auto		b = RandomVector(rng, dim);
		double		l2 = ReferenceL2Squared(a, b);
		double		ip = ReferenceInnerProduct(a, b);
		double		tolerance = 1e-5 * dim + 1e-5;

		EXPECT_NEAR(L2SquaredDistance(a.data(), b.data(), dim), l2, tolerance * (1 + l2)) << dim;
		EXPECT_NEAR(InnerProduct(a.data(), b.data(), dim), ip, tolerance * (1 + std::fabs(ip))) << dim;
		EXPECT_NEAR(SquaredNorm(a.data(), dim), ReferenceInnerProduct(a, a),
					tolerance * (1 + ReferenceInnerProduct(a, a))) << dim;

		double		cosine = 1 - ip / std::sqrt(ReferenceInnerProduct(a, a) * ReferenceInnerProduct(b, b));

		EXPECT_NEAR(CosineDistance(a.data(), b.data(), dim), cosine, 1e-5) << dim;
	}
}

TEST_P(DistanceKernels, CosineEdgeCases)
{
	std::vector<float> zero(5, 0.0f), one = {1, 2, 3, 4, 5}, minus = {-1, -2, -3, -4, -5};

	EXPECT_TRUE(std::isnan(CosineDistance(zero.data(), one.data(), 5)));
	EXPECT_NEAR(CosineDistance(one.data(), one.data(), 5), 0.0, 1e-7);
	EXPECT_NEAR(CosineDistance(one.data(), minus.data(), 5), 2.0, 1e-7);
}

IVFPQ_FOR_ALL_KERNEL_SETS(DistanceKernels);

TEST(Dispatch, AutoPicksAvx2WhenAvailable)
{
	ASSERT_TRUE(UseKernels(KernelSet::Auto));
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		EXPECT_STREQ(ActiveKernelName(), "avx2+fma");
	else
		EXPECT_STREQ(ActiveKernelName(), "portable");
}

}							/* namespace */
