/*
 * refuse_postgres.cpp
 *		Must NOT compile: core code that includes a Postgres header.  CTest
 *		checks that core_error.h stops the build with its own message.
 */
extern "C"
{
#include "postgres.h"
}

#include "core_error.h"

int
main()
{
	return 0;
}
