/*
 * flow_gmm.h
 *	  Analytic flow-matching field of a Gaussian mixture, used as an oracle
 *	  for the solvers and the density code.
 *
 * For p1 = sum_k pi_k N(mu_k, diag(S_k)) and the conditional-OT path
 * x_t = (1 - t) x0 + t x1, x0 ~ N(0, I), the marginal velocity, its
 * divergence and log p1 are all in closed form, so a solver's log density
 * can be compared with the truth.
 */
#ifndef WDC_FLOW_GMM_H
#define WDC_FLOW_GMM_H

#include "flow/flow.h"

typedef struct FlowGmm
{
	int			k;				/* components */
	int			d;				/* dimension */
	const double *weight;		/* [k], sums to 1 */
	const double *mean;			/* [k][d] */
	const double *var;			/* [k][d], all > 0 */
} FlowGmm;

/* FlowVelocityFn with state = const FlowGmm *. */
extern WdcStatus flow_gmm_velocity(void *state, int n, double t,
								   const float *x, float *v, double *div);
/* Exact velocity and divergence at one double-precision point. */
extern double flow_gmm_field(const FlowGmm *g, const double *x, double t,
							 double *v);
/* Exact natural log density of p1 at x [d]. */
extern double flow_gmm_log_density(const FlowGmm *g, const double *x);

#endif							/* WDC_FLOW_GMM_H */
