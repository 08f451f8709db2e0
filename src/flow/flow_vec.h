/*
 * flow_vec.h
 *	  Elementwise loops of the flow network on four-float vectors.
 *
 * GCC 12 at -O2 vectorises only loops whose trip count needs no scalar
 * remainder, so the hot elementwise loops are written with GCC/Clang vector
 * extensions (SSE2 registers on x86-64, no -march flags) plus a scalar tail.
 * Unaligned loads and stores go through memcpy, which compiles to movups.
 */
#ifndef WDC_FLOW_VEC_H
#define WDC_FLOW_VEC_H

#include <string.h>

typedef float flow_v4 __attribute__((vector_size(16)));

static inline flow_v4
flow_load4(const float *p)
{
	flow_v4		v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static inline void
flow_store4(float *p, flow_v4 v)
{
	memcpy(p, &v, sizeof(v));
}

/* a = gamma * (a + bias) + beta */
static inline void
flow_vec_film(float *a, const float *bias, const float *gamma,
			  const float *beta, int n)
{
	int			k;

	for (k = 0; k + 4 <= n; k += 4)
		flow_store4(a + k, flow_load4(gamma + k) *
					(flow_load4(a + k) + flow_load4(bias + k)) +
					flow_load4(beta + k));
	for (; k < n; k++)
		a[k] = gamma[k] * (a[k] + bias[k]) + beta[k];
}

/* dst = a * b */
static inline void
flow_vec_mul(float *dst, const float *a, const float *b, int n)
{
	int			k;

	for (k = 0; k + 4 <= n; k += 4)
		flow_store4(dst + k, flow_load4(a + k) * flow_load4(b + k));
	for (; k < n; k++)
		dst[k] = a[k] * b[k];
}

/* dst += a */
static inline void
flow_vec_add(float *dst, const float *a, int n)
{
	int			k;

	for (k = 0; k + 4 <= n; k += 4)
		flow_store4(dst + k, flow_load4(dst + k) + flow_load4(a + k));
	for (; k < n; k++)
		dst[k] += a[k];
}

/* a . b with four partial sums (float) */
static inline float
flow_vec_dot(const float *a, const float *b, int n)
{
	flow_v4		acc = {0, 0, 0, 0};
	float		sum;
	int			k;

	for (k = 0; k + 4 <= n; k += 4)
		acc += flow_load4(a + k) * flow_load4(b + k);
	sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
	for (; k < n; k++)
		sum += a[k] * b[k];
	return sum;
}

#endif							/* WDC_FLOW_VEC_H */
