/*
 * nn_ops_elem.c
 *	  Elementwise operators (unary activations, broadcasting binary
 *	  arithmetic and PRelu), Softmax/LogSoftmax and ReduceMean/ReduceSum.
 *
 * Binary operators follow numpy broadcasting: shapes are aligned on the
 * right and each dimension of size 1 is stretched, which the loops express
 * as a stride of 0.  JVPs: a unary op multiplies each of the k tangent
 * slices by f'(x); binary ops apply the product and quotient rules.
 */
#include "nn/nn_int.h"

#include <math.h>
#include <string.h>

/* --- unary ---------------------------------------------------------------- */

enum
{
	U_RELU, U_LEAKY, U_ELU, U_SELU, U_SIGMOID, U_TANH, U_SOFTPLUS, U_GELU,
	U_GELU_TANH, U_ERF, U_EXP, U_LOG, U_SQRT, U_SIN, U_COS, U_NEG, U_ABS,
	U_RECIP, U_SOFTSIGN, U_HARDSIGMOID, U_CLIP
};

static const struct
{
	const char *name;
	int			code;
} unary_codes[] = {
	{"Relu", U_RELU}, {"LeakyRelu", U_LEAKY}, {"Elu", U_ELU}, {"Selu", U_SELU},
	{"Sigmoid", U_SIGMOID}, {"Tanh", U_TANH}, {"Softplus", U_SOFTPLUS},
	{"Gelu", U_GELU}, {"Erf", U_ERF}, {"Exp", U_EXP}, {"Log", U_LOG},
	{"Sqrt", U_SQRT}, {"Sin", U_SIN}, {"Cos", U_COS}, {"Neg", U_NEG},
	{"Abs", U_ABS}, {"Reciprocal", U_RECIP}, {"Softsign", U_SOFTSIGN},
	{"HardSigmoid", U_HARDSIGMOID}, {"Clip", U_CLIP}, {NULL, 0}
};

static WdcStatus
unary_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	const NnNode *nd = s->node;
	int			code = -1;
	WdcStatus	st;

	for (int i = 0; unary_codes[i].name; i++)
		if (strcmp(unary_codes[i].name, s->op->name) == 0)
			code = unary_codes[i].code;
	if (nn_in_elem(c, 0) != WDC_NN_FLOAT)
		return nn_unsupported(c, "a non-float input");
	s->p[0] = code;
	switch (code)
	{
		case U_LEAKY:
			s->f[0] = nn_attr_float(nd, "alpha", 0.01f);
			break;
		case U_ELU:
			s->f[0] = nn_attr_float(nd, "alpha", 1.0f);
			break;
		case U_SELU:
			s->f[0] = nn_attr_float(nd, "alpha", 1.67326319217681884765625f);
			s->f[1] = nn_attr_float(nd, "gamma", 1.05070102214813232421875f);
			break;
		case U_HARDSIGMOID:
			s->f[0] = nn_attr_float(nd, "alpha", 0.2f);
			s->f[1] = nn_attr_float(nd, "beta", 0.5f);
			break;
		case U_GELU:
			{
				char		buf[16];
				const char *a = nn_attr_string(nd, "approximate", buf, sizeof(buf));

				if (a && strcmp(a, "tanh") == 0)
					s->p[0] = U_GELU_TANH;
				else if (a && strcmp(a, "none") != 0)
					return nn_unsupported(c, "approximate=\"%s\"", a);
			}
			break;
		case U_CLIP:
			s->f[0] = -INFINITY;
			s->f[1] = INFINITY;
			if (c->opset < 11)
			{
				s->f[0] = nn_attr_float(nd, "min", -INFINITY);
				s->f[1] = nn_attr_float(nd, "max", INFINITY);
			}
			for (int i = 1; i <= 2; i++)
			{
				if (!nn_has_in(c, i))
					continue;
				if (nn_in_const(c, i) == NULL || nn_in_elem(c, i) != WDC_NN_FLOAT ||
					nn_numel(nn_in_shape(c, i)) != 1)
					return nn_unsupported(c, "a non-constant or non-scalar bound");
				s->f[i - 1] = *(const float *) nn_in_const(c, i);
			}
			s->n_in = 1;		/* bounds are parameters now */
			break;
	}
	s->tscratch = (size_t) nn_numel(nn_in_shape(c, 0)) * sizeof(float);
	st = nn_set_out(c, 0, nn_in_shape(c, 0), WDC_NN_FLOAT);
	if (st != WDC_OK)
		return st;

	/* Relu and LeakyRelu after a Conv or Gemm run inside that step */
	if (s->p[0] == U_RELU || (s->p[0] == U_LEAKY && s->f[0] >= 0))
		nn_fuse_activation(c, s->p[0] == U_RELU ? 0.0f : s->f[0]);
	return WDC_OK;
}

static inline float
sigmoidf(float x)
{
	return 1.0f / (1.0f + expf(-x));
}

static void
unary_exec(NnRun *r)
{
	const float *x = r->in[0];
	float	   *y = r->out[0];
	int64_t		n = nn_numel(r->ish[0]);
	float		a = r->s->f[0],
				b = r->s->f[1];

	switch (r->s->p[0])
	{
		case U_RELU:
			for (int64_t i = 0; i < n; i++)
				y[i] = x[i] > 0 ? x[i] : 0;
			break;
		case U_LEAKY:
			for (int64_t i = 0; i < n; i++)
				y[i] = x[i] >= 0 ? x[i] : a * x[i];
			break;
		case U_ELU:
			for (int64_t i = 0; i < n; i++)
				y[i] = x[i] >= 0 ? x[i] : a * expm1f(x[i]);
			break;
		case U_SELU:
			for (int64_t i = 0; i < n; i++)
				y[i] = b * (x[i] > 0 ? x[i] : a * expm1f(x[i]));
			break;
		case U_SIGMOID:
			for (int64_t i = 0; i < n; i++)
				y[i] = sigmoidf(x[i]);
			break;
		case U_TANH:
			for (int64_t i = 0; i < n; i++)
				y[i] = tanhf(x[i]);
			break;
		case U_SOFTPLUS:
			/* log(1 + e^x) without overflow for large x */
			for (int64_t i = 0; i < n; i++)
				y[i] = x[i] > 0 ? x[i] + log1pf(expf(-x[i])) : log1pf(expf(x[i]));
			break;
		case U_GELU:
			for (int64_t i = 0; i < n; i++)
				y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float) M_SQRT1_2));
			break;
		case U_GELU_TANH:
			for (int64_t i = 0; i < n; i++)
			{
				float		u = 0.7978845608f * (x[i] + 0.044715f * x[i] * x[i] * x[i]);

				y[i] = 0.5f * x[i] * (1.0f + tanhf(u));
			}
			break;
		case U_ERF:
			for (int64_t i = 0; i < n; i++)
				y[i] = erff(x[i]);
			break;
		case U_EXP:
			for (int64_t i = 0; i < n; i++)
				y[i] = expf(x[i]);
			break;
		case U_LOG:
			for (int64_t i = 0; i < n; i++)
				y[i] = logf(x[i]);
			break;
		case U_SQRT:
			for (int64_t i = 0; i < n; i++)
				y[i] = sqrtf(x[i]);
			break;
		case U_SIN:
			for (int64_t i = 0; i < n; i++)
				y[i] = sinf(x[i]);
			break;
		case U_COS:
			for (int64_t i = 0; i < n; i++)
				y[i] = cosf(x[i]);
			break;
		case U_NEG:
			for (int64_t i = 0; i < n; i++)
				y[i] = -x[i];
			break;
		case U_ABS:
			for (int64_t i = 0; i < n; i++)
				y[i] = fabsf(x[i]);
			break;
		case U_RECIP:
			for (int64_t i = 0; i < n; i++)
				y[i] = 1.0f / x[i];
			break;
		case U_SOFTSIGN:
			for (int64_t i = 0; i < n; i++)
				y[i] = x[i] / (1.0f + fabsf(x[i]));
			break;
		case U_HARDSIGMOID:
			for (int64_t i = 0; i < n; i++)
				y[i] = fmaxf(0.0f, fminf(1.0f, a * x[i] + b));
			break;
		case U_CLIP:
			for (int64_t i = 0; i < n; i++)
				y[i] = x[i] < a ? a : (x[i] > b ? b : x[i]);
			break;
	}
}

/* f'(x) given x and y = f(x). */
static float
unary_deriv(int code, float x, float y, float a, float b)
{
	switch (code)
	{
		case U_RELU:
			return x > 0 ? 1.0f : 0.0f;
		case U_LEAKY:
			return x >= 0 ? 1.0f : a;
		case U_ELU:
			return x >= 0 ? 1.0f : a * expf(x);
		case U_SELU:
			return b * (x > 0 ? 1.0f : a * expf(x));
		case U_SIGMOID:
			return y * (1.0f - y);
		case U_TANH:
			return 1.0f - y * y;
		case U_SOFTPLUS:
			return sigmoidf(x);
		case U_GELU:
			/* Phi(x) + x phi(x) */
			return 0.5f * (1.0f + erff(x * (float) M_SQRT1_2)) +
				x * 0.3989422804f * expf(-0.5f * x * x);
		case U_GELU_TANH:
			{
				float		u = 0.7978845608f * (x + 0.044715f * x * x * x);
				float		t = tanhf(u);

				return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) *
					0.7978845608f * (1.0f + 3.0f * 0.044715f * x * x);
			}
		case U_ERF:
			return 1.1283791671f * expf(-x * x);
		case U_EXP:
			return y;
		case U_LOG:
			return 1.0f / x;
		case U_SQRT:
			return 0.5f / y;
		case U_SIN:
			return cosf(x);
		case U_COS:
			return -sinf(x);
		case U_NEG:
			return -1.0f;
		case U_ABS:
			return x > 0 ? 1.0f : (x < 0 ? -1.0f : 0.0f);
		case U_RECIP:
			return -1.0f / (x * x);
		case U_SOFTSIGN:
			return 1.0f / ((1.0f + fabsf(x)) * (1.0f + fabsf(x)));
		case U_HARDSIGMOID:
			return (a * x + b > 0 && a * x + b < 1) ? a : 0.0f;
		case U_CLIP:
			return (x >= a && x <= b) ? 1.0f : 0.0f;
	}
	return 0.0f;
}

static void
unary_jvp(NnRun *r)
{
	const float *x = r->in[0];
	const float *y = r->out[0];
	int64_t		n = nn_numel(r->ish[0]);
	float	   *g = r->scratch;

	for (int64_t i = 0; i < n; i++)
		g[i] = unary_deriv((int) r->s->p[0], x[i], y[i], r->s->f[0], r->s->f[1]);
	for (int j = 0; j < r->k; j++)
	{
		const float *dx = r->tin[0] + (int64_t) j * n;
		float	   *dy = r->tout[0] + (int64_t) j * n;

		for (int64_t i = 0; i < n; i++)
			dy[i] = g[i] * dx[i];
	}
}

/* --- binary with broadcasting ------------------------------------------- */

enum
{
	B_ADD, B_SUB, B_MUL, B_DIV, B_POW, B_PRELU
};

/* Broadcast layout: output dims and the input strides (0 = stretched). */
typedef struct Bcast
{
	int			rank;
	int64_t		d[NN_MAX_RANK];
	int64_t		sa[NN_MAX_RANK];
	int64_t		sb[NN_MAX_RANK];
} Bcast;

static int
bcast_shape(const NnShape *a, const NnShape *b, NnShape *out)
{
	int			r = a->rank > b->rank ? a->rank : b->rank;

	out->rank = r;
	for (int i = 0; i < r; i++)
	{
		int			ia = i - (r - a->rank),
					ib = i - (r - b->rank);
		int64_t		da = ia >= 0 ? a->d[ia] : 1,
					db = ib >= 0 ? b->d[ib] : 1;

		if (da != db && da != 1 && db != 1)
			return 0;
		out->d[i] = da == 1 ? db : da;
	}
	return 1;
}

static void
bcast_init(Bcast *bc, const NnShape *a, const NnShape *b, const NnShape *o)
{
	int64_t		ma = 1,
				mb = 1;

	bc->rank = o->rank;
	for (int i = o->rank - 1; i >= 0; i--)
	{
		int			ia = i - (o->rank - a->rank),
					ib = i - (o->rank - b->rank);
		int64_t		da = ia >= 0 ? a->d[ia] : 1,
					db = ib >= 0 ? b->d[ib] : 1;

		bc->d[i] = o->d[i];
		bc->sa[i] = da == 1 ? 0 : ma;
		bc->sb[i] = db == 1 ? 0 : mb;
		ma *= da;
		mb *= db;
	}
}

/*
 * Visit every output element in order with the matching input offsets.
 * BODY can read o (output index), ia and ib.
 */
#define BCAST_LOOP(bc, total, BODY) \
	do { \
		int64_t idx_[NN_MAX_RANK] = {0}; \
		int64_t ia = 0, ib = 0; \
		for (int64_t o = 0; o < (total); o++) { \
			BODY; \
			for (int q_ = (bc).rank - 1; q_ >= 0; q_--) { \
				ia += (bc).sa[q_]; ib += (bc).sb[q_]; \
				if (++idx_[q_] < (bc).d[q_]) break; \
				ia -= (bc).sa[q_] * (bc).d[q_]; ib -= (bc).sb[q_] * (bc).d[q_]; \
				idx_[q_] = 0; \
			} \
		} \
	} while (0)

/* Broadcast layout kept in the step parameters from slot 2 on. */
#define BCAST_SLOT(s) ((Bcast *) &(s)->p[2])

static WdcStatus
binary_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	const char *n = s->op->name;
	NnShape		out;
	NnShape		bshape = *nn_in_shape(c, 1);
	int			elem = nn_in_elem(c, 0);

	_Static_assert(sizeof(Bcast) <= sizeof(int64_t) * (NN_MAX_PARAMS - 2),
				   "broadcast layout must fit in the step parameters");
	s->p[0] = strcmp(n, "Add") == 0 ? B_ADD : strcmp(n, "Sub") == 0 ? B_SUB :
		strcmp(n, "Mul") == 0 ? B_MUL : strcmp(n, "Div") == 0 ? B_DIV :
		strcmp(n, "PRelu") == 0 ? B_PRELU : B_POW;
	if (s->p[0] == B_PRELU && elem != WDC_NN_FLOAT)
		return nn_unsupported(c, "a non-float input");
	if (s->p[0] == B_POW)
	{
		if (elem != WDC_NN_FLOAT)
			return nn_unsupported(c, "an integer base");
		/* the exponent may be int64; it is converted at plan time */
		if (nn_in_elem(c, 1) != WDC_NN_FLOAT && nn_in_const(c, 1) == NULL)
			return nn_unsupported(c, "a non-constant integer exponent");
	}
	else if (nn_in_elem(c, 1) != elem)
		return nn_unsupported(c, "mixed element types");

	/*
	 * Before opset 7, B was aligned with A at "axis" when "broadcast" was
	 * set, and PRelu's slope followed the channel axis.
	 */
	if (c->opset < 7)
	{
		const NnShape *a = nn_in_shape(c, 0);
		int64_t		axis = -1;

		if (s->p[0] == B_PRELU && bshape.rank == 1 && a->rank >= 2 &&
			bshape.d[0] == a->d[1] && bshape.d[0] != a->d[a->rank - 1])
			axis = 1;
		else if (s->p[0] != B_PRELU && nn_attr_int(s->node, "broadcast", 0))
			axis = nn_attr_int(s->node, "axis", a->rank - bshape.rank);
		if (axis >= 0)
		{
			NnShape		aligned;

			if (axis + bshape.rank > a->rank)
				return nn_invalid(c, "broadcast axis out of range");
			aligned.rank = a->rank;
			for (int i = 0; i < a->rank; i++)
				aligned.d[i] = (i >= axis && i < axis + bshape.rank)
					? bshape.d[i - axis] : 1;
			bshape = aligned;
		}
	}
	if (!bcast_shape(nn_in_shape(c, 0), &bshape, &out))
		return nn_invalid(c, "shapes cannot be broadcast together");
	s->p[1] = nn_in_elem(c, 1);
	bcast_init(BCAST_SLOT(s), nn_in_shape(c, 0), &bshape, &out);
	return nn_set_out(c, 0, &out, elem);
}

static inline float
bin_f(int op, float a, float b)
{
	switch (op)
	{
		case B_ADD:
			return a + b;
		case B_SUB:
			return a - b;
		case B_MUL:
			return a * b;
		case B_DIV:
			return a / b;
		case B_PRELU:
			return a < 0 ? b * a : a;
		default:
			return powf(a, b);
	}
}

static inline int64_t
bin_i(int op, int64_t a, int64_t b)
{
	switch (op)
	{
		case B_ADD:
			return (int64_t) ((uint64_t) a + (uint64_t) b);
		case B_SUB:
			return (int64_t) ((uint64_t) a - (uint64_t) b);
		case B_MUL:
			return (int64_t) ((uint64_t) a * (uint64_t) b);
		default:
			/* ONNX leaves integer division by zero undefined; return 0 */
			if (b == 0 || (a == INT64_MIN && b == -1))
				return 0;
			return a / b;
	}
}

static void
binary_exec(NnRun *r)
{
	const Bcast bc = *BCAST_SLOT(r->s);
	int			op = (int) r->s->p[0];
	int64_t		total = nn_numel(r->osh[0]);
	const NnShape *sa = r->ish[0],
			   *sb = r->ish[1];

	if (op == B_POW && r->s->p[1] == WDC_NN_INT64)
	{
		const float *a = r->in[0];
		const int64_t *b = r->in[1];
		float	   *y = r->out[0];

		BCAST_LOOP(bc, total, y[o] = powf(a[ia], (float) b[ib]));
		return;
	}
	if (r->s->p[1] == WDC_NN_INT64)
	{
		const int64_t *a = r->in[0],
				   *b = r->in[1];
		int64_t    *y = r->out[0];

		BCAST_LOOP(bc, total, y[o] = bin_i(op, a[ia], b[ib]));
		return;
	}
	{
		const float *a = r->in[0],
				   *b = r->in[1];
		float	   *y = r->out[0];
		int64_t		na = nn_numel(sa),
					nb = nn_numel(sb);

		/* fast paths: same shape, or a scalar on either side */
		if (na == total && nb == total)
		{
			for (int64_t i = 0; i < total; i++)
				y[i] = bin_f(op, a[i], b[i]);
		}
		else if (nb == 1 && na == total)
		{
			for (int64_t i = 0; i < total; i++)
				y[i] = bin_f(op, a[i], b[0]);
		}
		else if (na == 1 && nb == total)
		{
			for (int64_t i = 0; i < total; i++)
				y[i] = bin_f(op, a[0], b[i]);
		}
		else
			BCAST_LOOP(bc, total, y[o] = bin_f(op, a[ia], b[ib]));
	}
}

/*
 * dy = da op' ... per direction: Add/Sub are linear, Mul and Div follow the
 * product and quotient rules, Pow differentiates a^b in both arguments.
 */
static void
binary_jvp(NnRun *r)
{
	const Bcast bc = *BCAST_SLOT(r->s);
	int			op = (int) r->s->p[0];
	int64_t		total = nn_numel(r->osh[0]);
	int64_t		na = nn_numel(r->ish[0]),
				nb = nn_numel(r->ish[1]);
	const float *a = r->in[0],
			   *b = r->in[1],
			   *y = r->out[0];
	int			int_exp = r->s->p[1] == WDC_NN_INT64;

	for (int j = 0; j < r->k; j++)
	{
		const float *da = r->tin[0] ? r->tin[0] + j * na : NULL;
		const float *db = r->tin[1] ? r->tin[1] + j * nb : NULL;
		float	   *dy = r->tout[0] + j * total;

		BCAST_LOOP(bc, total,
				   {
					   float ta = da ? da[ia] : 0.0f;
					   float tb = db ? db[ib] : 0.0f;
					   float bv = int_exp ? (float) ((const int64_t *) b)[ib] : b[ib];

					   switch (op)
					   {
						   case B_ADD:
							   dy[o] = ta + tb;
							   break;
						   case B_SUB:
							   dy[o] = ta - tb;
							   break;
						   case B_MUL:
							   dy[o] = ta * bv + a[ia] * tb;
							   break;
						   case B_DIV:
							   dy[o] = (ta - y[o] * tb) / bv;
							   break;
						   case B_PRELU:
							   dy[o] = a[ia] < 0 ? bv * ta + a[ia] * tb : ta;
							   break;
						   default:
							   dy[o] = (ta != 0.0f ? bv * powf(a[ia], bv - 1.0f) * ta : 0.0f) +
								   (tb != 0.0f ? y[o] * logf(a[ia]) * tb : 0.0f);
							   break;
					   }
				   });
	}
}

/* --- Softmax / LogSoftmax -------------------------------------------------- */

static WdcStatus
softmax_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	const NnShape *x = nn_in_shape(c, 0);
	int			axis;
	int64_t		outer = 1,
				n = 1,
				inner = 1;

	if (nn_in_elem(c, 0) != WDC_NN_FLOAT)
		return nn_unsupported(c, "a non-float input");
	if (!nn_norm_axis(nn_attr_int(s->node, "axis", c->opset >= 13 ? -1 : 1),
					  x->rank, &axis))
		return nn_invalid(c, "axis out of range");
	for (int i = 0; i < axis; i++)
		outer *= x->d[i];
	if (c->opset >= 13)
	{
		n = x->d[axis];
		for (int i = axis + 1; i < x->rank; i++)
			inner *= x->d[i];
	}
	else
	{
		/* before opset 13 the input is viewed as 2-D [outer, rest] */
		for (int i = axis; i < x->rank; i++)
			n *= x->d[i];
	}
	s->p[0] = outer;
	s->p[1] = n;
	s->p[2] = inner;
	s->p[3] = strcmp(s->op->name, "LogSoftmax") == 0;
	s->tscratch = (size_t) (outer * inner) * sizeof(float);
	return nn_set_out(c, 0, x, WDC_NN_FLOAT);
}

static void
softmax_exec(NnRun *r)
{
	int64_t		outer = r->s->p[0],
				n = r->s->p[1],
				inner = r->s->p[2];
	int			logsm = (int) r->s->p[3];
	const float *x = r->in[0];
	float	   *y = r->out[0];

	for (int64_t o = 0; o < outer; o++)
		for (int64_t in = 0; in < inner; in++)
		{
			const float *xp = x + o * n * inner + in;
			float	   *yp = y + o * n * inner + in;
			float		mx = -INFINITY;
			double		sum = 0;

			for (int64_t i = 0; i < n; i++)
				mx = fmaxf(mx, xp[i * inner]);
			for (int64_t i = 0; i < n; i++)
				sum += exp((double) xp[i * inner] - mx);
			for (int64_t i = 0; i < n; i++)
			{
				if (logsm)
					yp[i * inner] = (float) (xp[i * inner] - mx - log(sum));
				else
					yp[i * inner] = (float) (exp((double) xp[i * inner] - mx) / sum);
			}
		}
}

/* Softmax: dy = y (dx - <y, dx>); LogSoftmax: dy = dx - <softmax, dx>. */
static void
softmax_jvp(NnRun *r)
{
	int64_t		outer = r->s->p[0],
				n = r->s->p[1],
				inner = r->s->p[2];
	int			logsm = (int) r->s->p[3];
	int64_t		total = outer * n * inner;
	const float *y = r->out[0];

	for (int j = 0; j < r->k; j++)
	{
		const float *dx = r->tin[0] + j * total;
		float	   *dy = r->tout[0] + j * total;

		for (int64_t o = 0; o < outer; o++)
			for (int64_t in = 0; in < inner; in++)
			{
				int64_t		base = o * n * inner + in;
				double		dot = 0;

				for (int64_t i = 0; i < n; i++)
				{
					float		p = logsm ? expf(y[base + i * inner]) : y[base + i * inner];

					dot += (double) p * dx[base + i * inner];
				}
				for (int64_t i = 0; i < n; i++)
				{
					int64_t		q = base + i * inner;

					dy[q] = logsm ? dx[q] - (float) dot
						: y[q] * (dx[q] - (float) dot);
				}
			}
	}
}

/* --- ReduceMean / ReduceSum ----------------------------------------------- */

static WdcStatus
reduce_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	const NnShape *x = nn_in_shape(c, 0);
	int			is_mean = strcmp(s->op->name, "ReduceMean") == 0;
	int			axes_as_input = is_mean ? c->opset >= 18 : c->opset >= 13;
	int64_t		axes[NN_MAX_RANK];
	int			n_axes = 0;
	int			reduce[NN_MAX_RANK] = {0};
	int			keep = (int) nn_attr_int(s->node, "keepdims", 1);
	NnShape		out;
	int64_t		count = 1;

	if (nn_in_elem(c, 0) != WDC_NN_FLOAT)
		return nn_unsupported(c, "a non-float input");

	/* axes come from an attribute before opset 13 (18 for ReduceMean) */
	if (axes_as_input)
	{
		if (nn_has_in(c, 1))
		{
			WdcStatus	st = nn_const_ints(c, 1, axes, NN_MAX_RANK, &n_axes);

			if (st != WDC_OK)
				return st;
		}
		s->n_in = 1;
	}
	else
	{
		int			n;
		const int64_t *a = nn_attr_ints(s->node, "axes", &n);

		if (n > NN_MAX_RANK)
			return nn_invalid(c, "too many axes");
		for (int i = 0; i < n; i++)
			axes[i] = a[i];
		n_axes = n < 0 ? 0 : n;
	}
	if (n_axes == 0)
	{
		if (nn_attr_int(s->node, "noop_with_empty_axes", 0))
		{
			s->p[0] = -1;		/* identity */
			s->p[1] = 1;
			return nn_set_out(c, 0, x, WDC_NN_FLOAT);
		}
		for (int i = 0; i < x->rank; i++)
			reduce[i] = 1;
	}
	for (int i = 0; i < n_axes; i++)
	{
		int			ax;

		if (!nn_norm_axis(axes[i], x->rank, &ax))
			return nn_invalid(c, "axis %lld out of range", (long long) axes[i]);
		reduce[ax] = 1;
	}

	/* output shape, and the reduced strides packed for the kernel */
	out.rank = 0;
	for (int i = 0; i < x->rank; i++)
	{
		if (reduce[i])
		{
			count *= x->d[i];
			if (keep)
				out.d[out.rank++] = 1;
		}
		else
			out.d[out.rank++] = x->d[i];
	}
	s->p[0] = x->rank;
	s->p[1] = is_mean;
	for (int i = 0; i < x->rank; i++)
		s->p[2 + i] = reduce[i];
	s->f[0] = is_mean && count > 0 ? 1.0f / (float) count : 1.0f;
	return nn_set_out(c, 0, &out, WDC_NN_FLOAT);
}

static void
reduce_apply(const NnStep *s, const NnShape *xs, const float *x, float *y,
			 int64_t n_out)
{
	int			rank = (int) s->p[0];
	int64_t		ostride[NN_MAX_RANK];
	int64_t		m = 1;
	int64_t		idx[NN_MAX_RANK] = {0};
	int64_t		oi = 0;
	int64_t		total = nn_numel(xs);

	if (rank < 0)
	{
		memcpy(y, x, sizeof(float) * total);
		return;
	}
	for (int i = rank - 1; i >= 0; i--)
	{
		ostride[i] = s->p[2 + i] ? 0 : m;
		if (!s->p[2 + i])
			m *= xs->d[i];
	}
	memset(y, 0, sizeof(float) * n_out);
	for (int64_t i = 0; i < total; i++)
	{
		y[oi] += x[i];
		for (int q = rank - 1; q >= 0; q--)
		{
			oi += ostride[q];
			if (++idx[q] < xs->d[q])
				break;
			oi -= ostride[q] * xs->d[q];
			idx[q] = 0;
		}
	}
	for (int64_t i = 0; i < n_out; i++)
		y[i] *= s->f[0];
}

static void
reduce_exec(NnRun *r)
{
	reduce_apply(r->s, r->ish[0], r->in[0], r->out[0], nn_numel(r->osh[0]));
}

/* Linear: reduce each tangent slice. */
static void
reduce_jvp(NnRun *r)
{
	int64_t		ni = nn_numel(r->ish[0]),
				no = nn_numel(r->osh[0]);

	for (int j = 0; j < r->k; j++)
		reduce_apply(r->s, r->ish[0], r->tin[0] + j * ni, r->tout[0] + j * no, no);
}

#define UNARY(name, opset) {name, opset, 1, 1, 1, 1, unary_prepare, unary_exec, unary_jvp}
#define BINARY(name) {name, 1, 2, 2, 1, 1, binary_prepare, binary_exec, binary_jvp}

const NnOpDef nn_ops_elem[] = {
	UNARY("Relu", 1), UNARY("LeakyRelu", 1), UNARY("Elu", 1), UNARY("Selu", 1),
	UNARY("Sigmoid", 1), UNARY("Tanh", 1), UNARY("Softplus", 1),
	UNARY("Gelu", 1), UNARY("Erf", 9), UNARY("Exp", 1), UNARY("Log", 1),
	UNARY("Sqrt", 1), UNARY("Sin", 7), UNARY("Cos", 7), UNARY("Neg", 1),
	UNARY("Abs", 1), UNARY("Reciprocal", 1), UNARY("Softsign", 1),
	UNARY("HardSigmoid", 1),
	{"Clip", 1, 1, 3, 1, 1, unary_prepare, unary_exec, unary_jvp},
	BINARY("Add"), BINARY("Sub"), BINARY("Mul"), BINARY("Div"), BINARY("Pow"),
	BINARY("PRelu"),
	{"Softmax", 1, 1, 1, 1, 1, softmax_prepare, softmax_exec, softmax_jvp},
	{"LogSoftmax", 1, 1, 1, 1, 1, softmax_prepare, softmax_exec, softmax_jvp},
	{"ReduceMean", 1, 1, 2, 1, 1, reduce_prepare, reduce_exec, reduce_jvp},
	{"ReduceSum", 1, 1, 2, 1, 1, reduce_prepare, reduce_exec, reduce_jvp},
	{NULL}
};
