/*
 * test_flow_net.c
 *	  GELU kernel accuracy, the network's forward-mode divergence against
 *	  central differences, batch independence and p-value lookup.
 */
#include "flow/flow_int.h"
#include "wdc_test.h"

#include <stdlib.h>
#include <string.h>

/* Accuracy of the kernel for the CPU level in use (see flow_gelu.c). */
static void
test_gelu_accuracy(int level)
{
	int			n = 400001;
	float	   *x = malloc(sizeof(float) * n);
	float	   *h = malloc(sizeof(float) * n);
	float	   *dh = malloc(sizeof(float) * n);
	double		rel3 = 0.0;
	double		rel5 = 0.0;
	double		abs_h = 0.0;
	double		abs_d = 0.0;
	char		why[160];
	int			i;

	for (i = 0; i < n; i++)
		x[i] = (float) (-10.0 + 20.0 * i / (n - 1));
	flow_gelu(x, h, dh, n);
	for (i = 0; i < n; i++)
	{
		double		want = flow_gelu_exact(x[i]);
		double		want_d = flow_gelu_deriv_exact(x[i]);
		double		err = fabs(h[i] - want);

		if (want != 0.0 && fabs(x[i]) <= 3.0 && err / fabs(want) > rel3)
			rel3 = err / fabs(want);
		if (want != 0.0 && fabs(x[i]) <= 5.0 && err / fabs(want) > rel5)
			rel5 = err / fabs(want);
		if (err > abs_h)
			abs_h = err;
		if (fabs(dh[i] - want_d) > abs_d)
			abs_d = fabs(dh[i] - want_d);
	}
	snprintf(why, sizeof(why), "level %d: relative %.2e (|x|<=3), %.2e (|x|<=5); absolute %.2e, derivative %.2e",
			 level, rel3, rel5, abs_h, abs_d);
	printf("# gelu %s\n", why);
	wdc_test_case("gelu relative error |x|<=3", rel3 < 1e-6, why);
	wdc_test_case("gelu relative error |x|<=5", rel5 < 2e-6, why);
	wdc_test_case("gelu absolute error", abs_h < 5e-7, why);
	wdc_test_case("gelu derivative error", abs_d < 5e-7, why);
	free(x);
	free(h);
	free(dh);
}

/* A conditional model with random weights large enough to bend the field. */
static FlowModel *
random_model(const WdcEnv *env, int d, int hidden, int layers, uint64_t seed)
{
	FlowModel  *m = NULL;
	FlowRng		rng;
	size_t		j;
	int			i;

	if (flow_model_alloc(env, d, hidden, layers, 2, 3, 3, &m) != WDC_OK)
		return NULL;
	flow_rng_seed(&rng, seed);
	for (j = 0; j < m->n_params; j++)
		m->params[j] = (float) (flow_rng_normal(&rng) * 0.4);
	for (i = 0; i < hidden; i++)
		m->b_film[i] += 1.0f;
	for (i = 0; i < d; i++)
	{
		m->mean[i] = 0.1 * i;
		m->std[i] = 1.0 + 0.05 * i;
	}
	for (i = 0; i < 2; i++)
	{
		m->cond_mean[i] = 1.0;
		m->cond_std[i] = 2.0;
	}
	return m;
}

static void
test_divergence_matches_differences(int d)
{
	WdcEnv		env;
	WdcError	err;
	FlowModel  *m;
	int			n = 5;
	float	   *x = malloc(sizeof(float) * n * d);
	float	   *v = malloc(sizeof(float) * n * d);
	float	   *vp = malloc(sizeof(float) * d);
	float	   *vm = malloc(sizeof(float) * d);
	double		div[5];
	float		numeric[10] = {0.5f, 2.0f, -1.0f, 0.0f, 3.0f, 1.0f, 0.0f, 0.0f, 1.0f, 1.0f};
	int32_t		cls[5] = {0, 2, 1, -1, 1};
	FlowConditions cond = {numeric, cls, NULL};
	FlowRng		rng;
	double		worst = 0.0;
	char		name[64];
	char		why[128];
	int			r;
	int			i;

	wdc_env_init_default(&env, &err);
	m = random_model(&env, d, 32, 3, 77);
	flow_rng_seed(&rng, 4);
	for (i = 0; i < n * d; i++)
		x[i] = (float) flow_rng_normal(&rng);
	flow_velocity(&env, m, x, 0.3, &cond, n, v, div);
	for (r = 0; r < n; r++)
	{
		double		fd = 0.0;
		FlowConditions one = {numeric + 2 * r, cls + r, NULL};

		for (i = 0; i < d; i++)
		{
			float		keep = x[r * d + i];
			float		step = 1e-2f;

			x[r * d + i] = keep + step;
			flow_velocity(&env, m, x + r * d, 0.3, &one, 1, vp, NULL);
			x[r * d + i] = keep - step;
			flow_velocity(&env, m, x + r * d, 0.3, &one, 1, vm, NULL);
			x[r * d + i] = keep;
			fd += ((double) vp[i] - vm[i]) / (2.0 * step);
		}
		if (fabs(fd - div[r]) / (1.0 + fabs(fd)) > worst)
			worst = fabs(fd - div[r]) / (1.0 + fabs(fd));
	}
	snprintf(name, sizeof(name), "divergence d=%d matches differences", d);
	snprintf(why, sizeof(why), "worst relative difference %.2e", worst);
	wdc_test_case(name, worst < 2e-3, why);
	flow_free(&env, m);
	free(x);
	free(v);
	free(vp);
	free(vm);
}

/* A row's velocity does not depend on the rows batched with it. */
static void
test_batch_independence(void)
{
	WdcEnv		env;
	WdcError	err;
	int			d = 8;
	int			n = 300;			/* more than one batch */
	FlowModel  *m;
	float	   *x = malloc(sizeof(float) * n * d);
	float	   *v = malloc(sizeof(float) * n * d);
	float		one[8];
	double	   *div = malloc(sizeof(double) * n);
	double		div_one;
	FlowRng		rng;
	double		worst = 0.0;
	int			r;
	int			i;

	wdc_env_init_default(&env, &err);
	m = random_model(&env, d, 16, 2, 8);
	flow_rng_seed(&rng, 5);
	for (i = 0; i < n * d; i++)
		x[i] = (float) flow_rng_normal(&rng);
	flow_velocity(&env, m, x, 0.7, NULL, n, v, div);
	for (r = 0; r < n; r += 37)
	{
		flow_velocity(&env, m, x + r * d, 0.7, NULL, 1, one, &div_one);
		for (i = 0; i < d; i++)
			worst = fmax(worst, fabs(one[i] - v[r * d + i]));
		worst = fmax(worst, fabs(div_one - div[r]));
	}
	wdc_test_case("velocity independent of batch", worst < 1e-4, "row differs");
	flow_free(&env, m);
	free(x);
	free(v);
	free(div);
}

/*
 * Backpropagated gradient against central differences of the loss, for
 * parameters drawn from every block (layers, FiLM, class embedding, null
 * condition).
 */
static void
test_gradient_matches_differences(void)
{
	WdcEnv		env;
	WdcError	err;
	FlowModel  *m;
	int			n = 6;
	int			d = 3;
	float		x_t[18];
	float		t[6] = {0.1f, 0.5f, 0.9f, 0.3f, 0.7f, 0.2f};
	float		target[18];
	float		numeric[12];
	int32_t		cls[6] = {0, 1, 2, 1, 0, 2};
	uint8_t		use_null[6] = {0, 0, 1, 0, 0, 1};
	float	   *grad;
	float	   *scratch;
	double		loss;
	FlowRng		rng;
	double		worst = 0.0;
	size_t		worst_at = 0;
	char		why[128];
	int			i;
	int			probe;

	wdc_env_init_default(&env, &err);
	m = random_model(&env, d, 8, 3, 21);
	flow_rng_seed(&rng, 22);
	for (i = 0; i < 18; i++)
	{
		x_t[i] = (float) flow_rng_normal(&rng);
		target[i] = (float) flow_rng_normal(&rng);
	}
	for (i = 0; i < 12; i++)
		numeric[i] = (float) flow_rng_normal(&rng);
	grad = malloc(sizeof(float) * m->n_params);
	scratch = malloc(sizeof(float) * m->n_params);
	flow_train_batch_gradient(&env, m, n, x_t, t, target, numeric, cls,
							  use_null, &loss, grad);

	for (probe = 0; probe < 300; probe++)
	{
		size_t		j = (size_t) flow_rng_below(&rng, m->n_params);
		float		keep = m->params[j];
		float		step = 1e-2f;
		double		up;
		double		down;
		double		fd;

		m->params[j] = keep + step;
		flow_train_batch_gradient(&env, m, n, x_t, t, target, numeric, cls,
								  use_null, &up, scratch);
		m->params[j] = keep - step;
		flow_train_batch_gradient(&env, m, n, x_t, t, target, numeric, cls,
								  use_null, &down, scratch);
		m->params[j] = keep;
		fd = (up - down) / (2.0 * step);
		if (fabs(fd - grad[j]) / (1e-2 + fabs(fd)) > worst)
		{
			worst = fabs(fd - grad[j]) / (1e-2 + fabs(fd));
			worst_at = j;
		}
	}
	snprintf(why, sizeof(why), "worst relative difference %.2e at parameter %zu",
			 worst, worst_at);
	printf("# gradient %s\n", why);
	wdc_test_case("gradient matches differences", worst < 2e-2, why);
	free(grad);
	free(scratch);
	flow_free(&env, m);
}

/* p-values against a hand-made calibration set. */
static void
test_pvalue(void)
{
	WdcEnv		env;
	WdcError	err;
	FlowModel  *m = NULL;
	double		cal[4] = {-10.0, -5.0, -2.0, 1.0};

	wdc_env_init_default(&env, &err);
	flow_model_alloc(&env, 2, 8, 1, 0, 0, 0, &m);
	wdc_test_case("pvalue without calibration is NaN", isnan(flow_pvalue(m, 0.0, 0)), "");
	m->calibration = malloc(sizeof(cal));
	memcpy(m->calibration, cal, sizeof(cal));
	m->n_calibration = 4;
	wdc_test_case("pvalue below all", flow_pvalue(m, -20.0, 0) == 0.0, "");
	wdc_test_case("pvalue in the middle", flow_pvalue(m, -3.0, 0) == 0.5, "");
	wdc_test_case("pvalue above all", flow_pvalue(m, 5.0, 1) == 1.0, "");
	flow_free(&env, m);
}

int
main(void)
{
	int			level;
	int			top = flow_gelu_force_level(2);

	for (level = 0; level <= top; level++)
		test_gelu_accuracy(flow_gelu_force_level(level));
	flow_gelu_force_level(top);
	test_divergence_matches_differences(4);
	test_divergence_matches_differences(17);
	test_batch_independence();
	test_gradient_matches_differences();
	test_pvalue();
	return wdc_test_summary();
}
