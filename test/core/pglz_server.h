/*
 * pglz_server.h
 *		The server's own pglz coder (pg_lzcompress.o in libpgcommon.a from
 *		postgresql-server-dev-15), declared by hand so that the core's tests
 *		and microbenchmark can use it as the reference without Postgres
 *		headers.  Its strategy structs are passed as opaque pointers.
 */
#ifndef IVFPQ_PGLZ_SERVER_H
#define IVFPQ_PGLZ_SERVER_H

#include <cstdint>

extern "C"
{
	extern const void *const PGLZ_strategy_default;
	extern const void *const PGLZ_strategy_always;
	int32_t		pglz_compress(const char *source, int32_t slen, char *dest, const void *strategy);
	int32_t		pglz_decompress(const char *source, int32_t slen, char *dest, int32_t rawsize,
								bool check_complete);
}

/* Bytes of output pglz_compress may need for slen input bytes (PGLZ_MAX_OUTPUT). */
inline int32_t
PglzMaxOutput(int32_t slen)
{
	return slen + 4;
}

#endif							/* IVFPQ_PGLZ_SERVER_H */
