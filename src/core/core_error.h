/*
 * core_error.h
 *		Exceptions thrown inside the core; only core code includes this.
 *
 * Including this header next to Postgres headers is a build error: the core
 * must stay independent of Postgres (its memory, longjmp error handling and
 * macros), and the glue only ever sees errors as a plain Failure record.
 */
#ifndef IVFPQ_CORE_ERROR_H
#define IVFPQ_CORE_ERROR_H

#if defined(POSTGRES_H) || defined(PG_VERSION_NUM) || defined(C_H)
#error "ivfpq core code must not include Postgres headers (postgres.h / c.h)"
#endif

#include <stdexcept>
#include <string>

#include "ivfpq_core.h"

namespace ivfpq::core {

/* Every error the core raises on purpose. */
class Error : public std::runtime_error
{
public:
	Error(ErrorKind kind, const std::string &message)
		: std::runtime_error(message), kind_(kind)
	{
	}

	ErrorKind	kind() const noexcept
	{
		return kind_;
	}

private:
	ErrorKind	kind_;
};

[[noreturn]] inline void
ThrowInvalid(const std::string &message)
{
	throw Error(ErrorKind::InvalidParameter, message);
}

[[noreturn]] inline void
ThrowData(const std::string &message)
{
	throw Error(ErrorKind::DataException, message);
}

}							/* namespace ivfpq::core */

#endif							/* IVFPQ_CORE_ERROR_H */
