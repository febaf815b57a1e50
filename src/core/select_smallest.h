/*
 * select_smallest.h
 *		Partial selection of the candidates with the smallest distances, for
 *		the scan's batches: std::nth_element, but for a large pool first cut
 *		down to a small front by a threshold guessed from a sample.
 *
 * Header-only and free of Postgres types: T is any type with a float member
 * 'distance' (the glue's IvfpqCandidate).  Included by the glue after
 * postgres.h, so it pulls in nothing but the standard library.
 */
#ifndef IVFPQ_CORE_SELECT_SMALLEST_H
#define IVFPQ_CORE_SELECT_SMALLEST_H

#include <algorithm>
#include <cstdint>
#include <utility>

/*
 * Instantiated in glue code, which is built with default visibility: keep the
 * instances out of the module's dynamic symbols like the rest of the core.
 */
#pragma GCC visibility push(hidden)

namespace ivfpq::core {

/*
 * Reorder first[0, n) so that first[0, take) hold the take smallest
 * distances (in no particular order), first[take] the next smallest, and
 * every element after it is no smaller; nothing happens when take >= n.
 * Same contract as std::nth_element(first, first + take, first + n).
 *
 * Why: the scan selects the best hundred of thousands of candidates per
 * query, and std::nth_element over 12-byte elements with an unpredictable
 * comparison took about a tenth of a 128-dimension query.  With a pool much
 * larger than take, a strided sample of 512 distances gives a threshold near
 * rank 2 x take; one pass moves the elements at or below it to the front,
 * and nth_element runs over that front only.  If the guess was too low
 * (fewer than take + 1 made it) it falls back to the whole pool.
 */
template <typename T>
void
SelectSmallest(T *first, int64_t take, int64_t n)
{
	constexpr int sample_size = 512;
	auto		closer = [](const T &a, const T &b) { return a.distance < b.distance; };

	if (take >= n)
		return;
	if (n > 2048 && n > 8 * take)
	{
		float		sample[sample_size];
		int64_t		stride = n / sample_size;
		int			rank = int(std::min<int64_t>(sample_size - 1, 2 * take * sample_size / n + 8));
		float		threshold;
		int64_t		front = 0;

		for (int i = 0; i < sample_size; i++)
			sample[i] = first[i * stride].distance;
		std::nth_element(sample, sample + rank, sample + sample_size);
		threshold = sample[rank];
		for (int64_t i = 0; i < n; i++)
			if (first[i].distance <= threshold)
				std::swap(first[front++], first[i]);
		if (front > take)
		{
			/* Everything after 'front' is above the threshold, so above first[take]. */
			std::nth_element(first, first + take, first + front, closer);
			return;
		}
	}
	std::nth_element(first, first + take, first + n, closer);
}

}							/* namespace ivfpq::core */

#pragma GCC visibility pop

#endif							/* IVFPQ_CORE_SELECT_SMALLEST_H */
