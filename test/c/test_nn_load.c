/*
 * test_nn_load.c
 *	  Loader and planner checks: initializer encodings, metadata, error
 *	  messages for unsupported and malformed models, constant folding of
 *	  shape chains, BatchNormalization folding, arena reuse, plans of one
 *	  output alone, and the floating-point control state around a run.
 */
#include "nn/nn_int.h"
#include "nn_build.h"
#include "wdc_test.h"

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

static WdcError err;
static WdcEnv env;

/* Load packed model bytes; returns the status, model in *m on success. */
static WdcStatus
load(NnBuild *b, WdcNnModel **m)
{
	size_t		len;
	uint8_t    *bytes = nnb_pack(b, &len);

	*m = NULL;
	return wdc_nn_load(&env, bytes, len, m);
}

/* Plan for a batch and run one float input; output 0 into y. */
static WdcStatus
plan_run(WdcNnModel *m, int64_t batch, const float *x, float *y,
		 WdcNnPlan **keep)
{
	WdcNnPlan  *p;
	const void *in[1] = {x};
	void	   *out[1] = {y};
	WdcStatus	st = wdc_nn_plan_create(&env, m, batch, &p);

	if (st != WDC_OK)
		return st;
	st = wdc_nn_run(&env, p, in, out);
	if (keep)
		*keep = p;
	else
		wdc_nn_plan_free(&env, p);
	return st;
}

static int
executed_steps(const WdcNnPlan *p)
{
	int			n = 0;

	for (int i = 0; i < p->n_steps; i++)
		n += !p->steps[i].skip;
	return n;
}

static uint16_t
float_to_half(float f)
{
	/* exact for the small integers and halves used below */
	uint32_t	x;
	uint32_t	sign,
				exp,
				man;

	memcpy(&x, &f, 4);
	sign = (x >> 16) & 0x8000;
	exp = (x >> 23) & 0xff;
	man = x & 0x7fffff;
	if (exp == 0)
		return (uint16_t) sign;
	return (uint16_t) (sign | ((exp - 112) << 10) | (man >> 13));
}

/* Initializers in every supported encoding, summed by Add nodes. */
static void
test_initializers(void)
{
	NnBuild		b;
	WdcNnModel *m;
	int64_t		d4[1] = {4};
	float		f[4] = {1, -2, 0.5f, 3};
	uint16_t	h[4],
				bf[4];
	double		dd[4] = {0.25, 0.125, -1, 2};
	float		x[4] = {10, 20, 30, 40},
				y[4];
	int			ok = 1;
	Onnx__TensorProto *t;

	for (int i = 0; i < 4; i++)
	{
		uint32_t	bits;

		h[i] = float_to_half(f[i]);
		memcpy(&bits, &f[i], 4);
		bf[i] = (uint16_t) (bits >> 16);
	}
	nnb_init(&b, 17);
	nnb_input(&b, "x", 1, d4);
	nnb_init_raw(&b, "h", 10, 1, d4, h, sizeof(h));
	nnb_init_raw(&b, "bf", 16, 1, d4, bf, sizeof(bf));
	nnb_init_raw(&b, "d", 11, 1, d4, dd, sizeof(dd));
	/* FLOAT16 in the typed field: values in int32_data */
	t = nnb_tensor(&b, "ht", 10, 1, d4);
	t->n_int32_data = 4;
	t->int32_data = nnb_alloc(&b, sizeof(int32_t) * 4);
	for (int i = 0; i < 4; i++)
		t->int32_data[i] = h[i];
	nnb_add_init(&b, t);
	t = nnb_tensor(&b, "dt", 11, 1, d4);
	t->n_double_data = 4;
	t->double_data = nnb_alloc(&b, sizeof(double) * 4);
	memcpy(t->double_data, dd, sizeof(dd));
	nnb_add_init(&b, t);
	nnb_node(&b, "Add", "a1", "x,h", "s1");
	nnb_node(&b, "Add", "a2", "s1,bf", "s2");
	nnb_node(&b, "Add", "a3", "s2,d", "s3");
	nnb_node(&b, "Add", "a4", "s3,ht", "s4");
	nnb_node(&b, "Add", "a5", "s4,dt", "y");
	nnb_output(&b, "y");
	nnb_meta(&b, "wdc kind", "encoder");
	nnb_meta(&b, "wdc output", "mu");

	if (load(&b, &m) != WDC_OK)
	{
		wdc_test_case("initializer encodings", 0, err.message);
		nnb_free(&b);
		return;
	}
	plan_run(m, 1, x, y, NULL);
	for (int i = 0; i < 4; i++)
		ok &= y[i] == (float) (x[i] + 3 * f[i] + 2 * dd[i]);
	wdc_test_case("initializer encodings", ok, "sum differs");
	wdc_test_case("metadata count", wdc_nn_metadata_count(m) == 2, NULL);
	wdc_test_case("metadata lookup",
				  wdc_nn_metadata_get(m, "wdc kind") &&
				  strcmp(wdc_nn_metadata_get(m, "wdc kind"), "encoder") == 0, NULL);
	wdc_test_case("metadata missing key",
				  wdc_nn_metadata_get(m, "absent") == NULL, NULL);
	wdc_test_case("input count", wdc_nn_input_count(m) == 1, NULL);
	wdc_test_case("opset", wdc_nn_opset(m) == 17, NULL);
	wdc_nn_free(&env, m);
	nnb_free(&b);
}

/* Build a model, expect load (or plan) to fail with status and text. */
static void
expect_error(const char *label, NnBuild *b, WdcStatus want, const char *text)
{
	WdcNnModel *m;
	WdcNnPlan  *p = NULL;
	WdcStatus	st = load(b, &m);
	char		why[600];

	if (st == WDC_OK)
	{
		st = wdc_nn_plan_create(&env, m, 2, &p);
		wdc_nn_plan_free(&env, p);
		wdc_nn_free(&env, m);
	}
	snprintf(why, sizeof(why), "status %d, message \"%s\"", st, err.message);
	wdc_test_case(label, st == want && strstr(err.message, text) != NULL, why);
	nnb_free(b);
}

static void
test_errors(void)
{
	NnBuild		b;
	int64_t		d2[2] = {-1, 4};
	int64_t		d4[1] = {4};
	float		w[16] = {0};
	Onnx__TensorProto *t;
	Onnx__NodeProto *nd;

	nnb_init(&b, 17);
	nnb_input(&b, "x", 2, d2);
	nnb_node(&b, "Frobnicate", "mystery", "x", "y");
	nnb_output(&b, "y");
	expect_error("unsupported operator named", &b, WDC_ERR_UNSUPPORTED,
				 "operator \"Frobnicate\" (node \"mystery\", opset 17)");

	nnb_init(&b, 17);
	nnb_input(&b, "x", 2, d2);
	nd = nnb_node(&b, "Resize", "up", "x,,sc", "y");
	nnb_attr_s(&b, nd, "mode", "cubic");
	nnb_init_f(&b, "sc", 1, (int64_t[]) {2}, (float[]) {1, 2});
	nnb_output(&b, "y");
	expect_error("unsupported attribute named", &b, WDC_ERR_UNSUPPORTED,
				 "operator \"Resize\" (node \"up\", opset 17): mode \"cubic\"");

	nnb_init(&b, 17);
	nnb_input(&b, "x", 2, d2);
	t = nnb_init_f(&b, "w", 1, d4, w);
	t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
	t->has_data_location = 1;
	nnb_node(&b, "Add", "a", "x,w", "y");
	nnb_output(&b, "y");
	expect_error("external data rejected", &b, WDC_ERR_UNSUPPORTED,
				 "tensor \"w\" keeps its data in an external file");

	nnb_init(&b, 17);
	nnb_input(&b, "x", 2, d2);
	t = nnb_init_f(&b, "w", 1, d4, w);
	t->n_float_data = 3;
	nnb_node(&b, "Add", "a", "x,w", "y");
	nnb_output(&b, "y");
	expect_error("wrong tensor size", &b, WDC_ERR_CORRUPT,
				 "tensor \"w\" has 3 values, expected 4");

	nnb_init(&b, 17);
	nnb_input(&b, "x", 2, d2);
	nnb_init_raw(&b, "w", 1, 1, d4, w, 15);
	nnb_node(&b, "Add", "a", "x,w", "y");
	nnb_output(&b, "y");
	expect_error("wrong raw data size", &b, WDC_ERR_CORRUPT,
				 "tensor \"w\" has 15 bytes of raw data, expected 16");

	nnb_init(&b, 17);
	nnb_input(&b, "x", 2, d2);
	t = nnb_tensor(&b, "w", 1, 1, (int64_t[]) {-4});
	t->n_float_data = 4;
	t->float_data = w;
	nnb_add_init(&b, t);
	nnb_node(&b, "Add", "a", "x,w", "y");
	nnb_output(&b, "y");
	expect_error("negative dimension", &b, WDC_ERR_CORRUPT,
				 "tensor \"w\" has invalid dimension -4");

	nnb_init(&b, 17);
	nnb_input(&b, "x", 2, d2);
	t = nnb_tensor(&b, "w", 1, 3, (int64_t[]) {1LL << 30, 1LL << 30, 1LL << 30});
	nnb_add_init(&b, t);
	nnb_node(&b, "Add", "a", "x,w", "y");
	nnb_output(&b, "y");
	expect_error("huge dimensions", &b, WDC_ERR_CORRUPT,
				 "has invalid dimension");

	nnb_init(&b, 17);
	nnb_input(&b, "x", 2, d2);
	nnb_node(&b, "Add", "a", "x,missing", "y");
	nnb_output(&b, "y");
	expect_error("missing initializer", &b, WDC_ERR_CORRUPT,
				 "tensor \"missing\" read by node \"a\" (Add) is not defined");

	nnb_init(&b, 17);
	nnb_input(&b, "x", 2, d2);
	nnb_node(&b, "Add", "a", "x,q", "p");
	nnb_node(&b, "Relu", "b", "p", "q");
	nnb_node(&b, "Relu", "c", "p", "y");
	nnb_output(&b, "y");
	expect_error("cycle", &b, WDC_ERR_CORRUPT, "graph has a cycle through node");

	nnb_init(&b, 17);
	nnb_input(&b, "x", 2, d2);
	nnb_node(&b, "Relu", "a", "x", "y");
	nnb_node(&b, "Relu", "b", "x", "y");
	nnb_output(&b, "y");
	expect_error("output defined twice", &b, WDC_ERR_CORRUPT,
				 "tensor \"y\" is defined more than once");

	nnb_init(&b, 17);
	nnb_input(&b, "x", 2, d2);
	nd = nnb_node(&b, "Reshape", "r", "x,s", "y");
	(void) nd;
	nnb_init_i64(&b, "s", 1, (int64_t[]) {2}, (int64_t[]) {3, -1});
	nnb_output(&b, "y");
	expect_error("reshape mismatch", &b, WDC_ERR_CORRUPT,
				 "cannot infer the -1 dimension");

	nnb_init(&b, 17);
	nnb_input(&b, "x", 2, d2);
	nnb_node(&b, "MatMul", "mm", "x,w", "y");
	nnb_init_f(&b, "w", 2, (int64_t[]) {3, 2}, w);
	nnb_output(&b, "y");
	expect_error("matmul mismatch", &b, WDC_ERR_CORRUPT,
				 "inner dimensions 4 and 3 differ");
}

/* Every prefix of a valid model and some corrupted copies: never a crash. */
static void
test_truncated(void)
{
	NnBuild		b;
	int64_t		d4[4] = {-1, 1, 4, 4};
	float		w[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
	size_t		len;
	uint8_t    *bytes;
	int			loaded = 0,
				failed = 0;
	Onnx__NodeProto *nd;

	nnb_init(&b, 17);
	nnb_input(&b, "x", 4, d4);
	nnb_init_f(&b, "w", 4, (int64_t[]) {1, 1, 3, 3}, w);
	nd = nnb_node(&b, "Conv", "c", "x,w", "y");
	nnb_attr_ints(&b, nd, "pads", 4, (int64_t[]) {1, 1, 1, 1});
	nnb_output(&b, "y");
	bytes = nnb_pack(&b, &len);
	for (size_t cut = 0; cut < len; cut++)
	{
		WdcNnModel *m;
		WdcNnPlan  *p;

		if (wdc_nn_load(&env, bytes, cut, &m) == WDC_OK)
		{
			loaded++;
			if (wdc_nn_plan_create(&env, m, 2, &p) == WDC_OK)
				wdc_nn_plan_free(&env, p);
			wdc_nn_free(&env, m);
		}
		else
			failed++;
	}
	wdc_test_case("truncated models rejected", failed > 0 && loaded + failed == (int) len,
				  NULL);

	/* flip each byte in turn */
	for (size_t i = 0; i < len; i++)
	{
		uint8_t    *copy = malloc(len);
		WdcNnModel *m;
		WdcNnPlan  *p;

		memcpy(copy, bytes, len);
		copy[i] ^= 0xa5;
		if (wdc_nn_load(&env, copy, len, &m) == WDC_OK)
		{
			if (wdc_nn_plan_create(&env, m, 2, &p) == WDC_OK)
				wdc_nn_plan_free(&env, p);
			wdc_nn_free(&env, m);
		}
		free(copy);
	}
	wdc_test_case("corrupted bytes survive", 1, NULL);
	nnb_free(&b);
}

/*
 * The pattern exporters emit for a dynamic batch: Reshape(x, Concat(
 * Unsqueeze(Gather(Shape(x), 0)), [-1])).  Everything but the Reshape must
 * fold, for any batch size.
 */
static void
test_shape_chain(void)
{
	NnBuild		b;
	WdcNnModel *m;
	int64_t		d3[3] = {-1, 4, 2};
	Onnx__NodeProto *nd;

	nnb_init(&b, 13);
	nnb_input(&b, "x", 3, d3);
	nnb_node(&b, "Shape", "shape", "x", "s");
	nnb_init_i64(&b, "zero", 0, NULL, (int64_t[]) {0});
	nd = nnb_node(&b, "Gather", "gather", "s,zero", "n");
	nnb_attr_i(&b, nd, "axis", 0);
	nnb_init_i64(&b, "ax0", 1, (int64_t[]) {1}, (int64_t[]) {0});
	nnb_node(&b, "Unsqueeze", "unsqueeze", "n,ax0", "n1");
	nnb_init_i64(&b, "minus1", 1, (int64_t[]) {1}, (int64_t[]) {-1});
	nd = nnb_node(&b, "Concat", "concat", "n1,minus1", "shape2");
	nnb_attr_i(&b, nd, "axis", 0);
	nnb_node(&b, "Reshape", "reshape", "x,shape2", "y");
	nnb_output(&b, "y");
	if (load(&b, &m) != WDC_OK)
	{
		wdc_test_case("shape chain loads", 0, err.message);
		nnb_free(&b);
		return;
	}
	for (int64_t batch = 3; batch <= 5; batch += 2)
	{
		float		x[40],
					y[40];
		WdcNnPlan  *p = NULL;
		char		label[64];
		int			ok;

		for (int i = 0; i < 40; i++)
			x[i] = (float) i;
		ok = plan_run(m, batch, x, y, &p) == WDC_OK;
		ok = ok && wdc_nn_plan_output(p, 0)->rank == 2 &&
			wdc_nn_plan_output(p, 0)->dims[0] == batch &&
			wdc_nn_plan_output(p, 0)->dims[1] == 8 &&
			memcmp(x, y, sizeof(float) * batch * 8) == 0;
		snprintf(label, sizeof(label), "shape chain batch %lld", (long long) batch);
		wdc_test_case(label, ok, err.message);
		snprintf(label, sizeof(label), "shape chain folded batch %lld", (long long) batch);
		wdc_test_case(label, p && executed_steps(p) == 1, "more than the Reshape runs");
		wdc_nn_plan_free(&env, p);
	}
	wdc_nn_free(&env, m);
	nnb_free(&b);
}

/*
 * Conv + BatchNormalization + Relu: the BatchNormalization step folds away
 * and the result equals the unfolded graph (conv output also exported,
 * which blocks folding).
 */
static void
build_conv_bn(NnBuild *b, int export_conv)
{
	int64_t		d4[4] = {-1, 2, 5, 5};
	float		w[3 * 2 * 9],
				bias[3] = {0.1f, -0.2f, 0.3f};
	float		g[3] = {1.5f, 0.5f, -1},
				be[3] = {0.2f, 0, -0.1f},
				mu[3] = {0.3f, -0.1f, 0.05f},
				var[3] = {2, 0.5f, 1};
	int64_t		d3[1] = {3};
	Onnx__NodeProto *nd;

	for (int i = 0; i < 54; i++)
		w[i] = (float) ((i * 37) % 11) / 11.0f - 0.5f;
	nnb_init(b, 15);
	nnb_input(b, "x", 4, d4);
	nnb_init_f(b, "w", 4, (int64_t[]) {3, 2, 3, 3}, w);
	nnb_init_f(b, "cb", 1, d3, bias);
	nnb_init_f(b, "g", 1, d3, g);
	nnb_init_f(b, "be", 1, d3, be);
	nnb_init_f(b, "mu", 1, d3, mu);
	nnb_init_f(b, "var", 1, d3, var);
	nd = nnb_node(b, "Conv", "conv", "x,w,cb", "c");
	nnb_attr_ints(b, nd, "pads", 4, (int64_t[]) {1, 1, 1, 1});
	nnb_node(b, "BatchNormalization", "bn", "c,g,be,mu,var", "n");
	nnb_node(b, "Relu", "relu", "n", "y");
	nnb_output(b, "y");
	if (export_conv)
		nnb_output(b, "c");
}

static void
test_bn_fold(void)
{
	NnBuild		b1,
				b2;
	WdcNnModel *m1,
			   *m2;
	WdcNnPlan  *p1 = NULL,
			   *p2 = NULL;
	float		x[2 * 2 * 25],
				y1[150],
				y2[150],
				c2[150];
	int			ok = 1;

	for (int i = 0; i < 100; i++)
		x[i] = (float) ((i * 13) % 17) / 17.0f - 0.4f;
	build_conv_bn(&b1, 0);
	build_conv_bn(&b2, 1);
	if (load(&b1, &m1) != WDC_OK || load(&b2, &m2) != WDC_OK)
	{
		wdc_test_case("batchnorm fold loads", 0, err.message);
		return;
	}
	plan_run(m1, 2, x, y1, &p1);
	{
		const void *in[1] = {x};
		void	   *out[2] = {y2, c2};

		wdc_nn_plan_create(&env, m2, 2, &p2);
		wdc_nn_run(&env, p2, in, out);
	}
	for (int i = 0; i < 150; i++)
		ok &= wdc_close(y1[i], y2[i], 1e-5, 1e-6);
	/* Relu fuses into the Conv too, once BatchNormalization is gone */
	wdc_test_case("batchnorm folded into conv", executed_steps(p1) == 1,
				  "BatchNormalization or Relu still runs");
	wdc_test_case("batchnorm kept when conv exported", executed_steps(p2) == 3, NULL);
	wdc_test_case("batchnorm fold result", ok, "folded and unfolded outputs differ");
	wdc_nn_plan_free(&env, p1);
	wdc_nn_plan_free(&env, p2);
	wdc_nn_free(&env, m1);
	wdc_nn_free(&env, m2);
	nnb_free(&b1);
	nnb_free(&b2);
}

/* Gemm + BatchNormalization (BatchNorm1d after Linear) folds too. */
static void
test_gemm_bn_fold(void)
{
	NnBuild		b;
	WdcNnModel *m;
	WdcNnPlan  *p = NULL;
	int64_t		d2[2] = {-1, 3};
	float		w[6] = {1, 2, 3, -1, 0.5f, 2},
				cb[2] = {0.5f, -1};
	float		g[2] = {2, 0.5f},
				be[2] = {1, 0},
				mu[2] = {0.5f, 1},
				var[2] = {4, 0.25f};
	float		x[6] = {1, 0, -1, 2, 1, 0.5f},
				y[4];
	int			ok = 1;
	Onnx__NodeProto *nd;

	nnb_init(&b, 15);
	nnb_input(&b, "x", 2, d2);
	nnb_init_f(&b, "w", 2, (int64_t[]) {2, 3}, w);
	nnb_init_f(&b, "cb", 1, (int64_t[]) {2}, cb);
	nnb_init_f(&b, "g", 1, (int64_t[]) {2}, g);
	nnb_init_f(&b, "be", 1, (int64_t[]) {2}, be);
	nnb_init_f(&b, "mu", 1, (int64_t[]) {2}, mu);
	nnb_init_f(&b, "var", 1, (int64_t[]) {2}, var);
	nd = nnb_node(&b, "Gemm", "fc", "x,w,cb", "h");
	nnb_attr_i(&b, nd, "transB", 1);
	nd = nnb_node(&b, "BatchNormalization", "bn", "h,g,be,mu,var", "y");
	nnb_attr_f(&b, nd, "epsilon", 0);
	nnb_output(&b, "y");
	load(&b, &m);
	plan_run(m, 2, x, y, &p);
	for (int r = 0; r < 2; r++)
		for (int c = 0; c < 2; c++)
		{
			float		h = cb[c];

			for (int k = 0; k < 3; k++)
				h += x[r * 3 + k] * w[c * 3 + k];
			ok &= wdc_close(y[r * 2 + c], g[c] * (h - mu[c]) / sqrtf(var[c]) + be[c],
							1e-5, 1e-6);
		}
	wdc_test_case("batchnorm folded into gemm", p && executed_steps(p) == 1, NULL);
	wdc_test_case("gemm batchnorm result", ok, "values differ");
	wdc_nn_plan_free(&env, p);
	wdc_nn_free(&env, m);
	nnb_free(&b);
}

/* Neg and Relu alternating six times each, as the arena test's graph. */
static float
relu_chain(float v)
{
	for (int l = 0; l < 12; l++)
		v = l % 2 ? fmaxf(0, v) : -v;
	return v;
}

/* A chain of 12 layers needs two buffers plus the input, not twelve. */
static void
test_arena_reuse(void)
{
	NnBuild		b;
	WdcNnModel *m;
	WdcNnPlan  *p = NULL;
	int64_t		d2[2] = {-1, 1000};
	char		in[16],
				out[16];
	float	   *x = malloc(sizeof(float) * 4000),
			   *y = malloc(sizeof(float) * 4000);
	int			ok = 1;

	nnb_init(&b, 17);
	nnb_input(&b, "x", 2, d2);
	for (int i = 0; i < 12; i++)
	{
		snprintf(in, sizeof(in), i ? "t%d" : "x", i);
		snprintf(out, sizeof(out), i == 11 ? "y" : "t%d", i + 1);
		nnb_node(&b, i % 2 ? "Relu" : "Neg", in, in, out);
	}
	nnb_output(&b, "y");
	load(&b, &m);
	for (int i = 0; i < 4000; i++)
		x[i] = (float) (i % 7) - 3;
	plan_run(m, 4, x, y, &p);
	for (int i = 0; i < 4000; i++)
		ok &= y[i] == relu_chain(x[i]);
	wdc_test_case("arena reuses buffers",
				  p && wdc_nn_plan_arena_bytes(p) <= 3 * 16000 + 256,
				  "arena larger than three buffers");

	/* a second run with other data must not see the first */
	{
		float		y2[4000];
		const void *ins[1] = {x};
		void	   *outs[1] = {y2};

		for (int i = 0; i < 4000; i++)
			x[i] = -x[i];
		wdc_nn_run(&env, p, ins, outs);
		for (int i = 0; i < 4000; i++)
			ok &= y2[i] == relu_chain(x[i]);
	}
	wdc_test_case("plan reused across runs", ok, "a run differs from the reference");
	wdc_nn_plan_free(&env, p);
	wdc_nn_free(&env, m);
	nnb_free(&b);
	free(x);
	free(y);
}

/*
 * A trunk with two heads, like a VAE encoder's mean and log-variance:
 * planned for one output alone, the other head's steps are left out, the
 * chosen output matches the full plan and the other output is not
 * written.
 */
static void
test_only_output(void)
{
	NnBuild		b;
	WdcNnModel *m;
	WdcNnPlan  *full = NULL,
			   *one[2] = {NULL, NULL},
			   *bad = NULL;
	WdcNnPlanOptions o;
	int64_t		d2[2] = {-1, 4};
	float		x[8] = {1, -2, 3, -4, 0.5f, 2, -1, 7};
	float		yf[2][8],
				y1[2][8];
	int			ok = 1,
				fewer = 1;
	char		why[300];
	WdcStatus	st;

	nnb_init(&b, 17);
	nnb_input(&b, "x", 2, d2);
	nnb_node(&b, "Relu", "trunk", "x", "h");
	nnb_node(&b, "Neg", "head_a", "h", "a");
	nnb_node(&b, "Exp", "head_b1", "h", "b1");
	nnb_node(&b, "Neg", "head_b2", "b1", "b");
	nnb_output(&b, "a");
	nnb_output(&b, "b");
	load(&b, &m);

	memset(&o, 0, sizeof(o));
	o.batch = 2;
	st = wdc_nn_plan_create_ex(&env, m, &o, &full);
	if (st == WDC_OK)
	{
		const void *in[1] = {x};
		void	   *out[2] = {yf[0], yf[1]};

		st = wdc_nn_run(&env, full, in, out);
	}
	for (int k = 0; k < 2 && st == WDC_OK; k++)
	{
		const void *in[1] = {x};
		void	   *out[2] = {y1[0], y1[1]};

		for (int i = 0; i < 8; i++)
			y1[0][i] = y1[1][i] = -99.0f;
		o.only_output = k + 1;
		st = wdc_nn_plan_create_ex(&env, m, &o, &one[k]);
		if (st == WDC_OK)
			st = wdc_nn_run(&env, one[k], in, out);
		for (int i = 0; i < 8 && st == WDC_OK; i++)
			ok &= y1[k][i] == yf[k][i] && y1[1 - k][i] == -99.0f;
	}
	snprintf(why, sizeof(why), "status %d or values differ", (int) st);
	wdc_test_case("one output alone matches the full plan, other output untouched",
				  st == WDC_OK && ok, why);
	if (st == WDC_OK)
		fewer = executed_steps(full) == 4 && executed_steps(one[0]) == 2 &&
			executed_steps(one[1]) == 3;
	snprintf(why, sizeof(why), "%d, %d and %d steps",
			 full ? executed_steps(full) : -1,
			 one[0] ? executed_steps(one[0]) : -1,
			 one[1] ? executed_steps(one[1]) : -1);
	wdc_test_case("steps the chosen output does not need are left out",
				  st == WDC_OK && fewer, why);
	o.only_output = 3;
	st = wdc_nn_plan_create_ex(&env, m, &o, &bad);
	snprintf(why, sizeof(why), "status %d: %s", (int) st, err.message);
	wdc_test_case("an output number past the graph's outputs is an error",
				  st == WDC_ERR_INVALID && bad == NULL &&
				  strstr(err.message, "output 3 is out of range (1 to 2)") != NULL,
				  why);
	wdc_nn_plan_free(&env, full);
	wdc_nn_plan_free(&env, one[0]);
	wdc_nn_plan_free(&env, one[1]);
	wdc_nn_free(&env, m);
	nnb_free(&b);
}

static int
always_interrupted(void *state)
{
	return 1;
}

static void
test_run_state(void)
{
	NnBuild		b;
	WdcNnModel *m;
	WdcNnPlan  *p = NULL;
	int64_t		d2[2] = {-1, 4};
	float		x[4] = {1e-39f, 1, 2, 3},
				y[4];
	const void *in[1] = {x};
	void	   *out[1] = {y};

	nnb_init(&b, 17);
	nnb_input(&b, "x", 2, d2);
	nnb_node(&b, "Relu", "r", "x", "y");
	nnb_output(&b, "y");
	load(&b, &m);
	wdc_nn_plan_create(&env, m, 1, &p);
#if defined(__x86_64__)
	{
		unsigned	before = _mm_getcsr();

		wdc_nn_run(&env, p, in, out);
		wdc_test_case("mxcsr restored after run", _mm_getcsr() == before, NULL);
	}
#endif
	{
		WdcEnv		e2 = env;

		e2.interrupted = always_interrupted;
		wdc_test_case("interrupt cancels run",
					  wdc_nn_run(&e2, p, in, out) == WDC_ERR_CANCELED, NULL);
	}
	wdc_test_case("missing input rejected",
				  wdc_nn_run(&env, p, NULL, out) == WDC_ERR_INVALID, NULL);
	wdc_nn_plan_free(&env, p);
	wdc_nn_free(&env, m);
	nnb_free(&b);
}

/*
 * Gelu and GroupNormalization have no node tests in ONNX 1.12: compare
 * with their formulas, and Gelu with the Erf pattern exporters emit.
 */
static void
test_gelu_groupnorm(void)
{
	NnBuild		b;
	WdcNnModel *m;
	WdcNnPlan  *p = NULL;
	int64_t		d4[4] = {-1, 4, 2, 3};
	float		x[48],
				y[3][48];
	void	   *out[3] = {y[0], y[1], y[2]};
	const void *in[1] = {x};
	float		g[2] = {1.5f, -0.5f},
				be[2] = {0.25f, 1};
	int			ok_gelu = 1,
				ok_pattern = 1,
				ok_norm = 1;
	Onnx__NodeProto *nd;

	for (int i = 0; i < 48; i++)
		x[i] = (float) ((i * 29) % 23) / 5.0f - 2.2f;
	nnb_init(&b, 18);
	nnb_input(&b, "x", 4, d4);
	nnb_node(&b, "Gelu", "gelu", "x", "y_gelu");
	/* 0.5 * x * (1 + erf(x / sqrt(2))), as torch.onnx.export writes it */
	nnb_init_f(&b, "sqrt2", 0, NULL, (float[]) {1.41421356f});
	nnb_init_f(&b, "one", 0, NULL, (float[]) {1});
	nnb_init_f(&b, "half", 0, NULL, (float[]) {0.5f});
	nnb_node(&b, "Div", "div", "x,sqrt2", "t1");
	nnb_node(&b, "Erf", "erf", "t1", "t2");
	nnb_node(&b, "Add", "add", "t2,one", "t3");
	nnb_node(&b, "Mul", "mul", "x,t3", "t4");
	nnb_node(&b, "Mul", "mul2", "t4,half", "y_pattern");
	nnb_init_f(&b, "g", 1, (int64_t[]) {2}, g);
	nnb_init_f(&b, "be", 1, (int64_t[]) {2}, be);
	nd = nnb_node(&b, "GroupNormalization", "gn", "x,g,be", "y_norm");
	nnb_attr_i(&b, nd, "num_groups", 2);
	nnb_output(&b, "y_gelu");
	nnb_output(&b, "y_pattern");
	nnb_output(&b, "y_norm");
	if (load(&b, &m) != WDC_OK || wdc_nn_plan_create(&env, m, 2, &p) != WDC_OK ||
		wdc_nn_run(&env, p, in, out) != WDC_OK)
	{
		wdc_test_case("gelu and group norm run", 0, err.message);
		nnb_free(&b);
		return;
	}
	for (int i = 0; i < 48; i++)
	{
		double		want = 0.5 * x[i] * (1 + erf(x[i] / sqrt(2.0)));

		ok_gelu &= wdc_close(y[0][i], want, 1e-5, 1e-6);
		ok_pattern &= wdc_close(y[1][i], want, 1e-5, 1e-6);
	}
	/* two groups of 2 channels x 6 pixels per image */
	for (int grp = 0; grp < 4; grp++)
	{
		double		mean = 0,
					var = 0;

		for (int i = 0; i < 12; i++)
			mean += x[grp * 12 + i] / 12.0;
		for (int i = 0; i < 12; i++)
			var += (x[grp * 12 + i] - mean) * (x[grp * 12 + i] - mean) / 12.0;
		for (int i = 0; i < 12; i++)
		{
			double		want = g[grp % 2] * (x[grp * 12 + i] - mean) /
				sqrt(var + 1e-5) + be[grp % 2];

			ok_norm &= wdc_close(y[2][grp * 12 + i], want, 1e-4, 1e-5);
		}
	}
	wdc_test_case("gelu matches formula", ok_gelu, NULL);
	wdc_test_case("erf gelu pattern matches", ok_pattern, NULL);
	wdc_test_case("group norm matches formula", ok_norm, NULL);
	wdc_nn_plan_free(&env, p);
	wdc_nn_free(&env, m);
	nnb_free(&b);
}

int
main(void)
{
	wdc_nn_init();
	wdc_env_init_default(&env, &err);
	test_initializers();
	test_errors();
	test_truncated();
	test_shape_chain();
	test_bn_fold();
	test_gemm_bn_fold();
	test_arena_reuse();
	test_only_output();
	test_run_state();
	test_gelu_groupnorm();
	return wdc_test_summary();
}
