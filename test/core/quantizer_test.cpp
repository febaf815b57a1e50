/*
 * quantizer_test.cpp
 *		Training, list assignment, residual encoding, centroid distances and
 *		distance tables (every kernel set) against plain double-precision
 *		loops, plus training quality, recall, tiny inputs and error cases.
 */
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <new>
#include <random>
#include <vector>

#include <gtest/gtest.h>
#include <omp.h>

#include "kernel_sets.h"

#include "core_error.h"

using namespace ivfpq::core;

/* Bytes currently held through the replaced operator new, and the peak. */
static std::atomic<bool> allocation_counting{false};
static std::atomic<size_t> live_bytes{0};
static std::atomic<size_t> peak_live_bytes{0};
static size_t live_bytes_at_start = 0;

namespace {

constexpr size_t kKsub = 256;

double
ReferenceL2(const float *a, const float *b, size_t dim)
{
	double		sum = 0;

	for (size_t d = 0; d < dim; d++)
		sum += (double(a[d]) - b[d]) * (double(a[d]) - b[d]);
	return sum;
}

double
ReferenceDot(const float *a, const float *b, size_t dim)
{
	double		sum = 0;

	for (size_t d = 0; d < dim; d++)
		sum += double(a[d]) * b[d];
	return sum;
}

/*
 * n x dim points around 'clusters' centers; each point also gets one of 16
 * offsets per 4-dimensional slice, so residuals have structure a PQ can learn.
 */
std::vector<float>
ClusteredData(size_t n, size_t dim, size_t clusters, uint32_t seed)
{
	std::mt19937 rng(seed);
	std::normal_distribution<float> normal(0.0f, 1.0f);
	std::vector<float> centers(clusters * dim);
	std::vector<float> offsets(16 * dim);
	std::vector<float> points(n * dim);

	for (auto &v : centers)
		v = 10.0f * normal(rng);
	for (auto &v : offsets)
		v = 2.0f * normal(rng);
	for (size_t i = 0; i < n; i++)
	{
		size_t		center = rng() % clusters;

		for (size_t d = 0; d < dim; d++)
			points[i * dim + d] = centers[center * dim + d] + 0.1f * normal(rng);
		for (size_t slice = 0; slice * 4 < dim; slice++)
		{
			size_t		offset = rng() % 16;

			for (size_t d = slice * 4; d < std::min(dim, slice * 4 + 4); d++)
				points[i * dim + d] += offsets[offset * dim + d];
		}
	}
	return points;
}

QuantizerView
View(size_t dim, size_t lists, size_t m, Metric metric, const std::vector<float> &centroids,
	 const std::vector<float> &codebooks)
{
	return QuantizerView{dim, lists, m, 8, metric, centroids.data(), codebooks.data()};
}

TrainConfig
Config(size_t dim, size_t lists, size_t m)
{
	TrainConfig config;

	config.dim = dim;
	config.lists = lists;
	config.m = m;
	config.nbits = 8;
	config.coarse_iterations = 10;
	config.pq_iterations = 10;
	config.max_pq_rows = 20000;
	config.seed = 1234;
	config.threads = 0;
	return config;
}

/* Mean squared PQ reconstruction error of x with lists and codes from q. */
double
ReconstructionError(const QuantizerView &q, const float *x, size_t n)
{
	std::vector<int32_t> lists(n);
	std::vector<uint8_t> codes(n * q.m);
	size_t		dsub = SubDim(q);
	double		error = 0;

	AssignLists(q, x, n, lists.data());
	EncodeResiduals(q, x, lists.data(), n, codes.data());
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < q.m; j++)
		{
			const float *codeword = q.codebooks + (j * kKsub + codes[i * q.m + j]) * dsub;

			for (size_t d = 0; d < dsub; d++)
			{
				size_t		k = j * dsub + d;
				double		r = double(x[i * q.dim + k]) - q.centroids[lists[i] * q.dim + k] - codeword[d];

				error += r * r;
			}
		}
	return error / double(n);
}

/* Runs fn and expects a core Error of the given kind. */
void
ExpectError(ErrorKind kind, const std::function<void()> &fn)
{
	try
	{
		fn();
		ADD_FAILURE() << "expected an error";
	}
	catch (const Error &e)
	{
		EXPECT_EQ(e.kind(), kind) << e.what();
		EXPECT_GT(std::string(e.what()).size(), 10u);
	}
}

class QuantizerKernels : public KernelSetTest
{
};

/* AssignLists against the exhaustive double-precision nearest centroid. */
void
CheckAssignLists(size_t dim, size_t lists, const std::vector<size_t> &row_counts)
{
	auto		centroids = GaussianFloats(lists * dim, 1.0f, 1);
	std::vector<float> codebooks(kKsub * dim, 0.0f);
	QuantizerView q = View(dim, lists, 1, Metric::L2, centroids, codebooks);

	for (size_t n : row_counts)
	{
		auto		x = GaussianFloats(n * dim, 1.0f, uint32_t(n));
		std::vector<int32_t> assigned(n, -1);
		size_t		exact = 0;

		AssignLists(q, x.data(), n, assigned.data());
		for (size_t i = 0; i < n; i++)
		{
			double		best = std::numeric_limits<double>::infinity();
			int32_t		best_list = -1;

			for (size_t c = 0; c < lists; c++)
			{
				double		distance = ReferenceL2(x.data() + i * dim, centroids.data() + c * dim, dim);

				if (distance < best)
				{
					best = distance;
					best_list = int32_t(c);
				}
			}
			ASSERT_GE(assigned[i], 0);
			ASSERT_LT(assigned[i], int32_t(lists));
			EXPECT_LE(ReferenceL2(x.data() + i * dim, centroids.data() + assigned[i] * dim, dim),
					  best + 1e-4 * (1 + best));
			exact += assigned[i] == best_list;
		}
		EXPECT_GE(exact, n * 99 / 100);
	}
}

TEST_P(QuantizerKernels, AssignListsPicksNearestCentroid)
{
	/* 1 and 5 rows take the direct path, 300 (with a tail) the batch kernel. */
	CheckAssignLists(45, 37, {1, 5, 303});
	/* Over 4M centroid floats, batches go through BLAS instead. */
	CheckAssignLists(1024, 4100, {20});
}

TEST_P(QuantizerKernels, EncodeResidualsTakesTheFirstOfEqualCodewords)
{
	/* Residual 0; codewords 77, 150 and 230 of every sub-quantizer are 0, the others 1. */
	const size_t dim = 64, m = 8, dsub = dim / m, lists = 2;
	std::vector<float> centroids(lists * dim, 0.0f);
	std::vector<float> codebooks(m * kKsub * dsub, 1.0f);

	for (size_t j = 0; j < m; j++)
		for (size_t k : {77, 150, 230})
			std::fill_n(codebooks.begin() + (j * kKsub + k) * dsub, dsub, 0.0f);
	QuantizerView q = View(dim, lists, m, Metric::L2, centroids, codebooks);
	std::vector<float> prepared(PreparedQuantizerFloats(q));

	PrepareQuantizer(q, prepared.data());
	/* 3 rows take the direct path, 203 the batch path. */
	for (size_t n : {3, 203})
	{
		std::vector<float> x(n * dim, 0.0f);
		std::vector<int32_t> lists_of(n, 1);
		std::vector<uint8_t> codes(n * m), prepared_codes(n * m);

		EncodeResiduals(q, x.data(), lists_of.data(), n, codes.data());
		EncodeResidualsPrepared(q, prepared.data(), x.data(), lists_of.data(), n, prepared_codes.data());
		for (size_t i = 0; i < n * m; i++)
		{
			EXPECT_EQ(codes[i], 77) << "n " << n << " entry " << i;
			EXPECT_EQ(prepared_codes[i], 77) << "n " << n << " entry " << i;
		}
	}
}

TEST_P(QuantizerKernels, EncodeResidualsPicksNearestCodewords)
{
	/* (dim, m) pairs covering dsub 1, 3, 4, 14, 16 and 17. */
	const std::pair<size_t, size_t> shapes[] = {{8, 8}, {30, 10}, {32, 8}, {56, 4}, {64, 4}, {34, 2}};

	for (auto [dim, m] : shapes)
	{
		size_t		lists = 3;
		size_t		dsub = dim / m;
		auto		centroids = GaussianFloats(lists * dim, 1.0f, 2);
		auto		codebooks = GaussianFloats(m * kKsub * dsub, 0.5f, 3);
		QuantizerView q = View(dim, lists, m, Metric::L2, centroids, codebooks);

		/* 3 rows take the direct path, 203 the prepared one (with a tail). */
		for (size_t n : {3, 203})
		{
			auto		x = GaussianFloats(n * dim, 1.0f, uint32_t(n + dim));
			std::vector<int32_t> lists_of(n);
			std::vector<uint8_t> codes(n * m);

			for (size_t i = 0; i < n; i++)
				lists_of[i] = int32_t(i % lists);
			std::vector<float> prepared(PreparedQuantizerFloats(q));
			std::vector<uint8_t> prepared_codes(n * m);

			PrepareQuantizer(q, prepared.data());
			EncodeResiduals(q, x.data(), lists_of.data(), n, codes.data());
			EncodeResidualsPrepared(q, prepared.data(), x.data(), lists_of.data(), n,
									prepared_codes.data());
			for (size_t i = 0; i < n; i++)
			{
				std::vector<float> residual(dim);

				for (size_t d = 0; d < dim; d++)
					residual[d] = x[i * dim + d] - centroids[lists_of[i] * dim + d];
				for (size_t j = 0; j < m; j++)
				{
					double		best = std::numeric_limits<double>::infinity();

					for (size_t k = 0; k < kKsub; k++)
						best = std::min(best, ReferenceL2(residual.data() + j * dsub,
														  codebooks.data() + (j * kKsub + k) * dsub, dsub));

					for (const auto *chosen_codes : {&codes, &prepared_codes})
					{
						uint8_t		code = (*chosen_codes)[i * m + j];
						double		chosen = ReferenceL2(residual.data() + j * dsub,
														 codebooks.data() + (j * kKsub + code) * dsub, dsub);

						EXPECT_LE(chosen, best + 1e-4 * (1 + best)) << "dim " << dim << " m " << m;
					}
				}
			}
		}
	}
}

TEST_P(QuantizerKernels, CentroidDistancesMatchReference)
{
	size_t		dim = 77;
	size_t		lists = 19;
	auto		centroids = GaussianFloats(lists * dim, 1.0f, 4);
	std::vector<float> codebooks(kKsub * dim, 0.0f);
	auto		query = GaussianFloats(dim, 1.0f, 5);

	for (Metric metric : {Metric::L2, Metric::Cosine, Metric::InnerProduct})
	{
		QuantizerView q = View(dim, lists, 1, metric, centroids, codebooks);
		std::vector<float> distances(lists);

		CentroidDistances(q, query.data(), distances.data());
		for (size_t c = 0; c < lists; c++)
		{
			double		expected = metric == Metric::InnerProduct
				? -ReferenceDot(query.data(), centroids.data() + c * dim, dim)
				: ReferenceL2(query.data(), centroids.data() + c * dim, dim);

			EXPECT_NEAR(distances[c], expected, 1e-4 * (1 + std::fabs(expected)));
		}
	}
}

TEST_P(QuantizerKernels, DistanceTablesMatchReference)
{
	const std::pair<size_t, size_t> shapes[] = {{8, 8}, {30, 10}, {32, 8}, {56, 4}, {64, 4}, {34, 2}, {784, 56}};

	for (auto [dim, m] : shapes)
	{
		size_t		lists = 5;
		size_t		dsub = dim / m;
		auto		centroids = GaussianFloats(lists * dim, 1.0f, 6);
		auto		codebooks = GaussianFloats(m * kKsub * dsub, 0.5f, 7);
		auto		query = GaussianFloats(dim, 1.0f, 8);

		for (Metric metric : {Metric::L2, Metric::Cosine, Metric::InnerProduct})
		{
			QuantizerView q = View(dim, lists, m, metric, centroids, codebooks);
			std::vector<float> table(m * kKsub);
			float		bias = 12345;
			int32_t		list = 3;

			std::vector<float> prepared(PreparedQuantizerFloats(q));
			std::vector<float> prepared_table(m * kKsub);
			float		prepared_bias = 12345;

			PrepareQuantizer(q, prepared.data());
			ComputeDistanceTable(q, query.data(), list, table.data(), &bias);
			ComputeDistanceTablePrepared(q, prepared.data(), query.data(), list,
										 prepared_table.data(), &prepared_bias);
			EXPECT_EQ(bias, prepared_bias);

			std::vector<float> residual(dim);

			for (size_t d = 0; d < dim; d++)
				residual[d] = query[d] - centroids[list * dim + d];
			if (metric == Metric::InnerProduct)
				EXPECT_NEAR(bias, -ReferenceDot(query.data(), centroids.data() + list * dim, dim), 1e-3);
			else
				EXPECT_EQ(bias, 0.0f);
			for (size_t j = 0; j < m; j++)
				for (size_t k = 0; k < kKsub; k++)
				{
					const float *codeword = codebooks.data() + (j * kKsub + k) * dsub;
					double		expected = metric == Metric::InnerProduct
						? -ReferenceDot(query.data() + j * dsub, codeword, dsub)
						: ReferenceL2(residual.data() + j * dsub, codeword, dsub);

					ASSERT_NEAR(table[j * kKsub + k], expected, 1e-4 * (1 + std::fabs(expected)))
						<< "dim " << dim << " m " << m << " j " << j << " k " << k;
					/* ||r||^2 + ||c||^2 - 2 r.c loses a little to cancellation. */
					ASSERT_NEAR(prepared_table[j * kKsub + k], expected, 1e-4 * (1 + std::fabs(expected)) +
								1e-5 * ReferenceDot(residual.data() + j * dsub, residual.data() + j * dsub, dsub))
						<< "prepared, dim " << dim << " m " << m << " j " << j << " k " << k;
				}
		}
	}
}

TEST_P(QuantizerKernels, TrainedCodebooksBeatRandomOnes)
{
	size_t		dim = 32;
	size_t		m = 8;
	size_t		lists = 8;
	size_t		n = 3000;
	auto		data = ClusteredData(n, dim, lists, 9);
	TrainConfig config = Config(dim, lists, m);
	std::vector<float> centroids(lists * dim);
	std::vector<float> codebooks(m * kKsub * (dim / m));

	Train(config, data.data(), n, centroids.data(), codebooks.data());
	for (float v : centroids)
		ASSERT_TRUE(std::isfinite(v));
	for (float v : codebooks)
		ASSERT_TRUE(std::isfinite(v));

	QuantizerView trained = View(dim, lists, m, Metric::L2, centroids, codebooks);
	double		trained_error = ReconstructionError(trained, data.data(), n);

	/* Residual energy: the error of an all-zero codebook. */
	std::vector<float> zero(codebooks.size(), 0.0f);
	double		residual_energy = ReconstructionError(View(dim, lists, m, Metric::L2, centroids, zero),
													  data.data(), n);

	/* Random codewords with the spread of the residuals. */
	float		sigma = float(std::sqrt(residual_energy / double(dim)));
	auto		random = GaussianFloats(codebooks.size(), sigma, 10);
	double		random_error = ReconstructionError(View(dim, lists, m, Metric::L2, centroids, random),
												   data.data(), n);

	EXPECT_LT(trained_error, 0.25 * random_error);
	EXPECT_LT(trained_error, 0.25 * residual_energy);
}

TEST_P(QuantizerKernels, SearchWithRerankFindsNearestNeighbour)
{
	size_t		dim = 32;
	size_t		m = 8;
	size_t		lists = 16;
	size_t		n = 4000;
	size_t		queries = 100;
	size_t		rerank = 100;
	auto		all = ClusteredData(n + queries, dim, 12, 11);
	const float *base = all.data();
	const float *query_rows = all.data() + n * dim;
	std::vector<float> centroids(lists * dim);
	std::vector<float> codebooks(m * kKsub * (dim / m));

	Train(Config(dim, lists, m), base, n, centroids.data(), codebooks.data());

	QuantizerView q = View(dim, lists, m, Metric::L2, centroids, codebooks);
	std::vector<int32_t> assigned(n);
	std::vector<uint8_t> codes(n * m);

	AssignLists(q, base, n, assigned.data());
	EncodeResiduals(q, base, assigned.data(), n, codes.data());

	/* Inverted lists in the blocked layout, as on list pages. */
	std::vector<std::vector<size_t>> ids(lists);
	std::vector<std::vector<uint8_t>> blocks(lists);

	for (size_t i = 0; i < n; i++)
		ids[assigned[i]].push_back(i);
	for (size_t l = 0; l < lists; l++)
	{
		blocks[l].assign(BlockedCodeBytes(ids[l].size(), m), 0);
		for (size_t e = 0; e < ids[l].size(); e++)
			StoreBlockedCode(blocks[l].data(), e, m, codes.data() + ids[l][e] * m);
	}

	size_t		found = 0;

	for (size_t qi = 0; qi < queries; qi++)
	{
		const float *query = query_rows + qi * dim;
		std::vector<std::pair<float, size_t>> candidates;
		std::vector<float> table(m * kKsub);

		for (size_t l = 0; l < lists; l++)
		{
			float		bias;
			std::vector<float> distances(ids[l].size());

			ComputeDistanceTable(q, query, int32_t(l), table.data(), &bias);
			ScanBlockedCodes(table.data(), m, kKsub, blocks[l].data(), ids[l].size(), bias,
							 distances.data());
			for (size_t e = 0; e < ids[l].size(); e++)
				candidates.emplace_back(distances[e], ids[l][e]);
		}
		std::partial_sort(candidates.begin(), candidates.begin() + rerank, candidates.end());

		size_t		best_reranked = candidates[0].second;
		size_t		truth = 0;

		for (size_t c = 0; c < rerank; c++)
			if (ReferenceL2(query, base + candidates[c].second * dim, dim) <
				ReferenceL2(query, base + best_reranked * dim, dim))
				best_reranked = candidates[c].second;
		for (size_t i = 1; i < n; i++)
			if (ReferenceL2(query, base + i * dim, dim) < ReferenceL2(query, base + truth * dim, dim))
				truth = i;
		found += best_reranked == truth;
	}
	EXPECT_GE(found, queries * 95 / 100);
}

TEST_P(QuantizerKernels, TinyInputsTrainAndEncodeExactly)
{
	size_t		dim = 16;
	size_t		m = 4;
	size_t		lists = 16;

	for (size_t n : {1, 5})
	{
		auto		data = GaussianFloats(n * dim, 3.0f, uint32_t(20 + n));
		std::vector<float> centroids(lists * dim);
		std::vector<float> codebooks(m * kKsub * (dim / m));

		Train(Config(dim, lists, m), data.data(), n, centroids.data(), codebooks.data());

		/* Every row became a centroid, so every residual is zero. */
		QuantizerView q = View(dim, lists, m, Metric::L2, centroids, codebooks);

		EXPECT_NEAR(ReconstructionError(q, data.data(), n), 0.0, 1e-6);
		for (float v : codebooks)
			EXPECT_NEAR(v, 0.0f, 1e-6);

		/* Other vectors still get a valid list and code. */
		auto		other = GaussianFloats(40 * dim, 3.0f, 99);
		std::vector<int32_t> assigned(40);
		std::vector<uint8_t> codes(40 * m);

		AssignLists(q, other.data(), 40, assigned.data());
		EncodeResiduals(q, other.data(), assigned.data(), 40, codes.data());
		for (int32_t list : assigned)
		{
			EXPECT_GE(list, 0);
			EXPECT_LT(list, int32_t(n));	/* duplicates never win a tie */
		}
	}
}

TEST_P(QuantizerKernels, FewerRowsThanCodewordsStillTrain)
{
	size_t		dim = 16;
	size_t		m = 2;
	size_t		lists = 2;
	size_t		n = 100;
	auto		data = ClusteredData(n, dim, 2, 30);
	std::vector<float> centroids(lists * dim);
	std::vector<float> codebooks(m * kKsub * (dim / m));

	Train(Config(dim, lists, m), data.data(), n, centroids.data(), codebooks.data());
	for (float v : codebooks)
		ASSERT_TRUE(std::isfinite(v));
	/* 100 rows, 256 codewords: every residual has its own codeword. */
	EXPECT_NEAR(ReconstructionError(View(dim, lists, m, Metric::L2, centroids, codebooks),
									data.data(), n), 0.0, 1e-4);
}

TEST_P(QuantizerKernels, TrainingIsDeterministic)
{
	size_t		dim = 24;
	size_t		m = 6;
	size_t		lists = 4;
	size_t		n = 1500;
	auto		data = ClusteredData(n, dim, 4, 40);
	TrainConfig config = Config(dim, lists, m);

	config.max_pq_rows = 1000;

	std::vector<float> centroids1(lists * dim), centroids2(lists * dim);
	std::vector<float> codebooks1(m * kKsub * (dim / m)), codebooks2(m * kKsub * (dim / m));

	config.threads = 1;
	Train(config, data.data(), n, centroids1.data(), codebooks1.data());
	config.threads = 2;
	Train(config, data.data(), n, centroids2.data(), codebooks2.data());
	EXPECT_EQ(centroids1, centroids2);
	EXPECT_EQ(codebooks1, codebooks2);
}

IVFPQ_FOR_ALL_KERNEL_SETS(QuantizerKernels);

TEST(Train, RejectsInvalidParameters)
{
	auto		data = GaussianFloats(100 * 16, 1.0f, 50);
	std::vector<float> centroids(64 * 16);
	std::vector<float> codebooks(16 * kKsub * 16);
	auto		train = [&](TrainConfig config, size_t n) {
		return [&, config, n]() {
			Train(config, data.data(), n, centroids.data(), codebooks.data());
		};
	};
	TrainConfig good = Config(16, 4, 4);
	TrainConfig bad;

	EXPECT_NO_THROW(train(good, 100)());
	ExpectError(ErrorKind::InvalidParameter, train(good, 0));
	bad = good;
	bad.m = 5;					/* 16 % 5 != 0 */
	ExpectError(ErrorKind::InvalidParameter, train(bad, 100));
	bad = good;
	bad.m = 0;
	ExpectError(ErrorKind::InvalidParameter, train(bad, 100));
	bad = good;
	bad.nbits = 5;
	ExpectError(ErrorKind::InvalidParameter, train(bad, 100));
	bad = good;
	bad.nbits = 4;
	bad.m = 1;					/* 4-bit codes pair sub-quantizers: m must be even */
	ExpectError(ErrorKind::InvalidParameter, train(bad, 100));
	bad = good;
	bad.lists = 0;
	ExpectError(ErrorKind::InvalidParameter, train(bad, 100));
	bad = good;
	bad.dim = 0;
	ExpectError(ErrorKind::InvalidParameter, train(bad, 100));
	bad = good;
	bad.coarse_iterations = 0;
	ExpectError(ErrorKind::InvalidParameter, train(bad, 100));
	bad = good;
	bad.pq_iterations = 0;
	ExpectError(ErrorKind::InvalidParameter, train(bad, 100));
	bad = good;
	bad.tolerance = -0.01;
	ExpectError(ErrorKind::InvalidParameter, train(bad, 100));
	bad = good;
	bad.tolerance = std::nan("");
	ExpectError(ErrorKind::InvalidParameter, train(bad, 100));
}

/* Sum of squared distances from each point to its nearest centroid. */
double
KMeansObjective(const std::vector<float> &points, const std::vector<float> &centroids, size_t dim)
{
	size_t		n = points.size() / dim;
	size_t		k = centroids.size() / dim;
	double		total = 0;

	for (size_t i = 0; i < n; i++)
	{
		double		best = std::numeric_limits<double>::infinity();

		for (size_t c = 0; c < k; c++)
			best = std::min(best, ReferenceL2(points.data() + i * dim, centroids.data() + c * dim, dim));
		total += best;
	}
	return total;
}

TEST(KMeans, ToleranceStopsEarlyOnThePathOfTheFullRun)
{
	/* Large enough for a single FAISS run (no restarts): 20000 x 32 into 64. */
	const size_t n = 20000, dim = 32, k = 64;
	const int	iterations = 40;
	auto		points = ClusteredData(n, dim, 200, 61);
	std::vector<float> full(k * dim), early(k * dim), prefix(k * dim);

	EXPECT_EQ(KMeans(points.data(), n, dim, k, iterations, 7, 1, full.data()), iterations);
	int			run = KMeans(points.data(), n, dim, k, iterations, 7, 1, early.data(), 1e-3);

	/* It stopped early... */
	EXPECT_GE(run, 2);
	EXPECT_LT(run, iterations);
	/* ...with exactly the centroids the full run had after as many iterations... */
	EXPECT_EQ(KMeans(points.data(), n, dim, k, run, 7, 1, prefix.data()), run);
	EXPECT_EQ(early, prefix);

	/* ...and an objective close to the full run's. */
	double		full_objective = KMeansObjective(points, full, dim);
	double		early_objective = KMeansObjective(points, early, dim);

	EXPECT_LE(early_objective, 1.02 * full_objective);

	/* A tolerance no iteration can meet stops at the second iteration. */
	EXPECT_EQ(KMeans(points.data(), n, dim, k, iterations, 7, 1, early.data(), 1.0), 2);
}

TEST(Train, ToleranceStopsEarlyAndKeepsTheQuantizationError)
{
	/* Unstructured data: k-means keeps improving slowly for many iterations. */
	const size_t n = 20000, dim = 32, m = 8, lists = 64;
	auto		data = GaussianFloats(n * dim, 1.0f, 62);
	TrainConfig config = Config(dim, lists, m);
	std::vector<float> centroids(lists * dim), codebooks(m * kKsub * (dim / m));
	TrainReport full_report, early_report, stiff_report;

	config.coarse_iterations = 30;
	config.pq_iterations = 30;
	config.max_pq_rows = 0;
	Train(config, data.data(), n, centroids.data(), codebooks.data(), &full_report);
	double		full_error = ReconstructionError(View(dim, lists, m, Metric::L2, centroids, codebooks),
												 data.data(), n);

	EXPECT_EQ(full_report.coarse_iterations, 30);
	EXPECT_EQ(full_report.pq_iterations_max, 30);

	config.tolerance = 2e-3;
	Train(config, data.data(), n, centroids.data(), codebooks.data(), &early_report);
	double		early_error = ReconstructionError(View(dim, lists, m, Metric::L2, centroids, codebooks),
												  data.data(), n);

	EXPECT_LT(early_report.coarse_iterations, 30);
	EXPECT_LT(early_report.pq_iterations_mean, 25.0);
	EXPECT_GE(early_report.pq_iterations_mean, 2.0);
	EXPECT_LE(early_error, 1.03 * full_error);

	/* Every k-means stops at its second iteration when no gain is enough. */
	config.tolerance = 1.0;
	Train(config, data.data(), n, centroids.data(), codebooks.data(), &stiff_report);
	EXPECT_EQ(stiff_report.coarse_iterations, 2);
	EXPECT_EQ(stiff_report.pq_iterations_max, 2);
	EXPECT_DOUBLE_EQ(stiff_report.pq_iterations_mean, 2.0);
}

TEST(Quantizer, AssignAndEncodeMatchesItsPartsAndKeepsTheThreadCount)
{
	const size_t n = 3000, dim = 32, m = 8, lists = 16;
	auto		data = ClusteredData(n, dim, lists, 64);
	TrainConfig config = Config(dim, lists, m);
	std::vector<float> centroids(lists * dim), codebooks(m * kKsub * (dim / m));

	Train(config, data.data(), n, centroids.data(), codebooks.data());

	QuantizerView q = View(dim, lists, m, Metric::L2, centroids, codebooks);
	std::vector<int32_t> lists_expected(n), lists_got(n);
	std::vector<uint8_t> codes_expected(n * m), codes_got(n * m);

	AssignLists(q, data.data(), n, lists_expected.data());
	EncodeResiduals(q, data.data(), lists_expected.data(), n, codes_expected.data());
	int			saved_threads = omp_get_max_threads();

	omp_set_num_threads(3);
	for (int participants : {0, 1, 2, 8})
	{
		std::fill(lists_got.begin(), lists_got.end(), -1);
		std::fill(codes_got.begin(), codes_got.end(), 0);
		AssignAndEncode(q, data.data(), n, participants, lists_got.data(), codes_got.data());
		EXPECT_EQ(lists_got, lists_expected) << participants << " participants";
		EXPECT_EQ(codes_got, codes_expected) << participants << " participants";
		EXPECT_EQ(omp_get_max_threads(), 3) << participants << " participants";
	}
	omp_set_num_threads(saved_threads);
}

TEST(Train, EarlyStoppingIsDeterministicAcrossThreads)
{
	const size_t n = 6000, dim = 24, m = 6, lists = 16;
	auto		data = GaussianFloats(n * dim, 1.0f, 63);
	TrainConfig config = Config(dim, lists, m);
	std::vector<float> centroids1(lists * dim), centroids2(lists * dim);
	std::vector<float> codebooks1(m * kKsub * (dim / m)), codebooks2(m * kKsub * (dim / m));

	config.tolerance = 5e-3;
	config.pq_iterations = 25;
	config.threads = 1;
	Train(config, data.data(), n, centroids1.data(), codebooks1.data());
	config.threads = 2;
	Train(config, data.data(), n, centroids2.data(), codebooks2.data());
	EXPECT_EQ(centroids1, centroids2);
	EXPECT_EQ(codebooks1, codebooks2);
}

TEST(Train, RejectsNaNAndInfinity)
{
	std::vector<float> centroids(4 * 16);
	std::vector<float> codebooks(4 * kKsub * 4);

	for (float bad : {std::numeric_limits<float>::quiet_NaN(),
					  std::numeric_limits<float>::infinity(),
					  -std::numeric_limits<float>::infinity()})
	{
		auto		data = GaussianFloats(50 * 16, 1.0f, 51);

		data[37 * 16 + 5] = bad;
		ExpectError(ErrorKind::DataException, [&]() {
			Train(Config(16, 4, 4), data.data(), 50, centroids.data(), codebooks.data());
		});
	}
}

std::atomic<int> interrupt_polls{0};
int			interrupt_after = 0;

bool
InterruptAfterSomePolls()
{
	return interrupt_polls.fetch_add(1) >= interrupt_after;
}

struct TrainCall
{
	const float *data;
	size_t		n;
	float	   *centroids;
	float	   *codebooks;
};

TEST(Train, InterruptCancels)
{
	size_t		dim = 32;
	size_t		n = 3000;
	auto		data = ClusteredData(n, dim, 8, 52);
	std::vector<float> centroids(8 * dim);
	std::vector<float> codebooks(8 * kKsub * 4);
	TrainCall	call{data.data(), n, centroids.data(), codebooks.data()};

	/* Right away, and later on (inside FAISS or the PQ k-means). */
	for (int after : {0, 3, 20})
	{
		Failure		failure;

		interrupt_polls = 0;
		interrupt_after = after;
		SetInterruptCheck(InterruptAfterSomePolls);
		EXPECT_FALSE(InvokeGuarded([](void *arg) {
			auto	   *c = static_cast<TrainCall *>(arg);

			Train(Config(32, 8, 8), c->data, c->n, c->centroids, c->codebooks);
		}, &call, &failure));
		SetInterruptCheck(nullptr);
		EXPECT_EQ(failure.kind, ErrorKind::Cancelled) << after << ": " << failure.message;
	}
}

TEST(Quantizer, RejectsListsOutOfRangeAndMissingPreparedData)
{
	size_t		dim = 8;
	auto		centroids = GaussianFloats(2 * dim, 1.0f, 60);
	auto		codebooks = GaussianFloats(2 * kKsub * 4, 1.0f, 61);
	QuantizerView q = View(dim, 2, 2, Metric::L2, centroids, codebooks);
	auto		x = GaussianFloats(dim, 1.0f, 62);
	std::vector<float> table(2 * kKsub);
	float		bias;
	uint8_t		code[2];

	for (int32_t list : {-1, 2})
	{
		ExpectError(ErrorKind::InvalidParameter, [&]() {
			ComputeDistanceTable(q, x.data(), list, table.data(), &bias);
		});
		ExpectError(ErrorKind::InvalidParameter, [&]() {
			EncodeResiduals(q, x.data(), &list, 1, code);
		});
	}
	ExpectError(ErrorKind::InvalidParameter, [&]() {
		ComputeDistanceTablePrepared(q, nullptr, x.data(), 0, table.data(), &bias);
	});
}

/*
 * Peak bytes held through operator new while Train() runs, beyond what was
 * live when it started (its inputs and outputs).  FAISS (linked statically)
 * and the core allocate their working memory with new/std::vector, so the
 * counting operator new at the end of this file sees all of it.
 */
size_t
MeasuredTrainingPeakBytes(const TrainConfig &config, const std::vector<float> &sample, size_t n)
{
	std::vector<float> centroids(config.lists * config.dim);
	std::vector<float> codebooks(config.dim * (size_t(1) << config.nbits));
	size_t		peak;

	allocation_counting.store(true);
	live_bytes_at_start = live_bytes.load();
	peak_live_bytes.store(live_bytes_at_start);
	Train(config, sample.data(), n, centroids.data(), codebooks.data());
	allocation_counting.store(false);
	peak = peak_live_bytes.load();
	return peak - live_bytes_at_start;
}

/*
 * The estimate the build checks against maintenance_work_mem bounds what
 * training really holds at its peak, and is not wildly pessimistic: one shape
 * where the coarse FAISS k-means dominates (many lists, few PQ rows), one
 * where the per-thread sub-quantizer state does (many PQ rows, 64-dimensional
 * sub-vectors, two threads).
 */
TEST(Train, MemoryEstimateBoundsMeasuredPeak)
{
	struct Shape
	{
		size_t		n, dim, lists, m, max_pq_rows;
	};

	for (Shape shape : {Shape{60000, 64, 1024, 8, 4096}, Shape{40000, 128, 16, 2, 40000}})
	{
		TrainConfig config = Config(shape.dim, shape.lists, shape.m);
		auto		sample = ClusteredData(shape.n, shape.dim, 32, 70);
		size_t		estimate;
		size_t		measured;

		config.max_pq_rows = shape.max_pq_rows;
		config.coarse_iterations = 4;
		config.pq_iterations = 2;
		config.threads = 2;
		estimate = TrainingMemoryBytes(config, shape.n);
		measured = MeasuredTrainingPeakBytes(config, sample, shape.n);
		printf("n=%zu dim=%zu lists=%zu m=%zu pq_rows=%zu: estimate %.1f MB, measured peak %.1f MB\n",
			   shape.n, shape.dim, shape.lists, shape.m, shape.max_pq_rows,
			   estimate / 1048576.0, measured / 1048576.0);
		EXPECT_GE(estimate, measured) << "the estimate is below the real peak, lists=" << shape.lists;
		EXPECT_LE(estimate, 4 * measured) << "the estimate is over 4x the real peak, lists=" << shape.lists;
	}
}

}							/* namespace */

/*
 * Counting replacements of the global operator new/delete (plain and array;
 * the aligned forms keep their defaults), for the whole test binary.  Each
 * block carries its size in a 16-byte header so delete can subtract it.
 */
constexpr size_t kAllocationHeader = 16;

void *
operator new(size_t size)
{
	char	   *block = static_cast<char *>(malloc(size + kAllocationHeader));
	size_t		live;

	if (block == nullptr)
		throw std::bad_alloc();
	*reinterpret_cast<size_t *>(block) = size;
	live = live_bytes.fetch_add(size) + size;
	if (allocation_counting.load(std::memory_order_relaxed))
	{
		size_t		peak = peak_live_bytes.load();

		while (live > peak && !peak_live_bytes.compare_exchange_weak(peak, live))
			;
	}
	return block + kAllocationHeader;
}

void *
operator new[](size_t size)
{
	return operator new(size);
}

/* GCC takes the free() below for a mismatch with operator new: it is the pair. */
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void
operator delete(void *pointer) noexcept
{
	char	   *block;

	if (pointer == nullptr)
		return;
	block = static_cast<char *>(pointer) - kAllocationHeader;
	live_bytes.fetch_sub(*reinterpret_cast<size_t *>(block));
	free(block);
}

void
operator delete[](void *pointer) noexcept
{
	operator delete(pointer);
}

void
operator delete(void *pointer, size_t) noexcept
{
	operator delete(pointer);
}

void
operator delete[](void *pointer, size_t) noexcept
{
	operator delete(pointer);
}
