/*
 * test_flow_onnx.c
 *	  Flow ONNX round trip, rejection of foreign or damaged bytes, and
 *	  parity with PyTorch's evaluation of a committed exported flow.
 *
 * Parity fixture: test/fixtures/flow/parity.onnx is the model built by
 * parity_model() below, written by this program when WDC_FLOW_WRITE_ONNX
 * names a path; tools/flow_parity.py rebuilds the graph in PyTorch from the
 * ONNX initializers, evaluates velocity and exact divergence (autograd, in
 * double precision) at fixed points and writes parity.txt.
 */
#include "flow/flow_int.h"
#include "onnx.pb-c.h"
#include "wdc_test.h"

#include <stdlib.h>
#include <string.h>

#define PARITY_ONNX "test/fixtures/flow/parity.onnx"
#define PARITY_TXT "test/fixtures/flow/parity.txt"

/* Conditional model (2 numeric columns, 3 classes) with seeded weights. */
static FlowModel *
parity_model(const WdcEnv *env)
{
	FlowModel  *m = NULL;
	FlowRng		rng;
	static const char *const names[2] = {"flux", "redshift"};
	static const char *const labels[3] = {"spiral", "elliptical", "odd \"quoted\" label"};
	size_t		j;
	int			i;

	if (flow_model_alloc(env, 5, 32, 3, 2, 3, 3, &m) != WDC_OK)
		return NULL;
	flow_rng_seed(&rng, 2718);
	for (j = 0; j < m->n_params; j++)
		m->params[j] = (float) (0.3 * flow_rng_normal(&rng));
	for (i = 0; i < m->hidden; i++)
		m->b_film[i] += 1.0f;
	for (i = 0; i < m->d; i++)
	{
		m->mean[i] = 0.25 * i - 0.5;
		m->std[i] = 0.5 + 0.125 * i;
	}
	m->cond_mean[0] = 10.0;
	m->cond_std[0] = 4.0;
	m->cond_mean[1] = 0.3;
	m->cond_std[1] = 0.1;
	for (i = 0; i < 2; i++)
		m->numeric_names[i] = flow_strdup(env, names[i]);
	m->class_name = flow_strdup(env, "morphology");
	for (i = 0; i < 3; i++)
		m->class_labels[i] = flow_strdup(env, labels[i]);
	m->n_calibration = 3;
	m->calibration = malloc(3 * sizeof(double));
	m->calibration_cond = malloc(3 * sizeof(double));
	for (i = 0; i < 3; i++)
	{
		m->calibration[i] = -10.0 + i / 3.0;
		m->calibration_cond[i] = -9.0 + i / 7.0;
	}
	flow_train_options_default(&m->info.options);
	m->info.options.seed = UINT64_C(18446744073709551557);
	m->info.epochs = 12;
	m->info.val_loss = 0.125;
	m->info.train_loss = NAN;
	return m;
}

static void
test_round_trip(void)
{
	WdcEnv		env;
	WdcError	err;
	FlowModel  *m;
	FlowModel  *back = NULL;
	uint8_t    *bytes = NULL;
	size_t		len = 0;
	WdcStatus	st;
	const char *path = getenv("WDC_FLOW_WRITE_ONNX");

	wdc_env_init_default(&env, &err);
	m = parity_model(&env);
	st = flow_to_onnx(&env, m, &bytes, &len);
	wdc_test_case("write flow onnx", st == WDC_OK && len > 1000, err.message);
	if (path && st == WDC_OK)
	{
		FILE	   *f = fopen(path, "wb");

		if (f)
		{
			fwrite(bytes, 1, len, f);
			fclose(f);
		}
	}
	st = flow_from_onnx(&env, bytes, len, &back);
	wdc_test_case("read flow onnx back", st == WDC_OK, err.message);
	if (st != WDC_OK)
		return;
	wdc_test_case("weights round trip",
				  back->n_params == m->n_params &&
				  memcmp(back->params, m->params, m->n_params * sizeof(float)) == 0,
				  "weights differ");
	wdc_test_case("standardisation round trip",
				  memcmp(back->mean, m->mean, 5 * sizeof(double)) == 0 &&
				  memcmp(back->std, m->std, 5 * sizeof(double)) == 0 &&
				  back->cond_std[1] == m->cond_std[1], "values differ");
	wdc_test_case("names and labels round trip",
				  strcmp(back->numeric_names[1], "redshift") == 0 &&
				  strcmp(back->class_name, "morphology") == 0 &&
				  strcmp(back->class_labels[2], "odd \"quoted\" label") == 0,
				  back->class_labels[2]);
	wdc_test_case("calibration round trip",
				  back->n_calibration == 3 &&
				  back->calibration[1] == m->calibration[1] &&
				  back->calibration_cond[2] == m->calibration_cond[2], "values differ");
	wdc_test_case("training summary round trip",
				  back->info.epochs == 12 && back->info.val_loss == 0.125 &&
				  isnan(back->info.train_loss) &&
				  back->info.options.seed == m->info.options.seed &&
				  back->info.options.learning_rate == 3e-4, "values differ");

	/* damaged and foreign inputs */
	flow_free(&env, back);
	back = NULL;
	st = flow_from_onnx(&env, bytes, len / 2, &back);
	wdc_test_case("truncated bytes rejected",
				  st == WDC_ERR_CORRUPT && back == NULL, err.message);
	{
		Onnx__ModelProto plain = ONNX__MODEL_PROTO__INIT;
		uint8_t		buf[64];
		size_t		n;

		plain.has_ir_version = 1;
		plain.ir_version = 8;
		n = onnx__model_proto__pack(&plain, buf);
		st = flow_from_onnx(&env, buf, n, &back);
		wdc_test_case("non-flow onnx rejected",
					  st == WDC_ERR_UNSUPPORTED && strstr(err.message, "not a wdc flow") != NULL,
					  err.message);
	}
	free(bytes);
	flow_free(&env, m);
}

/* Unconditional models have no c input and constant FiLM tensors. */
static void
test_unconditional_round_trip(void)
{
	WdcEnv		env;
	WdcError	err;
	FlowModel  *m = NULL;
	FlowModel  *back = NULL;
	uint8_t    *bytes = NULL;
	size_t		len = 0;
	float		x[6] = {0.1f, -0.2f, 0.3f, 1.0f, 0.0f, -1.0f};
	float		v1[6];
	float		v2[6];
	double		div1[2];
	double		div2[2];
	FlowRng		rng;
	size_t		j;
	WdcStatus	st;

	wdc_env_init_default(&env, &err);
	flow_model_alloc(&env, 3, 16, 2, 0, 0, 0, &m);
	flow_rng_seed(&rng, 3);
	for (j = 0; j < m->n_params; j++)
		m->params[j] = (float) (0.3 * flow_rng_normal(&rng));
	for (j = 0; j < 3; j++)
	{
		m->mean[j] = 0;
		m->std[j] = 1;
	}
	st = flow_to_onnx(&env, m, &bytes, &len);
	if (st == WDC_OK)
		st = flow_from_onnx(&env, bytes, len, &back);
	wdc_test_case("unconditional round trip", st == WDC_OK, err.message);
	if (st == WDC_OK)
	{
		flow_velocity(&env, m, x, 0.4, NULL, 2, v1, div1);
		flow_velocity(&env, back, x, 0.4, NULL, 2, v2, div2);
		wdc_test_case("unconditional velocity unchanged",
					  memcmp(v1, v2, sizeof(v1)) == 0 && div1[1] == div2[1], "differs");
	}
	free(bytes);
	flow_free(&env, m);
	flow_free(&env, back);
}

/*
 * Compare with PyTorch.  parity.txt: first line "n d n_numeric", then per
 * row: t class numeric[n_numeric] x[d] v[d] div.
 */
static void
test_pytorch_parity(void)
{
	WdcEnv		env;
	WdcError	err;
	FlowModel  *m = NULL;
	FILE	   *f = fopen(PARITY_ONNX, "rb");
	FILE	   *txt = fopen(PARITY_TXT, "r");
	uint8_t    *bytes = NULL;
	long		len;
	int			n;
	int			d;
	int			nn;
	int			r;
	int			i;
	double		worst_v = 0.0;
	double		worst_div = 0.0;
	char		why[128];
	WdcStatus	st;

	wdc_env_init_default(&env, &err);
	if (f == NULL || txt == NULL)
	{
		wdc_test_case("parity fixtures present", 0, PARITY_ONNX " or " PARITY_TXT " missing");
		if (f)
			fclose(f);
		if (txt)
			fclose(txt);
		return;
	}
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	fseek(f, 0, SEEK_SET);
	bytes = malloc((size_t) len);
	if (fread(bytes, 1, (size_t) len, f) != (size_t) len)
		len = 0;
	fclose(f);
	st = flow_from_onnx(&env, bytes, (size_t) len, &m);
	wdc_test_case("parity model loads", st == WDC_OK, err.message);
	if (st != WDC_OK || fscanf(txt, "%d %d %d", &n, &d, &nn) != 3 || d != m->d ||
		nn != m->n_numeric)
	{
		wdc_test_case("parity fixture header", 0, "header does not match the model");
		fclose(txt);
		free(bytes);
		flow_free(&env, m);
		return;
	}
	for (r = 0; r < n; r++)
	{
		double		t;
		int			cls;
		float		numeric[8];
		float		x[8];
		float		v[8];
		double		want_v[8];
		double		want_div;
		double		div;
		int32_t		cls32;
		FlowConditions cond = {numeric, &cls32, NULL};
		int			ok = fscanf(txt, "%lf %d", &t, &cls) == 2;

		for (i = 0; i < nn; i++)
			ok &= fscanf(txt, "%f", &numeric[i]) == 1;
		for (i = 0; i < d; i++)
			ok &= fscanf(txt, "%f", &x[i]) == 1;
		for (i = 0; i < d; i++)
			ok &= fscanf(txt, "%lf", &want_v[i]) == 1;
		ok &= fscanf(txt, "%lf", &want_div) == 1;
		if (!ok)
		{
			wdc_test_case("parity fixture rows", 0, "short row");
			break;
		}
		cls32 = cls;
		flow_velocity(&env, m, x, t, &cond, 1, v, &div);
		for (i = 0; i < d; i++)
			worst_v = fmax(worst_v, fabs(v[i] - want_v[i]) / (1.0 + fabs(want_v[i])));
		worst_div = fmax(worst_div, fabs(div - want_div) / (1.0 + fabs(want_div)));
	}
	snprintf(why, sizeof(why), "%d rows: velocity %.2e, divergence %.2e", n, worst_v, worst_div);
	printf("# parity %s\n", why);
	wdc_test_case("velocity matches pytorch", worst_v < 1e-4, why);
	wdc_test_case("divergence matches pytorch", worst_div < 1e-4, why);
	fclose(txt);
	free(bytes);
	flow_free(&env, m);
}

int
main(void)
{
	test_round_trip();
	test_unconditional_round_trip();
	test_pytorch_parity();
	return wdc_test_summary();
}
