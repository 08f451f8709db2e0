/*
 * test_flow_train.c
 *	  Flow training on samples of known mixtures: held-out log density
 *	  against the exact one, p-values of a far-away point, determinism,
 *	  cancellation, and removal of class information by conditioning.
 */
#include "flow/flow_int.h"
#include "flow/flow_gmm.h"
#include "wdc_test.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DIM 2
#define COMPONENTS 3

static const double mix_weight[COMPONENTS] = {0.5, 0.3, 0.2};
static const double mix_mean[COMPONENTS * DIM] = {-1.5, 0.0, 1.0, 1.5, 1.5, -1.5};
static const double mix_var[COMPONENTS * DIM] = {0.25, 0.09, 0.16, 0.16, 0.09, 0.25};

/* Draw n rows from the mixture into rows [n][DIM] (float). */
static void
draw_mixture(FlowRng *rng, int n, float *rows)
{
	int			r;
	int			j;

	for (r = 0; r < n; r++)
	{
		double		u = flow_rng_uniform(rng);
		int			k = u < mix_weight[0] ? 0 : (u < mix_weight[0] + mix_weight[1] ? 1 : 2);

		for (j = 0; j < DIM; j++)
			rows[r * DIM + j] = (float) (mix_mean[k * DIM + j] +
										 sqrt(mix_var[k * DIM + j]) *
										 flow_rng_normal(rng));
	}
}

static int	cancel_after;

static int
cancel_counter(void *state)
{
	(void) state;
	return --cancel_after < 0;
}

static int	progress_calls;

static void
count_progress(void *state, const FlowProgress *p)
{
	(void) state;
	if (p->epoch >= 1 && isfinite(p->train_loss))
		progress_calls++;
}

static void
small_options(FlowTrainOptions *o)
{
	flow_train_options_default(o);
	o->hidden = 64;
	o->learning_rate = 2e-3;
	o->max_epochs = 200;
	o->patience = 20;
	o->batch_size = 256;
	o->calibration_rows = 500;
	o->seed = 11;
}

static void
test_density_and_pvalue(void)
{
	WdcEnv		env;
	WdcError	err;
	FlowTrainOptions o;
	FlowSolveOptions so;
	FlowModel  *m = NULL;
	FlowRng		rng;
	FlowGmm		g = {COMPONENTS, DIM, mix_weight, mix_mean, mix_var};
	int			n_train = 12000;
	int			n_test = 1000;
	float	   *train = malloc(sizeof(float) * n_train * DIM);
	float	   *test = malloc(sizeof(float) * (n_test + 1) * DIM);
	double	   *logp = malloc(sizeof(double) * (n_test + 1));
	double		learned = 0.0;
	double		exact = 0.0;
	double		far_p;
	char		why[256];
	WdcStatus	st;
	int			r;
	double		t0;

	wdc_env_init_default(&env, &err);
	flow_rng_seed(&rng, 2024);
	draw_mixture(&rng, n_train, train);
	draw_mixture(&rng, n_test, test);
	/* an injected far-away point */
	test[n_test * DIM] = 6.0f;
	test[n_test * DIM + 1] = -6.0f;

	small_options(&o);
	progress_calls = 0;
	t0 = (double) clock() / CLOCKS_PER_SEC;
	st = flow_train(&env, train, n_train, DIM, NULL, 0, NULL, NULL, 0, NULL,
					&o, count_progress, NULL, &m);
	wdc_test_case("train mixture succeeds", st == WDC_OK, err.message);
	if (st != WDC_OK)
		return;
	snprintf(why, sizeof(why), "%d epochs, %.1f s cpu, val loss %.4f",
			 m->info.epochs, (double) clock() / CLOCKS_PER_SEC - t0,
			 m->info.val_loss);
	printf("# %s\n", why);
	wdc_test_case("progress called every epoch", progress_calls == m->info.epochs, why);

	flow_solve_options_default(&so);
	so.guidance = 0.0;
	st = flow_log_density(&env, m, test, NULL, n_test + 1, &so, logp);
	wdc_test_case("log density of held-out rows", st == WDC_OK, err.message);
	for (r = 0; r < n_test; r++)
	{
		double		x[DIM] = {test[r * DIM], test[r * DIM + 1]};

		learned += logp[r];
		exact += flow_gmm_log_density(&g, x);
	}
	learned /= n_test;
	exact /= n_test;
	snprintf(why, sizeof(why), "learned mean %.4f, exact mean %.4f", learned, exact);
	printf("# %s\n", why);
	wdc_test_case("mean log density within 0.1 nats", fabs(learned - exact) < 0.1, why);

	far_p = flow_pvalue(m, logp[n_test], 0);
	snprintf(why, sizeof(why), "p = %g (log p %.2f)", far_p, logp[n_test]);
	wdc_test_case("far point p-value below 0.01", far_p < 0.01, why);
	wdc_test_case("typical point p-value above 0.01",
				  flow_pvalue(m, logp[0], 0) > 0.01, "first test row");
	wdc_test_case("calibration sorted and sized",
				  m->n_calibration == 500 && m->calibration[0] <= m->calibration[499],
				  "500 rows");

	/*
	 * Samples follow the mixture.  Their exact mean log density is the
	 * cross-entropy E_q[log p], which punishes every sample that lands
	 * between modes, so the bound is looser than for held-out rows.  The
	 * gap was about 0.1 nats here, against about 5 nats for a Gaussian with
	 * the data's mean and covariance.
	 */
	{
		float	   *samples = malloc(sizeof(float) * n_test * DIM);
		float	   *again = malloc(sizeof(float) * n_test * DIM);
		double		sample_mean = 0.0;

		so.guidance = 1.0;
		st = flow_sample(&env, m, NULL, n_test, 77, &so, samples);
		wdc_test_case("sample succeeds", st == WDC_OK, err.message);
		for (r = 0; r < n_test; r++)
		{
			double		x[DIM] = {samples[r * DIM], samples[r * DIM + 1]};

			sample_mean += flow_gmm_log_density(&g, x) / n_test;
		}
		snprintf(why, sizeof(why), "samples %.4f, data %.4f", sample_mean, exact);
		printf("# exact mean log density of %s\n", why);
		wdc_test_case("samples match the mixture", fabs(sample_mean - exact) < 0.4, why);
		flow_sample(&env, m, NULL, n_test, 77, &so, again);
		wdc_test_case("sample repeats for a seed",
					  memcmp(samples, again, sizeof(float) * n_test * DIM) == 0, "differs");

		/* transfer under the same (null) condition returns the row */
		st = flow_transfer(&env, m, test, NULL, NULL, 10, &so, again);
		for (r = 0; r < 10 * DIM; r++)
			if (fabs(again[r] - test[r]) > 0.02)
				st = WDC_ERR_INTERNAL;
		wdc_test_case("transfer to same condition is identity", st == WDC_OK,
					  "moved more than 0.02");
		free(samples);
		free(again);
	}

	flow_free(&env, m);
	free(train);
	free(test);
	free(logp);
}

static void
test_determinism_and_cancel(void)
{
	WdcEnv		env;
	WdcError	err;
	FlowTrainOptions o;
	FlowModel  *a = NULL;
	FlowModel  *b = NULL;
	FlowRng		rng;
	int			n = 1200;
	float	   *rows = malloc(sizeof(float) * n * DIM);
	WdcStatus	st;

	wdc_env_init_default(&env, &err);
	flow_rng_seed(&rng, 99);
	draw_mixture(&rng, n, rows);
	small_options(&o);
	o.hidden = 32;
	o.max_epochs = 3;
	o.calibration_rows = 0;

	st = flow_train(&env, rows, n, DIM, NULL, 0, NULL, NULL, 0, NULL, &o, NULL, NULL, &a);
	if (st == WDC_OK)
		st = flow_train(&env, rows, n, DIM, NULL, 0, NULL, NULL, 0, NULL, &o, NULL, NULL, &b);
	wdc_test_case("train twice succeeds", st == WDC_OK, err.message);
	if (st == WDC_OK)
		wdc_test_case("same seed gives identical weights",
					  a->n_params == b->n_params &&
					  memcmp(a->params, b->params, a->n_params * sizeof(float)) == 0,
					  "weights differ");
	flow_free(&env, b);
	b = NULL;
	o.seed = 12;
	st = flow_train(&env, rows, n, DIM, NULL, 0, NULL, NULL, 0, NULL, &o, NULL, NULL, &b);
	if (st == WDC_OK && a)
		wdc_test_case("other seed gives other weights",
					  memcmp(a->params, b->params, a->n_params * sizeof(float)) != 0,
					  "weights equal");
	flow_free(&env, a);
	flow_free(&env, b);

	env.interrupted = cancel_counter;
	cancel_after = 3;
	a = NULL;
	st = flow_train(&env, rows, n, DIM, NULL, 0, NULL, NULL, 0, NULL, &o, NULL, NULL, &a);
	wdc_test_case("interrupt cancels training",
				  st == WDC_ERR_CANCELED && a == NULL, err.message);
	env.interrupted = NULL;

	o.hidden = 3;
	st = flow_train(&env, rows, n, DIM, NULL, 0, NULL, NULL, 0, NULL, &o, NULL, NULL, &a);
	wdc_test_case("hidden below range rejected",
				  st == WDC_ERR_INVALID && strstr(err.message, "hidden") != NULL,
				  err.message);
	{
		int32_t    *cls = calloc(n, sizeof(int32_t));
		FlowConditions cond = {NULL, cls, NULL};

		o.hidden = 32;
		cls[7] = 3;
		st = flow_train(&env, rows, n, DIM, &cond, 0, NULL, "c", 3, NULL, &o, NULL, NULL, &a);
		wdc_test_case("class index out of range rejected",
					  st == WDC_ERR_DATA && strstr(err.message, "row 8") != NULL,
					  err.message);
		free(cls);
	}
	wdc_test_case("memory estimate grows with rows",
				  flow_train_memory(1000, 16, 0, 0, &o) < flow_train_memory(100000, 16, 0, 0, &o) &&
				  flow_train_memory(100000, 16, 0, 0, &o) > (size_t) 100000 * 16 * sizeof(float),
				  "estimate");
	free(rows);
}

/*
 * Accuracy of a least-squares linear probe (one-vs-rest, classes
 * n_classes) trained on the first half of feats [n][dim] and scored on the
 * second half.  Normal equations with a small ridge, solved by Gaussian
 * elimination.
 */
static double
probe_accuracy(const float *feats, const int32_t *label, int n, int dim,
			   int n_classes)
{
	int			p = dim + 1;
	double	   *ata = calloc((size_t) p * p, sizeof(double));
	double	   *atb = calloc((size_t) p * n_classes, sizeof(double));
	int			half = n / 2;
	int			correct = 0;
	int			r;
	int			i;
	int			j;
	int			c;

	for (r = 0; r < half; r++)
	{
		double		x[17];

		for (i = 0; i < dim; i++)
			x[i] = feats[r * dim + i];
		x[dim] = 1.0;
		for (i = 0; i < p; i++)
		{
			for (j = 0; j < p; j++)
				ata[i * p + j] += x[i] * x[j];
			for (c = 0; c < n_classes; c++)
				atb[i * n_classes + c] += x[i] * (label[r] == c ? 1.0 : 0.0);
		}
	}
	for (i = 0; i < p; i++)
		ata[i * p + i] += 1e-6 * half;
	/* Gauss-Jordan elimination on [ata | atb] */
	for (i = 0; i < p; i++)
	{
		double		piv = ata[i * p + i];

		for (j = 0; j < p; j++)
			ata[i * p + j] /= piv;
		for (c = 0; c < n_classes; c++)
			atb[i * n_classes + c] /= piv;
		for (r = 0; r < p; r++)
			if (r != i)
			{
				double		f = ata[r * p + i];

				for (j = 0; j < p; j++)
					ata[r * p + j] -= f * ata[i * p + j];
				for (c = 0; c < n_classes; c++)
					atb[r * n_classes + c] -= f * atb[i * n_classes + c];
			}
	}
	for (r = half; r < n; r++)
	{
		int			best = 0;
		double		best_score = -INFINITY;

		for (c = 0; c < n_classes; c++)
		{
			double		score = atb[dim * n_classes + c];

			for (i = 0; i < dim; i++)
				score += atb[i * n_classes + c] * feats[r * dim + i];
			if (score > best_score)
			{
				best_score = score;
				best = c;
			}
		}
		correct += best == label[r];
	}
	free(ata);
	free(atb);
	return (double) correct / (n - half);
}

/*
 * Class k in {0, 1, 2} shifts the first coordinate to 2.5 (k - 1); the
 * second coordinate is independent noise.  Conditional residuals should
 * lose the class, unconditional ones keep it.
 */
static void
test_conditioning_removes_class(void)
{
	WdcEnv		env;
	WdcError	err;
	FlowTrainOptions o;
	FlowSolveOptions so;
	FlowModel  *m = NULL;
	FlowRng		rng;
	int			n = 6000;
	int			n_probe = 2000;
	float	   *rows = malloc(sizeof(float) * n * DIM);
	int32_t    *cls = malloc(sizeof(int32_t) * n);
	float	   *resid = malloc(sizeof(float) * n_probe * DIM);
	const char *labels[3] = {"a", "b", "c"};
	FlowConditions cond = {0};
	double		acc_cond;
	double		acc_uncond;
	double		acc_raw;
	char		why[128];
	WdcStatus	st;
	int			r;

	wdc_env_init_default(&env, &err);
	flow_rng_seed(&rng, 5);
	for (r = 0; r < n; r++)
	{
		cls[r] = (int32_t) flow_rng_below(&rng, 3);
		rows[r * DIM] = (float) (2.5 * (cls[r] - 1) + 0.4 * flow_rng_normal(&rng));
		rows[r * DIM + 1] = (float) flow_rng_normal(&rng);
	}
	cond.class_index = cls;
	small_options(&o);
	o.max_epochs = 30;
	o.calibration_rows = 0;
	st = flow_train(&env, rows, n, DIM, &cond, 0, NULL, "class", 3, labels,
					&o, NULL, NULL, &m);
	wdc_test_case("train conditional flow", st == WDC_OK, err.message);
	if (st != WDC_OK)
		return;
	wdc_test_case("class labels kept",
				  m->n_classes == 3 && strcmp(m->class_labels[2], "c") == 0 &&
				  strcmp(m->class_name, "class") == 0, "labels");

	flow_solve_options_default(&so);
	acc_raw = probe_accuracy(rows, cls, n_probe, DIM, 3);
	st = flow_residual(&env, m, rows, &cond, n_probe, &so, resid);
	acc_cond = probe_accuracy(resid, cls, n_probe, DIM, 3);
	so.guidance = 0.0;
	if (st == WDC_OK)
		st = flow_residual(&env, m, rows, &cond, n_probe, &so, resid);
	acc_uncond = probe_accuracy(resid, cls, n_probe, DIM, 3);
	wdc_test_case("residuals computed", st == WDC_OK, err.message);
	snprintf(why, sizeof(why), "probe accuracy raw %.3f, unconditional %.3f, conditional %.3f",
			 acc_raw, acc_uncond, acc_cond);
	printf("# %s\n", why);
	wdc_test_case("conditional residual near chance", acc_cond < 0.45, why);
	wdc_test_case("unconditional residual keeps class", acc_uncond > 0.6, why);

	flow_free(&env, m);
	free(rows);
	free(cls);
	free(resid);
}

int
main(void)
{
	test_density_and_pvalue();
	test_determinism_and_cancel();
	test_conditioning_removes_class();
	return wdc_test_summary();
}
