/*
 * guard.cpp
 *		The one place where core exceptions are caught and turned into a
 *		plain Failure record, plus the interrupt hook shared with FAISS.
 */
#include <atomic>
#include <cstdio>
#include <cstring>
#include <new>

#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/FaissException.h>

#include "core_error.h"

namespace ivfpq::core {

namespace {

std::atomic<InterruptCheck> interrupt_check{nullptr};

void
CopyMessage(Failure *failure, ErrorKind kind, const char *message)
{
	failure->kind = kind;
	std::snprintf(failure->message, sizeof(failure->message), "%s",
				  message ? message : "");
}

/* FAISS polls this from its own loops (k-means, searches). */
class FaissInterruptBridge : public faiss::InterruptCallback
{
public:
	bool		want_interrupt() override
	{
		InterruptCheck check = interrupt_check.load(std::memory_order_relaxed);
		return check != nullptr && check();
	}
};

}							/* namespace */

void
SetInterruptCheck(InterruptCheck check)
{
	interrupt_check.store(check, std::memory_order_relaxed);
	if (check != nullptr)
		faiss::InterruptCallback::instance.reset(new FaissInterruptBridge());
	else
		faiss::InterruptCallback::instance.reset();
}

void
CheckInterrupt()
{
	InterruptCheck check = interrupt_check.load(std::memory_order_relaxed);

	if (check != nullptr && check())
		throw Error(ErrorKind::Cancelled, "computation interrupted");
}

bool
InvokeGuarded(void (*fn) (void *), void *arg, Failure *failure) noexcept
{
	failure->kind = ErrorKind::None;
	failure->message[0] = '\0';
	try
	{
		fn(arg);
		return true;
	}
	catch (const Error &e)
	{
		CopyMessage(failure, e.kind(), e.what());
	}
	catch (const faiss::FaissException &e)
	{
		/* FAISS reports an interrupt as an exception with this text. */
		bool		interrupted = std::strstr(e.what(), "interrupted") != nullptr;

		CopyMessage(failure, interrupted ? ErrorKind::Cancelled : ErrorKind::Internal,
					e.what());
	}
	catch (const std::bad_alloc &)
	{
		CopyMessage(failure, ErrorKind::OutOfMemory, "out of memory in ivfpq core");
	}
	catch (const std::exception &e)
	{
		CopyMessage(failure, ErrorKind::Internal, e.what());
	}
	catch (...)
	{
		CopyMessage(failure, ErrorKind::Unknown, "unknown C++ exception in ivfpq core");
	}
	return false;
}

}							/* namespace ivfpq::core */
