/*
 * flow_gmm.c
 *	  Closed-form flow-matching velocity, divergence and density of a
 *	  diagonal Gaussian mixture (the test and benchmark oracle).
 *
 * Under x_t = (1 - t) x0 + t x1 with x1 from component k, x_t is Gaussian
 * with mean t mu_k and per-dimension variance V_k = (1 - t)^2 + t^2 S_k.
 * Its conditional velocity E[x1 - x0 | x_t = x, k] is
 *	v_k = mu_k + A_k (x - t mu_k),  A_k = (t S_k - (1 - t)) / V_k.
 * The marginal field is u = sum_k r_k v_k with responsibilities
 * r_k ~ pi_k N(x; t mu_k, V_k).  With the score g_k = -(x - t mu_k) / V_k
 * and gbar = sum_k r_k g_k, grad r_k = r_k (g_k - gbar), hence
 *	div u = sum_k r_k sum_j A_kj + sum_k r_k (g_k - gbar) . v_k.
 * Everything is in double precision.
 */
#include "flow/flow_gmm.h"

#include <math.h>
#include <string.h>

#define GMM_MAX_K	64

/* Velocity v [d] and divergence (returned) at (x, t). */
double
flow_gmm_field(const FlowGmm *g, const double *x, double t, double *v)
{
	double		logr[GMM_MAX_K];
	double		gbar[FLOW_MAX_DIM];
	double		maxlog = -INFINITY;
	double		total = 0.0;
	double		div = 0.0;
	int			k;
	int			j;

	/* responsibilities, normalised through log-sum-exp */
	for (k = 0; k < g->k; k++)
	{
		double		acc = log(g->weight[k]);

		for (j = 0; j < g->d; j++)
		{
			double		var = (1 - t) * (1 - t) + t * t * g->var[k * g->d + j];
			double		dev = x[j] - t * g->mean[k * g->d + j];

			acc -= 0.5 * (log(2 * M_PI * var) + dev * dev / var);
		}
		logr[k] = acc;
		if (acc > maxlog)
			maxlog = acc;
	}
	for (k = 0; k < g->k; k++)
	{
		logr[k] = exp(logr[k] - maxlog);
		total += logr[k];
	}
	for (k = 0; k < g->k; k++)
		logr[k] /= total;		/* now r_k */

	/* u and gbar */
	memset(v, 0, (size_t) g->d * sizeof(double));
	memset(gbar, 0, (size_t) g->d * sizeof(double));
	for (k = 0; k < g->k; k++)
		for (j = 0; j < g->d; j++)
		{
			double		s = g->var[k * g->d + j];
			double		var = (1 - t) * (1 - t) + t * t * s;
			double		a = (t * s - (1 - t)) / var;
			double		dev = x[j] - t * g->mean[k * g->d + j];

			v[j] += logr[k] * (g->mean[k * g->d + j] + a * dev);
			gbar[j] += logr[k] * (-dev / var);
		}

	/* divergence */
	for (k = 0; k < g->k; k++)
	{
		double		trace = 0.0;
		double		cross = 0.0;

		for (j = 0; j < g->d; j++)
		{
			double		s = g->var[k * g->d + j];
			double		var = (1 - t) * (1 - t) + t * t * s;
			double		a = (t * s - (1 - t)) / var;
			double		dev = x[j] - t * g->mean[k * g->d + j];
			double		vk = g->mean[k * g->d + j] + a * dev;

			trace += a;
			cross += (-dev / var - gbar[j]) * vk;
		}
		div += logr[k] * (trace + cross);
	}
	return div;
}

/* FlowVelocityFn over rows of float states. */
WdcStatus
flow_gmm_velocity(void *state, int n, double t, const float *x, float *v,
				  double *div)
{
	const FlowGmm *g = state;
	double		xd[FLOW_MAX_DIM];
	double		vd[FLOW_MAX_DIM];
	int			r;
	int			j;

	if (g->k > GMM_MAX_K || g->d > FLOW_MAX_DIM)
		return WDC_ERR_LIMIT;
	for (r = 0; r < n; r++)
	{
		double		dv;

		for (j = 0; j < g->d; j++)
			xd[j] = x[(size_t) r * g->d + j];
		dv = flow_gmm_field(g, xd, t, vd);
		for (j = 0; j < g->d; j++)
			v[(size_t) r * g->d + j] = (float) vd[j];
		if (div)
			div[r] = dv;
	}
	return WDC_OK;
}

double
flow_gmm_log_density(const FlowGmm *g, const double *x)
{
	double		logs[GMM_MAX_K];
	double		maxlog = -INFINITY;
	double		total = 0.0;
	int			k;
	int			j;

	for (k = 0; k < g->k && k < GMM_MAX_K; k++)
	{
		double		acc = log(g->weight[k]);

		for (j = 0; j < g->d; j++)
		{
			double		var = g->var[k * g->d + j];
			double		dev = x[j] - g->mean[k * g->d + j];

			acc -= 0.5 * (log(2 * M_PI * var) + dev * dev / var);
		}
		logs[k] = acc;
		if (acc > maxlog)
			maxlog = acc;
	}
	for (k = 0; k < g->k && k < GMM_MAX_K; k++)
		total += exp(logs[k] - maxlog);
	return maxlog + log(total);
}
