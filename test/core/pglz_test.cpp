/*
 * pglz_test.cpp
 *		PglzDecompress() against the server's pglz coder: whatever
 *		pglz_compress() makes of zero runs, short periodic patterns (every
 *		back-reference offset from 1 to 40), float rows like Fashion-MNIST's
 *		pixels and random bytes decodes to the original, like
 *		pglz_decompress(); nothing is written past raw_size + kPglzSlack; and
 *		truncated, overlong or corrupt input is refused.
 */
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "ivfpq_core.h"
#include "pglz_server.h"

using ivfpq::core::kPglzSlack;
using ivfpq::core::PglzDecompress;

namespace {

constexpr uint8_t kCanary = 0xA5;

std::vector<uint8_t>
Compress(const std::vector<uint8_t> &raw)
{
	std::vector<uint8_t> out(PglzMaxOutput(int32_t(raw.size())));
	int32_t		n = pglz_compress(reinterpret_cast<const char *>(raw.data()), int32_t(raw.size()),
								  reinterpret_cast<char *>(out.data()), PGLZ_strategy_always);

	if (n < 0)
		return {};
	out.resize(size_t(n));
	return out;
}

void
CheckDecodes(const std::vector<uint8_t> &raw, const std::vector<uint8_t> &packed)
{
	std::vector<uint8_t> ours(raw.size() + kPglzSlack + 64, kCanary);

	ASSERT_TRUE(PglzDecompress(packed.data(), packed.size(), ours.data(), raw.size()));
	EXPECT_EQ(0, std::memcmp(ours.data(), raw.data(), raw.size()));
	for (size_t i = raw.size() + kPglzSlack; i < ours.size(); i++)
		ASSERT_EQ(kCanary, ours[i]) << "wrote past the slack at " << i;

	std::vector<uint8_t> server(raw.size());
	int32_t		n = pglz_decompress(reinterpret_cast<const char *>(packed.data()), int32_t(packed.size()),
									reinterpret_cast<char *>(server.data()), int32_t(raw.size()), true);

	ASSERT_EQ(int32_t(raw.size()), n);
	EXPECT_EQ(server, std::vector<uint8_t>(ours.begin(), ours.begin() + raw.size()));
}

/*
 * Decode with ours into a canary-filled buffer; check the result and the
 * slack's end.  Returns false (checking nothing) when pglz_compress does not
 * compress the input: the heap stores such a value uncompressed.
 */
bool
CheckRoundTrip(const std::vector<uint8_t> &raw, const char *what)
{
	SCOPED_TRACE(what);
	std::vector<uint8_t> packed = Compress(raw);

	if (packed.empty())
		return false;
	CheckDecodes(raw, packed);
	return true;
}

std::vector<uint8_t>
FloatBytes(const std::vector<float> &values)
{
	std::vector<uint8_t> bytes(values.size() * sizeof(float));

	std::memcpy(bytes.data(), values.data(), bytes.size());
	return bytes;
}

TEST(PglzDecompress, ZeroRunsAndConstantBytes)
{
	int			checked = 0;

	for (size_t n : {4, 17, 100, 273, 274, 1000, 3136, 12000})
	{
		checked += CheckRoundTrip(std::vector<uint8_t>(n, 0), "zeros");
		checked += CheckRoundTrip(std::vector<uint8_t>(n, 0x7f), "constant");
	}
	EXPECT_GE(checked, 14);		/* all but the 4-byte ones compress */
}

TEST(PglzDecompress, EveryShortPeriod)
{
	std::mt19937 rng(7);
	int			checked = 0;

	for (size_t period = 1; period <= 40; period++)
		for (size_t n : {size_t(9), size_t(23), size_t(300), size_t(2000)})
		{
			std::vector<uint8_t> raw(n);
			std::vector<uint8_t> pattern(period);

			for (uint8_t &b : pattern)
				b = uint8_t(rng());
			/* A random prefix, then the pattern repeated, then random bytes. */
			for (size_t i = 0; i < n; i++)
				raw[i] = i < 5 ? uint8_t(rng()) : (i < n - 3 ? pattern[i % period] : uint8_t(rng()));
			std::string what = "period " + std::to_string(period) + " length " + std::to_string(n);
			checked += CheckRoundTrip(raw, what.c_str());
		}
	EXPECT_GE(checked, 80);		/* the 300- and 2000-byte ones of every period */
}

TEST(PglzDecompress, PixelLikeFloatRows)
{
	std::mt19937 rng(11);
	std::uniform_int_distribution<int> pixel(0, 255);
	std::bernoulli_distribution blank(0.5);

	for (int row = 0; row < 200; row++)
	{
		std::vector<float> v(784);

		for (float &x : v)
			x = blank(rng) ? 0.0f : float(pixel(rng));
		/* Image borders: long zero runs at the start and the end. */
		for (int i = 0; i < 84; i++)
			v[size_t(i)] = v[v.size() - 1 - size_t(i)] = 0.0f;
		EXPECT_TRUE(CheckRoundTrip(FloatBytes(v), "pixel row"));
	}
}

TEST(PglzDecompress, RandomAndMixedBytes)
{
	std::mt19937 rng(3);
	int			checked = 0;

	for (int round = 0; round < 100; round++)
	{
		size_t		n = 16 + rng() % 5000;
		std::vector<uint8_t> raw(n);

		/* Stretches of random bytes and of copies from up to 4095 back. */
		for (size_t i = 0; i < n;)
		{
			size_t		run = 1 + rng() % 300;

			if (i > 0 && rng() % 2)
			{
				size_t		off = 1 + rng() % std::min<size_t>(i, 4095);

				for (size_t j = 0; j < run && i < n; j++, i++)
					raw[i] = raw[i - off];
			}
			else
				for (size_t j = 0; j < run && i < n; j++, i++)
					raw[i] = uint8_t(rng() % (round % 2 ? 256 : 4));
		}
		checked += CheckRoundTrip(raw, "mixed");
	}
	EXPECT_GE(checked, 50);
}

TEST(PglzDecompress, RefusesMalformedInput)
{
	std::vector<float> v(784, 0.0f);

	for (size_t i = 0; i < v.size(); i += 7)
		v[i] = float(i % 251);

	std::vector<uint8_t> raw = FloatBytes(v);
	std::vector<uint8_t> packed = Compress(raw);
	std::vector<uint8_t> out(raw.size() + 1024 + kPglzSlack);

	ASSERT_FALSE(packed.empty());
	ASSERT_TRUE(PglzDecompress(packed.data(), packed.size(), out.data(), raw.size()));

	/* Truncated input: the output comes out short. */
	EXPECT_FALSE(PglzDecompress(packed.data(), packed.size() - 5, out.data(), raw.size()));
	/* A raw size larger than what the input holds. */
	EXPECT_FALSE(PglzDecompress(packed.data(), packed.size(), out.data(), raw.size() + 1024));
	/* A raw size smaller: input left over. */
	EXPECT_FALSE(PglzDecompress(packed.data(), packed.size(), out.data(), raw.size() - 100));
	/* Trailing garbage after the end. */
	std::vector<uint8_t> longer = packed;
	longer.push_back(0);
	longer.push_back(0x41);
	EXPECT_FALSE(PglzDecompress(longer.data(), longer.size(), out.data(), raw.size()));

	/* A back-reference before the start of the output. */
	const uint8_t before_start[] = {0x01, 0x10, 0x05};	/* match first: offset 0x105 */
	EXPECT_FALSE(PglzDecompress(before_start, sizeof(before_start), out.data(), 10));
	/* Offset 0. */
	const uint8_t zero_offset[] = {0x02, 'a', 0x00, 0x00};
	EXPECT_FALSE(PglzDecompress(zero_offset, sizeof(zero_offset), out.data(), 4));
	/* A back-reference cut off after its first byte. */
	const uint8_t cut[] = {0x02, 'a', 0x01};
	EXPECT_FALSE(PglzDecompress(cut, sizeof(cut), out.data(), 4));
	/* A well-formed hand-made stream: 'a', then 'a' x 5 by offset 1. */
	const uint8_t good[] = {0x02, 'a', 0x02, 0x01};
	ASSERT_TRUE(PglzDecompress(good, sizeof(good), out.data(), 6));
	EXPECT_EQ(0, std::memcmp(out.data(), "aaaaaa", 6));
}

}							/* namespace */
