/*
 * distance.h
 *	  Distance kernels over float4 arrays, shared by the SQL operators and
 *	  the HNSW index.
 *
 * All kernels accumulate in double.  A float4 squared is at most about
 * 1.2e77, so a sum over LATENT_MAX_DIM elements cannot overflow a double and
 * ordering ties are resolved at double precision; results are returned as
 * double.  The .c file builds each kernel for AVX-512, AVX2 and baseline
 * x86-64 (function multiversioning) and the loader picks one at run time.
 * These functions do not include postgres.h, so they can be unit-tested.
 */
#ifndef WDC_DISTANCE_H
#define WDC_DISTANCE_H

/* Sum of (a[i] - b[i])^2. */
extern double latent_l2_squared(const float *a, const float *b, int n);

/* Sum of a[i] * b[i]. */
extern double latent_dot(const float *a, const float *b, int n);

/* Sum of |a[i] - b[i]|. */
extern double latent_l1(const float *a, const float *b, int n);

/*
 * Dot product and both squared norms in one pass, for cosine distance:
 * 1 - dot / sqrt(norm_a * norm_b).
 */
extern void latent_dot_norms(const float *a, const float *b, int n,
							 double *dot, double *norm_a, double *norm_b);

/* Sum of a[i]^2. */
extern double latent_norm_squared(const float *a, int n);

#endif							/* WDC_DISTANCE_H */
