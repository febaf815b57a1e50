/*
 * kernel_sets.h
 *		Shared by the core unit tests: a fixture that runs a test once per kernel
 *		set (portable and AVX2+FMA), and reproducible random test data.
 */
#ifndef IVFPQ_TEST_KERNEL_SETS_H
#define IVFPQ_TEST_KERNEL_SETS_H

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ivfpq_core.h"

/* Base fixture: selects GetParam()'s kernels; a CPU without AVX2 skips that half. */
class KernelSetTest : public ::testing::TestWithParam<ivfpq::core::KernelSet>
{
protected:
	void		SetUp() override
	{
		if (!ivfpq::core::UseKernels(GetParam()))
			GTEST_SKIP() << "kernel set not supported by this CPU";
	}
	void		TearDown() override
	{
		ivfpq::core::UseKernels(ivfpq::core::KernelSet::Auto);
	}
};

/* Test name suffix for a kernel set. */
inline std::string
KernelSetName(const ::testing::TestParamInfo<ivfpq::core::KernelSet> &info)
{
	return info.param == ivfpq::core::KernelSet::Portable ? "Portable" : "Avx2";
}

/* Instantiate a KernelSetTest-derived suite for both kernel sets. */
#define IVFPQ_FOR_ALL_KERNEL_SETS(suite) \
	INSTANTIATE_TEST_SUITE_P(AllKernelSets, suite, \
							 ::testing::Values(ivfpq::core::KernelSet::Portable, \
											   ivfpq::core::KernelSet::Avx2), \
							 KernelSetName)

/* count floats drawn from N(0, sigma^2), reproducible from seed. */
inline std::vector<float>
GaussianFloats(size_t count, float sigma, uint32_t seed)
{
	std::mt19937 rng(seed);
	std::normal_distribution<float> normal(0.0f, sigma);
	std::vector<float> values(count);

	for (auto &v : values)
		v = normal(rng);
	return values;
}

#endif
