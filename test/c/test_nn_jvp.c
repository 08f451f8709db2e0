/*
 * test_nn_jvp.c
 *	  Check forward-mode tangents (JVPs) of every differentiable operator
 *	  against central finite differences.
 *
 * Each case is a one-node model built in memory: input "x" is the JVP
 * input, other inputs are initializers filled with deterministic random
 * numbers.  With K = 3 random directions v, the runtime's tangent must match
 *	  (f(x + h v) - f(x - h v)) / (2 h)
 * evaluated from float32 runs and differenced in double, within
 * |jvp - fd| <= 2e-3 * max|fd| + 1e-2 * |fd|.  Inputs avoid the kinks of
 * piecewise operators (|x| >= 0.1, and distinct values for MaxPool), so the
 * difference quotient never straddles one.
 */
#include "nn/nn.h"
#include "nn_build.h"
#include "wdc_test.h"

#include <math.h>

#define K 3
#define STEP 3e-3

typedef struct JvpCase
{
	const char *label;
	const char *op;
	const char *inputs;			/* node inputs; "x" is the JVP input */
	const char *xshape;			/* comma-separated dims */
	const char *inits;			/* "W=f4,1,3,3;axes=i1:0;p=s2" */
	const char *attrs;			/* "alpha=f0.1;pads=I1,1,1,1;mode=slinear" */
	int			domain;			/* 0 signed, 1 positive, 2 distinct values */
	int			opset;
	int			outputs;		/* node outputs (Split); 0 means 1 */
	const char *then;			/* optional activation after the node */
} JvpCase;

static const JvpCase cases[] = {
	{"Relu", "Relu", "x", "2,5", "", "", 0, 17},
	{"LeakyRelu", "LeakyRelu", "x", "2,5", "", "alpha=f0.2", 0, 17},
	{"Elu", "Elu", "x", "2,5", "", "alpha=f0.7", 0, 17},
	{"Selu", "Selu", "x", "2,5", "", "", 0, 17},
	{"Sigmoid", "Sigmoid", "x", "2,5", "", "", 0, 17},
	{"Tanh", "Tanh", "x", "2,5", "", "", 0, 17},
	{"Softplus", "Softplus", "x", "2,5", "", "", 0, 17},
	{"Gelu", "Gelu", "x", "2,5", "", "", 0, 17},
	{"Gelu tanh", "Gelu", "x", "2,5", "", "approximate=stanh", 0, 17},
	{"Erf", "Erf", "x", "2,5", "", "", 0, 17},
	{"Exp", "Exp", "x", "2,5", "", "", 0, 17},
	{"Log", "Log", "x", "2,5", "", "", 1, 17},
	{"Sqrt", "Sqrt", "x", "2,5", "", "", 1, 17},
	{"Sin", "Sin", "x", "2,5", "", "", 0, 17},
	{"Cos", "Cos", "x", "2,5", "", "", 0, 17},
	{"Neg", "Neg", "x", "2,5", "", "", 0, 17},
	{"Abs", "Abs", "x", "2,5", "", "", 0, 17},
	{"Reciprocal", "Reciprocal", "x", "2,5", "", "", 1, 17},
	{"Softsign", "Softsign", "x", "2,5", "", "", 0, 17},
	{"HardSigmoid", "HardSigmoid", "x", "2,5", "", "alpha=f0.3", 0, 17},
	{"Clip", "Clip", "x,lo,hi", "2,5", "lo=s-0.5;hi=s0.55", "", 0, 17},
	{"Add broadcast", "Add", "x,c", "2,3,4", "c=f3,1", "", 0, 17},
	{"Sub", "Sub", "c,x", "2,3,4", "c=f4", "", 0, 17},
	{"Mul x*x", "Mul", "x,x", "2,3,4", "", "", 0, 17},
	{"Mul broadcast", "Mul", "x,c", "2,3,4", "c=f2,1,4", "", 0, 17},
	{"Div by x", "Div", "c,x", "2,3", "c=f2,3", "", 1, 17},
	{"Div x/x", "Div", "x,x", "2,3", "", "", 1, 17},
	{"Pow scalar", "Pow", "x,p", "2,3", "p=s3", "", 1, 17},
	{"Pow x^x", "Pow", "x,x", "2,3", "", "", 1, 17},
	{"PRelu", "PRelu", "x,s", "2,3,4", "s=f3,1", "", 0, 17},
	{"Softmax", "Softmax", "x", "2,3,4", "", "axis=i1", 0, 17},
	{"Softmax opset 11", "Softmax", "x", "2,3,4", "", "axis=i1", 0, 11},
	{"LogSoftmax", "LogSoftmax", "x", "2,5", "", "", 0, 17},
	{"ReduceMean", "ReduceMean", "x", "2,3,4", "", "axes=I1", 0, 17},
	{"ReduceSum", "ReduceSum", "x,axes", "2,3,4", "axes=i1:2", "keepdims=i0", 0, 17},
	{"Conv", "Conv", "x,W,B", "2,3,7,7", "W=f4,3,3,3;B=f4", "pads=I1,1,1,1", 0, 17},
	{"Conv strided dilated", "Conv", "x,W", "2,2,9,9", "W=f3,2,3,3", "strides=I2,2;dilations=I2,1", 0, 17},
	{"Conv groups", "Conv", "x,W,B", "2,4,6,6", "W=f4,2,3,3;B=f4", "group=i2;pads=I0,1,1,0", 0, 17},
	{"Conv 1-D", "Conv", "x,W", "2,3,9", "W=f2,3,3", "auto_pad=sSAME_UPPER", 0, 17},
	{"ConvTranspose", "ConvTranspose", "x,W,B", "2,3,4,4", "W=f3,2,3,3;B=f2", "strides=I2,2;pads=I1,1,1,1", 0, 17},
	{"Gemm", "Gemm", "x,W,C", "4,6", "W=f5,6;C=f5", "transB=i1;alpha=f0.5;beta=f2", 0, 17},
	{"Gemm transA", "Gemm", "x,W", "6,4", "W=f6,5", "transA=i1", 0, 17},
	{"Gemm x*x", "Gemm", "x,x", "4,4", "", "", 0, 17},
	{"Gemm fused Relu", "Gemm", "x,W,C", "4,6", "W=f5,6;C=f5", "transB=i1", 0, 17, 0, "Relu"},
	{"Conv fused LeakyRelu", "Conv", "x,W,B", "2,3,7,7", "W=f4,3,3,3;B=f4", "pads=I1,1,1,1", 0, 17, 0, "LeakyRelu"},
	{"MatMul 3-D", "MatMul", "x,W", "2,3,4", "W=f4,5", "", 0, 17},
	{"MatMul x*x", "MatMul", "x,x", "2,3,3", "", "", 0, 17},
	{"MatMul vector", "MatMul", "x,W", "4", "W=f4,5", "", 0, 17},
	{"MatMul batched B", "MatMul", "x,W", "2,3,4", "W=f1,4,5", "", 0, 17},
	{"MaxPool", "MaxPool", "x", "2,2,6,6", "", "kernel_shape=I3,3;strides=I2,2;pads=I1,1,1,1", 2, 17},
	{"AveragePool", "AveragePool", "x", "2,2,6,6", "", "kernel_shape=I2,2;strides=I2,2", 0, 17},
	{"GlobalAveragePool", "GlobalAveragePool", "x", "2,3,4,4", "", "", 0, 17},
	{"BatchNormalization", "BatchNormalization", "x,g,b,m,v", "2,3,4,4", "g=f3;b=f3;m=f3;v=p3", "", 0, 15},
	{"InstanceNormalization", "InstanceNormalization", "x,g,b", "2,3,4,4", "g=f3;b=f3", "", 0, 17},
	{"LayerNormalization", "LayerNormalization", "x,g,b", "2,3,8", "g=f8;b=f8", "", 0, 17},
	{"GroupNormalization", "GroupNormalization", "x,g,b", "2,4,3,3", "g=f2;b=f2", "num_groups=i2", 0, 18},
	{"Reshape", "Reshape", "x,s", "2,3,4", "s=i2:0,-1", "", 0, 17},
	{"Flatten", "Flatten", "x", "2,3,4", "", "axis=i2", 0, 17},
	{"Transpose", "Transpose", "x", "2,3,4", "", "perm=I2,0,1", 0, 17},
	{"Concat", "Concat", "c,x,x", "2,3,4", "c=f2,1,4", "axis=i1", 0, 17},
	{"Split", "Split", "x", "2,6", "", "axis=i1", 0, 17, 2},
	{"Slice", "Slice", "x,st,en,ax,sp", "4,6", "st=i2:1,5;en=i2:4,0;ax=i2:0,1;sp=i2:1,-2", "", 0, 17},
	{"Squeeze", "Squeeze", "x,ax", "2,1,4", "ax=i1:1", "", 0, 17},
	{"Unsqueeze", "Unsqueeze", "x,ax", "2,4", "ax=i1:-1", "", 0, 17},
	{"Identity", "Identity", "x", "2,4", "", "", 0, 17},
	{"Dropout", "Dropout", "x", "2,4", "", "", 0, 17},
	{"Gather", "Gather", "x,ix", "4,3", "ix=i3:2,-1,0", "axis=i0", 0, 17},
	{"Expand", "Expand", "x,sh", "3,1", "sh=i3:2,3,4", "", 0, 17},
	{"Pad", "Pad", "x,pd", "2,3", "pd=i4:1,0,0,2", "", 0, 17},
	{"Resize nearest", "Resize", "x,,sc", "1,2,3,3", "sc=g1,1,2,2", "", 0, 17},
	{"Resize linear", "Resize", "x,,sc", "1,2,3,3", "sc=g1,1,2,1.5", "mode=slinear", 0, 17},
	{"Upsample", "Upsample", "x,sc", "1,1,2,3", "sc=g1,1,2,2", "", 0, 9},
	{"Cast", "Cast", "x", "2,3", "", "to=i1", 0, 17},
};

static uint64_t rng_state = 88172645463325252ULL;

/* xorshift64: reproducible across platforms */
static double
uniform(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (rng_state >> 11) * (1.0 / 9007199254740992.0);
}

static int
parse_list(const char *s, int64_t *out, int max)
{
	int			n = 0;

	while (*s && n < max)
	{
		char	   *end;

		out[n++] = strtoll(s, &end, 10);
		s = *end == ',' ? end + 1 : end;
		if (*end != ',' && *end != '\0')
			break;
	}
	return n;
}

/* Add the initializers of a spec "name=kind...;..." (see JvpCase). */
static void
add_inits(NnBuild *b, const char *spec)
{
	char		buf[256];
	char	   *save = NULL;

	snprintf(buf, sizeof(buf), "%s", spec);
	for (char *tok = strtok_r(buf, ";", &save); tok; tok = strtok_r(NULL, ";", &save))
	{
		char	   *eq = strchr(tok, '=');
		char		kind = eq[1];
		int64_t		dims[8];
		float		data[256];

		*eq = '\0';
		if (kind == 's')
		{
			/* float scalar with a given value */
			data[0] = strtof(eq + 2, NULL);
			nnb_init_f(b, tok, 0, dims, data);
		}
		else if (kind == 'g')
		{
			/* float vector with given values */
			char	   *p = eq + 2;
			int			n = 0;

			while (*p)
			{
				data[n++] = strtof(p, &p);
				if (*p == ',')
					p++;
			}
			dims[0] = n;
			nnb_init_f(b, tok, 1, dims, data);
		}
		else if (kind == 'i')
		{
			/* int64 vector: "i<count>:<values>" */
			int64_t		vals[16];
			char	   *colon = strchr(eq + 1, ':');
			int			n = parse_list(colon + 1, vals, 16);

			dims[0] = n;
			nnb_init_i64(b, tok, 1, dims, vals);
		}
		else
		{
			/* random floats: 'f' signed in [-1, 1], 'p' positive in [0.5, 1.5] */
			int			rank = parse_list(eq + 2, dims, 8);
			int64_t		n = 1;

			for (int i = 0; i < rank; i++)
				n *= dims[i];
			for (int64_t i = 0; i < n; i++)
				data[i] = (float) (kind == 'p' ? 0.5 + uniform() : 2 * uniform() - 1);
			nnb_init_f(b, tok, rank, dims, data);
		}
	}
}

static void
add_attrs(NnBuild *b, Onnx__NodeProto *nd, const char *spec)
{
	char		buf[256];
	char	   *save = NULL;

	snprintf(buf, sizeof(buf), "%s", spec);
	for (char *tok = strtok_r(buf, ";", &save); tok; tok = strtok_r(NULL, ";", &save))
	{
		char	   *eq = strchr(tok, '=');
		int64_t		v[16];

		*eq = '\0';
		switch (eq[1])
		{
			case 'f':
				nnb_attr_f(b, nd, tok, strtof(eq + 2, NULL));
				break;
			case 'i':
				nnb_attr_i(b, nd, tok, strtoll(eq + 2, NULL, 10));
				break;
			case 'I':
				nnb_attr_ints(b, nd, tok, parse_list(eq + 2, v, 16), v);
				break;
			case 's':
				nnb_attr_s(b, nd, tok, eq + 2);
				break;
		}
	}
}

/* Fill x for the case's domain. */
static void
fill_input(float *x, size_t n, int domain)
{
	for (size_t i = 0; i < n; i++)
	{
		if (domain == 1)
			x[i] = (float) (0.5 + uniform());
		else if (domain == 2)
			x[i] = (float) ((double) ((i * 7919) % n) / n - 0.5);
		else
		{
			double		u = 0.1 + 0.9 * uniform();

			x[i] = (float) (uniform() < 0.5 ? -u : u);
		}
	}
}

static void
run_case(const JvpCase *c)
{
	NnBuild		b;
	WdcError	err;
	WdcEnv		env;
	WdcNnModel *m = NULL;
	WdcNnPlan  *plan = NULL,
			   *fplan = NULL;
	WdcNnPlanOptions opt;
	int64_t		dims[8];
	int			rank = parse_list(c->xshape, dims, 8);
	int			nout = c->outputs ? c->outputs : 1;
	size_t		nx = 1,
				ny[2] = {0, 0};
	float	   *x,
			   *v,
			   *xp;
	float	   *y[2] = {0},
			   *ty[2] = {0},
			   *yp[2] = {0},
			   *ym[2] = {0};
	Onnx__NodeProto *nd;
	uint8_t    *bytes;
	size_t		len;
	char		why[256] = "";
	int			ok = 1;

	wdc_env_init_default(&env, &err);
	nnb_init(&b, c->opset);
	nnb_input(&b, "x", rank, dims);
	add_inits(&b, c->inits);
	nd = nnb_node(&b, c->op, c->label, c->inputs,
				  nout == 2 ? "y0,y1" : (c->then ? "h" : "y0"));
	add_attrs(&b, nd, c->attrs);
	if (c->then)
		nnb_node(&b, c->then, "act", "h", "y0");
	nnb_output(&b, "y0");
	if (nout == 2)
		nnb_output(&b, "y1");
	bytes = nnb_pack(&b, &len);

	if (wdc_nn_load(&env, bytes, len, &m) != WDC_OK)
	{
		wdc_test_case(c->label, 0, err.message);
		nnb_free(&b);
		return;
	}
	memset(&opt, 0, sizeof(opt));
	opt.batch = 1;
	opt.jvp_k = K;
	if (wdc_nn_plan_create_ex(&env, m, &opt, &plan) != WDC_OK ||
		wdc_nn_plan_create(&env, m, 1, &fplan) != WDC_OK)
	{
		wdc_test_case(c->label, 0, err.message);
		wdc_nn_plan_free(&env, plan);
		wdc_nn_free(&env, m);
		nnb_free(&b);
		return;
	}

	/* x, K directions, and output buffers */
	for (int i = 0; i < rank; i++)
		nx *= dims[i];
	x = malloc(sizeof(float) * nx);
	xp = malloc(sizeof(float) * nx);
	v = malloc(sizeof(float) * nx * K);
	fill_input(x, nx, c->domain);
	for (size_t i = 0; i < nx * K; i++)
		v[i] = (float) (2 * uniform() - 1);
	for (int o = 0; o < nout; o++)
	{
		ny[o] = wdc_nn_numel(wdc_nn_plan_output(plan, o));
		y[o] = malloc(sizeof(float) * ny[o] + 4);
		ty[o] = malloc(sizeof(float) * ny[o] * K + 4);
		yp[o] = malloc(sizeof(float) * ny[o] + 4);
		ym[o] = malloc(sizeof(float) * ny[o] + 4);
	}

	{
		const void *in[1] = {x};
		const void *inp[1] = {xp};

		if (wdc_nn_run_jvp(&env, plan, in, v, (void *const *) y, ty) != WDC_OK)
		{
			ok = 0;
			snprintf(why, sizeof(why), "%s", err.message);
		}

		/* central differences, one direction at a time */
		for (int j = 0; j < K && ok; j++)
		{
			for (size_t i = 0; i < nx; i++)
				xp[i] = (float) (x[i] + STEP * v[j * nx + i]);
			wdc_nn_run(&env, fplan, inp, (void *const *) yp);
			for (size_t i = 0; i < nx; i++)
				xp[i] = (float) (x[i] - STEP * v[j * nx + i]);
			wdc_nn_run(&env, fplan, inp, (void *const *) ym);
			for (int o = 0; o < nout && ok; o++)
			{
				double		scale = 0;

				for (size_t i = 0; i < ny[o]; i++)
					scale = fmax(scale, fabs(((double) yp[o][i] - ym[o][i]) / (2 * STEP)));
				for (size_t i = 0; i < ny[o]; i++)
				{
					double		fd = ((double) yp[o][i] - ym[o][i]) / (2 * STEP);
					double		jv = ty[o][j * ny[o] + i];

					if (!(fabs(jv - fd) <= 2e-3 * scale + 1e-2 * fabs(fd) + 1e-6))
					{
						snprintf(why, sizeof(why),
								 "output %d direction %d element %zu: jvp %.6g, finite difference %.6g",
								 o, j, i, jv, fd);
						ok = 0;
						break;
					}
				}
			}
		}
	}
	wdc_test_case(c->label, ok, why);

	free(x);
	free(xp);
	free(v);
	for (int o = 0; o < nout; o++)
	{
		free(y[o]);
		free(ty[o]);
		free(yp[o]);
		free(ym[o]);
	}
	wdc_nn_plan_free(&env, plan);
	wdc_nn_plan_free(&env, fplan);
	wdc_nn_free(&env, m);
	nnb_free(&b);
}

int
main(void)
{
	wdc_nn_init();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_case(&cases[i]);
	return wdc_test_summary();
}
