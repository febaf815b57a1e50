/*
 * omp_threads.h
 *		A scoped OpenMP thread count for core entry points (core code only).
 *
 * omp_set_num_threads() changes the calling thread's setting for every later
 * parallel region, so a core call that sets it would change the statements a
 * backend runs afterwards.  Entry points that want a thread count take an
 * OmpThreadsScope instead: it restores the previous count when it goes out of
 * scope, on return and on exception alike.
 */
#ifndef IVFPQ_OMP_THREADS_H
#define IVFPQ_OMP_THREADS_H

#include <omp.h>

#include "core_error.h"

namespace ivfpq::core {

class OmpThreadsScope
{
public:
	/* threads <= 0 leaves the count as it is (and still restores it). */
	explicit OmpThreadsScope(int threads) : saved_(omp_get_max_threads())
	{
		if (threads > 0)
			omp_set_num_threads(threads);
	}
	~OmpThreadsScope()
	{
		omp_set_num_threads(saved_);
	}
	OmpThreadsScope(const OmpThreadsScope &) = delete;
	OmpThreadsScope &operator=(const OmpThreadsScope &) = delete;

private:
	int			saved_;
};

}							/* namespace ivfpq::core */

#endif							/* IVFPQ_OMP_THREADS_H */
