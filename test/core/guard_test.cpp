/*
 * guard_test.cpp
 *		The guard turns every kind of exception into a Failure record, and the
 *		interrupt hook stops FAISS k-means.
 */
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include <gtest/gtest.h>

#include "core_error.h"

using namespace ivfpq::core;

namespace {

Failure
RunGuarded(void (*fn) (void *), void *arg = nullptr)
{
	Failure		failure;

	EXPECT_FALSE(InvokeGuarded(fn, arg, &failure));
	return failure;
}

TEST(Guard, SuccessLeavesNoFailure)
{
	Failure		failure;
	int			value = 0;

	EXPECT_TRUE(InvokeGuarded([](void *arg) { *static_cast<int *>(arg) = 7; }, &value, &failure));
	EXPECT_EQ(value, 7);
	EXPECT_EQ(failure.kind, ErrorKind::None);
}

TEST(Guard, MapsEveryExceptionKind)
{
	Failure		f;

	f = RunGuarded([](void *) { ThrowInvalid("bad lists"); });
	EXPECT_EQ(f.kind, ErrorKind::InvalidParameter);
	EXPECT_STREQ(f.message, "bad lists");

	f = RunGuarded([](void *) { throw std::bad_alloc(); });
	EXPECT_EQ(f.kind, ErrorKind::OutOfMemory);

	f = RunGuarded([](void *) { throw std::logic_error("oops"); });
	EXPECT_EQ(f.kind, ErrorKind::Internal);
	EXPECT_STREQ(f.message, "oops");

	f = RunGuarded([](void *) { throw 42; });
	EXPECT_EQ(f.kind, ErrorKind::Unknown);
}

TEST(Guard, LongMessagesAreTruncatedNotOverflowed)
{
	Failure		f = RunGuarded([](void *) { ThrowInvalid(std::string(5000, 'x')); });

	EXPECT_EQ(std::strlen(f.message), sizeof(f.message) - 1);
}

TEST(KMeans, FindsSeparatedClusters)
{
	std::mt19937 rng(1);
	std::normal_distribution<float> noise(0.0f, 0.01f);
	std::vector<float> points;

	for (int i = 0; i < 300; i++)
	{
		float		center = float(i % 3) * 10.0f;

		points.push_back(center + noise(rng));
		points.push_back(-center + noise(rng));
	}
	std::vector<float> centroids(3 * 2);

	KMeans(points.data(), 300, 2, 3, 10, 123, 1, centroids.data());
	std::vector<bool> found(3, false);
	for (int c = 0; c < 3; c++)
		for (int t = 0; t < 3; t++)
			if (std::fabs(centroids[c * 2] - t * 10.0f) < 0.1f &&
				std::fabs(centroids[c * 2 + 1] + t * 10.0f) < 0.1f)
				found[t] = true;
	EXPECT_TRUE(found[0] && found[1] && found[2]);
}

TEST(KMeans, RejectsTooFewPoints)
{
	std::vector<float> points(4, 1.0f), centroids(10);

	try
	{
		KMeans(points.data(), 2, 2, 5, 10, 1, 1, centroids.data());
		FAIL() << "expected an error";
	}
	catch (const Error &e)
	{
		EXPECT_EQ(e.kind(), ErrorKind::InvalidParameter);
	}
}

TEST(KMeans, InterruptStopsTraining)
{
	std::mt19937 rng(2);
	std::uniform_real_distribution<float> uniform(0, 1);
	std::vector<float> points(20000 * 16);

	for (auto &x : points)
		x = uniform(rng);
	std::vector<float> centroids(100 * 16);

	SetInterruptCheck([]() { return true; });
	struct Args
	{
		std::vector<float> *points;
		std::vector<float> *centroids;
	}			args{&points, &centroids};
	Failure		failure;
	bool		ok = InvokeGuarded([](void *arg) {
		auto	   *a = static_cast<Args *>(arg);

		KMeans(a->points->data(), 20000, 16, 100, 50, 1, 1, a->centroids->data());
	}, &args, &failure);

	SetInterruptCheck(nullptr);
	EXPECT_FALSE(ok);
	EXPECT_EQ(failure.kind, ErrorKind::Cancelled);
}

}							/* namespace */
