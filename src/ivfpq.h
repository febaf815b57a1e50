/*
 * ivfpq.h
 *		Shared declarations of the Postgres glue: GUCs, the core-call guard and
 *		helpers used by several glue files.
 *
 * Include order in every glue file: C++ standard headers first (if any), then
 * this header.  Postgres headers are C and are wrapped in extern "C" here.
 * Glue functions keep only plain-old-data locals: an ereport(ERROR) longjmp
 * must never skip a C++ destructor.
 */
#ifndef IVFPQ_H
#define IVFPQ_H

#include <type_traits>

extern "C"
{
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
}

#include "ivfpq_core.h"

/* ---------- GUCs (ivfpq.cpp) ---------- */
extern int	ivfpq_probes;
extern int	ivfpq_rerank;
extern int	ivfpq_max_probes;
extern int	ivfpq_table_cache_mb;
extern int	ivfpq_cache_mb;
extern bool ivfpq_share_rerank;
extern bool ivfpq_pool_cut;

/* ---------- the background worker (ivfpq_worker.cpp) ---------- */
extern void IvfpqWorkerInit(void);

/* ---------- the core-call guard (ivfpq.cpp) ---------- */

/*
 * Raise the ereport that matches a core failure.  For a cancellation this
 * first runs CHECK_FOR_INTERRUPTS() so the user sees Postgres's own cancel or
 * timeout message.  'what' names the operation for the error context.
 */
extern "C" void IvfpqReportCoreFailure(const char *what,
									   const ivfpq::core::Failure *failure) pg_attribute_noreturn();

template <typename Fn>
static void
IvfpqCoreThunk(void *arg)
{
	(*static_cast<Fn *>(arg)) ();
}

/*
 * Call into the core: fn runs inside InvokeGuarded (which catches every C++
 * exception); a failure is raised as ereport(ERROR) only after all C++ frames
 * have returned.  fn must not call Postgres.  fn itself lives in the caller's
 * frame, which an ereport may longjmp out of, so it must have nothing to
 * destroy: lambdas that capture plain data (by reference or by value) do.
 */
template <typename Fn>
static inline void
IvfpqCallCore(const char *what, Fn &&fn)
{
	static_assert(std::is_trivially_destructible_v<std::remove_reference_t<Fn>>,
				  "IvfpqCallCore: the callable must be trivially destructible, "
				  "an ereport longjmp would skip its destructor");
	ivfpq::core::Failure failure;

	if (!ivfpq::core::InvokeGuarded(&IvfpqCoreThunk<std::remove_reference_t<Fn>>,
									static_cast<void *>(&fn), &failure))
		IvfpqReportCoreFailure(what, &failure);
	/* A cancel that arrived while the core ran and that it did not poll. */
	CHECK_FOR_INTERRUPTS();
}

#endif							/* IVFPQ_H */
