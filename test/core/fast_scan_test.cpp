/*
 * fast_scan_test.cpp
 *		4-bit codes: packing, the fast-scan block layout (store/load round
 *		trips), table quantization, and the fast-scan kernels (AVX2, SSSE3,
 *		portable) against plain integer sums and against exact float ADC
 *		within the quantization bound; 4-bit training and encoding.
 */
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernel_sets.h"

#include "ivfpq_core.h"

using namespace ivfpq::core;

namespace {

/* n packed 4-bit codes of m sub-quantizers, random. */
std::vector<uint8_t>
RandomPackedCodes(size_t n, size_t m, uint32_t seed)
{
	std::mt19937 rng(seed);
	std::vector<uint8_t> codes(n * CodeBytes(m, 4));

	for (auto &c : codes)
		c = uint8_t(rng());
	return codes;
}

/* A fast-scan area holding the n codes. */
std::vector<uint8_t>
Blocks(const std::vector<uint8_t> &codes, size_t n, size_t m)
{
	std::vector<uint8_t> blocks(BlockedCodeBytes(n, m, 4), 0);

	for (size_t e = 0; e < n; e++)
		StoreBlockedCode(blocks.data(), e, m, 4, codes.data() + e * CodeBytes(m, 4));
	return blocks;
}

std::vector<FastScanKernel>
SupportedKernels()
{
	std::vector<FastScanKernel> kernels;

	for (FastScanKernel k : {FastScanKernel::Portable, FastScanKernel::Ssse3, FastScanKernel::Avx2})
		if (FastScanKernelSupported(k))
			kernels.push_back(k);
	return kernels;
}

}							/* namespace */

TEST(FastScanCodes, PackingPutsEvenSubQuantizersInLowNibbles)
{
	uint8_t		code[2] = {0, 0};

	SetCodeValue(code, 0, 4, 0x3);
	SetCodeValue(code, 1, 4, 0xA);
	SetCodeValue(code, 2, 4, 0xF);
	SetCodeValue(code, 3, 4, 0x0);
	EXPECT_EQ(code[0], 0xA3);
	EXPECT_EQ(code[1], 0x0F);
	EXPECT_EQ(CodeValue(code, 1, 4), 0xA);
	EXPECT_EQ(CodeValue(code, 2, 4), 0xF);
	EXPECT_EQ(CodeBytes(32, 4), 16u);
	EXPECT_EQ(CodeBytes(16, 8), 16u);
	EXPECT_EQ(CodeBlockEntries(4), 32u);
	EXPECT_EQ(CodeBlockEntries(8), kCodeBlock);
	EXPECT_EQ(BlockedCodeBytes(1, 32, 4), 32u * 16);
	EXPECT_EQ(BlockedCodeBytes(33, 32, 4), 64u * 16);
	EXPECT_EQ(BlockedCodeBytes(9, 16, 8), BlockedCodeBytes(9, 16));
}

TEST(FastScanCodes, RoundTripIncludingPartialLastBlock)
{
	for (size_t m : {2, 4, 16, 64})
		for (size_t n : {1, 31, 32, 33, 100})
		{
			auto		codes = RandomPackedCodes(n, m, uint32_t(n * 131 + m));
			auto		blocks = Blocks(codes, n, m);
			std::vector<uint8_t> loaded(CodeBytes(m, 4));

			for (size_t e = 0; e < n; e++)
			{
				LoadBlockedCode(blocks.data(), e, m, 4, loaded.data());
				ASSERT_TRUE(std::equal(loaded.begin(), loaded.end(),
									   codes.begin() + e * CodeBytes(m, 4)))
					<< "m " << m << " n " << n << " entry " << e;
			}
		}
}

TEST(FastScanCodes, LayoutMatchesTheDocumentedBytes)
{
	size_t		m = 4;
	std::vector<uint8_t> blocks(BlockedCodeBytes(32, m, 4), 0);
	uint8_t		code[2];

	/* entry 17: lane 1 of the high nibbles; sub-quantizers 0..3 = 1, 2, 3, 4 */
	code[0] = 0x21;
	code[1] = 0x43;
	StoreBlockedCode(blocks.data(), 17, m, 4, code);
	EXPECT_EQ(blocks[1], 0x10);			/* group 0, sub-quantizer 0 */
	EXPECT_EQ(blocks[16 + 1], 0x20);	/* group 0, sub-quantizer 1 */
	EXPECT_EQ(blocks[32 + 1], 0x30);	/* group 1, sub-quantizer 2 */
	EXPECT_EQ(blocks[48 + 1], 0x40);	/* group 1, sub-quantizer 3 */
	EXPECT_EQ(std::count(blocks.begin(), blocks.end(), 0), long(blocks.size() - 4));
}

TEST(FastScanCodes, StoreTouchesOnlyItsEntry)
{
	size_t		m = 8;
	auto		codes = RandomPackedCodes(64, m, 7);
	auto		blocks = Blocks(codes, 64, m);
	auto		before = blocks;
	std::vector<uint8_t> other(CodeBytes(m, 4), 0x5A);
	std::vector<uint8_t> loaded(CodeBytes(m, 4));

	StoreBlockedCode(blocks.data(), 40, m, 4, other.data());
	for (size_t e = 0; e < 64; e++)
	{
		LoadBlockedCode(blocks.data(), e, m, 4, loaded.data());
		if (e == 40)
			EXPECT_EQ(loaded, other);
		else
			EXPECT_TRUE(std::equal(loaded.begin(), loaded.end(), codes.begin() + e * CodeBytes(m, 4)));
	}
}

/* Every kernel gives exactly the integer sums of plain lookups, partial blocks too. */
TEST(FastScanKernels, SumsEqualPlainLookups)
{
	std::mt19937 rng(11);

	for (size_t m : {2, 6, 16, 32, 64, 256})
		for (size_t n : {1, 5, 32, 45, 96, 200})
		{
			auto		codes = RandomPackedCodes(n, m, uint32_t(m * 1000 + n));
			auto		blocks = Blocks(codes, n, m);
			std::vector<uint8_t> lut(m * kFastScanKsub);
			FastScanTable table{lut.data(), m, 1.0f, 0.0f};

			/* Random bytes up to 255: the sum of m <= 256 of them fits 16 bits. */
			for (auto &v : lut)
				v = uint8_t(rng());
			std::vector<uint32_t> expected(n, 0);

			for (size_t i = 0; i < n; i++)
				for (size_t j = 0; j < m; j++)
					expected[i] += lut[j * kFastScanKsub +
									   CodeValue(codes.data() + i * CodeBytes(m, 4), j, 4)];
			for (FastScanKernel kernel : SupportedKernels())
			{
				std::vector<uint16_t> sums(n + 1, 0xBEEF);

				FastScanSums(table, blocks.data(), n, sums.data(), kernel);
				for (size_t i = 0; i < n; i++)
					ASSERT_EQ(sums[i], expected[i]) << "kernel " << int(kernel) << " m " << m
						<< " n " << n << " entry " << i;
				EXPECT_EQ(sums[n], 0xBEEF) << "wrote past n";
			}
		}
}

/*
 * Quantized distances equal the exact float ADC distance within the bound
 * m x step / 2, for every kernel; and the kernels agree exactly.  m = 512
 * makes the 16-bit room, not the 255 per entry, set the scale.
 */
TEST(FastScanKernels, DistancesWithinQuantizationBound)
{
	for (size_t m : {2, 8, 32, 128, 512})
	{
		size_t		n = 150;
		auto		float_table = GaussianFloats(m * kFastScanKsub, 3.0f, uint32_t(m));
		auto		codes = RandomPackedCodes(n, m, uint32_t(m + 5));
		auto		blocks = Blocks(codes, n, m);
		std::vector<uint8_t> lut(m * kFastScanKsub);
		float		bias = 17.25f;
		FastScanTable table{lut.data(), m, 0, 0};
		std::vector<float> reference;

		/* A few sub-quantizers with a much wider spread (as with outlier codewords). */
		for (size_t k = 0; k < kFastScanKsub; k++)
			float_table[k] *= 20.0f;
		QuantizeFastScanTable(float_table.data(), m, bias, lut.data(), &table.step, &table.offset);
		ASSERT_GT(table.step, 0.0f);
		for (FastScanKernel kernel : SupportedKernels())
		{
			std::vector<float> out(n);

			FastScanDistances(table, blocks.data(), n, out.data(), kernel);
			for (size_t i = 0; i < n; i++)
			{
				double		exact = bias;

				for (size_t j = 0; j < m; j++)
					exact += float_table[j * kFastScanKsub +
										 CodeValue(codes.data() + i * CodeBytes(m, 4), j, 4)];
				/* Rounding of each entry, plus float rounding of the sums. */
				double		bound = m * table.step / 2 + 1e-5 * (std::fabs(exact) + m * 60.0);

				ASSERT_NEAR(out[i], exact, bound) << "m " << m << " entry " << i;
			}
			if (reference.empty())
				reference = out;
			else
				EXPECT_EQ(out, reference) << "kernel " << int(kernel) << " differs";
		}
	}
}

TEST(FastScanKernels, ConstantTableAndZeroEntries)
{
	std::vector<float> float_table(4 * kFastScanKsub, 2.5f);
	std::vector<uint8_t> lut(4 * kFastScanKsub);
	FastScanTable table{lut.data(), 4, 0, 0};
	auto		codes = RandomPackedCodes(3, 4, 1);
	auto		blocks = Blocks(codes, 3, 4);
	float		out[3] = {0, 0, 0};

	QuantizeFastScanTable(float_table.data(), 4, 1.0f, lut.data(), &table.step, &table.offset);
	EXPECT_TRUE(std::all_of(lut.begin(), lut.end(), [](uint8_t v) { return v == 0; }));
	FastScanDistances(table, blocks.data(), 3, out);
	for (float d : out)
		EXPECT_FLOAT_EQ(d, 11.0f);
	FastScanDistances(table, blocks.data(), 0, out);	/* n = 0 writes nothing */
}

TEST(FastScanKernels, RejectsOddM)
{
	std::vector<uint8_t> lut(3 * kFastScanKsub);
	std::vector<uint8_t> blocks(1024);
	uint16_t	sums[32];
	FastScanTable table{lut.data(), 3, 1, 0};
	Failure		failure;
	struct Args
	{
		FastScanTable *table;
		uint8_t    *blocks;
		uint16_t   *sums;
	}			args{&table, blocks.data(), sums};

	EXPECT_FALSE(InvokeGuarded([](void *p) {
		Args	   *a = static_cast<Args *>(p);

		FastScanSums(*a->table, a->blocks, 1, a->sums);
	}, &args, &failure));
	EXPECT_EQ(failure.kind, ErrorKind::InvalidParameter);
}

/* 4-bit training, encoding and the full scan path on clustered data, every kernel set. */
class FastScanQuantizer : public KernelSetTest
{
};

TEST_P(FastScanQuantizer, EncodesNearestCodewordsAndRanksLikeExactAdc)
{
	size_t		dim = 32, lists = 4, m = 16, n = 2000;
	auto		data = GaussianFloats(n * dim, 1.0f, 77);
	TrainConfig config;
	std::vector<float> centroids(lists * dim);
	std::vector<float> codebooks(dim * kFastScanKsub);

	for (size_t i = 0; i < n; i++)
		for (size_t d = 0; d < dim; d++)
			data[i * dim + d] += float((i % lists) * 4);
	config.dim = dim;
	config.lists = lists;
	config.m = m;
	config.nbits = 4;
	config.metric = Metric::L2;
	config.coarse_iterations = 10;
	config.pq_iterations = 15;
	config.max_pq_rows = 0;
	config.seed = 9;
	config.threads = 1;
	Train(config, data.data(), n, centroids.data(), codebooks.data());

	QuantizerView q{{dim, lists, m, 4, Metric::L2}, centroids.data(), codebooks.data()};
	size_t		dsub = dim / m;
	std::vector<int32_t> assigned(n);
	std::vector<uint8_t> codes(n * CodeBytes(m, 4));
	std::vector<uint8_t> single(CodeBytes(m, 4));

	AssignLists(q, data.data(), n, assigned.data());
	EncodeResiduals(q, data.data(), assigned.data(), n, codes.data());

	/* Every sub-code is the nearest of the 16 codewords to the residual. */
	for (size_t i = 0; i < n; i += 7)
	{
		const float *x = data.data() + i * dim;
		const float *c = centroids.data() + size_t(assigned[i]) * dim;

		for (size_t j = 0; j < m; j++)
		{
			double		best = std::numeric_limits<double>::infinity();
			double		chosen = 0;

			for (size_t k = 0; k < kFastScanKsub; k++)
			{
				const float *w = codebooks.data() + (j * kFastScanKsub + k) * dsub;
				double		dist = 0;

				for (size_t d = 0; d < dsub; d++)
				{
					double		r = double(x[j * dsub + d]) - c[j * dsub + d] - w[d];

					dist += r * r;
				}
				best = std::min(best, dist);
				if (k == CodeValue(codes.data() + i * CodeBytes(m, 4), j, 4))
					chosen = dist;
			}
			ASSERT_LE(chosen, best + 1e-4) << "row " << i << " sub-quantizer " << j;
		}
	}
	/* One row at a time (the insert path) encodes the same. */
	EncodeResiduals(q, data.data() + 5 * dim, &assigned[5], 1, single.data());
	EXPECT_TRUE(std::equal(single.begin(), single.end(), codes.begin() + 5 * CodeBytes(m, 4)));

	/* Scan list 0 for a query: fast-scan distances vs float ADC. */
	std::vector<size_t> members;

	for (size_t i = 0; i < n; i++)
		if (assigned[i] == 0)
			members.push_back(i);
	ASSERT_GT(members.size(), 100u);

	std::vector<uint8_t> blocks(BlockedCodeBytes(members.size(), m, 4), 0);

	for (size_t e = 0; e < members.size(); e++)
		StoreBlockedCode(blocks.data(), e, m, 4, codes.data() + members[e] * CodeBytes(m, 4));

	const float *query = data.data() + 3 * dim;
	std::vector<float> float_table(m * kFastScanKsub);
	std::vector<uint8_t> lut(m * kFastScanKsub);
	std::vector<float> fast(members.size());
	float		bias;
	FastScanTable table{lut.data(), m, 0, 0};

	ComputeDistanceTable(q, query, 0, float_table.data(), &bias);
	QuantizeFastScanTable(float_table.data(), m, bias, lut.data(), &table.step, &table.offset);
	FastScanDistances(table, blocks.data(), members.size(), fast.data());
	for (size_t e = 0; e < members.size(); e++)
	{
		const uint8_t *code = codes.data() + members[e] * CodeBytes(m, 4);
		double		exact = bias;

		for (size_t j = 0; j < m; j++)
			exact += float_table[j * kFastScanKsub + CodeValue(code, j, 4)];
		ASSERT_NEAR(fast[e], exact, m * table.step / 2 + 1e-4 * std::fabs(exact));

		/* And the ADC distance is the distance to the reconstruction. */
		double		reconstructed = 0;
		const float *c = centroids.data();

		for (size_t j = 0; j < m; j++)
			for (size_t d = 0; d < dsub; d++)
			{
				double		r = double(query[j * dsub + d]) - c[j * dsub + d] -
					codebooks[(j * kFastScanKsub + CodeValue(code, j, 4)) * dsub + d];

				reconstructed += r * r;
			}
		ASSERT_NEAR(exact, reconstructed, 1e-3 * (1 + reconstructed));
	}
}

IVFPQ_FOR_ALL_KERNEL_SETS(FastScanQuantizer);

/* The refinement of one entry is its float ADC distance; the bound covers every entry. */
TEST(FastScanKernels, EntryDistanceAndErrorBound)
{
	for (size_t m : {2, 16, 96})
	{
		size_t		n = 77;
		auto		float_table = GaussianFloats(m * kFastScanKsub, 2.0f, uint32_t(m + 40));
		auto		codes = RandomPackedCodes(n, m, uint32_t(m + 41));
		auto		blocks = Blocks(codes, n, m);
		std::vector<uint8_t> lut(m * kFastScanKsub);
		std::vector<float> fast(n);
		FastScanTable table{lut.data(), m, 0, 0};
		float		bias = -3.5f;

		QuantizeFastScanTable(float_table.data(), m, bias, lut.data(), &table.step, &table.offset);
		FastScanDistances(table, blocks.data(), n, fast.data());
		for (size_t i = 0; i < n; i++)
		{
			float		exact = bias;

			for (size_t j = 0; j < m; j++)
				exact += float_table[j * kFastScanKsub + CodeValue(codes.data() + i * CodeBytes(m, 4), j, 4)];
			float		refined = FastScanEntryDistance(float_table.data(), m, blocks.data(), i, bias);

			ASSERT_NEAR(refined, exact, 1e-4 * (1 + std::fabs(exact)));
			ASSERT_LE(std::fabs(fast[i] - refined), FastScanErrorBound(table, fast[i])) << "m " << m << " entry " << i;
		}
	}
}

/*
 * Refinement over several pages keeps the best R candidates exactly those of
 * float ADC, skips most entries, and leaves filtered-out entries alone.
 */
TEST(FastScanKernels, RefineChoosesTheFloatAdcBest)
{
	for (bool filtered : {true, false})
	{
		size_t		m = 16, pages = 12, per_page = 250, R = 40;
		auto		float_table = GaussianFloats(m * kFastScanKsub, 2.0f, 3);
		std::vector<uint8_t> lut(m * kFastScanKsub);
		FastScanTable table{lut.data(), m, 0, 0};
		std::vector<float> heap(R);
		size_t		heap_count = 0;
		size_t		refined = 0;
		std::vector<float> all_float;
		std::vector<float> all_stored;
		float		bias = 1.0f;

		for (size_t k = 0; k < float_table.size(); k++)
			float_table[k] *= float_table[k];	/* skewed, non-negative terms, like L2 tables */
		QuantizeFastScanTable(float_table.data(), m, bias, lut.data(), &table.step, &table.offset);
		for (size_t page = 0; page < pages; page++)
		{
			auto		codes = RandomPackedCodes(per_page, m, uint32_t(100 + page));
			auto		blocks = Blocks(codes, per_page, m);
			std::vector<float> distances(per_page);
			bool		pass[250];

			for (size_t i = 0; i < per_page; i++)
				pass[i] = !filtered || (i % 5) != 3;
			FastScanDistances(table, blocks.data(), per_page, distances.data());
			auto		fast = distances;

			refined += FastScanRefine(table, float_table.data(), bias, blocks.data(), per_page,
									  filtered ? pass : nullptr,
									  distances.data(), heap.data(), R, &heap_count);
			for (size_t i = 0; i < per_page; i++)
			{
				if (!pass[i])
				{
					EXPECT_EQ(distances[i], fast[i]);
					continue;
				}
				all_float.push_back(FastScanEntryDistance(float_table.data(), m, blocks.data(), i, bias));
				all_stored.push_back(distances[i]);
			}
		}
		ASSERT_EQ(heap_count, R);
		std::sort(all_float.begin(), all_float.end());
		std::sort(all_stored.begin(), all_stored.end());
		for (size_t r = 0; r < R; r++)
			EXPECT_EQ(all_stored[r], all_float[r]) << "rank " << r;
		EXPECT_EQ(*std::max_element(heap.begin(), heap.end()), all_float[R - 1]);
		EXPECT_LT(refined, all_float.size() / 2) << "the threshold should skip most entries";
	}
}

/* Every kernel quantizes a table to the same bytes, step and offset. */
TEST(FastScanKernels, QuantizationIsTheSameForEveryKernel)
{
	for (size_t m : {2, 32, 600})
	{
		auto		float_table = GaussianFloats(m * kFastScanKsub, 5.0f, uint32_t(m + 9));
		std::vector<uint8_t> reference;
		float		reference_step = 0, reference_offset = 0;

		float_table[3] = 1e4f;	/* one outlier entry */
		for (FastScanKernel kernel : SupportedKernels())
		{
			std::vector<uint8_t> lut(m * kFastScanKsub);
			float		step, offset;

			QuantizeFastScanTable(float_table.data(), m, 2.0f, lut.data(), &step, &offset, kernel);
			if (reference.empty())
			{
				reference = lut;
				reference_step = step;
				reference_offset = offset;
				continue;
			}
			EXPECT_EQ(lut, reference) << "kernel " << int(kernel) << " m " << m;
			EXPECT_EQ(step, reference_step);
			EXPECT_EQ(offset, reference_offset);
		}
	}
}
