/*
 * kmeans.cpp
 *		Plain k-means on FAISS, the smallest core entry point that proves the
 *		FAISS link and the error/interrupt chain end to end.
 */
#include <cmath>
#include <string>

#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include "core_error.h"
#include "omp_threads.h"

namespace ivfpq::core {

void
KMeans(const float *points, size_t n, size_t dim, size_t k, int iterations,
	   uint64_t seed, int threads, float *centroids_out)
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
	for (size_t i = 0; i < n * dim; i++)
		if (!std::isfinite(points[i]))
			ThrowData("k-means input contains NaN or infinity");

	OmpThreadsScope thread_scope(threads);

	faiss::ClusteringParameters params;

	params.niter = iterations;
	params.seed = static_cast<int>(seed & 0x7fffffff);
	params.verbose = false;
	/* Use every point: callers pass samples they already bounded. */
	params.max_points_per_centroid = static_cast<int>((n + k - 1) / k + 1);
	params.min_points_per_centroid = 1;
	/* Small problems are cheap: restart a few times to dodge a bad seeding. */
	params.nredo = (double(n) * double(k) * double(dim) * iterations < 5e8) ? 5 : 1;

	faiss::Clustering clustering(static_cast<int>(dim), static_cast<int>(k), params);
	faiss::IndexFlatL2 assigner(static_cast<faiss::Index::idx_t>(dim));

	CheckInterrupt();
	clustering.train(static_cast<faiss::Index::idx_t>(n), points, assigner);
	CheckInterrupt();
	for (size_t i = 0; i < k * dim; i++)
		centroids_out[i] = clustering.centroids[i];
}

}							/* namespace ivfpq::core */
