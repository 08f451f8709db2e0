/*
 * flow_bench.c
 *	  Throughput of the flow core: log density, residual and training, and
 *	  the oracle accuracy of the two divergence quadratures.
 *
 * Usage: flow_bench D OUTDIR
 * Writes OUTDIR/flow_D.onnx (weights shared with bench/flow_torch.py),
 * OUTDIR/rows_D.f32 (float32 latents [N_ROWS][D]) and
 * OUTDIR/logp_stage_D.f64 (C log densities with the reference algorithm,
 * for the cross-check), and prints "key value" lines.  Built and run by
 * bench/flow_bench.sh.
 */
#include "flow/flow_int.h"
#include "flow/flow_gmm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N_ROWS 768
#define HIDDEN 256

extern void openblas_set_num_threads(int);

/*
 * Return the CPU seconds of this process.  The benchmark machine is shared,
 * and CPU time leaves out the time spent waiting for a core.  Both sides use
 * one thread, so it matches wall time on an idle machine.
 */
static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/*
 * A model with PyTorch's default Linear scale (uniform in +-1/sqrt(fan_in)),
 * so the field bends like a trained one; speed does not depend on values.
 */
static FlowModel *
bench_model(const WdcEnv *env, int d)
{
	FlowModel  *m = NULL;
	FlowRng		rng;
	size_t		H = HIDDEN;
	size_t		j;
	int			i;

	if (flow_model_alloc(env, d, HIDDEN, 3, 0, 0, 0, &m) != WDC_OK)
		return NULL;
	flow_rng_seed(&rng, 1000 + d);
	for (j = 0; j < m->n_params; j++)
		m->params[j] = (float) (2.0 * flow_rng_uniform(&rng) - 1.0);
	for (j = 0; j < H * (size_t) (d + 1) + H; j++)
		m->w_in[j] *= (float) (1.0 / sqrt(d + 1.0));
	for (j = 0; j < 2 * (H * H + H); j++)
		m->w_hidden[j] *= (float) (1.0 / sqrt((double) H));
	for (j = 0; j < (size_t) d * H + d; j++)
		m->w_out[j] *= (float) (1.0 / sqrt((double) H));
	for (i = 0; i < HIDDEN; i++)
	{
		m->b_film[i] = 1.0f + 0.1f * m->b_film[i];
		m->b_film[HIDDEN + i] *= 0.1f;
	}
	for (i = 0; i < d; i++)
	{
		m->mean[i] = 0.0;
		m->std[i] = 1.0;
	}
	return m;
}

static void
write_file(const char *path, const void *data, size_t len)
{
	FILE	   *f = fopen(path, "wb");

	if (f == NULL || fwrite(data, 1, len, f) != len)
	{
		fprintf(stderr, "cannot write %s\n", path);
		exit(1);
	}
	fclose(f);
}

/* Oracle accuracy (ten-component mixture, 400 + 200 rows) of one setting. */
static void
oracle_accuracy(int d, const FlowSolveOptions *opt, const char *label)
{
	WdcEnv		env;
	WdcError	err;
	FlowRng		rng;
	int			K = 10;
	int			n_in = 400;
	int			n = 600;
	double	   *w = malloc(sizeof(double) * K);
	double	   *mu = malloc(sizeof(double) * K * d);
	double	   *var = malloc(sizeof(double) * K * d);
	double	   *x = malloc(sizeof(double) * n * d);
	double	   *exact = malloc(sizeof(double) * n);
	double	   *lp = malloc(sizeof(double) * n);
	double	   *integral = malloc(sizeof(double) * n);
	FlowGmm		g;
	double		err_in = 0.0;
	double		err_in_max = 0.0;
	double		rank_sum = 0.0;
	int			k;
	int			r;
	int			j;

	wdc_env_init_default(&env, &err);
	flow_rng_seed(&rng, 7 + d);
	for (k = 0; k < K; k++)
	{
		w[k] = 1.0 / K;
		for (j = 0; j < d; j++)
		{
			mu[k * d + j] = flow_rng_normal(&rng);
			var[k * d + j] = 0.05 + 0.45 * flow_rng_uniform(&rng);
		}
	}
	g.k = K;
	g.d = d;
	g.weight = w;
	g.mean = mu;
	g.var = var;
	for (r = 0; r < n; r++)
	{
		k = (int) flow_rng_below(&rng, K);
		for (j = 0; j < d; j++)
		{
			double		s = r < n_in ? sqrt(var[k * d + j]) : 1.0;

			x[r * d + j] = (float) (mu[k * d + j] + s * flow_rng_normal(&rng));
		}
		exact[r] = flow_gmm_log_density(&g, x + r * d);
	}
	flow_integrate(&env, flow_gmm_velocity, &g, n, d, x, 1.0, 0.0, opt, integral);
	for (r = 0; r < n; r++)
	{
		double		sq = 0.0;

		for (j = 0; j < d; j++)
			sq += x[r * d + j] * x[r * d + j];
		lp[r] = -0.5 * sq - 0.5 * d * log(2 * M_PI) + integral[r];
		if (r < n_in)
		{
			err_in += fabs(lp[r] - exact[r]) / n_in;
			err_in_max = fmax(err_in_max, fabs(lp[r] - exact[r]));
		}
	}
	/* Spearman on the outliers */
	for (r = n_in; r < n; r++)
	{
		int			ra = 0;
		int			rb = 0;

		for (k = n_in; k < n; k++)
		{
			ra += lp[k] < lp[r];
			rb += exact[k] < exact[r];
		}
		rank_sum += (double) (ra - rb) * (ra - rb);
	}
	printf("oracle_%s_in_mean_err %.5f\n", label, err_in);
	printf("oracle_%s_in_max_err %.5f\n", label, err_in_max);
	printf("oracle_%s_outlier_spearman %.6f\n", label,
		   1.0 - 6.0 * rank_sum / ((double) (n - n_in) * ((double) (n - n_in) * (n - n_in) - 1)));
	free(w);
	free(mu);
	free(var);
	free(x);
	free(exact);
	free(lp);
	free(integral);
}

int
main(int argc, char **argv)
{
	WdcEnv		env;
	WdcError	err;
	int			d;
	const char *dir;
	char		path[512];
	FlowModel  *m;
	FlowSolveOptions opt;
	FlowTrainOptions topt;
	FlowModel  *trained = NULL;
	FlowRng		rng;
	float	   *rows;
	float	   *resid;
	double	   *logp;
	uint8_t    *bytes;
	size_t		len;
	double		t0;
	double		secs;
	int			j;
	int			n_train = 8192;
	float	   *train;

	if (argc != 3)
	{
		fprintf(stderr, "usage: flow_bench D OUTDIR\n");
		return 2;
	}
	/* one BLAS thread, as in a PostgreSQL backend */
	openblas_set_num_threads(1);
	d = atoi(argv[1]);
	dir = argv[2];
	wdc_env_init_default(&env, &err);
	m = bench_model(&env, d);
	rows = malloc(sizeof(float) * N_ROWS * d);
	resid = malloc(sizeof(float) * N_ROWS * d);
	logp = malloc(sizeof(double) * N_ROWS);
	flow_rng_seed(&rng, 77);
	for (j = 0; j < N_ROWS * d; j++)
		rows[j] = (float) flow_rng_normal(&rng);

	if (flow_to_onnx(&env, m, &bytes, &len) != WDC_OK)
	{
		fprintf(stderr, "%s\n", err.message);
		return 1;
	}
	snprintf(path, sizeof(path), "%s/flow_%d.onnx", dir, d);
	write_file(path, bytes, len);
	snprintf(path, sizeof(path), "%s/rows_%d.f32", dir, d);
	write_file(path, rows, sizeof(float) * N_ROWS * d);

	/* log density, default (Simpson over midpoint 64) */
	flow_solve_options_default(&opt);
	opt.guidance = 0.0;
	t0 = now();
	flow_log_density(&env, m, rows, NULL, N_ROWS, &opt, logp);
	secs = now() - t0;
	printf("c_logdensity_default_rows_per_s %.1f\n", N_ROWS / secs);

	/* one row per call, as a per-row SQL function calls the core */
	t0 = now();
	for (j = 0; j < N_ROWS / 4; j++)
		flow_log_density(&env, m, rows + (size_t) j * d, NULL, 1, &opt, logp + j);
	secs = now() - t0;
	printf("c_logdensity_default_one_row_per_s %.1f\n", N_ROWS / 4 / secs);

	/* log density, reference algorithm (divergence at every midpoint stage) */
	opt.quadrature = FLOW_QUAD_STAGE;
	t0 = now();
	flow_log_density(&env, m, rows, NULL, N_ROWS, &opt, logp);
	secs = now() - t0;
	printf("c_logdensity_stage_rows_per_s %.1f\n", N_ROWS / secs);
	snprintf(path, sizeof(path), "%s/logp_stage_%d.f64", dir, d);
	write_file(path, logp, sizeof(double) * N_ROWS);
	t0 = now();
	for (j = 0; j < N_ROWS / 4; j++)
		flow_log_density(&env, m, rows + (size_t) j * d, NULL, 1, &opt, logp + j);
	secs = now() - t0;
	printf("c_logdensity_stage_one_row_per_s %.1f\n", N_ROWS / 4 / secs);

	/* residual, midpoint 64 */
	flow_solve_options_default(&opt);
	opt.guidance = 0.0;
	t0 = now();
	flow_residual(&env, m, rows, NULL, N_ROWS, &opt, resid);
	secs = now() - t0;
	printf("c_residual_rows_per_s %.1f\n", N_ROWS / secs);

	/* training: 2 epochs over 8192 rows, no validation */
	train = malloc(sizeof(float) * n_train * d);
	for (j = 0; j < n_train * d; j++)
		train[j] = (float) flow_rng_normal(&rng);
	flow_train_options_default(&topt);
	topt.max_epochs = 2;
	topt.val_fraction = 0.0;
	topt.calibration_rows = 0;
	t0 = now();
	if (flow_train(&env, train, n_train, d, NULL, 0, NULL, NULL, 0, NULL, &topt,
				   NULL, NULL, &trained) != WDC_OK)
	{
		fprintf(stderr, "%s\n", err.message);
		return 1;
	}
	secs = now() - t0;
	printf("c_train_samples_per_s %.1f\n", 2.0 * n_train / secs);

	/* oracle accuracy of both quadratures (same solver grid) */
	flow_solve_options_default(&opt);
	oracle_accuracy(d, &opt, "default");
	opt.quadrature = FLOW_QUAD_STAGE;
	oracle_accuracy(d, &opt, "stage");

	flow_free(&env, trained);
	flow_free(&env, m);
	free(bytes);
	free(rows);
	free(resid);
	free(logp);
	free(train);
	return 0;
}
