/*
 * test_flow_ode.c
 *	  Solvers and log-density quadrature against the analytic flow of a
 *	  Gaussian mixture, whose velocity, divergence and log density are known
 *	  exactly (flow_gmm.c).
 */
#include "flow/flow_int.h"
#include "flow/flow_gmm.h"
#include "wdc_test.h"

#include <stdlib.h>
#include <string.h>

#define K 10
#define N_IN 200
#define N_OUT 200

typedef struct Oracle
{
	int			d;
	double		weight[K];
	double	   *mean;
	double	   *var;
	FlowGmm		gmm;
	float	   *rows;			/* [N_IN + N_OUT][d] */
	double	   *exact;
} Oracle;

/*
 * Ten equally weighted components with N(0, 1) means and per-dimension
 * variances U(var_lo, var_hi); N_IN rows drawn from the mixture and N_OUT
 * outliers (a component mean plus N(0, 1) noise).
 */
static void
oracle_init(Oracle *o, int d, double var_lo, double var_hi, uint64_t seed)
{
	FlowRng		rng;
	int			n = N_IN + N_OUT;
	double	   *x = malloc(sizeof(double) * d);
	int			k;
	int			j;
	int			r;

	o->d = d;
	o->mean = malloc(sizeof(double) * K * d);
	o->var = malloc(sizeof(double) * K * d);
	o->rows = malloc(sizeof(float) * n * d);
	o->exact = malloc(sizeof(double) * n);
	flow_rng_seed(&rng, seed);
	for (k = 0; k < K; k++)
	{
		o->weight[k] = 1.0 / K;
		for (j = 0; j < d; j++)
		{
			o->mean[k * d + j] = flow_rng_normal(&rng);
			o->var[k * d + j] = var_lo + (var_hi - var_lo) * flow_rng_uniform(&rng);
		}
	}
	o->gmm.k = K;
	o->gmm.d = d;
	o->gmm.weight = o->weight;
	o->gmm.mean = o->mean;
	o->gmm.var = o->var;
	for (r = 0; r < n; r++)
	{
		k = (int) flow_rng_below(&rng, K);
		for (j = 0; j < d; j++)
		{
			double		s = r < N_IN ? sqrt(o->var[k * d + j]) : 1.0;

			o->rows[r * d + j] = (float) (o->mean[k * d + j] + s * flow_rng_normal(&rng));
			x[j] = o->rows[r * d + j];
		}
		o->exact[r] = flow_gmm_log_density(&o->gmm, x);
	}
	free(x);
}

static void
oracle_free(Oracle *o)
{
	free(o->mean);
	free(o->var);
	free(o->rows);
	free(o->exact);
}

/* Log densities of all oracle rows with the given solver options. */
static WdcStatus
oracle_log_density(const WdcEnv *env, Oracle *o, const FlowSolveOptions *opt,
				   double *out)
{
	int			n = N_IN + N_OUT;
	int			d = o->d;
	double	   *x = malloc(sizeof(double) * n * d);
	double	   *integral = malloc(sizeof(double) * n);
	WdcStatus	st;
	int			r;
	int			j;

	for (j = 0; j < n * d; j++)
		x[j] = o->rows[j];
	st = flow_integrate(env, flow_gmm_velocity, &o->gmm, n, d, x, 1.0, 0.0,
						opt, integral);
	for (r = 0; st == WDC_OK && r < n; r++)
	{
		double		sq = 0.0;

		for (j = 0; j < d; j++)
			sq += x[r * d + j] * x[r * d + j];
		out[r] = -0.5 * sq - 0.5 * d * log(2 * M_PI) + integral[r];
	}
	free(x);
	free(integral);
	return st;
}

/* Spearman rank correlation of a [n] and b [n] (no ties expected). */
static double
spearman(const double *a, const double *b, int n)
{
	double	   *ra = malloc(sizeof(double) * n);
	double	   *rb = malloc(sizeof(double) * n);
	double		sum = 0.0;
	int			i;
	int			j;

	for (i = 0; i < n; i++)
	{
		ra[i] = rb[i] = 0;
		for (j = 0; j < n; j++)
		{
			ra[i] += a[j] < a[i];
			rb[i] += b[j] < b[i];
		}
	}
	for (i = 0; i < n; i++)
		sum += (ra[i] - rb[i]) * (ra[i] - rb[i]);
	free(ra);
	free(rb);
	return 1.0 - 6.0 * sum / ((double) n * ((double) n * n - 1));
}

/* Divergence of the oracle against central differences of its velocity. */
static void
test_oracle_divergence(void)
{
	Oracle		o;
	double		x[8];
	double		v[8];
	double		vp[8];
	double		vm[8];
	double		worst = 0.0;
	char		why[128];
	int			trial;

	oracle_init(&o, 8, 0.05, 0.5, 3);
	for (trial = 0; trial < 20; trial++)
	{
		double		t = 0.05 * trial;
		double		div;
		double		fd = 0.0;
		int			j;

		for (j = 0; j < 8; j++)
			x[j] = o.rows[trial * 8 + j] * (1.0 - 0.5 * t);
		div = flow_gmm_field(&o.gmm, x, t, v);
		for (j = 0; j < 8; j++)
		{
			double		keep = x[j];

			x[j] = keep + 1e-5;
			flow_gmm_field(&o.gmm, x, t, vp);
			x[j] = keep - 1e-5;
			flow_gmm_field(&o.gmm, x, t, vm);
			x[j] = keep;
			fd += (vp[j] - vm[j]) / 2e-5;
		}
		if (fabs(div - fd) / (1.0 + fabs(fd)) > worst)
			worst = fabs(div - fd) / (1.0 + fabs(fd));
	}
	snprintf(why, sizeof(why), "worst relative difference %.2e", worst);
	wdc_test_case("oracle divergence matches differences", worst < 1e-6, why);
	oracle_free(&o);
}

/*
 * Default solver settings on the oracle: in-distribution error and outlier
 * ranking, for broad and narrow components.  With narrow components the
 * outliers' paths are long and stiff; their ranking is then limited by the
 * state error that every quadrature shares (the stage rule reached 0.96 on
 * the same rows), so that case gets a lower bar.
 */
static void
test_default_accuracy(int d, double var_lo, double var_hi, double max_mean_err,
					  double min_rho)
{
	WdcEnv		env;
	WdcError	err;
	Oracle		o;
	FlowSolveOptions opt;
	static double lp[N_IN + N_OUT];
	double		mean_err = 0.0;
	double		rho;
	char		name[128];
	char		why[160];
	WdcStatus	st;
	int			r;

	wdc_env_init_default(&env, &err);
	oracle_init(&o, d, var_lo, var_hi, 7);
	flow_solve_options_default(&opt);
	st = oracle_log_density(&env, &o, &opt, lp);
	snprintf(name, sizeof(name), "oracle d=%d var %g..%g integrates", d, var_lo, var_hi);
	wdc_test_case(name, st == WDC_OK, err.message);
	for (r = 0; r < N_IN; r++)
		mean_err += fabs(lp[r] - o.exact[r]);
	mean_err /= N_IN;
	rho = spearman(lp + N_IN, o.exact + N_IN, N_OUT);
	snprintf(why, sizeof(why), "mean error %.4f nats, outlier Spearman %.6f", mean_err, rho);
	printf("# d=%d var %g..%g: %s\n", d, var_lo, var_hi, why);
	snprintf(name, sizeof(name), "oracle d=%d var %g..%g in-distribution error", d, var_lo, var_hi);
	wdc_test_case(name, mean_err < max_mean_err, why);
	snprintf(name, sizeof(name), "oracle d=%d var %g..%g outlier ranking", d, var_lo, var_hi);
	wdc_test_case(name, rho > min_rho, why);
	oracle_free(&o);
}

/* Every method and quadrature converges as the grid is refined. */
static void
test_methods_converge(void)
{
	WdcEnv		env;
	WdcError	err;
	Oracle		o;
	FlowSolveOptions opt;
	static double lp[N_IN + N_OUT];
	static const FlowMethod methods[3] = {FLOW_EULER, FLOW_MIDPOINT, FLOW_RK4};
	static const char *const names[3] = {"euler", "midpoint", "rk4"};
	int			mi;

	wdc_env_init_default(&env, &err);
	oracle_init(&o, 4, 0.05, 0.5, 9);
	for (mi = 0; mi < 3; mi++)
	{
		double		err_coarse = 0.0;
		double		err_fine = 0.0;
		char		name[64];
		char		why[128];
		int			r;

		flow_solve_options_default(&opt);
		opt.method = methods[mi];
		opt.quadrature = FLOW_QUAD_STAGE;
		opt.steps = 16;
		oracle_log_density(&env, &o, &opt, lp);
		for (r = 0; r < N_IN; r++)
			err_coarse += fabs(lp[r] - o.exact[r]) / N_IN;
		opt.steps = 64;
		oracle_log_density(&env, &o, &opt, lp);
		for (r = 0; r < N_IN; r++)
			err_fine += fabs(lp[r] - o.exact[r]) / N_IN;
		snprintf(name, sizeof(name), "%s error shrinks with steps", names[mi]);
		snprintf(why, sizeof(why), "16 steps %.4g, 64 steps %.4g", err_coarse, err_fine);
		wdc_test_case(name, err_fine < err_coarse / 3.0, why);
	}

	/* Simpson option checks */
	flow_solve_options_default(&opt);
	opt.div_intervals = 5;
	wdc_test_case("odd simpson intervals rejected",
				  flow_solve_options_check(&env, &opt, 1) == WDC_ERR_INVALID,
				  err.message);
	flow_solve_options_default(&opt);
	opt.guidance = 0.5;
	wdc_test_case("density rejects guidance 0.5",
				  flow_solve_options_check(&env, &opt, 1) == WDC_ERR_INVALID &&
				  strstr(err.message, "guidance") != NULL, err.message);
	wdc_test_case("paths accept guidance 0.5",
				  flow_solve_options_check(&env, &opt, 0) == WDC_OK, err.message);
	oracle_free(&o);
}

/* Forward then backward integration returns to the start. */
static void
test_round_trip(void)
{
	WdcEnv		env;
	WdcError	err;
	Oracle		o;
	FlowSolveOptions opt;
	double	   *x;
	double		worst = 0.0;
	char		why[64];
	int			j;

	wdc_env_init_default(&env, &err);
	oracle_init(&o, 4, 0.05, 0.5, 13);
	flow_solve_options_default(&opt);
	opt.method = FLOW_RK4;
	x = malloc(sizeof(double) * N_IN * 4);
	for (j = 0; j < N_IN * 4; j++)
		x[j] = o.rows[j];
	flow_integrate(&env, flow_gmm_velocity, &o.gmm, N_IN, 4, x, 1.0, 0.0, &opt, NULL);
	flow_integrate(&env, flow_gmm_velocity, &o.gmm, N_IN, 4, x, 0.0, 1.0, &opt, NULL);
	for (j = 0; j < N_IN * 4; j++)
		if (fabs(x[j] - o.rows[j]) > worst)
			worst = fabs(x[j] - o.rows[j]);
	snprintf(why, sizeof(why), "worst %.2e", worst);
	wdc_test_case("rk4 round trip returns", worst < 1e-3, why);
	free(x);
	oracle_free(&o);
}

int
main(void)
{
	test_oracle_divergence();
	test_default_accuracy(16, 0.05, 0.5, 0.03, 0.999);
	test_default_accuracy(16, 0.005, 0.05, 0.03, 0.9);
	test_default_accuracy(32, 0.05, 0.5, 0.03, 0.999);
	test_default_accuracy(64, 0.05, 0.5, 0.03, 0.999);
	test_methods_converge();
	test_round_trip();
	return wdc_test_summary();
}
