/*
 * pglz_micro.cpp
 *		Microbenchmark of the core's pglz decoder against the server's
 *		(pglz_decompress from libpgcommon.a) on rows compressed as the heap
 *		compresses them (PGLZ_strategy_default):
 *
 *			build/ivfpq_pglz_micro [file dim]
 *
 *		file holds float32 rows of dim values (for example Fashion-MNIST:
 *		python3 -c "import numpy; numpy.load('.tmp/datasets/fashion-mnist.base.npy')[:5000].tofile('/tmp/f.bin')");
 *		without it, 5000 synthetic 784-value pixel rows.  Prints nanoseconds
 *		per row for both decoders (best of 5 passes) and their ratio.
 */
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "ivfpq_core.h"
#include "pglz_server.h"

int
main(int argc, char **argv)
{
	size_t		dim = 784;
	std::vector<float> data;

	if (argc >= 3)
	{
		dim = size_t(std::atol(argv[2]));
		FILE	   *f = std::fopen(argv[1], "rb");

		if (f == nullptr || dim == 0)
		{
			std::perror(argv[1]);
			return 1;
		}
		float		x;

		while (std::fread(&x, sizeof(x), 1, f) == 1)
			data.push_back(x);
		std::fclose(f);
	}
	else
	{
		std::mt19937 rng(1);

		data.resize(5000 * dim);
		for (float &x : data)
			x = rng() % 2 ? 0.0f : float(rng() % 256);
	}
	size_t		rows = data.size() / dim;
	size_t		raw = dim * sizeof(float);
	std::vector<std::vector<char>> packed;

	for (size_t r = 0; r < rows; r++)
	{
		std::vector<char> out(static_cast<size_t>(PglzMaxOutput(static_cast<int32_t>(raw))));
		int32_t		n = pglz_compress(reinterpret_cast<const char *>(&data[r * dim]), int32_t(raw),
									  out.data(), PGLZ_strategy_default);

		if (n < 0)
			continue;			/* stored uncompressed by the heap */
		out.resize(size_t(n));
		packed.push_back(out);
	}
	if (packed.empty())
	{
		std::printf("no row compresses\n");
		return 1;
	}
	size_t		packed_bytes = 0;

	for (const auto &p : packed)
		packed_bytes += p.size();

	std::vector<uint8_t> dest(raw + ivfpq::core::kPglzSlack);
	double		best_ours = 1e30, best_server = 1e30;
	unsigned	sink = 0;

	for (int pass = 0; pass < 5; pass++)
	{
		auto		t0 = std::chrono::steady_clock::now();

		for (const auto &p : packed)
		{
			if (!ivfpq::core::PglzDecompress(reinterpret_cast<const uint8_t *>(p.data()), p.size(),
											 dest.data(), raw))
				return 2;
			sink += dest[raw / 2];
		}
		auto		t1 = std::chrono::steady_clock::now();

		for (const auto &p : packed)
		{
			if (pglz_decompress(p.data(), int32_t(p.size()), reinterpret_cast<char *>(dest.data()),
								int32_t(raw), true) != int32_t(raw))
				return 2;
			sink += dest[raw / 2];
		}
		auto		t2 = std::chrono::steady_clock::now();

		best_ours = std::min(best_ours, std::chrono::duration<double, std::nano>(t1 - t0).count() / double(packed.size()));
		best_server = std::min(best_server, std::chrono::duration<double, std::nano>(t2 - t1).count() / double(packed.size()));
	}
	std::printf("%zu of %zu rows compressed (%zu -> %.0f bytes on average); ns per row: ours %.0f, server %.0f, "
				"server / ours %.2f (%u)\n",
				packed.size(), rows, raw, double(packed_bytes) / double(packed.size()), best_ours, best_server,
				best_server / best_ours, sink & 1);
	return 0;
}
