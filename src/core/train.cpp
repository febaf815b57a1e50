/*
 * train.cpp
 *		Training an IVF_PQ quantizer: coarse centroids with FAISS k-means, then
 *		one k-means per sub-quantizer (256 codewords for 8-bit codes, 16 for
 *		4-bit ones) on residual sub-vectors.
 *
 * The sub-quantizer k-means is our own (FAISS 1.7.3 here is built without
 * AVX2 and its ProductQuantizer::train takes minutes on 784 dimensions): a
 * plain Lloyd iteration whose assignment step runs on the nearest-codeword
 * kernels of pq_kernels.h, with FAISS-style splitting of empty clusters.  It
 * is deterministic for a given seed whatever the number of threads: every
 * sub-quantizer has its own random stream and is trained by one thread.
 * Every k-means, coarse and PQ, may stop before its iteration cap once an
 * iteration gains less than config.tolerance of its objective.
 * config.threads is the OpenMP thread count of that stage; the coarse FAISS
 * k-means runs on one OpenMP thread and gets its parallelism from BLAS.
 */
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <omp.h>

#include "core_error.h"
#include "omp_threads.h"
#include "pq_kernels.h"

namespace ivfpq::core {

namespace {

/* Rows copied at a time to assign the PQ training rows to their lists. */
constexpr size_t kAssignChunkRows = 1024;

/* Relative perturbation used when an empty cluster takes over half of another. */
constexpr float kSplitEpsilon = 1.0f / 1024.0f;

/* Scratch space and shape of one sub-quantizer training run. */
struct SubQuantizerWork
{
	std::vector<float> points;			/* rows x dsub residual sub-vectors */
	std::vector<float> centroids;		/* k x dsub */
	std::vector<float> transposed;		/* dsub x kpad */
	std::vector<float> norms;			/* kpad */
	std::vector<int32_t> assignment;	/* rows */
	std::vector<int32_t> previous;		/* rows, last iteration's assignment */
	std::vector<double> sums;			/* k x dsub */
	std::vector<size_t> counts;			/* k */
};

/* A 64-bit mix of seed and stream number (SplitMix64 finalizer). */
uint64_t
MixSeed(uint64_t seed, uint64_t stream)
{
	uint64_t	z = seed + 0x9e3779b97f4a7c15ULL * (stream + 1);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Choose 'count' of n indexes uniformly at random, in increasing order. */
std::vector<size_t>
SampleIndexes(size_t n, size_t count, std::mt19937_64 &rng)
{
	std::vector<size_t> chosen;
	size_t		needed = std::min(count, n);

	chosen.reserve(needed);
	/* Selection sampling (Knuth's algorithm S): one pass, sorted output. */
	for (size_t i = 0; i < n && needed > 0; i++)
	{
		if (rng() % (n - i) < needed)
		{
			chosen.push_back(i);
			needed--;
		}
	}
	return chosen;
}

/* Throws InvalidParameter unless config and n describe a trainable problem. */
void
ValidateConfig(const TrainConfig &config, size_t n)
{
	if (config.dim == 0)
		ThrowInvalid("vectors to index must have at least one dimension");
	if (config.lists == 0)
		ThrowInvalid("lists must be at least 1");
	if (config.m == 0)
		ThrowInvalid("m (the number of PQ sub-quantizers) must be at least 1");
	if (config.dim % config.m != 0)
		ThrowInvalid("dimensions (" + std::to_string(config.dim) +
					 ") must be a multiple of m (" + std::to_string(config.m) + ")");
	if (config.nbits != 8 && config.nbits != 4)
		ThrowInvalid("nbits must be 4 or 8 (got " + std::to_string(config.nbits) + ")");
	if (config.nbits == 4 && config.m % 2 != 0)
		ThrowInvalid("4-bit codes need an even m (got " + std::to_string(config.m) + ")");
	if (config.coarse_iterations < 1)
		ThrowInvalid("coarse k-means needs at least one iteration");
	if (config.pq_iterations < 1)
		ThrowInvalid("PQ k-means needs at least one iteration");
	if (!(config.tolerance >= 0.0))
		ThrowInvalid("k-means tolerance must not be negative");
	if (n == 0)
		ThrowInvalid("training needs at least one row");
}

/* Throws DataException if the sample holds NaN or infinity. */
void
CheckFinite(const float *sample, size_t n, size_t dim)
{
	for (size_t i = 0; i < n; i++)
		for (size_t d = 0; d < dim; d++)
			if (!std::isfinite(sample[i * dim + d]))
				ThrowData("training vector " + std::to_string(i) +
						  " contains NaN or infinity");
}

/* Repeat the first 'trained' rows of table (rows x width) over the rest. */
void
FillByDuplicating(float *table, size_t trained, size_t rows, size_t width)
{
	for (size_t r = trained; r < rows; r++)
		std::memcpy(table + r * width, table + (r % trained) * width,
					width * sizeof(float));
}

/*
 * Give each empty cluster half of a populated one (chosen with probability
 * proportional to its size beyond one point), moving both copies apart by
 * a small relative perturbation, as FAISS does.
 */
void
SplitEmptyClusters(SubQuantizerWork &work, size_t k, size_t dsub, std::mt19937_64 &rng)
{
	for (size_t empty = 0; empty < k; empty++)
	{
		if (work.counts[empty] != 0)
			continue;

		size_t		spare = 0;

		for (size_t c = 0; c < k; c++)
			if (work.counts[c] > 1)
				spare += work.counts[c] - 1;
		if (spare == 0)
			return;				/* nothing left to split */

		size_t		pick = rng() % spare;
		size_t		donor = 0;

		for (size_t c = 0; c < k; c++)
		{
			if (work.counts[c] <= 1)
				continue;
			if (pick < work.counts[c] - 1)
			{
				donor = c;
				break;
			}
			pick -= work.counts[c] - 1;
		}

		float	   *target = work.centroids.data() + empty * dsub;
		float	   *source = work.centroids.data() + donor * dsub;

		for (size_t d = 0; d < dsub; d++)
		{
			float		sign = (d % 2 == 0) ? 1.0f : -1.0f;
			float		value = source[d];

			target[d] = value * (1 + sign * kSplitEpsilon);
			source[d] = value * (1 - sign * kSplitEpsilon);
		}
		work.counts[empty] = work.counts[donor] / 2;
		work.counts[donor] -= work.counts[empty];
	}
}

/*
 * Sum of squared distances of the points to the means of their clusters,
 * from the per-cluster sums and counts of the current assignment:
 * sum ||x||^2 - sum over clusters of ||sum||^2 / count.
 */
double
WithinClusterSquares(const SubQuantizerWork &work, size_t k, size_t dsub, double point_squares)
{
	double		between = 0.0;

	for (size_t c = 0; c < k; c++)
	{
		if (work.counts[c] == 0)
			continue;

		const double *sum = work.sums.data() + c * dsub;
		double		squares = 0.0;

		for (size_t d = 0; d < dsub; d++)
			squares += sum[d] * sum[d];
		between += squares / double(work.counts[c]);
	}
	return point_squares - between;
}

/*
 * Lloyd k-means of work.points (rows x dsub) into min(ksub, rows) clusters,
 * started from distinct random points; writes ksub x dsub floats to
 * codebook_out, duplicating codewords when rows < ksub.  Stops after
 * 'iterations', when the assignment no longer changes, or (tolerance > 0)
 * when an iteration lowers the objective (squared distances of the points
 * to their cluster means) by less than that fraction.  Returns the
 * iterations run.
 */
int
TrainSubQuantizer(SubQuantizerWork &work, size_t rows, size_t dsub, size_t ksub,
				  int iterations, double tolerance, uint64_t seed, float *codebook_out)
{
	std::mt19937_64 rng(seed);
	size_t		k = std::min(ksub, rows);
	size_t		kpad = PaddedCodewords(k);
	std::vector<size_t> initial = SampleIndexes(rows, k, rng);

	work.centroids.resize(k * dsub);
	work.transposed.resize(dsub * kpad);
	work.norms.resize(kpad);
	work.assignment.resize(rows);
	work.previous.assign(rows, -1);
	work.sums.resize(k * dsub);
	work.counts.resize(k);

	for (size_t c = 0; c < k; c++)
		std::memcpy(work.centroids.data() + c * dsub, work.points.data() + initial[c] * dsub,
					dsub * sizeof(float));

	double		point_squares = 0.0;
	double		previous_objective = 0.0;
	int			iteration = 0;

	if (tolerance > 0.0)
		for (size_t i = 0; i < rows * dsub; i++)
			point_squares += double(work.points[i]) * double(work.points[i]);

	while (iteration < iterations && k < rows)
	{
		iteration++;
		CheckInterrupt();
		TransposeCodebook(work.centroids.data(), k, dsub, work.transposed.data(),
						  work.norms.data());
		NearestCodewords(work.points.data(), dsub, rows, work.transposed.data(),
						 work.norms.data(), dsub, kpad, work.assignment.data());
		if (work.assignment == work.previous)
			break;				/* converged: centroids are already the means */
		work.previous.swap(work.assignment);

		std::fill(work.sums.begin(), work.sums.end(), 0.0);
		std::fill(work.counts.begin(), work.counts.end(), 0);
		for (size_t i = 0; i < rows; i++)
		{
			size_t		c = size_t(work.previous[i]);
			const float *point = work.points.data() + i * dsub;
			double	   *sum = work.sums.data() + c * dsub;

			for (size_t d = 0; d < dsub; d++)
				sum[d] += point[d];
			work.counts[c]++;
		}
		for (size_t c = 0; c < k; c++)
		{
			if (work.counts[c] == 0)
				continue;
			for (size_t d = 0; d < dsub; d++)
				work.centroids[c * dsub + d] = float(work.sums[c * dsub + d] / double(work.counts[c]));
		}

		bool		converged = false;

		if (tolerance > 0.0)
		{
			double		objective = WithinClusterSquares(work, k, dsub, point_squares);

			converged = iteration > 1 &&
				previous_objective - objective < tolerance * previous_objective;
			previous_objective = objective;
		}
		SplitEmptyClusters(work, k, dsub, rng);
		if (converged)
			break;
	}

	std::memcpy(codebook_out, work.centroids.data(), k * dsub * sizeof(float));
	FillByDuplicating(codebook_out, k, ksub, dsub);
	return iteration;
}

/*
 * Coarse centroids: FAISS k-means on min(lists, n) clusters, then
 * duplicates.  FAISS runs on one OpenMP thread: its heavy part is BLAS sgemm,
 * which has its own threads, and OpenMP workers spin-waiting between FAISS's
 * many short parallel regions starve those BLAS threads.  Measured on 2
 * vCPUs: 60k x 784, 256 lists, 10 iterations took 5.0 s with 2 OpenMP
 * threads and 2.9 s with 1; tiny inputs sometimes took 2 s instead of 3 ms.
 */
int
TrainCoarse(const TrainConfig &config, const float *sample, size_t n, float *centroids_out)
{
	size_t		k = std::min(config.lists, n);
	int			iterations = KMeans(sample, n, config.dim, k, config.coarse_iterations,
									config.seed, 1, centroids_out, config.tolerance);

	FillByDuplicating(centroids_out, k, config.lists, config.dim);
	return iterations;
}

/*
 * PQ codebooks: one k-means per sub-quantizer, sub-quantizers in parallel.
 * Writes the iterations each sub-quantizer ran to iterations_out (m ints).
 */
void
TrainProductQuantizer(const TrainConfig &config, const float *sample, size_t n,
					  const float *centroids, float *codebooks_out, int *iterations_out)
{
	size_t		dim = config.dim;
	size_t		dsub = dim / config.m;
	size_t		ksub = size_t(1) << config.nbits;
	size_t		pq_rows = config.max_pq_rows == 0 ? n : std::min(n, config.max_pq_rows);
	std::mt19937_64 rng(MixSeed(config.seed, 0));
	std::vector<size_t> rows = SampleIndexes(n, pq_rows, rng);
	std::vector<int32_t> lists(pq_rows);
	QuantizerView view{{dim, config.lists, config.m, config.nbits, Metric::L2},
					   centroids, codebooks_out};

	/* Lists of the PQ training rows (copied in chunks: they are scattered). */
	{
		std::vector<float> chunk(std::min(pq_rows, kAssignChunkRows) * dim);

		for (size_t start = 0; start < pq_rows; start += kAssignChunkRows)
		{
			size_t		count = std::min(kAssignChunkRows, pq_rows - start);

			for (size_t i = 0; i < count; i++)
				std::memcpy(chunk.data() + i * dim, sample + rows[start + i] * dim,
							dim * sizeof(float));
			AssignLists(view, chunk.data(), count, lists.data() + start);
		}
	}
	CheckInterrupt();

	std::exception_ptr failure;
	std::mutex	failure_lock;
	std::atomic<bool> stop{false};
	long		m = long(config.m);

#pragma omp parallel
	{
		SubQuantizerWork work;

#pragma omp for schedule(dynamic, 1)
		for (long j = 0; j < m; j++)
		{
			if (stop.load(std::memory_order_relaxed))
				continue;
			try
			{
				size_t		offset = size_t(j) * dsub;

				work.points.resize(pq_rows * dsub);
				for (size_t i = 0; i < pq_rows; i++)
				{
					const float *x = sample + rows[i] * dim + offset;
					const float *c = centroids + size_t(lists[i]) * dim + offset;
					float	   *point = work.points.data() + i * dsub;

					for (size_t d = 0; d < dsub; d++)
						point[d] = x[d] - c[d];
				}
				iterations_out[j] =
					TrainSubQuantizer(work, pq_rows, dsub, ksub, config.pq_iterations,
									  config.tolerance, MixSeed(config.seed, uint64_t(j) + 1),
									  codebooks_out + size_t(j) * ksub * dsub);
			}
			catch (...)
			{
				/* Exceptions must not leave an OpenMP region: keep the first. */
				std::lock_guard<std::mutex> guard(failure_lock);

				if (!failure)
					failure = std::current_exception();
				stop.store(true, std::memory_order_relaxed);
			}
		}
	}
	if (failure)
		std::rethrow_exception(failure);
}

}							/* namespace */

/* Working memory of Train() beyond the sample (upper estimate, bytes). */
size_t
TrainingMemoryBytes(const TrainConfig &config, size_t sample_rows)
{
	size_t		dim = config.dim;
	size_t		lists = config.lists;
	size_t		dsub = config.m > 0 ? dim / config.m : dim;
	size_t		ksub = size_t(1) << std::min<size_t>(config.nbits, 16);
	size_t		pq_rows = config.max_pq_rows == 0 ? sample_rows
		: std::min(sample_rows, config.max_pq_rows);
	size_t		threads = size_t(config.threads > 0 ? config.threads : omp_get_max_threads());
	size_t		coarse;
	size_t		pq;

	/*
	 * FAISS k-means: per point an assignment (int64) and three floats (its
	 * distance, and the per-point weights and distances of the iteration and
	 * of the best run; measured: 20 bytes a row), a few copies of the
	 * centroids (k-means state, best of several runs, the flat index) and
	 * the 4096 x 1024 block of its BLAS distance computation.
	 */
	coarse = sample_rows * (sizeof(int64_t) + 3 * sizeof(float)) +
		3 * lists * dim * sizeof(float) +
		(4096 * 1024 + 4096 + 1024) * sizeof(float);

	/*
	 * PQ: chosen rows and their lists, the assignment chunk and its sgemm
	 * block, then per thread the residual sub-vectors, assignments and the
	 * k-means state of one sub-quantizer.
	 */
	pq = pq_rows * (sizeof(size_t) + sizeof(int32_t)) +
		kAssignChunkRows * dim * sizeof(float) +
		(size_t(1) << 20) * sizeof(float) + lists * sizeof(float) +
		threads * (pq_rows * (dsub * sizeof(float) + 2 * sizeof(int32_t)) +
				   ksub * (dsub * (2 * sizeof(float) + sizeof(double)) +
						   sizeof(float) + sizeof(size_t)) +
				   ksub * sizeof(size_t));
	return std::max(coarse, pq);
}

/* Train coarse centroids and residual PQ codebooks (see ivfpq_core.h). */
void
Train(const TrainConfig &config, const float *sample, size_t n,
	  float *centroids_out, float *codebooks_out, TrainReport *report)
{
	ValidateConfig(config, n);
	CheckFinite(sample, n, config.dim);
	OmpThreadsScope threads(config.threads);
	std::vector<int> pq_iterations(config.m, 0);
	int			coarse_iterations;

	CheckInterrupt();
	coarse_iterations = TrainCoarse(config, sample, n, centroids_out);
	CheckInterrupt();
	TrainProductQuantizer(config, sample, n, centroids_out, codebooks_out,
						  pq_iterations.data());
	CheckInterrupt();
	if (report != nullptr)
	{
		report->coarse_iterations = coarse_iterations;
		report->pq_iterations_max = *std::max_element(pq_iterations.begin(), pq_iterations.end());
		report->pq_iterations_mean = double(std::accumulate(pq_iterations.begin(),
															pq_iterations.end(), 0L)) /
			double(config.m);
	}
}

}							/* namespace ivfpq::core */
