/*
 * fast_scan_micro.cpp
 *		Microbenchmark of the core's list scan at equal code bytes: 8-bit
 *		codes (ScanBlockedCodes, m sub-quantizers of 256 codewords) against
 *		4-bit fast-scan codes (2m sub-quantizers of 16 codewords: table
 *		quantization + FastScanDistances + FastScanRefine), per kernel, on
 *		random tables and codes.  Reports ns per code for the scan alone and
 *		us per list for distance table + scan (what a probe costs).
 *
 *	  cmake --build build --target ivfpq_fast_scan_micro
 *	  build/ivfpq_fast_scan_micro [dim=128] [code_bytes=16] [entries_per_list=400]
 */
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "ivfpq_core.h"

using namespace ivfpq::core;

namespace {

double
Now()
{
	return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::vector<float>
Gaussian(size_t n, uint32_t seed)
{
	std::mt19937 rng(seed);
	std::normal_distribution<float> normal(0.0f, 1.0f);
	std::vector<float> v(n);

	for (auto &x : v)
		x = normal(rng);
	return v;
}

std::vector<uint8_t>
RandomBytes(size_t n, uint32_t seed)
{
	std::mt19937 rng(seed);
	std::vector<uint8_t> v(n);

	for (auto &x : v)
		x = uint8_t(rng());
	return v;
}

/* Best of several timed runs of fn (seconds per call). */
template <typename Fn>
double
BestOf(Fn fn, int calls)
{
	double		best = 1e30;

	for (int round = 0; round < 7; round++)
	{
		double		start = Now();

		for (int c = 0; c < calls; c++)
			fn();
		best = std::min(best, (Now() - start) / calls);
	}
	return best;
}

}							/* namespace */

int
main(int argc, char **argv)
{
	size_t		dim = argc > 1 ? size_t(atoi(argv[1])) : 128;
	size_t		code_bytes = argc > 2 ? size_t(atoi(argv[2])) : 16;
	size_t		n = argc > 3 ? size_t(atoi(argv[3])) : 400;
	size_t		m8 = code_bytes, m4 = 2 * code_bytes;
	size_t		lists = 4;
	auto		centroids = Gaussian(lists * dim, 1);
	auto		codebooks8 = Gaussian(dim * 256, 2);
	auto		codebooks4 = Gaussian(dim * 16, 3);
	auto		query = Gaussian(dim, 4);
	QuantizerView q8{{dim, lists, m8, 8, Metric::L2}, centroids.data(), codebooks8.data()};
	QuantizerView q4{{dim, lists, m4, 4, Metric::L2}, centroids.data(), codebooks4.data()};
	std::vector<float> prepared8(PreparedQuantizerFloats(q8));
	std::vector<float> prepared4(PreparedQuantizerFloats(q4));
	auto		blocks8 = RandomBytes(BlockedCodeBytes(n, m8, 8), 5);
	auto		blocks4 = RandomBytes(BlockedCodeBytes(n, m4, 4), 6);
	std::vector<float> table8(m8 * 256), table4(m4 * 16), out(n);
	std::vector<uint8_t> lut(m4 * 16);
	std::vector<float> heap(50);
	float		bias = 0;
	int			calls = int(std::max<size_t>(1, 2000000 / n));
	volatile float sink = 0;

	PrepareQuantizer(q8, prepared8.data());
	PrepareQuantizer(q4, prepared4.data());
	std::printf("dim %zu, %zu code bytes, %zu entries per list; kernels: %s (float), fast scan %s\n",
				dim, code_bytes, n, ActiveKernelName(), FastScanKernelName());

	ComputeDistanceTablePrepared(q8, prepared8.data(), query.data(), 0, table8.data(), &bias);
	double		table8_time = BestOf([&]() {
		float		list_bias;

		ComputeDistanceTablePrepared(q8, prepared8.data(), query.data(), 1, table8.data(), &list_bias);
		sink = sink + table8[0];
	}, calls);
	double		scan8 = BestOf([&]() {
		ScanBlockedCodes(table8.data(), m8, 256, blocks8.data(), n, bias, out.data());
		sink = sink + out[0];
	}, calls);
	double		list8 = BestOf([&]() {
		ComputeDistanceTablePrepared(q8, prepared8.data(), query.data(), 1, table8.data(), &bias);
		ScanBlockedCodes(table8.data(), m8, 256, blocks8.data(), n, bias, out.data());
		sink = sink + out[0];
	}, calls);

	std::printf("8-bit m=%-3zu          scan %6.2f ns/code   table+scan %7.2f us/list  (table %.2f us)\n",
				m8, scan8 * 1e9 / n, list8 * 1e6, table8_time * 1e6);

	ComputeDistanceTablePrepared(q4, prepared4.data(), query.data(), 0, table4.data(), &bias);
	FastScanTable fast{lut.data(), m4, 0, 0};

	QuantizeFastScanTable(table4.data(), m4, bias, lut.data(), &fast.step, &fast.offset);
	for (FastScanKernel kernel : {FastScanKernel::Avx2, FastScanKernel::Ssse3, FastScanKernel::Portable})
	{
		const char *name = kernel == FastScanKernel::Avx2 ? "avx2" : kernel == FastScanKernel::Ssse3 ? "ssse3" : "portable";

		if (!FastScanKernelSupported(kernel))
			continue;
		double		scan4 = BestOf([&]() {
			FastScanDistances(fast, blocks4.data(), n, out.data(), kernel);
			sink = sink + out[0];
		}, calls);
		size_t		heap_count = 0;
		int			lists_done = 0;
		double		table4_time = BestOf([&]() {
			float		list_bias;

			ComputeDistanceTablePrepared(q4, prepared4.data(), query.data(), 1, table4.data(), &list_bias);
			sink = sink + table4[0];
		}, calls);
		double		quantize4 = BestOf([&]() {
			QuantizeFastScanTable(table4.data(), m4, 0.5f, lut.data(), &fast.step, &fast.offset);
			sink = sink + float(lut[0]);
		}, calls);
		double		list4 = BestOf([&]() {
			float		list_bias;

			/* A query probes 32 lists; the refinement heap lives across them. */
			if (lists_done++ % 32 == 0)
				heap_count = 0;

			ComputeDistanceTablePrepared(q4, prepared4.data(), query.data(), 1, table4.data(), &list_bias);
			QuantizeFastScanTable(table4.data(), m4, list_bias, lut.data(), &fast.step, &fast.offset);
			FastScanDistances(fast, blocks4.data(), n, out.data(), kernel);
			FastScanRefine(fast, table4.data(), list_bias, blocks4.data(), n, nullptr, out.data(),
						   heap.data(), heap.size(), &heap_count);
			sink = sink + out[0];
		}, calls);

		std::printf("4-bit m=%-3zu %-8s  scan %6.2f ns/code   table+quantize+scan+refine(50) %7.2f us/list"
					"   scan speedup %.1fx  (table %.2f us, quantize %.2f us)\n", m4, name, scan4 * 1e9 / n,
					list4 * 1e6, scan8 / scan4, table4_time * 1e6, quantize4 * 1e6);
	}
	return sink == 12345.0f ? 1 : 0;
}
