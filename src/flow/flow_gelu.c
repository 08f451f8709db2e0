/*
 * flow_gelu.c
 *	  Exact (erf) GELU and its derivative on float vectors.
 *
 * gelu(x) = x Phi(x) with Phi the standard normal CDF, and
 * gelu'(x) = Phi(x) + x phi(x).  Phi comes from the complementary error
 * function: with z = |x| / sqrt(2), erfc(z) = t exp(-z^2 + P(t)),
 * t = 1 / (1 + z / 2), P a fixed degree-9 polynomial (the Chebyshev-fitted
 * form in Press et al., Numerical Recipes, 2nd ed., section 6.2, fractional
 * error below 1.2e-7 for all z).  Phi(x) = erfc(z) / 2 for x < 0 and
 * 1 - erfc(z) / 2 otherwise, so the left tail keeps its relative accuracy.
 * phi(x) = exp(-z^2) / sqrt(2 pi).
 *
 * exp is our own: round y log2(e) to an integer k with the 1.5 * 2^23 trick,
 * reduce r = y - k ln 2 in two parts, a degree-7 Taylor polynomial on
 * |r| <= ln(2) / 2 (truncation below 6e-9), and 2^k through the exponent
 * bits.  The argument -z^2 + P(t) is formed from an exact split of x^2
 * (12 + 12 significant bits), so the large tail exponents keep their
 * accuracy.  Everything is written with GCC/Clang vector extensions; the
 * kernel itself is in flow_gelu_kernel.h.  Measured against
 * double-precision erfc (test_flow_net): gelu relative error below 1e-6 for
 * |x| <= 3, below 1.3e-6 for |x| <= 5 and 4e-6 for |x| <= 10 (values under
 * 1e-5 in magnitude there); absolute error below 4e-7 for gelu and 3e-7 for
 * gelu' everywhere.
 */
#include "flow/flow_int.h"

#include <math.h>
#include <string.h>

/*
 * One kernel per vector width.  The baseline is four lanes (SSE2 on
 * x86-64, or whatever the vector extensions map to elsewhere).  On x86-64
 * the AVX2+FMA and AVX-512 variants are compiled with target attributes and
 * picked at run time, so the build needs no -march flag.  The wider
 * variants contract multiply-adds into FMA, so their last bits may differ
 * from the baseline; a given machine always takes the same path.
 */
#define GK_LANES 4
#define GK_SUFFIX base
#define GK_TARGET
#include "flow/flow_gelu_kernel.h"
#undef GK_LANES
#undef GK_SUFFIX
#undef GK_TARGET

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FLOW_GELU_X86 1

#define GK_LANES 8
#define GK_SUFFIX avx2
#define GK_TARGET __attribute__((target("avx2,fma")))
#include "flow/flow_gelu_kernel.h"
#undef GK_LANES
#undef GK_SUFFIX
#undef GK_TARGET

#define GK_LANES 16
#define GK_SUFFIX avx512
#define GK_TARGET __attribute__((target("avx512f")))
#include "flow/flow_gelu_kernel.h"
#undef GK_LANES
#undef GK_SUFFIX
#undef GK_TARGET
#endif

/* CPU capability: -1 unknown, 0 baseline, 1 AVX2+FMA, 2 AVX-512F. */
static int	gelu_level = -1;

static int
detect_gelu_level(void)
{
#ifdef FLOW_GELU_X86
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		return 2;
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return 1;
#endif
	return 0;
}

/*
 * Force a kernel (0 baseline, 1 AVX2, 2 AVX-512) for tests; returns the
 * level in use, which stays below the CPU's own.
 */
int
flow_gelu_force_level(int level)
{
	int			cpu = detect_gelu_level();

	gelu_level = level < cpu ? level : cpu;
	return gelu_level;
}

void
flow_gelu(const float *p, float *h, float *deriv, int n)
{
	/* the level is a property of the CPU, so caching it is safe */
	if (gelu_level < 0)
		gelu_level = detect_gelu_level();
#ifdef FLOW_GELU_X86
	if (gelu_level == 2)
	{
		gelu_loop_avx512(p, h, deriv, n);
		return;
	}
	if (gelu_level == 1)
	{
		gelu_loop_avx2(p, h, deriv, n);
		return;
	}
#endif
	gelu_loop_base(p, h, deriv, n);
}

/* Scalar gelu through the vector kernel (for callers with one value). */
float
flow_gelu_ref(float x)
{
	float		h;

	flow_gelu(&x, &h, NULL, 1);
	return h;
}

/* Double-precision references built on libm's erf. */
double
flow_gelu_exact(double x)
{
	return 0.5 * x * erfc(-x / M_SQRT2);
}

double
flow_gelu_deriv_exact(double x)
{
	return 0.5 * erfc(-x / M_SQRT2) + x * exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
}
