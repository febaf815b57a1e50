/*
 * kernels.h
 *		Core-internal dispatch table of the hot kernels.  Other core files
 *		(training, encoding, ADC) check ActiveKernelsAreAvx2() to pick their
 *		own AVX2 or portable variants.
 */
#ifndef IVFPQ_CORE_KERNELS_H
#define IVFPQ_CORE_KERNELS_H

#include "core_error.h"

namespace ivfpq::core {

struct KernelTable
{
	const char *name;
	float		(*l2_squared) (const float *a, const float *b, size_t dim);
	float		(*inner_product) (const float *a, const float *b, size_t dim);
};

extern const KernelTable *active_kernels;

/* True when the AVX2+FMA variants are selected (by UseKernels / the CPU). */
bool		ActiveKernelsAreAvx2();

}							/* namespace ivfpq::core */

#endif
