/*
 * select_smallest_test.cpp
 *		SelectSmallest() keeps std::nth_element's contract: the take smallest
 *		first, the next smallest at 'take', nothing smaller after it, and a
 *		permutation of the input; on small pools, large pools, many equal
 *		distances, and a pool whose sample misleads the threshold.
 */
#include <algorithm>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "select_smallest.h"

using ivfpq::core::SelectSmallest;

namespace {

struct Item
{
	float		distance;
	int			id;
};

void
CheckSelected(std::vector<Item> items, int64_t take)
{
	std::vector<Item> original = items;
	std::vector<float> sorted;

	for (const Item &item : items)
		sorted.push_back(item.distance);
	std::sort(sorted.begin(), sorted.end());
	SelectSmallest(items.data(), take, int64_t(items.size()));

	/* A permutation: every id once. */
	std::vector<int> ids;
	for (const Item &item : items)
		ids.push_back(item.id);
	std::sort(ids.begin(), ids.end());
	for (size_t i = 0; i < ids.size(); i++)
		ASSERT_EQ(ids[i], int(i));
	for (const Item &item : items)
		ASSERT_EQ(item.distance, original[item.id].distance);

	if (take >= int64_t(items.size()))
		return;
	std::vector<float> front;
	for (int64_t i = 0; i < take; i++)
		front.push_back(items[i].distance);
	std::sort(front.begin(), front.end());
	for (int64_t i = 0; i < take; i++)
		ASSERT_EQ(front[i], sorted[i]) << "rank " << i;
	ASSERT_EQ(items[take].distance, sorted[take]);
	for (size_t i = take + 1; i < items.size(); i++)
		ASSERT_GE(items[i].distance, items[take].distance) << "position " << i;
}

std::vector<Item>
RandomItems(size_t n, int distinct, unsigned seed)
{
	std::mt19937 rng(seed);
	std::vector<Item> items(n);

	for (size_t i = 0; i < n; i++)
		items[i] = Item{distinct > 0 ? float(rng() % distinct) : std::uniform_real_distribution<float>(0, 100)(rng),
						int(i)};
	return items;
}

}							/* namespace */

TEST(SelectSmallest, SmallPools)
{
	for (int64_t take : {0, 1, 5, 99, 100, 150})
		CheckSelected(RandomItems(100, 0, 1), take);
}

TEST(SelectSmallest, LargePoolsTakeTheSampledPath)
{
	for (size_t n : {2049u, 5000u, 40000u, 200000u})
		for (int64_t take : {1, 10, 100, 256})
			CheckSelected(RandomItems(n, 0, unsigned(n + take)), take);
}

TEST(SelectSmallest, ManyEqualDistances)
{
	CheckSelected(RandomItems(50000, 3, 2), 100);
	CheckSelected(RandomItems(50000, 1, 3), 100);
	CheckSelected(RandomItems(50000, 1000, 4), 256);
}

TEST(SelectSmallest, MisleadingSampleFallsBackToTheWholePool)
{
	/* The sampled positions hold the smallest values, so the guessed threshold lets too few through. */
	size_t		n = 100000;
	int64_t		stride = int64_t(n) / 512;
	std::vector<Item> items = RandomItems(n, 0, 5);

	for (auto &item : items)
		item.distance += 1000;
	for (int i = 0; i < 512; i++)
		items[i * stride].distance = float(i);
	CheckSelected(items, 1000);
}
