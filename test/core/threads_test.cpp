/*
 * threads_test.cpp
 *		Core entry points that choose an OpenMP thread count leave the
 *		caller's count as they found it, on success and on failure.
 */
#include <vector>

#include <gtest/gtest.h>
#include <omp.h>

#include "kernel_sets.h"

using namespace ivfpq::core;

namespace {

/* Sets the caller's count for the test, restores the process default after. */
class OmpThreadCount : public ::testing::Test
{
protected:
	void		SetUp() override
	{
		saved_ = omp_get_max_threads();
		omp_set_num_threads(kCallerThreads);
	}
	void		TearDown() override
	{
		omp_set_num_threads(saved_);
	}
	static constexpr int kCallerThreads = 3;

private:
	int			saved_ = 1;
};

TEST_F(OmpThreadCount, KMeansRestoresCount)
{
	std::vector<float> points = GaussianFloats(200 * 4, 1.0f, 11);
	std::vector<float> centroids(4 * 4);

	KMeans(points.data(), 200, 4, 4, 5, 1, 1, centroids.data());
	EXPECT_EQ(omp_get_max_threads(), kCallerThreads);
}

TEST_F(OmpThreadCount, KMeansRestoresCountWhenCancelled)
{
	std::vector<float> points = GaussianFloats(200 * 4, 1.0f, 12);
	std::vector<float> centroids(4 * 4);
	Failure		failure;
	struct Args
	{
		float	   *points;
		float	   *centroids;
	}			args{points.data(), centroids.data()};

	/* The first interrupt poll comes after the thread count was chosen. */
	SetInterruptCheck([]() { return true; });
	EXPECT_FALSE(InvokeGuarded([](void *arg) {
		Args	   *a = static_cast<Args *>(arg);

		KMeans(a->points, 200, 4, 4, 5, 1, 2, a->centroids);
	}, &args, &failure));
	SetInterruptCheck(nullptr);
	EXPECT_EQ(failure.kind, ErrorKind::Cancelled);
	EXPECT_EQ(omp_get_max_threads(), kCallerThreads);
}

TEST_F(OmpThreadCount, TrainRestoresCount)
{
	/* 2 training threads, 3 iterations each, all rows, seed 5 */
	TrainConfig config{{8, 4, 4, 8, Metric::L2}, 3, 3, 0, 5, 2};
	size_t		n = 600;
	std::vector<float> sample = GaussianFloats(n * 8, 1.0f, 13);
	std::vector<float> centroids(4 * 8);
	std::vector<float> codebooks(8 * 256);

	Train(config, sample.data(), n, centroids.data(), codebooks.data());
	EXPECT_EQ(omp_get_max_threads(), kCallerThreads);
}

}							/* namespace */
