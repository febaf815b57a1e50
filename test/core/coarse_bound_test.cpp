/*
 * coarse_bound_test.cpp
 *		NearestListsBounded() against a scan of every centroid: the same lists
 *		in the same order, on structured centroids (where it must also skip
 *		most of them), on isotropic ones, on centroids spanning fewer
 *		directions than the basis, and for far-away vectors; every kernel set.
 */
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernel_sets.h"

#include "core_error.h"

using namespace ivfpq::core;

namespace {

class CoarseBound : public KernelSetTest
{
};

/*
 * lists x dim centroids: points of a rank-'rank' subspace with a decaying
 * spectrum plus isotropic noise of the given size (rank 0: noise only).
 */
std::vector<float>
Centroids(size_t lists, size_t dim, size_t rank, float noise, uint32_t seed,
		  std::vector<float> *basis_out = nullptr)
{
	std::mt19937 rng(seed);
	std::normal_distribution<float> normal(0.0f, 1.0f);
	std::vector<float> basis(rank * dim);
	std::vector<float> out(lists * dim);

	for (auto &v : basis)
		v = normal(rng) / std::sqrt(float(dim));
	for (size_t c = 0; c < lists; c++)
	{
		for (size_t r = 0; r < rank; r++)
		{
			float		coefficient = normal(rng) * std::pow(float(r + 1), -0.5f);

			for (size_t d = 0; d < dim; d++)
				out[c * dim + d] += coefficient * basis[r * dim + d];
		}
		for (size_t d = 0; d < dim; d++)
			out[c * dim + d] += noise * normal(rng) / std::sqrt(float(dim)) + 0.5f;
	}
	if (basis_out)
		*basis_out = basis;
	return out;
}

/* A query near centroid 'near': the centroid plus noise of the given size. */
std::vector<float>
QueryNear(const std::vector<float> &centroids, size_t dim, size_t near, float noise,
		  std::mt19937 &rng)
{
	std::normal_distribution<float> normal(0.0f, 1.0f);
	std::vector<float> x(centroids.begin() + near * dim, centroids.begin() + (near + 1) * dim);

	for (auto &v : x)
		v += noise * normal(rng) / std::sqrt(float(dim));
	return x;
}

/* The count nearest lists by a scan of every centroid (lower list first on ties). */
std::vector<int32_t>
ScanAll(const QuantizerView &q, const float *x, size_t count, std::vector<float> *distances)
{
	std::vector<float> all(q.lists);
	std::vector<int32_t> order(q.lists);

	for (size_t c = 0; c < q.lists; c++)
		all[c] = L2SquaredDistance(x, q.centroids + c * q.dim, q.dim);
	std::iota(order.begin(), order.end(), 0);
	std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return all[a] < all[b]; });
	order.resize(std::min(count, q.lists));
	distances->clear();
	for (int32_t c : order)
		distances->push_back(all[c]);
	return order;
}

/*
 * Runs queries near random centroids through both, checks they agree, and
 * returns the mean share of centroids whose exact distance was computed.
 */
double
CheckAgainstScan(const QuantizerView &q, size_t queries, size_t count, float query_noise,
				 float query_scale = 1.0f)
{
	std::vector<float> bound(CoarseBoundFloats(q));
	std::mt19937 rng(7);
	double		computed = 0;

	PrepareCoarseBound(q, bound.data());
	for (size_t i = 0; i < queries; i++)
	{
		std::vector<float> centroids(q.centroids, q.centroids + q.lists * q.dim);
		std::vector<float> x = QueryNear(centroids, q.dim, rng() % q.lists, query_noise, rng);
		std::vector<float> want_distances;
		std::vector<int32_t> lists(count);
		std::vector<float> distances(count);

		for (auto &v : x)
			v *= query_scale;

		std::vector<int32_t> want = ScanAll(q, x.data(), count, &want_distances);

		computed += double(NearestListsBounded(q, bound.data(), x.data(), count, lists.data(),
											   distances.data()));
		lists.resize(want.size());
		distances.resize(want.size());
		EXPECT_EQ(lists, want) << "query " << i;
		EXPECT_EQ(distances, want_distances) << "query " << i;
	}
	return computed / double(queries) / double(q.lists);
}

QuantizerView
View(const std::vector<float> &centroids, size_t dim)
{
	return QuantizerView{{dim, centroids.size() / dim, 8, 8, Metric::L2}, centroids.data(), nullptr};
}

}							/* namespace */

TEST_P(CoarseBound, StructuredCentroidsAgreeWithScanAndMostAreSkipped)
{
	size_t		dim = 256;
	std::vector<float> centroids = Centroids(1024, dim, 48, 0.3f, 1);
	QuantizerView q = View(centroids, dim);

	ASSERT_EQ(CoarseBoundWidth(q), 64u);
	double		nearest = CheckAgainstScan(q, 200, 1, 0.5f);
	double		top16 = CheckAgainstScan(q, 100, 16, 0.5f);

	/* The point of the bound: a few percent of the centroids are read, not all. */
	EXPECT_LT(nearest, 0.03) << "share of centroids read for the nearest list";
	EXPECT_LT(top16, 0.1) << "share of centroids read for the 16 nearest lists";
}

TEST_P(CoarseBound, IsotropicCentroidsStillAgree)
{
	size_t		dim = 128;
	std::vector<float> centroids = Centroids(2048, dim, 0, 1.0f, 2);

	CheckAgainstScan(View(centroids, dim), 100, 1, 0.8f);
	CheckAgainstScan(View(centroids, dim), 50, 32, 0.8f);
}

TEST_P(CoarseBound, CentroidsInFewerDirectionsThanTheBasis)
{
	size_t		dim = 512;
	std::vector<float> centroids = Centroids(600, dim, 5, 0.0f, 3);
	QuantizerView q = View(centroids, dim);

	CheckAgainstScan(q, 100, 1, 0.2f);
	CheckAgainstScan(q, 50, 8, 0.2f);
}

TEST_P(CoarseBound, FarAwayAndTinyVectors)
{
	size_t		dim = 256;
	std::vector<float> centroids = Centroids(1024, dim, 32, 0.2f, 4);
	QuantizerView q = View(centroids, dim);

	CheckAgainstScan(q, 30, 4, 0.5f, 1000.0f);
	CheckAgainstScan(q, 30, 4, 0.5f, 0.001f);
}

TEST_P(CoarseBound, CountBeyondListsReturnsEveryList)
{
	size_t		dim = 128;
	std::vector<float> centroids = Centroids(2048, dim, 16, 0.2f, 5);
	QuantizerView q = View(centroids, dim);
	std::vector<float> bound(CoarseBoundFloats(q));
	std::vector<int32_t> lists(3000);
	std::vector<float> distances(3000);

	PrepareCoarseBound(q, bound.data());
	EXPECT_EQ(NearestListsBounded(q, bound.data(), centroids.data(), 3000, lists.data(),
								  distances.data()), 2048u);
	EXPECT_EQ(lists[0], 0);
	EXPECT_EQ(distances[0], 0.0f);
	EXPECT_TRUE(std::is_sorted(distances.begin(), distances.begin() + 2048));
}

TEST(CoarseBoundSize, SmallQuantizersHaveNone)
{
	std::vector<float> centroids = Centroids(200, 768, 8, 0.2f, 6);
	QuantizerView few_lists = View(centroids, 768);
	std::vector<float> narrow = Centroids(4096, 32, 8, 0.2f, 6);
	std::vector<float> small = Centroids(1000, 128, 8, 0.2f, 6);
	std::vector<float> bound(1 << 20);

	EXPECT_EQ(CoarseBoundFloats(few_lists), 0u);
	EXPECT_EQ(CoarseBoundFloats(View(narrow, 32)), 0u);
	EXPECT_EQ(CoarseBoundFloats(View(small, 128)), 0u);
	EXPECT_THROW(PrepareCoarseBound(few_lists, bound.data()), Error);
}

IVFPQ_FOR_ALL_KERNEL_SETS(CoarseBound);
