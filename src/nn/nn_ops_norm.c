/*
 * nn_ops_norm.c
 *	  Normalization operators: BatchNormalization (inference), and the
 *	  instance, layer and group normalizations, which share one kernel.
 *
 * BatchNormalization in inference is a per-channel affine map
 * y = a x + b with a = scale / sqrt(var + eps), b = bias - mean a.  When it
 * follows a Conv or Gemm whose output nothing else reads, the planner folds
 * a and b into that layer's weights and bias and drops the step.
 *
 * The other three normalize groups of contiguous elements to zero mean and
 * unit variance, then apply a per-element scale and bias.  Their JVP follows
 * from xhat = (x - mu) / sigma:
 *	  d xhat = (dx - mean(dx) - xhat mean(xhat dx)) / sigma.
 */
#include "nn/nn_int.h"

#include <math.h>
#include <string.h>

/* --- BatchNormalization ------------------------------------------------ */

/* Fold y = a x + b into the Conv or Gemm step that produces x, if allowed. */
static int
fold_into_producer(NnCtx *c, const float *a, const float *b)
{
	WdcNnPlan  *p = c->plan;
	int			xv = c->step->in[0];
	const NnValue *mv = &p->model->values[xv];
	NnStep	   *prev;
	int64_t		ch;

	if (mv->producer < 0 || mv->n_consumers != 1 || mv->is_output)
		return 0;
	prev = &p->steps[mv->producer];
	if (prev->skip || prev->w || prev->b || prev->out[0] != xv)
		return 0;
	if (strcmp(prev->op->name, "Conv") == 0)
	{
		const NnPVal *w = &p->vals[prev->in[1]];
		const float *bias = prev->n_in > 2 && prev->in[2] >= 0
			? p->vals[prev->in[2]].cdata : NULL;
		int64_t		per;

		if (w->cdata == NULL || (prev->n_in > 2 && prev->in[2] >= 0 && bias == NULL))
			return 0;
		ch = w->shape.d[0];
		per = nn_numel(&w->shape) / ch;
		prev->w = wdc_alloc(c->env, sizeof(float) * nn_numel(&w->shape));
		prev->b = wdc_alloc(c->env, sizeof(float) * ch);
		if (!prev->w || !prev->b)
			return -1;
		for (int64_t m = 0; m < ch; m++)
		{
			for (int64_t i = 0; i < per; i++)
				prev->w[m * per + i] = a[m] * ((const float *) w->cdata)[m * per + i];
			prev->b[m] = a[m] * (bias ? bias[m] : 0.0f) + b[m];
		}
		if (prev->direct)
			nn_conv_direct_pack(prev->direct, prev->w, prev->b);
	}
	else if (strcmp(prev->op->name, "Gemm") == 0)
	{
		/* parameter slots of nn_ops_linear.c's Gemm */
		int64_t		N = prev->p[1],
					K = prev->p[2];
		int			tb = (int) prev->p[4];
		const NnPVal *bm = &p->vals[prev->in[1]];
		const float *cm = NULL;
		int64_t		crows = prev->p[6],
					ccols = prev->p[7];

		if (bm->cdata == NULL)
			return 0;
		if (prev->p[5])
		{
			cm = p->vals[prev->in[2]].cdata;
			if (cm == NULL || crows != 1)
				return 0;
		}
		prev->w = wdc_alloc(c->env, sizeof(float) * N * K);
		prev->b = wdc_alloc(c->env, sizeof(float) * N);
		if (!prev->w || !prev->b)
			return -1;
		/* scale column n of op(B) by a[n]; B is [K, N], or [N, K] if transB */
		for (int64_t kk = 0; kk < K; kk++)
			for (int64_t n = 0; n < N; n++)
			{
				int64_t		at = tb ? n * K + kk : kk * N + n;

				prev->w[at] = a[n] * ((const float *) bm->cdata)[at];
			}
		for (int64_t n = 0; n < N; n++)
		{
			/* Gemm's beta * C, broadcast along the row, is the old bias */
			float		old_bias = 0.0f;

			if (cm)
				old_bias = prev->f[1] * cm[ccols == 1 ? 0 : n];
			prev->b[n] = a[n] * old_bias + b[n];
		}
	}
	else
		return 0;

	/* the producer now writes the normalized tensor itself */
	prev->out[0] = c->step->out[0];
	c->step->skip = 1;
	return 1;
}

static WdcStatus
batchnorm_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	const NnShape *x = nn_in_shape(c, 0);
	float		eps = nn_attr_float(s->node, "epsilon", 1e-5f);
	int64_t		C;
	const float *scale,
			   *bias,
			   *mean,
			   *var;
	int			folded;
	WdcStatus	st;

	if (nn_attr_int(s->node, "training_mode", 0) != 0)
		return nn_unsupported(c, "training_mode=1");
	if (c->opset < 9 && nn_attr_int(s->node, "spatial", 1) != 1)
		return nn_unsupported(c, "spatial=0");
	for (int i = 1; i < s->n_out; i++)
		if (s->out[i] >= 0)
			return nn_unsupported(c, "running statistics outputs");
	if (x->rank < 2 || nn_in_elem(c, 0) != WDC_NN_FLOAT)
		return nn_invalid(c, "input must be float [N, C, ...]");
	C = x->d[1];
	for (int i = 1; i <= 4; i++)
	{
		if (nn_in_const(c, i) == NULL)
			return nn_unsupported(c, "non-constant statistics");
		if (nn_numel(nn_in_shape(c, i)) != C || nn_in_elem(c, i) != WDC_NN_FLOAT)
			return nn_invalid(c, "input %d must have one value per channel", i);
	}
	scale = nn_in_const(c, 1);
	bias = nn_in_const(c, 2);
	mean = nn_in_const(c, 3);
	var = nn_in_const(c, 4);

	/* the affine form a x + b, kept in the step */
	s->w = wdc_alloc(c->env, sizeof(float) * C);
	s->b = wdc_alloc(c->env, sizeof(float) * C);
	if (!s->w || !s->b)
		return wdc_error(c->env, WDC_ERR_NOMEM, "out of memory planning model");
	for (int64_t i = 0; i < C; i++)
	{
		s->w[i] = (float) (scale[i] / sqrt((double) var[i] + eps));
		s->b[i] = bias[i] - mean[i] * s->w[i];
	}
	s->p[0] = x->d[0];
	s->p[1] = C;
	s->p[2] = (x->d[0] * C) != 0 ? nn_numel(x) / (x->d[0] * C) : 0;
	s->n_in = 1;

	st = nn_set_out(c, 0, x, WDC_NN_FLOAT);
	if (st != WDC_OK)
		return st;
	folded = fold_into_producer(c, s->w, s->b);
	if (folded < 0)
		return wdc_error(c->env, WDC_ERR_NOMEM, "out of memory planning model");
	return WDC_OK;
}

static void
affine_apply(const NnStep *s, int64_t n, const float *x, float *y, int bias)
{
	int64_t		C = s->p[1],
				sp = s->p[2];

	for (int64_t i = 0; i < n * C; i++)
	{
		float		a = s->w[i % C],
					b = bias ? s->b[i % C] : 0.0f;

		for (int64_t j = 0; j < sp; j++)
			y[i * sp + j] = a * x[i * sp + j] + b;
	}
}

static void
batchnorm_exec(NnRun *r)
{
	affine_apply(r->s, r->s->p[0], r->in[0], r->out[0], 1);
}

static void
batchnorm_jvp(NnRun *r)
{
	affine_apply(r->s, r->s->p[0] * r->k, r->tin[0], r->tout[0], 0);
}

/* --- instance / layer / group normalization ------------------------------- */

/*
 * Parameter slots.  A group g of m contiguous elements; element i of it
 * uses scale/bias index ((g % GMOD) * GMUL) + (i / IDIV) % IMOD.
 */
enum
{
	N_GROUPS, N_M, N_GMOD, N_GMUL, N_IDIV, N_IMOD, N_STATS
};

static WdcStatus
norm_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	const NnShape *x = nn_in_shape(c, 0);
	const char *op = s->op->name;
	int64_t		nscale,
				nbias;
	WdcStatus	st;

	if (nn_in_elem(c, 0) != WDC_NN_FLOAT)
		return nn_unsupported(c, "a non-float input");
	s->f[0] = nn_attr_float(s->node, "epsilon", 1e-5f);
	nscale = nn_numel(nn_in_shape(c, 1));
	nbias = nn_has_in(c, 2) ? nn_numel(nn_in_shape(c, 2)) : nscale;
	if (nn_in_elem(c, 1) != WDC_NN_FLOAT ||
		(nn_has_in(c, 2) && nn_in_elem(c, 2) != WDC_NN_FLOAT))
		return nn_invalid(c, "scale and bias must be float");
	if (strcmp(op, "InstanceNormalization") == 0)
	{
		if (x->rank < 3)
			return nn_invalid(c, "input must be [N, C, ...]");
		s->p[N_GROUPS] = x->d[0] * x->d[1];
		s->p[N_GMOD] = x->d[1];
		s->p[N_GMUL] = 1;
		s->p[N_IDIV] = 1;
		s->p[N_IMOD] = 1;
		if (nscale != x->d[1])
			return nn_invalid(c, "scale must have one value per channel");
	}
	else if (strcmp(op, "GroupNormalization") == 0)
	{
		int64_t		G = nn_attr_int(s->node, "num_groups", 0);
		int64_t		C = x->rank >= 2 ? x->d[1] : 0;

		if (x->rank < 3 || G < 1 || C % G != 0)
			return nn_invalid(c, "num_groups must divide the channels");
		s->p[N_GROUPS] = x->d[0] * G;
		s->p[N_GMOD] = G;
		/* scale per group (opset 18) or per channel (opset 21) */
		if (nscale == G && G != C)
		{
			s->p[N_GMUL] = 1;
			s->p[N_IDIV] = nn_numel(x) / (x->d[0] * G);
			s->p[N_IMOD] = 1;
		}
		else if (nscale == C)
		{
			s->p[N_GMUL] = C / G;
			s->p[N_IDIV] = nn_numel(x) / (x->d[0] * C);
			s->p[N_IMOD] = C / G;
		}
		else
			return nn_invalid(c, "scale must have one value per group or channel");
	}
	else
	{
		/* LayerNormalization over the dimensions from axis on */
		int			axis;
		int64_t		m = 1;

		if (!nn_norm_axis(nn_attr_int(s->node, "axis", -1), x->rank, &axis))
			return nn_invalid(c, "axis out of range");
		for (int i = axis; i < x->rank; i++)
			m *= x->d[i];
		s->p[N_GROUPS] = m ? nn_numel(x) / m : 0;
		s->p[N_GMOD] = 1;
		s->p[N_GMUL] = 0;
		s->p[N_IDIV] = 1;
		if (nscale != m && nscale != 1)
			return nn_unsupported(c, "a scale that is not the normalized shape");
		s->p[N_IMOD] = nscale;
		if (nbias != nscale)
			return nn_unsupported(c, "bias and scale of different shapes");
		if (nn_attr_int(s->node, "stash_type", 1) != 1)
			return nn_unsupported(c, "stash_type other than float");
		/* optional outputs Mean and InvStdDev: [d0..d(axis-1), 1, ...] */
		for (int o = 1; o < 3; o++)
		{
			NnShape		ms = *x;

			for (int i = axis; i < x->rank; i++)
				ms.d[i] = 1;
			st = nn_set_out(c, o, &ms, WDC_NN_FLOAT);
			if (st != WDC_OK)
				return st;
		}
	}
	if (nbias != nscale)
		return nn_invalid(c, "bias and scale differ in size");
	s->p[N_M] = s->p[N_GROUPS] ? nn_numel(x) / s->p[N_GROUPS] : 0;
	s->p[N_STATS] = s->n_out > 1;
	s->tscratch = (size_t) (2 * s->p[N_GROUPS]) * sizeof(float);
	return nn_set_out(c, 0, x, WDC_NN_FLOAT);
}

/* Mean and 1/sigma of one group of m values, in double. */
static void
group_stats(const float *xg, int64_t m, float eps, float *mean, float *inv)
{
	double		sum = 0,
				sq = 0,
				mu;

	for (int64_t i = 0; i < m; i++)
		sum += xg[i];
	mu = m ? sum / m : 0;
	for (int64_t i = 0; i < m; i++)
		sq += (xg[i] - mu) * (xg[i] - mu);
	*mean = (float) mu;
	*inv = (float) (1.0 / sqrt((m ? sq / m : 0) + eps));
}

static inline int64_t
aff_index(const int64_t *p, int64_t g, int64_t i)
{
	return (g % p[N_GMOD]) * p[N_GMUL] + (i / p[N_IDIV]) % p[N_IMOD];
}

static void
norm_exec(NnRun *r)
{
	const NnStep *s = r->s;
	const float *x = r->in[0],
			   *scale = r->in[1],
			   *bias = r->in[2];
	float	   *y = r->out[0];
	int64_t		m = s->p[N_M];

	for (int64_t g = 0; g < s->p[N_GROUPS]; g++)
	{
		float		mean,
					inv;

		group_stats(x + g * m, m, s->f[0], &mean, &inv);
		for (int64_t i = 0; i < m; i++)
		{
			int64_t		a = aff_index(s->p, g, i);

			y[g * m + i] = (x[g * m + i] - mean) * inv * scale[a] +
				(bias ? bias[a] : 0.0f);
		}
		if (s->p[N_STATS])
		{
			if (r->out[1])
				((float *) r->out[1])[g] = mean;
			if (r->out[2])
				((float *) r->out[2])[g] = inv;
		}
	}
}

static void
norm_jvp(NnRun *r)
{
	const NnStep *s = r->s;
	const float *x = r->in[0],
			   *scale = r->in[1];
	int64_t		m = s->p[N_M],
				G = s->p[N_GROUPS],
				total = G * m;
	float	   *mean = r->scratch,
			   *inv = r->scratch + G;

	for (int64_t g = 0; g < G; g++)
		group_stats(x + g * m, m, s->f[0], &mean[g], &inv[g]);
	for (int j = 0; j < r->k; j++)
	{
		const float *dx = r->tin[0] ? r->tin[0] + j * total : NULL;
		float	   *dy = r->tout[0] + j * total;

		for (int64_t g = 0; g < G; g++)
		{
			double		mdx = 0,
						mxd = 0;

			if (dx == NULL)
			{
				memset(dy + g * m, 0, sizeof(float) * m);
				continue;
			}
			for (int64_t i = 0; i < m; i++)
			{
				double		xh = (x[g * m + i] - mean[g]) * inv[g];

				mdx += dx[g * m + i];
				mxd += xh * dx[g * m + i];
			}
			mdx /= m;
			mxd /= m;
			for (int64_t i = 0; i < m; i++)
			{
				double		xh = (x[g * m + i] - mean[g]) * inv[g];

				dy[g * m + i] = (float) (scale[aff_index(s->p, g, i)] * inv[g] *
										 (dx[g * m + i] - mdx - xh * mxd));
			}
		}
		/* tangents through scale and bias */
		if (r->tin[1] || (s->n_in > 2 && r->tin[2]))
		{
			int64_t		ns = nn_numel(r->ish[1]);

			for (int64_t g = 0; g < G; g++)
				for (int64_t i = 0; i < m; i++)
				{
					int64_t		a = aff_index(s->p, g, i);
					float		xh = (x[g * m + i] - mean[g]) * inv[g];

					if (r->tin[1])
						dy[g * m + i] += xh * r->tin[1][j * ns + a];
					if (s->n_in > 2 && r->tin[2])
						dy[g * m + i] += r->tin[2][j * ns + a];
				}
		}
	}
}

const NnOpDef nn_ops_norm[] = {
	{"BatchNormalization", 1, 5, 5, 1, 5, batchnorm_prepare, batchnorm_exec, batchnorm_jvp},
	{"InstanceNormalization", 1, 3, 3, 1, 1, norm_prepare, norm_exec, norm_jvp},
	{"LayerNormalization", 17, 2, 3, 1, 3, norm_prepare, norm_exec, norm_jvp},
	{"GroupNormalization", 18, 3, 3, 1, 1, norm_prepare, norm_exec, norm_jvp},
	{NULL}
};
