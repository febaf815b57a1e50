/*
 * adc_test.cpp
 *		The blocked code layout (store/load round trips) and the ADC scan
 *		(every kernel set) against plain table lookups, plus ADC distances of
 *		a trained index against true distances.
 */
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernel_sets.h"

#include "ivfpq_core.h"

using namespace ivfpq::core;

namespace {

constexpr size_t kKsub = 256;

std::vector<uint8_t>
RandomCodes(size_t count, uint32_t seed)
{
	std::mt19937 rng(seed);
	std::vector<uint8_t> codes(count);

	for (auto &c : codes)
		c = uint8_t(rng());
	return codes;
}

double
Norm2(const float *x, size_t dim)
{
	double		sum = 0;

	for (size_t d = 0; d < dim; d++)
		sum += double(x[d]) * x[d];
	return sum;
}

/* n x dim points around a few well separated centers. */
std::vector<float>
ClusteredData(size_t n, size_t dim, size_t clusters, uint32_t seed)
{
	std::mt19937 rng(seed);
	std::normal_distribution<float> normal(0.0f, 1.0f);
	std::vector<float> centers(clusters * dim);
	std::vector<float> points(n * dim);

	for (auto &v : centers)
		v = 5.0f * normal(rng);
	for (size_t i = 0; i < n; i++)
	{
		size_t		center = rng() % clusters;

		for (size_t d = 0; d < dim; d++)
			points[i * dim + d] = centers[center * dim + d] + normal(rng);
	}
	return points;
}

TEST(BlockedCodes, RoundTripIncludingPartialLastBlock)
{
	for (size_t m : {1, 3, 8, 56})
		for (size_t n : {1, 7, 8, 9, 100})
		{
			auto		codes = RandomCodes(n * m, uint32_t(n * 100 + m));
			std::vector<uint8_t> blocks(BlockedCodeBytes(n, m), 0);

			ASSERT_EQ(blocks.size(), (n + 7) / 8 * 8 * m);
			for (size_t e = 0; e < n; e++)
				StoreBlockedCode(blocks.data(), e, m, codes.data() + e * m);
			for (size_t e = 0; e < n; e++)
			{
				std::vector<uint8_t> loaded(m);

				LoadBlockedCode(blocks.data(), e, m, loaded.data());
				ASSERT_TRUE(std::equal(loaded.begin(), loaded.end(), codes.begin() + e * m))
					<< "m " << m << " entry " << e;
				/* The documented layout: byte j * 8 + (e % 8) of block e / 8. */
				for (size_t j = 0; j < m; j++)
					ASSERT_EQ(blocks[e / 8 * 8 * m + j * 8 + e % 8], codes[e * m + j]);
			}
		}
}

TEST(BlockedCodes, StoreTouchesOnlyItsEntry)
{
	size_t		m = 5;
	std::vector<uint8_t> blocks(BlockedCodeBytes(16, m), 0xAA);
	uint8_t		code[5] = {1, 2, 3, 4, 5};

	StoreBlockedCode(blocks.data(), 10, m, code);

	size_t		changed = 0;

	for (uint8_t b : blocks)
		changed += b != 0xAA;
	EXPECT_EQ(changed, m);
}

class AdcKernels : public KernelSetTest
{
};

TEST_P(AdcKernels, ScanMatchesTableLookups)
{
	for (size_t m : {1, 3, 4, 8, 56, 57})
		for (size_t n : {1, 5, 8, 13, 64, 1000})
		{
			auto		table = GaussianFloats(m * kKsub, 10.0f, uint32_t(m));
			auto		codes = RandomCodes(n * m, uint32_t(n + 7 * m));
			/* Bytes of the partial last block are garbage, not zero. */
			auto		blocks = RandomCodes(BlockedCodeBytes(n, m), 5);
			float		bias = 3.25f;
			std::vector<float> out(n + 9, -777.0f);

			for (size_t e = 0; e < n; e++)
				StoreBlockedCode(blocks.data(), e, m, codes.data() + e * m);
			ScanBlockedCodes(table.data(), m, kKsub, blocks.data(), n, bias, out.data());
			for (size_t e = 0; e < n; e++)
			{
				double		expected = bias;

				for (size_t j = 0; j < m; j++)
					expected += table[j * kKsub + codes[e * m + j]];
				ASSERT_NEAR(out[e], expected, 1e-5 * (10.0 * m + std::fabs(expected)))
					<< "m " << m << " n " << n << " entry " << e;
			}
			for (size_t e = n; e < out.size(); e++)
				ASSERT_EQ(out[e], -777.0f) << "wrote past entry n";
		}
}

TEST_P(AdcKernels, ScanOfNothingWritesNothing)
{
	std::vector<float> table(4 * kKsub, 1.0f);
	std::vector<uint8_t> blocks(BlockedCodeBytes(8, 4), 0);
	float		out = -1.0f;

	ScanBlockedCodes(table.data(), 4, kKsub, blocks.data(), 0, 0.0f, &out);
	EXPECT_EQ(out, -1.0f);
}

/*
 * On a trained index, the ADC distance of an entry is exactly the distance
 * to its reconstruction (L2: ||q - x'||^2, inner product: -(q . x')), and it
 * approximates the true distance closely on clustered data.
 */
TEST_P(AdcKernels, AdcApproximatesTrueDistance)
{
	size_t		dim = 64;
	size_t		m = 16;
	size_t		dsub = dim / m;
	size_t		lists = 8;
	size_t		n = 3000;
	auto		data = ClusteredData(n + 20, dim, 8, 3);
	std::vector<float> centroids(lists * dim);
	std::vector<float> codebooks(m * kKsub * dsub);
	TrainConfig config{{dim, lists, m, 8, Metric::L2}, 10, 10, 20000, 42, 0};

	Train(config, data.data(), n, centroids.data(), codebooks.data());

	std::vector<int32_t> assigned(n);
	std::vector<uint8_t> codes(n * m);

	for (Metric metric : {Metric::L2, Metric::InnerProduct})
	{
		QuantizerView q{{dim, lists, m, 8, metric}, centroids.data(), codebooks.data()};
		std::vector<double> relative_errors;

		AssignLists(q, data.data(), n, assigned.data());
		EncodeResiduals(q, data.data(), assigned.data(), n, codes.data());
		for (size_t qi = 0; qi < 20; qi++)
		{
			const float *query = data.data() + (n + qi) * dim;

			for (size_t list = 0; list < lists; list++)
			{
				std::vector<size_t> members;

				for (size_t i = 0; i < n; i++)
					if (size_t(assigned[i]) == list)
						members.push_back(i);

				std::vector<uint8_t> blocks(BlockedCodeBytes(members.size(), m));
				std::vector<float> table(m * kKsub);
				std::vector<float> distances(members.size());
				float		bias;

				for (size_t e = 0; e < members.size(); e++)
					StoreBlockedCode(blocks.data(), e, m, codes.data() + members[e] * m);
				ComputeDistanceTable(q, query, int32_t(list), table.data(), &bias);
				ScanBlockedCodes(table.data(), m, kKsub, blocks.data(), members.size(), bias,
								 distances.data());

				for (size_t e = 0; e < members.size(); e++)
				{
					const float *x = data.data() + members[e] * dim;
					const uint8_t *code = codes.data() + members[e] * m;
					double		to_reconstruction = 0;
					double		truth = 0;

					for (size_t d = 0; d < dim; d++)
					{
						double		reconstructed = double(centroids[list * dim + d]) +
							codebooks[(d / dsub * kKsub + code[d / dsub]) * dsub + d % dsub];

						if (metric == Metric::L2)
						{
							to_reconstruction += (query[d] - reconstructed) * (query[d] - reconstructed);
							truth += (double(query[d]) - x[d]) * (double(query[d]) - x[d]);
						}
						else
						{
							to_reconstruction -= query[d] * reconstructed;
							truth -= double(query[d]) * x[d];
						}
					}
					ASSERT_NEAR(distances[e], to_reconstruction, 1e-3 * (1 + std::fabs(to_reconstruction)));
					/* Inner products can be near zero: scale by |q| |x| there. */
					relative_errors.push_back(std::fabs(distances[e] - truth) /
											  (metric == Metric::L2 ? std::max(1.0, truth)
											   : std::sqrt(Norm2(query, dim) * Norm2(x, dim))));
				}
			}
		}
		std::sort(relative_errors.begin(), relative_errors.end());

		double		median = relative_errors[relative_errors.size() / 2];
		double		p90 = relative_errors[relative_errors.size() * 9 / 10];

		EXPECT_LT(median, 0.05) << "metric " << int(metric);
		EXPECT_LT(p90, 0.15) << "metric " << int(metric);
	}
}

IVFPQ_FOR_ALL_KERNEL_SETS(AdcKernels);

}							/* namespace */
