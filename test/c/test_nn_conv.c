/*
 * test_nn_conv.c
 *	  Check the runtime's 2-D Conv against a direct convolution in double
 *	  precision on many geometries.
 *
 * Conv has two kernels.  The im2col lowering has several paths: strides
 * use phase planes, a tap moves as one block when its plane is as wide as
 * the output and row by row otherwise, small outputs put several images in
 * one GEMM, and 1x1 convolutions read the input directly.  The direct
 * kernel (AVX-512 or AVX2) copies tap planes, shares tiles between images
 * and masks the last vector of each image.  The ONNX node tests cover
 * few geometries, so this test sweeps fixed "same" geometries that take
 * the block path and a few hundred seeded random ones (kernel 1 to 5,
 * stride 1 to 3, dilation 1 to 2, asymmetric pads, groups, batches up to
 * 40), once per kernel that this CPU can run, forced with nn_conv_kernel.
 * Each output must satisfy |y - ref| <= 1e-5 * (1 + |ref|) +
 * 1e-5 * max|ref|.
 */
#include "nn/nn.h"
#include "nn/nn_int.h"
#include "nn_build.h"
#include "wdc_test.h"

#include <math.h>

typedef struct ConvGeom
{
	int64_t		n,
				c,
				h,
				w,
				m,
				group,
				kh,
				kw,
				sh,
				sw,
				dh,
				dw,
				pt,
				pl,
				pb,
				pr;
} ConvGeom;

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

/* xorshift64: reproducible across platforms */
static uint64_t
next_u64(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static int64_t
pick(int64_t lo, int64_t hi)
{
	return lo + (int64_t) (next_u64() % (uint64_t) (hi - lo + 1));
}

static float
signed_unit(void)
{
	return (float) ((double) (next_u64() >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* Compute the direct convolution in double into y[n][m][oh][ow]. */
static void
reference(const ConvGeom *g, int64_t oh_n, int64_t ow_n, const float *x,
		  const float *w, const float *bias, double *y)
{
	int64_t		cg = g->c / g->group,
				mg = g->m / g->group;

	for (int64_t n = 0; n < g->n; n++)
		for (int64_t m = 0; m < g->m; m++)
			for (int64_t oh = 0; oh < oh_n; oh++)
				for (int64_t ow = 0; ow < ow_n; ow++)
				{
					double		s = bias[m];
					int64_t		grp = m / mg;

					for (int64_t ci = 0; ci < cg; ci++)
						for (int64_t ki = 0; ki < g->kh; ki++)
							for (int64_t kj = 0; kj < g->kw; kj++)
							{
								int64_t		ih = oh * g->sh - g->pt + ki * g->dh;
								int64_t		iw = ow * g->sw - g->pl + kj * g->dw;
								int64_t		ch = grp * cg + ci;

								if (ih < 0 || ih >= g->h || iw < 0 || iw >= g->w)
									continue;
								s += (double) w[((m * cg + ci) * g->kh + ki) * g->kw + kj] *
									x[((n * g->c + ch) * g->h + ih) * g->w + iw];
							}
					y[((n * g->m + m) * oh_n + oh) * ow_n + ow] = s;
				}
}

/* Number of planned Conv steps that run the direct kernel. */
static int
direct_steps(const WdcNnPlan *plan)
{
	int			n = 0;

	for (int i = 0; i < plan->n_steps; i++)
		if (!plan->steps[i].skip && plan->steps[i].direct)
			n++;
	return n;
}

/* Plans run by run_geom whose Conv ran the Winograd kernel. */
static int	wino_plans = 0;

static int
wino_steps(const WdcNnPlan *plan)
{
	int			n = 0;

	for (int i = 0; i < plan->n_steps; i++)
		if (!plan->steps[i].skip && plan->steps[i].direct &&
			nn_conv_direct_winograd(plan->steps[i].direct))
			n++;
	return n;
}

static void
run_geom(const ConvGeom *g, const char *label, int *bad, int *direct,
		 char *why, size_t whylen)
{
	NnBuild		b;
	WdcError	err;
	WdcEnv		env;
	WdcNnModel *model = NULL;
	WdcNnPlan  *plan = NULL;
	int64_t		xdims[4] = {g->n, g->c, g->h, g->w};
	int64_t		wdims[4] = {g->m, g->c / g->group, g->kh, g->kw};
	int64_t		bdims[1] = {g->m};
	int64_t		v[4];
	int64_t		oh_n = (g->h + g->pt + g->pb - ((g->kh - 1) * g->dh + 1)) / g->sh + 1;
	int64_t		ow_n = (g->w + g->pl + g->pr - ((g->kw - 1) * g->dw + 1)) / g->sw + 1;
	size_t		nx = (size_t) (g->n * g->c * g->h * g->w),
				nw = (size_t) (wdims[0] * wdims[1] * g->kh * g->kw),
				ny = (size_t) (g->n * g->m * oh_n * ow_n);
	float	   *x = malloc(nx * sizeof(float)),
			   *w = malloc(nw * sizeof(float)),
			   *bias = malloc((size_t) g->m * sizeof(float)),
			   *y = malloc(ny * sizeof(float));
	double	   *ref = malloc(ny * sizeof(double));
	Onnx__NodeProto *nd;
	uint8_t    *bytes;
	size_t		len;

	for (size_t i = 0; i < nx; i++)
		x[i] = signed_unit();
	for (size_t i = 0; i < nw; i++)
		w[i] = signed_unit();
	for (int64_t i = 0; i < g->m; i++)
		bias[i] = signed_unit();

	wdc_env_init_default(&env, &err);
	nnb_init(&b, 17);
	nnb_input(&b, "x", 4, xdims);
	nnb_init_f(&b, "W", 4, wdims, w);
	nnb_init_f(&b, "B", 1, bdims, bias);
	nd = nnb_node(&b, "Conv", "conv", "x,W,B", "y");
	v[0] = g->kh;
	v[1] = g->kw;
	nnb_attr_ints(&b, nd, "kernel_shape", 2, v);
	v[0] = g->sh;
	v[1] = g->sw;
	nnb_attr_ints(&b, nd, "strides", 2, v);
	v[0] = g->dh;
	v[1] = g->dw;
	nnb_attr_ints(&b, nd, "dilations", 2, v);
	v[0] = g->pt;
	v[1] = g->pl;
	v[2] = g->pb;
	v[3] = g->pr;
	nnb_attr_ints(&b, nd, "pads", 4, v);
	nnb_attr_i(&b, nd, "group", g->group);
	nnb_output(&b, "y");
	bytes = nnb_pack(&b, &len);

	if (wdc_nn_load(&env, bytes, len, &model) != WDC_OK ||
		wdc_nn_plan_create(&env, model, g->n, &plan) != WDC_OK)
	{
		(*bad)++;
		snprintf(why, whylen, "%s: %.200s", label, err.message);
	}
	else if (wdc_nn_numel(wdc_nn_plan_output(plan, 0)) != ny)
	{
		(*bad)++;
		snprintf(why, whylen, "%s: %zu outputs, want %zu", label,
				 wdc_nn_numel(wdc_nn_plan_output(plan, 0)), ny);
	}
	else
	{
		const void *in[1] = {x};
		void	   *out[1] = {y};
		double		scale = 0;

		*direct += direct_steps(plan) > 0;
		wino_plans += wino_steps(plan) > 0;
		reference(g, oh_n, ow_n, x, w, bias, ref);
		for (size_t i = 0; i < ny; i++)
			scale = fmax(scale, fabs(ref[i]));
		if (wdc_nn_run(&env, plan, in, out) != WDC_OK)
		{
			(*bad)++;
			snprintf(why, whylen, "%s: %.200s", label, err.message);
		}
		else
			for (size_t i = 0; i < ny; i++)
				if (!(fabs(y[i] - ref[i]) <= 1e-5 * (1 + fabs(ref[i])) + 1e-5 * scale))
				{
					(*bad)++;
					snprintf(why, whylen, "%s: element %zu is %.7g, want %.7g",
							 label, i, y[i], ref[i]);
					break;
				}
	}
	wdc_nn_plan_free(&env, plan);
	wdc_nn_free(&env, model);
	nnb_free(&b);
	free(x);
	free(w);
	free(bias);
	free(y);
	free(ref);
}

static void
describe(const ConvGeom *g, char *buf, size_t len)
{
	snprintf(buf, len,
			 "n%lld c%lld %lldx%lld m%lld g%lld k%lldx%lld s%lldx%lld d%lldx%lld pads %lld,%lld,%lld,%lld",
			 (long long) g->n, (long long) g->c, (long long) g->h,
			 (long long) g->w, (long long) g->m, (long long) g->group,
			 (long long) g->kh, (long long) g->kw, (long long) g->sh,
			 (long long) g->sw, (long long) g->dh, (long long) g->dw,
			 (long long) g->pt, (long long) g->pl, (long long) g->pb,
			 (long long) g->pr);
}

/*
 * Run each of n fixed geometries as its own test case, labelled with name
 * and the geometry.  Return n; *direct counts the plans on a direct kernel.
 */
static int
run_fixed(const ConvGeom *fixed, size_t n, const char *name, int *direct)
{
	char		why[512] = "",
				label[300],
				geom[256];

	for (size_t i = 0; i < n; i++)
	{
		int			bad = 0;

		describe(&fixed[i], geom, sizeof(geom));
		snprintf(label, sizeof(label), "%s: %s", name, geom);
		run_geom(&fixed[i], label, &bad, direct, why, sizeof(why));
		wdc_test_case(label, bad == 0, why);
	}
	return (int) n;
}

/* Add a k x k Conv with pads 1, weights in +-0.3 and biases in +-0.1. */
static void
add_conv_k(NnBuild *b, const char *name, const char *io_in, const char *io_out,
		   int64_t m, int64_t c, int64_t k, int64_t stride)
{
	int64_t		wdims[4] = {m, c, k, k};
	int64_t		bdims[1] = {m};
	int64_t		v[4] = {1, 1, 1, 1};
	size_t		nw = (size_t) (m * c * k * k);
	float	   *w = malloc(nw * sizeof(float));
	float	   *bias = malloc((size_t) m * sizeof(float));
	char		wname[32],
				bname[32],
				inputs[96];
	Onnx__NodeProto *nd;

	for (size_t i = 0; i < nw; i++)
		w[i] = signed_unit() * 0.3f;
	for (int64_t i = 0; i < m; i++)
		bias[i] = signed_unit() * 0.1f;
	snprintf(wname, sizeof(wname), "%s_w", name);
	snprintf(bname, sizeof(bname), "%s_b", name);
	snprintf(inputs, sizeof(inputs), "%s,%s,%s", io_in, wname, bname);
	nnb_init_f(b, wname, 4, wdims, w);
	nnb_init_f(b, bname, 1, bdims, bias);
	nd = nnb_node(b, "Conv", name, inputs, io_out);
	nnb_attr_ints(b, nd, "pads", 4, v);
	v[0] = v[1] = stride;
	nnb_attr_ints(b, nd, "strides", 2, v);
	free(w);
	free(bias);
}

static void
add_conv(NnBuild *b, const char *name, const char *io_in, const char *io_out,
		 int64_t m, int64_t c, int64_t stride)
{
	add_conv_k(b, name, io_in, io_out, m, c, 3, stride);
}

/*
 * A batch of 64 through a chain of four convolutions whose activations
 * exceed the slice budget runs slice by slice with one-slice buffers for
 * the values inside the chain.  Every image must match a batch-1 plan, the
 * middle value (also a model output) must be whole, and the arena must be
 * smaller than the chain's activations for the batch.  The late values
 * would fit in the input's space once the first step is done, which a
 * later slice still reads.
 */
static void
test_sliced_chain(const char *name)
{
	NnBuild		b;
	WdcError	err;
	WdcEnv		env;
	WdcNnModel *model = NULL;
	WdcNnPlan  *plan64 = NULL,
			   *plan1 = NULL;
	int64_t		xdims[4] = {-1, 4, 48, 48};	/* symbolic batch */
	size_t		per_x = 4 * 48 * 48,
				per_y = 4 * 24 * 24,
				per_mid = 16 * 24 * 24;
	/* batch-64 activations of the chain: input, four conv outputs */
	size_t		chain_bytes = 64 * sizeof(float) *
		(per_x + 16 * 48 * 48 + per_mid + 8 * 24 * 24 + per_y);
	float	   *x = malloc(64 * per_x * sizeof(float)),
			   *y64 = malloc(64 * per_y * sizeof(float)),
			   *mid64 = malloc(64 * per_mid * sizeof(float)),
			   *y1 = malloc(per_y * sizeof(float)),
			   *mid1 = malloc(per_mid * sizeof(float));
	uint8_t    *bytes;
	size_t		len;
	int			ok = 1;
	char		why[256] = "",
				label[128];

	for (size_t i = 0; i < 64 * per_x; i++)
		x[i] = signed_unit();
	wdc_env_init_default(&env, &err);
	nnb_init(&b, 17);
	nnb_input(&b, "x", 4, xdims);
	add_conv(&b, "c1", "x", "h1", 16, 4, 1);
	nnb_attr_f(&b, nnb_node(&b, "LeakyRelu", "act1", "h1", "a1"), "alpha", 0.1f);
	add_conv(&b, "c2", "a1", "mid", 16, 16, 2);
	add_conv(&b, "c3", "mid", "h3", 8, 16, 1);
	add_conv(&b, "c4", "h3", "y", 4, 8, 1);
	nnb_output(&b, "y");
	nnb_output(&b, "mid");
	bytes = nnb_pack(&b, &len);

	if (wdc_nn_load(&env, bytes, len, &model) != WDC_OK ||
		wdc_nn_plan_create(&env, model, 64, &plan64) != WDC_OK ||
		wdc_nn_plan_create(&env, model, 1, &plan1) != WDC_OK)
	{
		snprintf(label, sizeof(label), "%s: sliced chain plans", name);
		wdc_test_case(label, 0, err.message);
		ok = -1;
	}
	if (ok == 1)
	{
		const void *in[1] = {x};
		void	   *out[2] = {y64, mid64};

		snprintf(label, sizeof(label), "%s: sliced chain arena below batch activations",
				 name);
		wdc_test_case(label, wdc_nn_plan_arena_bytes(plan64) < chain_bytes, "");
		if (wdc_nn_run(&env, plan64, in, out) != WDC_OK)
			ok = 0;
		for (int im = 0; im < 64 && ok; im++)
		{
			const void *in1[1] = {x + im * per_x};
			void	   *out1[2] = {y1, mid1};

			if (wdc_nn_run(&env, plan1, in1, out1) != WDC_OK)
			{
				ok = 0;
				break;
			}
			for (size_t i = 0; i < per_y && ok; i++)
				if (!(fabs(y64[im * per_y + i] - y1[i]) <= 1e-5 * (1 + fabs(y1[i]))))
				{
					ok = 0;
					snprintf(why, sizeof(why), "image %d y[%zu] %.7g, batch 1 %.7g",
							 im, i, y64[im * per_y + i], y1[i]);
				}
			for (size_t i = 0; i < per_mid && ok; i++)
				if (!(fabs(mid64[im * per_mid + i] - mid1[i]) <= 1e-5 * (1 + fabs(mid1[i]))))
				{
					ok = 0;
					snprintf(why, sizeof(why), "image %d mid[%zu] %.7g, batch 1 %.7g",
							 im, i, mid64[im * per_mid + i], mid1[i]);
				}
		}
		snprintf(label, sizeof(label), "%s: sliced chain matches batch 1", name);
		wdc_test_case(label, ok, why);
	}
	wdc_nn_plan_free(&env, plan64);
	wdc_nn_plan_free(&env, plan1);
	wdc_nn_free(&env, model);
	nnb_free(&b);
	free(x);
	free(y64);
	free(mid64);
	free(y1);
	free(mid1);
}

/*
 * Run the fixed and the seeded random geometries with nn_conv_kernel set
 * to kernel.  The random sequence restarts, so every kernel sees the same
 * geometries.  want_direct: every plan must use the direct kernel.
 */
static void
sweep(int kernel, const char *name, int want_direct)
{
	/* encoder-style geometries whose taps take the block-copy path */
	static const ConvGeom fixed[] = {
		/* 3x3 stride 2 pad 1, as in a 64x64 encoder */
		{4, 3, 16, 16, 8, 1, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},
		/* 4x4 stride 2 pad 1 */
		{5, 2, 12, 12, 6, 1, 4, 4, 2, 2, 1, 1, 1, 1, 1, 1},
		/* 3x3 stride 1 pad 1 ("same") */
		{3, 4, 9, 9, 5, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
		/* 5x5 stride 1 pad 2, grouped */
		{2, 4, 11, 7, 4, 2, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2},
		/* stride 3, kernel 3, no padding */
		{3, 2, 12, 15, 3, 1, 3, 3, 3, 3, 1, 1, 0, 0, 0, 0},
		/* odd input with stride 2 (zero-filled phase planes) */
		{6, 1, 13, 11, 4, 1, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},
		/* dilated "same" */
		{2, 3, 10, 10, 4, 1, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2},
		/* 1x1 pointwise, and many images per GEMM */
		{40, 3, 5, 5, 7, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
		{40, 2, 6, 6, 3, 1, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},
		/* 1x1 on 32 pixels: the direct kernel reads the input in place */
		{3, 5, 8, 4, 6, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
		/* more channels than one tile of the direct kernel, partial blocks */
		{3, 20, 9, 9, 27, 1, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},
	};
	int			bad = 0,
				total = 0,
				direct = 0;
	char		why[512] = "",
				label[300],
				geom[256];

	nn_conv_kernel = kernel;
	rng_state = 0x9E3779B97F4A7C15ULL;
	total = run_fixed(fixed, sizeof(fixed) / sizeof(fixed[0]), name, &direct);

	/* seeded random geometries */
	while (total < 411)
	{
		ConvGeom	g;
		int64_t		eh,
					ew;

		g.group = pick(1, 4) == 1 ? 2 : 1;
		g.c = g.group * pick(1, 3);
		g.m = g.group * pick(1, 3);
		g.kh = pick(1, 5);
		g.kw = pick(1, 5);
		g.sh = pick(1, 3);
		g.sw = pick(1, 3);
		g.dh = pick(1, 2);
		g.dw = pick(1, 2);
		g.h = pick(1, 19);
		g.w = pick(1, 19);
		eh = (g.kh - 1) * g.dh + 1;
		ew = (g.kw - 1) * g.dw + 1;
		g.pt = pick(0, eh - 1);
		g.pb = pick(0, eh - 1);
		g.pl = pick(0, ew - 1);
		g.pr = pick(0, ew - 1);
		g.n = pick(1, 4) == 1 ? pick(5, 40) : pick(1, 3);
		if (g.h + g.pt + g.pb < eh || g.w + g.pl + g.pr < ew)
			continue;
		describe(&g, geom, sizeof(geom));
		snprintf(label, sizeof(label), "%s: %s", name, geom);
		run_geom(&g, label, &bad, &direct, why, sizeof(why));
		total++;
	}
	snprintf(label, sizeof(label), "%s: 400 random geometries match the direct convolution",
			 name);
	wdc_test_case(label, bad == 0, why);
	snprintf(label, sizeof(label), "%s: kernel used", name);
	snprintf(why, sizeof(why), "%d of %d plans ran the direct kernel", direct, total);
	wdc_test_case(label, want_direct ? direct == total : direct == 0, why);
	test_sliced_chain(name);
	nn_conv_kernel = NN_CONV_AUTO;
}

/*
 * Run the Winograd kernel, forced, on geometries it accepts.  Kernels of
 * 2 to 9 taps with strides 1 to 3 give phase kernels of 2x2 and 3x3 taps.
 * Odd output sizes leave partial tiles, batches leave lanes of the last
 * 16-image chunk empty, and some layers have more output channels than a
 * product tile.  The fixed list has the reference encoder's layers at
 * batch 64.  tile 2 or 4 forces that output tile for 2x2-tap phase
 * kernels.  tile 0 lets the plan choose.  With the AVX-512 kernel and tile
 * 0, the sweep then checks which kernel AUTO picks.
 */
static void
sweep_winograd(int kernel, int tile, const char *name)
{
	static const ConvGeom fixed[] = {
		/* reference encoder, layers 2 and 3 (4x4 stride 2 pad 1) */
		{64, 16, 16, 16, 32, 1, 4, 4, 2, 2, 1, 1, 1, 1, 1, 1},
		{64, 32, 8, 8, 64, 1, 4, 4, 2, 2, 1, 1, 1, 1, 1, 1},
		/* 3x3 "same", 17 images: one full chunk and one of a single image */
		{17, 8, 9, 9, 13, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
		/* 3x3 stride 2 (r = 2 with zero taps), odd sizes */
		{5, 3, 13, 11, 7, 1, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},
		/* 2x2 stride 1 without pads, non-square */
		{20, 5, 7, 12, 6, 1, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0},
		/* 6x6 and 6x5 stride 2 (r = 3; 6x5 has a column of zero taps) */
		{3, 2, 15, 14, 9, 1, 6, 6, 2, 2, 1, 1, 2, 2, 2, 2},
		{33, 4, 10, 11, 5, 1, 6, 5, 2, 2, 1, 1, 1, 2, 2, 1},
		/* stride 3, kernel 6 (r = 2) */
		{16, 2, 14, 14, 4, 1, 6, 6, 3, 3, 1, 1, 2, 2, 2, 2},
		/* one output pixel */
		{16, 3, 3, 3, 2, 1, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0},
	};
	int			bad = 0,
				direct = 0,
				total = 0;
	char		why[512] = "",
				label[300],
				geom[256];

	nn_conv_kernel = kernel;
	nn_conv_wino_tile = tile;
	rng_state = 0x2545F4914F6CDD1DULL;
	wino_plans = 0;
	total = run_fixed(fixed, sizeof(fixed) / sizeof(fixed[0]), name, &direct);
	while (total < 309)
	{
		ConvGeom	g;
		int64_t		r = pick(2, 3);

		g.group = 1;
		g.dh = g.dw = 1;
		g.sh = pick(1, 3);
		g.sw = pick(1, 3);
		/* ceil(k / s) = r */
		g.kh = (r - 1) * g.sh + pick(1, g.sh);
		g.kw = (r - 1) * g.sw + pick(1, g.sw);
		g.c = pick(1, 12);
		g.m = pick(1, 14);
		g.h = pick(1, 17);
		g.w = pick(1, 17);
		g.pt = pick(0, g.kh - 1);
		g.pb = pick(0, g.kh - 1);
		g.pl = pick(0, g.kw - 1);
		g.pr = pick(0, g.kw - 1);
		g.n = pick(1, 3) == 1 ? pick(1, 3) : pick(14, 40);
		if (g.h + g.pt + g.pb < g.kh || g.w + g.pl + g.pr < g.kw)
			continue;
		describe(&g, geom, sizeof(geom));
		snprintf(label, sizeof(label), "%s: %s", name, geom);
		run_geom(&g, label, &bad, &direct, why, sizeof(why));
		total++;
	}
	snprintf(label, sizeof(label), "%s: 300 random geometries match the direct convolution",
			 name);
	wdc_test_case(label, bad == 0, why);
	snprintf(why, sizeof(why), "%d of %d plans ran the Winograd kernel", wino_plans, total);
	snprintf(label, sizeof(label), "%s: kernel used", name);
	wdc_test_case(label, wino_plans == total, why);
	test_sliced_chain(name);
	nn_conv_wino_tile = 0;
	if (tile != 0 || kernel != NN_CONV_WINOGRAD)
	{
		nn_conv_kernel = NN_CONV_AUTO;
		return;
	}

	/*
	 * AUTO: at batch 64, the encoder's 4x4 stride-2 layer and a 3x3
	 * stride-2 layer with an 8x8 output take the Winograd kernel.  The
	 * direct kernel stays at batch 8, for a 3x3 output of 3x3 stride 2
	 * (25 products for 9 outputs of 9 taps) and with 2 phase channels.
	 */
	{
		static const ConvGeom autos[] = {
			{64, 16, 16, 16, 32, 1, 4, 4, 2, 2, 1, 1, 1, 1, 1, 1},
			{64, 16, 16, 16, 32, 1, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},
			{8, 16, 16, 16, 32, 1, 4, 4, 2, 2, 1, 1, 1, 1, 1, 1},
			{64, 16, 6, 6, 32, 1, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},
			{64, 2, 16, 16, 32, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
		};
		static const int want[] = {1, 1, 0, 0, 0};
		int			ok = 1;

		nn_conv_kernel = NN_CONV_AUTO;
		bad = 0;
		why[0] = '\0';
		for (int i = 0; i < 5; i++)
		{
			int			before = wino_plans;

			describe(&autos[i], geom, sizeof(geom));
			run_geom(&autos[i], geom, &bad, &direct, why, sizeof(why));
			if ((wino_plans > before) != want[i])
			{
				ok = 0;
				snprintf(why, sizeof(why), "%s: Winograd %s", geom,
						 want[i] ? "not used" : "used");
			}
		}
		wdc_test_case("auto: Winograd only where it saves arithmetic", ok && bad == 0, why);
	}
	nn_conv_kernel = NN_CONV_AUTO;
}

/* Count the Winograd steps of a plan and the values they leave in chunk layout. */
static void
count_chunked(const WdcNnPlan *plan, int *wino, int *chunked)
{
	*wino = 0;
	*chunked = 0;
	for (int i = 0; i < plan->n_steps; i++)
	{
		NnConvWino *wg;

		if (plan->steps[i].skip || plan->steps[i].direct == NULL)
			continue;
		wg = nn_conv_direct_winograd(plan->steps[i].direct);
		if (wg == NULL)
			continue;
		(*wino)++;
		*chunked += (nn_conv_wino_chunked(wg) & 2) != 0;
	}
}

/*
 * The reference encoder's convolutions (1 -> 16 -> 32 -> 64 channels,
 * 4x4 stride 2, LeakyReLU) with nn_conv_kernel set to kernel (AUTO, or
 * WINOGRAD_AVX2, which runs every layer on the AVX2 Winograd kernel).
 * With a batch that is a multiple of 16, the two values between the
 * convolutions stay in chunk layout, and under AUTO the first layer (4
 * phase channels) joins the chain.  160 images also run in row-run slices
 * of 64.  40 and 100 images keep the usual layout.  Every image must
 * match a batch-1 plan on the im2col path within the bound of the sweeps.
 */
static void
test_chunked_chain(int kernel, const char *name)
{
	static const int batches[] = {64, 160, 16, 40, 100};
	static const int want_chunked[] = {2, 2, 2, 0, 0};
	NnBuild		b;
	WdcError	err;
	WdcEnv		env;
	WdcNnModel *model = NULL;
	WdcNnPlan  *plan1 = NULL;
	int64_t		xdims[4] = {-1, 1, 32, 32};
	size_t		per_x = 32 * 32,
				per_y = 64 * 4 * 4;
	float	   *x = malloc(160 * per_x * sizeof(float)),
			   *y = malloc(160 * per_y * sizeof(float)),
			   *y1 = malloc(per_y * sizeof(float));
	uint8_t    *bytes;
	size_t		len;
	char		why[256],
				label[128];

	for (size_t i = 0; i < 160 * per_x; i++)
		x[i] = (signed_unit() + 1.0f) * 0.5f;
	wdc_env_init_default(&env, &err);
	nnb_init(&b, 17);
	nnb_input(&b, "x", 4, xdims);
	add_conv_k(&b, "c1", "x", "h1", 16, 1, 4, 2);
	nnb_attr_f(&b, nnb_node(&b, "LeakyRelu", "act1", "h1", "a1"), "alpha", 0.1f);
	add_conv_k(&b, "c2", "a1", "h2", 32, 16, 4, 2);
	nnb_attr_f(&b, nnb_node(&b, "LeakyRelu", "act2", "h2", "a2"), "alpha", 0.1f);
	add_conv_k(&b, "c3", "a2", "y", 64, 32, 4, 2);
	nnb_output(&b, "y");
	bytes = nnb_pack(&b, &len);
	/* the reference: a batch-1 plan on the im2col path */
	nn_conv_kernel = NN_CONV_IM2COL;
	if (wdc_nn_load(&env, bytes, len, &model) != WDC_OK ||
		wdc_nn_plan_create(&env, model, 1, &plan1) != WDC_OK)
	{
		snprintf(label, sizeof(label), "%s: plans", name);
		wdc_test_case(label, 0, err.message);
		goto done;
	}
	nn_conv_kernel = kernel;
	for (int bi = 0; bi < 5; bi++)
	{
		int			n = batches[bi],
					wino = 0,
					chunked = 0,
					ok = 1;
		WdcNnPlan  *plan = NULL;
		const void *in[1] = {x};
		void	   *out[1] = {y};

		why[0] = '\0';
		if (wdc_nn_plan_create(&env, model, n, &plan) != WDC_OK ||
			wdc_nn_run(&env, plan, in, out) != WDC_OK)
		{
			ok = 0;
			snprintf(why, sizeof(why), "%.200s", err.message);
		}
		else
			count_chunked(plan, &wino, &chunked);
		if (ok && (wino != (want_chunked[bi] || kernel != NN_CONV_AUTO ? 3 : 2) ||
				   chunked != want_chunked[bi]))
		{
			ok = 0;
			snprintf(why, sizeof(why), "%d Winograd steps, %d chunked values", wino,
					 chunked);
		}
		for (int im = 0; im < n && ok; im++)
		{
			const void *in1[1] = {x + im * per_x};
			void	   *out1[1] = {y1};

			double		scale = 0;

			if (wdc_nn_run(&env, plan1, in1, out1) != WDC_OK)
			{
				ok = 0;
				break;
			}
			/* the same bound as the sweeps, against the image's largest output */
			for (size_t i = 0; i < per_y; i++)
				scale = fmax(scale, fabs(y1[i]));
			for (size_t i = 0; i < per_y && ok; i++)
				if (!(fabs(y[im * per_y + i] - y1[i]) <= 1e-5 * (1 + fabs(y1[i])) +
					  1e-5 * scale))
				{
					ok = 0;
					snprintf(why, sizeof(why), "image %d y[%zu] %.7g, batch 1 %.7g",
							 im, i, y[im * per_y + i], y1[i]);
				}
		}
		snprintf(label, sizeof(label), "%s: batch %d matches batch 1", name, n);
		wdc_test_case(label, ok, why);
		wdc_nn_plan_free(&env, plan);
	}
done:
	wdc_nn_plan_free(&env, plan1);
	wdc_nn_free(&env, model);
	nnb_free(&b);
	free(x);
	free(y);
	free(y1);
	nn_conv_kernel = NN_CONV_AUTO;
}

int
main(void)
{
	wdc_nn_init();
	sweep(NN_CONV_IM2COL, "im2col", 0);
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
	{
		sweep(NN_CONV_DIRECT_AVX2, "direct avx2", 1);
		sweep_winograd(NN_CONV_WINOGRAD_AVX2, 2, "winograd avx2 2x2 tiles");
		sweep_winograd(NN_CONV_WINOGRAD_AVX2, 4, "winograd avx2 4x4 tiles");
		sweep_winograd(NN_CONV_WINOGRAD_AVX2, 0, "winograd avx2");
		test_chunked_chain(NN_CONV_WINOGRAD_AVX2, "chunk layout avx2");
	}
	else
		wdc_test_case("direct avx2: skipped, the CPU lacks AVX2 or FMA", 1, "");
	if (__builtin_cpu_supports("avx512f"))
	{
		sweep(NN_CONV_DIRECT, "direct avx512", 1);
		sweep_winograd(NN_CONV_WINOGRAD, 2, "winograd 2x2 tiles");
		sweep_winograd(NN_CONV_WINOGRAD, 4, "winograd 4x4 tiles");
		sweep_winograd(NN_CONV_WINOGRAD, 0, "winograd");
		test_chunked_chain(NN_CONV_AUTO, "chunk layout");
	}
	else
		wdc_test_case("direct avx512 and winograd: skipped, the CPU lacks AVX-512F", 1, "");
#endif
	return wdc_test_summary();
}
