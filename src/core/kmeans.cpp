/*
 * kmeans.cpp
 *		Plain k-means on FAISS, the smallest core entry point that proves the
 *		FAISS link and the error/interrupt chain end to end; also the coarse
 *		k-means of training, with its early stopping.
 */
#include <cmath>
#include <string>

#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include "core_error.h"
#include "omp_threads.h"

namespace ivfpq::core {

/*
 * FAISS k-means, in one call, or with a tolerance one iteration per call so
 * that it can stop early (see ivfpq_core.h).
 */
int
KMeans(const float *points, size_t n, size_t dim, size_t k, int iterations,
	   uint64_t seed, int threads, float *centroids_out, double tolerance)
{
	if (dim == 0)
		ThrowInvalid("k-means needs at least one dimension");
	if (k == 0)
		ThrowInvalid("k-means needs at least one cluster");
	if (n < k)
		ThrowInvalid("k-means needs at least as many points as clusters (" +
					 std::to_string(n) + " points, " + std::to_string(k) + " clusters)");
	if (iterations < 1)
		ThrowInvalid("k-means needs at least one iteration");
	if (!(tolerance >= 0.0))
		ThrowInvalid("k-means tolerance must not be negative");
	for (size_t i = 0; i < n * dim; i++)
		if (!std::isfinite(points[i]))
			ThrowData("k-means input contains NaN or infinity");

	OmpThreadsScope thread_scope(threads);

	faiss::ClusteringParameters params;
	int			iterations_run = iterations;

	params.niter = iterations;
	params.seed = static_cast<int>(seed & 0x7fffffff);
	params.verbose = false;
	/* Use every point: callers pass samples they already bounded. */
	params.max_points_per_centroid = static_cast<int>((n + k - 1) / k + 1);
	params.min_points_per_centroid = 1;
	/* Small problems are cheap: restart a few times to dodge a bad seeding. */
	params.nredo = (double(n) * double(k) * double(dim) * iterations < 5e8) ? 5 : 1;

	/*
	 * Early stopping drives FAISS one iteration at a time: a call that finds
	 * centroids from the previous one starts from them (no new seeding), and
	 * FAISS's empty-cluster split reseeds its own generator every iteration,
	 * so the calls retrace the single-call run exactly.  Restarts (nredo)
	 * keep the single call: they are only used where k-means is cheap.
	 */
	bool		stepwise = tolerance > 0.0 && params.nredo == 1 && iterations > 1;

	if (stepwise)
		params.niter = 1;

	faiss::Clustering clustering(static_cast<int>(dim), static_cast<int>(k), params);
	faiss::IndexFlatL2 assigner(static_cast<faiss::Index::idx_t>(dim));

	CheckInterrupt();
	if (!stepwise)
		clustering.train(static_cast<faiss::Index::idx_t>(n), points, assigner);
	else
	{
		double		previous = 0.0;

		for (iterations_run = 0; iterations_run < iterations;)
		{
			clustering.train(static_cast<faiss::Index::idx_t>(n), points, assigner);
			iterations_run++;
			CheckInterrupt();

			/* The objective of this iteration's assignment (before its update). */
			double		objective = clustering.iteration_stats.back().obj;

			if (iterations_run > 1 && previous - objective < tolerance * previous)
				break;
			previous = objective;
		}
	}
	CheckInterrupt();
	for (size_t i = 0; i < k * dim; i++)
		centroids_out[i] = clustering.centroids[i];
	return iterations_run;
}

}							/* namespace ivfpq::core */
