/*
 * term_tables_test.cpp
 *		Term tables + query terms + centroid distance reproduce the exact
 *		residual distance table up to the 8-bit rounding of the terms.
 */
#include <algorithm>
#include <cmath>
#include <random>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "kernel_sets.h"

#include "core_error.h"

using namespace ivfpq::core;

namespace {

class TermTables : public KernelSetTest
{
};

/* Clustered rows (cluster i % lists, spaced 3 apart) and a quantizer trained on them. */
struct TrainedTerms
{
	std::vector<float> data,
				centroids,
				codebooks,
				prepared;
	QuantizerView q;
};

TrainedTerms
TrainTerms(size_t dim, size_t lists, size_t m, size_t n, unsigned seed, bool outlier)
{
	TrainedTerms t;
	std::mt19937 rng(seed);
	std::normal_distribution<float> normal(0, 1);

	t.data.resize(n * dim);
	for (size_t i = 0; i < n; i++)
		for (size_t d = 0; d < dim; d++)
			t.data[i * dim + d] = normal(rng) + float(i % lists) * 3.0f;
	if (outlier)
		for (size_t d = 0; d < dim; d++)
			t.data[(n - 1) * dim + d] = -300.0f;
	TrainConfig config{{dim, lists, m, 8, Metric::L2}, 10, 8, n, 7, 1};

	t.centroids.resize(lists * dim);
	t.codebooks.resize(dim * 256);
	Train(config, t.data.data(), n, t.centroids.data(), t.codebooks.data());
	t.q = QuantizerView{{dim, lists, m, 8, Metric::L2}, t.centroids.data(), t.codebooks.data()};
	t.prepared.resize(PreparedQuantizerFloats(t.q));
	PrepareQuantizer(t.q, t.prepared.data());
	return t;
}

TEST_P(TermTables, MatchExactTablesWithinQuantization)
{
	const size_t dim = 32, lists = 8, m = 8, n = 3000;
	TrainedTerms t = TrainTerms(dim, lists, m, n, 5, false);
	const QuantizerView &q = t.q;
	std::vector<float> &prepared = t.prepared;
	std::mt19937 rng(6);
	std::normal_distribution<float> normal(0, 1);

	std::vector<uint8_t> terms(TermTableBytes(q) * lists);
	std::vector<float> mean(dim);
	CentroidCenter(q, mean.data());
	for (size_t l = 0; l < lists; l++)
		ComputeTermTable(q, prepared.data(), mean.data(), int32_t(l), terms.data() + l * TermTableBytes(q));

	std::vector<float> query(dim), query_terms(m * 256), exact(m * 256), approx(m * 256),
				centroid_distances(lists);
	for (auto &x : query)
		x = normal(rng) + 6.0f;
	ComputeQueryTerms(q, prepared.data(), mean.data(), query.data(), query_terms.data());
	CentroidDistances(q, query.data(), centroid_distances.data());

	for (size_t l = 0; l < lists; l++)
	{
		float		bias;
		double		max_error = 0,
					spread = 0;

		ComputeDistanceTable(q, query.data(), int32_t(l), exact.data(), &bias);
		TableFromTerms(q, terms.data() + l * TermTableBytes(q), query_terms.data(), approx.data());
		/* ADC of a random code: exact sum vs approx sum + centroid distance */
		for (int trial = 0; trial < 200; trial++)
		{
			double		sum_exact = bias,
						sum_approx = centroid_distances[l];

			for (size_t j = 0; j < m; j++)
			{
				size_t		k = rng() % 256;

				sum_exact += exact[j * 256 + k];
				sum_approx += approx[j * 256 + k];
			}
			max_error = std::max(max_error, std::fabs(sum_exact - sum_approx));
			spread = std::max(spread, sum_exact);
		}
		EXPECT_LT(max_error, 0.01 * spread) << "list " << l;
	}
}

/*
 * One row far from all others gets codewords of its own; the 8-bit range of
 * the terms must not stretch to them, or every other code's distance rounds
 * to the same value.  (Seen in a daily partition with one outlier row: PQ
 * order unrelated to the true order until this was fixed.)
 */
TEST_P(TermTables, OutlierCodewordKeepsOrder)
{
	const size_t dim = 16, lists = 4, m = 8, n = 4000;
	TrainedTerms t = TrainTerms(dim, lists, m, n, 11, true);
	const QuantizerView &q = t.q;
	std::vector<float> &data = t.data, &prepared = t.prepared, mean(dim);
	std::vector<int32_t> assigned(n);
	std::vector<uint8_t> codes(n * m), terms(TermTableBytes(q) * lists);

	PrepareQuantizer(q, prepared.data());
	CentroidCenter(q, mean.data());
	for (size_t l = 0; l < lists; l++)
		ComputeTermTable(q, prepared.data(), mean.data(), int32_t(l), terms.data() + l * TermTableBytes(q));
	AssignLists(q, data.data(), n, assigned.data());
	EncodeResiduals(q, data.data(), assigned.data(), n, codes.data());

	/* For queries taken from the data, ADC through the term tables must rank
	 * like the exact residual tables: compare the ADC of every row of the
	 * query's own list both ways. */
	std::vector<float> query_terms(m * 256), exact(m * 256), approx(m * 256), centroid_distances(lists);
	size_t		kept = 0,
				wanted = 0;

	for (size_t query_row = 0; query_row < 40; query_row++)
	{
		const float *query = data.data() + query_row * dim;
		int32_t		list = assigned[query_row];
		float		bias;
		std::vector<std::pair<double, size_t>> by_exact, by_approx;

		ComputeQueryTerms(q, prepared.data(), mean.data(), query, query_terms.data());
		CentroidDistances(q, query, centroid_distances.data());
		ComputeDistanceTable(q, query, list, exact.data(), &bias);
		TableFromTerms(q, terms.data() + size_t(list) * TermTableBytes(q), query_terms.data(), approx.data());
		for (size_t i = 0; i < n - 1; i++)
		{
			double		sum_exact = bias,
						sum_approx = centroid_distances[list];

			if (assigned[i] != list)
				continue;
			for (size_t j = 0; j < m; j++)
			{
				sum_exact += exact[j * 256 + codes[i * m + j]];
				sum_approx += approx[j * 256 + codes[i * m + j]];
			}
			by_exact.emplace_back(sum_exact, i);
			by_approx.emplace_back(sum_approx, i);
		}
		std::sort(by_exact.begin(), by_exact.end());
		std::sort(by_approx.begin(), by_approx.end());
		/* the 10 best codes by exact tables are among the 20 best by term tables */
		for (size_t a = 0; a < 10; a++)
		{
			wanted++;
			for (size_t b = 0; b < 20; b++)
				if (by_approx[b].second == by_exact[a].second)
				{
					kept++;
					break;
				}
		}
	}
	/* Without the outlier-proof range, fewer than half were kept. */
	EXPECT_GE(double(kept) / double(wanted), 0.95);
}

TEST(TermTablesErrors, InnerProductRejected)
{
	std::vector<float> centroids(4, 0.0f), codebooks(4 * 256, 0.0f), prepared(8 * 256);
	QuantizerView q{{4, 1, 2, 8, Metric::InnerProduct}, centroids.data(), codebooks.data()};
	std::vector<uint8_t> out(TermTableBytes(q));
	std::vector<float> mean(4, 0.0f);

	PrepareQuantizer(q, prepared.data());
	EXPECT_THROW(ComputeTermTable(q, prepared.data(), mean.data(), 0, out.data()), Error);
}

IVFPQ_FOR_ALL_KERNEL_SETS(TermTables);

}							/* namespace */
