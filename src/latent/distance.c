/*
 * distance.c
 *	  Distance kernels over float4 arrays with double accumulators.
 *
 * Each kernel is a plain loop that GCC vectorises.  target_clones compiles
 * it for AVX-512F, AVX2+FMA and the baseline x86-64 ISA and dispatches once
 * at load time through an ifunc, so the shipped build never needs
 * -march=native.  The loops convert float to double before multiplying, so
 * results are identical across the clones except for summation order; the
 * reassociation needed for vectorising is allowed per function with
 * -fassociative-math semantics through the optimize attribute.
 */
#include "latent/distance.h"

#include <math.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define WDC_KERNEL \
	__attribute__((target_clones("avx512f", "avx2", "default"), \
				   optimize("O3", "associative-math", "no-signed-zeros", "no-trapping-math")))
#else
#define WDC_KERNEL
#endif

WDC_KERNEL double
latent_l2_squared(const float *a, const float *b, int n)
{
	double		sum = 0.0;

	for (int i = 0; i < n; i++)
	{
		double		d = (double) a[i] - (double) b[i];

		sum += d * d;
	}
	return sum;
}

WDC_KERNEL double
latent_dot(const float *a, const float *b, int n)
{
	double		sum = 0.0;

	for (int i = 0; i < n; i++)
		sum += (double) a[i] * (double) b[i];
	return sum;
}

WDC_KERNEL double
latent_l1(const float *a, const float *b, int n)
{
	double		sum = 0.0;

	for (int i = 0; i < n; i++)
		sum += fabs((double) a[i] - (double) b[i]);
	return sum;
}

WDC_KERNEL void
latent_dot_norms(const float *a, const float *b, int n,
				 double *dot, double *norm_a, double *norm_b)
{
	double		ab = 0.0;
	double		aa = 0.0;
	double		bb = 0.0;

	for (int i = 0; i < n; i++)
	{
		double		x = a[i];
		double		y = b[i];

		ab += x * y;
		aa += x * x;
		bb += y * y;
	}
	*dot = ab;
	*norm_a = aa;
	*norm_b = bb;
}

WDC_KERNEL double
latent_norm_squared(const float *a, int n)
{
	double		sum = 0.0;

	for (int i = 0; i < n; i++)
		sum += (double) a[i] * (double) a[i];
	return sum;
}
