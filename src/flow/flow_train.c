/*
 * flow_train.c
 *	  Conditional flow-matching training of the velocity MLP with AdamW.
 *
 * Stages:
 *	1. check options and data; standardise latents per dimension (stored
 *	   mean and std) and z-score numeric conditions over rows that have them
 *	2. split rows into training and validation sets with the seeded PRNG
 *	3. initialise weights: truncated normal (std init_std, cut at 2 std),
 *	   zero biases, gamma half of the FiLM bias at film_gamma_bias
 *	4. epochs of shuffled mini-batches.  Per row: x1 = standardised latent
 *	   plus N(0, train_noise^2) noise, x0 ~ N(0, I), t ~ U(0, 1),
 *	   x_t = (1 - t) x0 + t x1, target x1 - x0 (conditional-OT flow matching,
 *	   Lipman et al. 2023); the condition is replaced by the null vector with
 *	   probability p_null.  Loss: mean squared error over rows and
 *	   dimensions.  Backpropagation by hand, global gradient-norm clipping,
 *	   AdamW (Loshchilov and Hutter 2019, with PyTorch's bias correction)
 *	5. after each epoch the validation loss with draws fixed at the start;
 *	   early stopping keeps the best weights
 *	6. calibration: log densities of up to calibration_rows validation rows
 *
 * Determinism: all randomness comes from FlowRng streams derived from the
 * seed, and OpenBLAS with one thread sums in a fixed order, so the same rows
 * in the same order and the same seed give bit-identical weights on one
 * machine.
 */
#include "flow/flow_int.h"
#include "flow/flow_vec.h"

#include <cblas.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Buffers for one mini-batch of at most `rows` rows. */
typedef struct TrainWork
{
	int			rows;
	float	   *input;			/* [rows][d + 1] layer-1 input [x_t, t] */
	float	   *target;			/* [rows][d] */
	float	   *code;			/* [rows][m] encoded conditions */
	uint8_t    *use_null;		/* [rows] */
	int32_t    *cls;			/* [rows] class or -1 */
	float	   *film;			/* [rows][2H] */
	float	   *pre;			/* [layers][rows][H] a + bias, before FiLM */
	float	   *deriv;			/* [layers][rows][H] gelu'(p) */
	float	   *act;			/* [layers][rows][H] gelu(p) */
	float	   *v;				/* [rows][d] */
	float	   *dv;				/* [rows][d] */
	float	   *dh;				/* [rows][H] */
	float	   *da;				/* [rows][H] */
	float	   *dfilm;			/* [rows][2H] */
	float	   *dcode;			/* [rows][m] */
	float	   *grad;			/* [n_params] */
	float	   *adam_m;
	float	   *adam_v;
	float	   *best;
} TrainWork;

/* Training data after stage 1. */
typedef struct TrainData
{
	int64_t		n;
	int			d;
	float	   *x;				/* [n][d] standardised latents */
	float	   *numeric;		/* [n][n_numeric] z-scored, or NULL */
	int32_t    *cls;			/* [n] or NULL */
	uint8_t    *is_null;		/* [n] row has no (complete) condition */
	int64_t    *order;			/* [n] permutation: validation rows first */
	int64_t		n_val;
	float	   *val_x0;			/* [n_val][d] fixed validation draws */
	float	   *val_noise;		/* [n_val][d] */
	float	   *val_t;			/* [n_val] */
} TrainData;

static void param_view(const FlowModel *m, float *base, FlowModel *view);

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Truncated normal at +-2 standard deviations, by rejection. */
static float
trunc_normal(FlowRng *rng, double std)
{
	double		z;

	do
		z = flow_rng_normal(rng);
	while (fabs(z) > 2.0);
	return (float) (z * std);
}

static void
train_work_free(const WdcEnv *env, TrainWork *w)
{
	wdc_free(env, w->input);
	wdc_free(env, w->target);
	wdc_free(env, w->code);
	wdc_free(env, w->use_null);
	wdc_free(env, w->cls);
	wdc_free(env, w->film);
	wdc_free(env, w->pre);
	wdc_free(env, w->deriv);
	wdc_free(env, w->act);
	wdc_free(env, w->v);
	wdc_free(env, w->dv);
	wdc_free(env, w->dh);
	wdc_free(env, w->da);
	wdc_free(env, w->dfilm);
	wdc_free(env, w->dcode);
	wdc_free(env, w->grad);
	wdc_free(env, w->adam_m);
	wdc_free(env, w->adam_v);
	wdc_free(env, w->best);
}

static WdcStatus
train_work_alloc(const WdcEnv *env, const FlowModel *m, int rows, TrainWork *w)
{
	size_t		r = (size_t) rows;
	size_t		h = (size_t) m->hidden;
	size_t		cm = (size_t) (m->cond_dim > 0 ? m->cond_dim : 1);
	size_t		np = m->n_params * sizeof(float);

	memset(w, 0, sizeof(*w));
	w->rows = rows;
	w->input = wdc_alloc(env, r * (size_t) (m->d + 1) * sizeof(float));
	w->target = wdc_alloc(env, r * (size_t) m->d * sizeof(float));
	w->code = wdc_alloc0(env, r * cm * sizeof(float));
	w->use_null = wdc_alloc(env, r);
	w->cls = wdc_alloc(env, r * sizeof(int32_t));
	w->film = wdc_alloc(env, r * 2 * h * sizeof(float));
	w->pre = wdc_alloc(env, (size_t) m->layers * r * h * sizeof(float));
	w->deriv = wdc_alloc(env, (size_t) m->layers * r * h * sizeof(float));
	w->act = wdc_alloc(env, (size_t) m->layers * r * h * sizeof(float));
	w->v = wdc_alloc(env, r * (size_t) m->d * sizeof(float));
	w->dv = wdc_alloc(env, r * (size_t) m->d * sizeof(float));
	w->dh = wdc_alloc(env, r * h * sizeof(float));
	w->da = wdc_alloc(env, r * h * sizeof(float));
	w->dfilm = wdc_alloc(env, r * 2 * h * sizeof(float));
	w->dcode = wdc_alloc(env, r * cm * sizeof(float));
	w->grad = wdc_alloc0(env, np);
	w->adam_m = wdc_alloc0(env, np);
	w->adam_v = wdc_alloc0(env, np);
	w->best = wdc_alloc(env, np);
	if (!w->input || !w->target || !w->code || !w->use_null || !w->cls ||
		!w->film || !w->pre || !w->deriv || !w->act || !w->v || !w->dv ||
		!w->dh || !w->da || !w->dfilm || !w->dcode || !w->grad ||
		!w->adam_m || !w->adam_v || !w->best)
	{
		train_work_free(env, w);
		return wdc_error(env, WDC_ERR_NOMEM,
						 "out of memory for flow training buffers");
	}
	return WDC_OK;
}

/* Column sums of a [rows][cols] matrix added into out [cols]. */
static void
add_column_sums(const float *a, int rows, int cols, float *out)
{
	int			r;

	for (r = 0; r < rows; r++)
		flow_vec_add(out, a + (size_t) r * cols, cols);
}

/*
 * Forward pass for rows whose input, code and use_null are filled; keeps
 * every layer's pre-activation, gelu' and output for the backward pass.
 * Returns the mean squared error against w->target.
 */
static double
train_forward(const FlowModel *m, TrainWork *w, int n)
{
	int			H = m->hidden;
	int			d = m->d;
	int			M = m->cond_dim;
	size_t		layer = (size_t) w->rows * H;
	double		loss = 0.0;
	int			l;
	int			r;
	int			k;

	/* FiLM: film [n][2H] = code [n][M] x w_film^T [M][2H] + b_film */
	if (M > 0)
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, 2 * H, M,
					1.0f, w->code, M, m->w_film, M, 0.0f, w->film, 2 * H);
	else
		memset(w->film, 0, (size_t) n * 2 * H * sizeof(float));
	for (r = 0; r < n; r++)
		flow_vec_add(w->film + (size_t) r * 2 * H, m->b_film, 2 * H);

	for (l = 0; l < m->layers; l++)
	{
		float	   *pre = w->pre + l * layer;
		float	   *act = w->act + l * layer;
		float	   *deriv = w->deriv + l * layer;
		const float *bias = l == 0 ? m->b_in : m->b_hidden + (size_t) (l - 1) * H;

		if (l == 0)
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, H, d + 1,
						1.0f, w->input, d + 1, m->w_in, d + 1, 0.0f, pre, H);
		else
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, H, H,
						1.0f, w->act + (l - 1) * layer, H,
						m->w_hidden + (size_t) (l - 1) * H * H, H,
						0.0f, pre, H);
		/* pre = a + bias; act first receives p = gamma pre + beta */
		for (r = 0; r < n; r++)
		{
			const float *gamma = w->film + (size_t) r * 2 * H;
			const float *beta = gamma + H;
			float	   *pr = pre + (size_t) r * H;
			float	   *ac = act + (size_t) r * H;

			for (k = 0; k + 4 <= H; k += 4)
			{
				flow_v4		a = flow_load4(pr + k) + flow_load4(bias + k);

				flow_store4(pr + k, a);
				flow_store4(ac + k, flow_load4(gamma + k) * a + flow_load4(beta + k));
			}
			for (; k < H; k++)
			{
				pr[k] += bias[k];
				ac[k] = gamma[k] * pr[k] + beta[k];
			}
		}
		flow_gelu(act, act, deriv, n * H);
	}

	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, d, H,
				1.0f, w->act + (size_t) (m->layers - 1) * layer, H,
				m->w_out, H, 0.0f, w->v, d);
	for (r = 0; r < n; r++)
		for (k = 0; k < d; k++)
		{
			size_t		at = (size_t) r * d + k;
			double		diff;

			w->v[at] += m->b_out[k];
			diff = (double) w->v[at] - w->target[at];
			loss += diff * diff;
		}
	return loss / ((double) n * d);
}

/*
 * Backward pass after train_forward: gradient of the mean squared error
 * into w->grad (laid out like m->params).  g is the model view of grad.
 */
static void
train_backward(const FlowModel *m, const FlowModel *g, TrainWork *w, int n)
{
	int			H = m->hidden;
	int			d = m->d;
	int			M = m->cond_dim;
	size_t		layer = (size_t) w->rows * H;
	float		scale = 2.0f / ((float) n * d);
	int			l;
	int			r;
	int			k;
	size_t		j;

	memset(w->grad, 0, m->n_params * sizeof(float));
	memset(w->dfilm, 0, (size_t) n * 2 * H * sizeof(float));

	/* output layer: dv = 2 (v - target) / (n d) */
	for (j = 0; j < (size_t) n * d; j++)
		w->dv[j] = scale * (w->v[j] - w->target[j]);
	/* grad w_out [d][H] = dv^T [d][n] x h [n][H] */
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, H, n,
				1.0f, w->dv, d, w->act + (size_t) (m->layers - 1) * layer, H,
				0.0f, g->w_out, H);
	add_column_sums(w->dv, n, d, g->b_out);
	/* dh [n][H] = dv [n][d] x w_out [d][H] */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, H, d,
				1.0f, w->dv, d, m->w_out, H, 0.0f, w->dh, H);

	for (l = m->layers - 1; l >= 0; l--)
	{
		const float *pre = w->pre + l * layer;
		const float *deriv = w->deriv + l * layer;
		float	   *gw;
		float	   *gb;

		/* through gelu and FiLM: dp = dh gelu'(p); da = gamma dp */
		for (r = 0; r < n; r++)
		{
			const float *gamma = w->film + (size_t) r * 2 * H;
			float	   *dgamma = w->dfilm + (size_t) r * 2 * H;
			float	   *dbeta = dgamma + H;
			const float *dh = w->dh + (size_t) r * H;
			const float *dr = deriv + (size_t) r * H;
			const float *pr = pre + (size_t) r * H;
			float	   *da = w->da + (size_t) r * H;

			for (k = 0; k + 4 <= H; k += 4)
			{
				flow_v4		dp = flow_load4(dh + k) * flow_load4(dr + k);

				flow_store4(dgamma + k, flow_load4(dgamma + k) + dp * flow_load4(pr + k));
				flow_store4(dbeta + k, flow_load4(dbeta + k) + dp);
				flow_store4(da + k, dp * flow_load4(gamma + k));
			}
			for (; k < H; k++)
			{
				float		dp = dh[k] * dr[k];

				dgamma[k] += dp * pr[k];
				dbeta[k] += dp;
				da[k] = dp * gamma[k];
			}
		}

		if (l == 0)
		{
			gw = g->w_in;
			gb = g->b_in;
			/* grad w_in [H][d+1] = da^T [H][n] x input [n][d+1] */
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, d + 1, n,
						1.0f, w->da, H, w->input, d + 1, 0.0f, gw, d + 1);
			add_column_sums(w->da, n, H, gb);
		}
		else
		{
			const float *wl = m->w_hidden + (size_t) (l - 1) * H * H;

			gw = g->w_hidden + (size_t) (l - 1) * H * H;
			gb = g->b_hidden + (size_t) (l - 1) * H;
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, H, n,
						1.0f, w->da, H, w->act + (l - 1) * layer, H,
						0.0f, gw, H);
			add_column_sums(w->da, n, H, gb);
			/* dh [n][H] = da [n][H] x w [H][H] */
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, H, H,
						1.0f, w->da, H, wl, H, 0.0f, w->dh, H);
		}
	}

	/* FiLM: grad w_film [2H][M] = dfilm^T x code; code gradient per row */
	add_column_sums(w->dfilm, n, 2 * H, g->b_film);
	if (M > 0)
	{
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, 2 * H, M, n,
					1.0f, w->dfilm, 2 * H, w->code, M, 0.0f, g->w_film, M);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, M, 2 * H,
					1.0f, w->dfilm, 2 * H, m->w_film, M, 0.0f, w->dcode, M);
		for (r = 0; r < n; r++)
		{
			const float *dc = w->dcode + (size_t) r * M;

			if (w->use_null[r])
				for (k = 0; k < M; k++)
					g->null_cond[k] += dc[k];
			else if (m->n_classes > 0)
			{
				float	   *ge = g->class_embed + (size_t) w->cls[r] * m->embed_dim;

				for (k = 0; k < m->embed_dim; k++)
					ge[k] += dc[m->n_numeric + k];
			}
		}
	}
}

/*
 * Mean squared error and its gradient for one hand-made batch, for gradient
 * checks.  x_t [n][d] and t [n] are the path points, target [n][d] the
 * velocities, numeric [n][n_numeric] the z-scored numeric conditions (NULL
 * without), cls [n] class indices and use_null [n] the rows that take the
 * null condition.  grad [n_params] receives the gradient.
 */
WdcStatus
flow_train_batch_gradient(const WdcEnv *env, const FlowModel *m, int n,
						  const float *x_t, const float *t,
						  const float *target, const float *numeric,
						  const int32_t *cls, const uint8_t *use_null,
						  double *loss, float *grad)
{
	TrainWork	w;
	FlowModel	g;
	WdcStatus	st;
	int			r;
	int			M = m->cond_dim;

	st = train_work_alloc(env, m, n, &w);
	if (st != WDC_OK)
		return st;
	for (r = 0; r < n; r++)
	{
		float	   *c = w.code + (size_t) r * (M > 0 ? M : 1);

		memcpy(w.input + (size_t) r * (m->d + 1), x_t + (size_t) r * m->d,
			   (size_t) m->d * sizeof(float));
		w.input[(size_t) r * (m->d + 1) + m->d] = t[r];
		w.use_null[r] = use_null[r];
		w.cls[r] = cls ? cls[r] : -1;
		if (M > 0 && use_null[r])
			memcpy(c, m->null_cond, (size_t) M * sizeof(float));
		else if (M > 0)
		{
			if (m->n_numeric > 0)
				memcpy(c, numeric + (size_t) r * m->n_numeric,
					   (size_t) m->n_numeric * sizeof(float));
			if (m->n_classes > 0)
				memcpy(c + m->n_numeric, m->class_embed + (size_t) cls[r] * m->embed_dim,
					   (size_t) m->embed_dim * sizeof(float));
		}
	}
	memcpy(w.target, target, (size_t) n * m->d * sizeof(float));
	param_view(m, w.grad, &g);
	*loss = train_forward(m, &w, n);
	train_backward(m, &g, &w, n);
	memcpy(grad, w.grad, m->n_params * sizeof(float));
	train_work_free(env, &w);
	return WDC_OK;
}

/* Clip the global gradient norm (as torch.nn.utils.clip_grad_norm_). */
static void
clip_gradient(float *grad, size_t n, double max_norm)
{
	double		part[4] = {0.0, 0.0, 0.0, 0.0};
	double		norm;
	size_t		j;

	/* four independent sums, added in a fixed order (deterministic) */
	for (j = 0; j + 4 <= n; j += 4)
	{
		part[0] += (double) grad[j] * grad[j];
		part[1] += (double) grad[j + 1] * grad[j + 1];
		part[2] += (double) grad[j + 2] * grad[j + 2];
		part[3] += (double) grad[j + 3] * grad[j + 3];
	}
	for (; j < n; j++)
		part[0] += (double) grad[j] * grad[j];
	norm = sqrt((part[0] + part[1]) + (part[2] + part[3]));
	if (norm > max_norm)
	{
		float		coef = (float) (max_norm / (norm + 1e-6));

		for (j = 0; j < n; j++)
			grad[j] *= coef;
	}
}

/* One AdamW update, step counted from 1. */
static void
adamw_step(float *p, const float *grad, float *mom, float *vel, size_t n,
		   const FlowTrainOptions *o, int64_t step)
{
	double		bc1 = 1.0 - pow(o->beta1, (double) step);
	double		bc2 = 1.0 - pow(o->beta2, (double) step);
	float		decay = (float) (1.0 - o->learning_rate * o->weight_decay);
	float		step_size = (float) (o->learning_rate / bc1);
	float		bc2_sqrt = (float) sqrt(bc2);
	float		b1 = (float) o->beta1;
	float		b2 = (float) o->beta2;
	float		eps = (float) o->adam_eps;
	size_t		j = 0;

#if defined(__SSE__)
	/* four parameters at a time; _mm_sqrt_ps is exact like sqrtf */
	for (; j + 4 <= n; j += 4)
	{
		flow_v4		gj = flow_load4(grad + j);
		flow_v4		pj = flow_load4(p + j) * decay;
		flow_v4		mj = b1 * flow_load4(mom + j) + (1.0f - b1) * gj;
		flow_v4		vj = b2 * flow_load4(vel + j) + (1.0f - b2) * gj * gj;
		flow_v4		root = (flow_v4) _mm_sqrt_ps((__m128) vj);

		flow_store4(mom + j, mj);
		flow_store4(vel + j, vj);
		flow_store4(p + j, pj - step_size * mj / (root / bc2_sqrt + eps));
	}
#endif
	for (; j < n; j++)
	{
		float		gj = grad[j];

		p[j] *= decay;
		mom[j] = b1 * mom[j] + (1.0f - b1) * gj;
		vel[j] = b2 * vel[j] + (1.0f - b2) * gj * gj;
		p[j] -= step_size * mom[j] / (sqrtf(vel[j]) / bc2_sqrt + eps);
	}
}

/*
 * Fill batch row r from data row `row` with draws x0, noise and t, and the
 * row's condition (or the null vector when drop is set).
 */
static void
fill_row(const FlowModel *m, const TrainData *td, TrainWork *w, int r,
		 int64_t row, const float *x0, const float *noise, float t, int drop)
{
	int			d = m->d;
	int			M = m->cond_dim;
	float	   *in = w->input + (size_t) r * (d + 1);
	float	   *target = w->target + (size_t) r * d;
	const float *x1 = td->x + (size_t) row * d;
	int			i;

	for (i = 0; i < d; i++)
	{
		float		data = x1[i] + noise[i];

		in[i] = (1.0f - t) * x0[i] + t * data;
		target[i] = data - x0[i];
	}
	in[d] = t;

	w->use_null[r] = (uint8_t) (drop || td->is_null[row]);
	w->cls[r] = td->cls ? td->cls[row] : -1;
	if (M == 0)
		return;
	if (w->use_null[r])
		memcpy(w->code + (size_t) r * M, m->null_cond, (size_t) M * sizeof(float));
	else
	{
		float	   *c = w->code + (size_t) r * M;

		if (m->n_numeric > 0)
			memcpy(c, td->numeric + (size_t) row * m->n_numeric,
				   (size_t) m->n_numeric * sizeof(float));
		if (m->n_classes > 0)
			memcpy(c + m->n_numeric,
				   m->class_embed + (size_t) td->cls[row] * m->embed_dim,
				   (size_t) m->embed_dim * sizeof(float));
	}
}

/* Validation MSE with the draws fixed at the start (no condition dropout). */
static double
validation_loss(const FlowModel *m, const TrainData *td, TrainWork *w)
{
	double		total = 0.0;
	int64_t		first;

	for (first = 0; first < td->n_val; first += w->rows)
	{
		int			count = (int) (td->n_val - first < w->rows ? td->n_val - first : w->rows);
		int			r;

		for (r = 0; r < count; r++)
		{
			int64_t		v = first + r;

			fill_row(m, td, w, r, td->order[v], td->val_x0 + (size_t) v * m->d,
					 td->val_noise + (size_t) v * m->d, td->val_t[v], 0);
		}
		total += train_forward(m, w, count) * count;
	}
	return total / (double) td->n_val;
}

static void
train_data_free(const WdcEnv *env, TrainData *td)
{
	wdc_free(env, td->x);
	wdc_free(env, td->numeric);
	wdc_free(env, td->cls);
	wdc_free(env, td->is_null);
	wdc_free(env, td->order);
	wdc_free(env, td->val_x0);
	wdc_free(env, td->val_noise);
	wdc_free(env, td->val_t);
}

/* Stage 1 and 2: standardise, encode conditions, split. */
static WdcStatus
prepare_data(const WdcEnv *env, FlowModel *m, const float *data, int64_t n,
			 const FlowConditions *cond, const FlowTrainOptions *o,
			 FlowRng *rng, TrainData *td)
{
	int			d = m->d;
	int64_t		i;
	int			j;

	memset(td, 0, sizeof(*td));
	td->n = n;
	td->d = d;
	td->x = wdc_alloc(env, (size_t) n * d * sizeof(float));
	td->is_null = wdc_alloc(env, (size_t) n);
	td->order = wdc_alloc(env, (size_t) n * sizeof(int64_t));
	if (m->n_numeric > 0)
		td->numeric = wdc_alloc0(env, (size_t) n * m->n_numeric * sizeof(float));
	if (m->n_classes > 0)
		td->cls = wdc_alloc(env, (size_t) n * sizeof(int32_t));
	if (!td->x || !td->is_null || !td->order ||
		(m->n_numeric > 0 && !td->numeric) || (m->n_classes > 0 && !td->cls))
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory for flow training data");

	/* per-dimension mean and std (two passes in double) */
	for (j = 0; j < d; j++)
	{
		double		sum = 0.0;
		double		sq = 0.0;
		double		mean;
		double		std;

		for (i = 0; i < n; i++)
			sum += data[(size_t) i * d + j];
		mean = sum / n;
		for (i = 0; i < n; i++)
		{
			double		dev = data[(size_t) i * d + j] - mean;

			sq += dev * dev;
		}
		std = sqrt(sq / n);
		/* a constant dimension keeps its units; the noise then sets its width */
		if (!(std > 1e-12 * fmax(1.0, fabs(mean))))
			std = 1.0;
		m->mean[j] = mean;
		m->std[j] = std;
		for (i = 0; i < n; i++)
			td->x[(size_t) i * d + j] =
				(float) ((data[(size_t) i * d + j] - mean) / std);
	}

	/* conditions: null flags, class indices, z-scored numeric columns */
	for (i = 0; i < n; i++)
	{
		td->is_null[i] = (uint8_t) flow_model_row_is_null(m, cond, (int) i);
		if (td->cls)
			td->cls[i] = td->is_null[i] ? -1 : cond->class_index[i];
	}
	for (j = 0; j < m->n_numeric; j++)
	{
		double		sum = 0.0;
		double		sq = 0.0;
		int64_t		count = 0;
		double		mean = 0.0;
		double		std = 1.0;

		for (i = 0; i < n; i++)
			if (!td->is_null[i])
			{
				sum += cond->numeric[(size_t) i * m->n_numeric + j];
				count++;
			}
		if (count > 0)
		{
			mean = sum / count;
			for (i = 0; i < n; i++)
				if (!td->is_null[i])
				{
					double		dev = cond->numeric[(size_t) i * m->n_numeric + j] - mean;

					sq += dev * dev;
				}
			std = sqrt(sq / count);
			if (!(std > 1e-12 * fmax(1.0, fabs(mean))))
				std = 1.0;
		}
		m->cond_mean[j] = mean;
		m->cond_std[j] = std;
		for (i = 0; i < n; i++)
			if (!td->is_null[i])
				td->numeric[(size_t) i * m->n_numeric + j] = (float)
					((cond->numeric[(size_t) i * m->n_numeric + j] - mean) / std);
	}

	/* split: a seeded Fisher-Yates permutation, validation rows first */
	for (i = 0; i < n; i++)
		td->order[i] = i;
	for (i = n - 1; i > 0; i--)
	{
		int64_t		k = (int64_t) flow_rng_below(rng, (uint64_t) i + 1);
		int64_t		tmp = td->order[i];

		td->order[i] = td->order[k];
		td->order[k] = tmp;
	}
	td->n_val = (int64_t) floor(o->val_fraction * n + 0.5);
	if (o->val_fraction > 0 && td->n_val < 1)
		td->n_val = 1;
	if (td->n_val >= n)
		td->n_val = n - 1;
	if (td->n_val > 0)
	{
		td->val_x0 = wdc_alloc(env, (size_t) td->n_val * d * sizeof(float));
		td->val_noise = wdc_alloc(env, (size_t) td->n_val * d * sizeof(float));
		td->val_t = wdc_alloc(env, (size_t) td->n_val * sizeof(float));
		if (!td->val_x0 || !td->val_noise || !td->val_t)
			return wdc_error(env, WDC_ERR_NOMEM, "out of memory for flow training data");
		for (i = 0; i < td->n_val; i++)
		{
			for (j = 0; j < d; j++)
			{
				td->val_x0[(size_t) i * d + j] = (float) flow_rng_normal(rng);
				td->val_noise[(size_t) i * d + j] =
					(float) (o->train_noise * flow_rng_normal(rng));
			}
			td->val_t[i] = (float) flow_rng_uniform(rng);
		}
	}
	return WDC_OK;
}

/* Stage 3: initial weights. */
static void
init_weights(FlowModel *m, const FlowTrainOptions *o, FlowRng *rng)
{
	size_t		h = (size_t) m->hidden;
	size_t		j;

	memset(m->params, 0, m->n_params * sizeof(float));
	for (j = 0; j < h * (size_t) (m->d + 1); j++)
		m->w_in[j] = trunc_normal(rng, o->init_std);
	for (j = 0; j < (size_t) (m->layers - 1) * h * h; j++)
		m->w_hidden[j] = trunc_normal(rng, o->init_std);
	for (j = 0; j < (size_t) m->d * h; j++)
		m->w_out[j] = trunc_normal(rng, o->init_std);
	for (j = 0; j < 2 * h * (size_t) m->cond_dim; j++)
		m->w_film[j] = trunc_normal(rng, o->init_std);
	for (j = 0; j < h; j++)
		m->b_film[j] = (float) o->film_gamma_bias;
	for (j = 0; j < (size_t) m->n_classes * m->embed_dim; j++)
		m->class_embed[j] = trunc_normal(rng, o->init_std);
	for (j = 0; j < (size_t) m->cond_dim; j++)
		m->null_cond[j] = trunc_normal(rng, o->init_std);
}

/* Model-shaped view of a parameter-sized buffer (for gradients). */
static void
param_view(const FlowModel *m, float *base, FlowModel *view)
{
	*view = *m;
	view->params = base;
	view->w_in = base + (m->w_in - m->params);
	view->b_in = base + (m->b_in - m->params);
	view->w_hidden = base + (m->w_hidden - m->params);
	view->b_hidden = base + (m->b_hidden - m->params);
	view->w_out = base + (m->w_out - m->params);
	view->b_out = base + (m->b_out - m->params);
	view->w_film = m->w_film ? base + (m->w_film - m->params) : NULL;
	view->b_film = base + (m->b_film - m->params);
	view->class_embed = m->class_embed ? base + (m->class_embed - m->params) : NULL;
	view->null_cond = m->null_cond ? base + (m->null_cond - m->params) : NULL;
}

static int
compare_double(const void *a, const void *b)
{
	double		x = *(const double *) a;
	double		y = *(const double *) b;

	return (x > y) - (x < y);
}

/* Stage 6: sorted log densities of the first validation rows. */
static WdcStatus
calibrate(const WdcEnv *env, FlowModel *m, const float *data,
		  const FlowConditions *cond, const TrainData *td, int max_rows)
{
	int			n = (int) (td->n_val < max_rows ? td->n_val : max_rows);
	float	   *rows;
	float	   *numeric = NULL;
	int32_t    *cls = NULL;
	uint8_t    *nul = NULL;
	FlowConditions sub = {0};
	FlowSolveOptions opt;
	WdcStatus	st = WDC_OK;
	int			r;

	if (n <= 0)
		return WDC_OK;
	rows = wdc_alloc(env, (size_t) n * m->d * sizeof(float));
	m->calibration = wdc_alloc(env, (size_t) n * sizeof(double));
	if (m->cond_dim > 0 && cond)
	{
		m->calibration_cond = wdc_alloc(env, (size_t) n * sizeof(double));
		nul = wdc_alloc(env, (size_t) n);
		if (m->n_numeric > 0)
			numeric = wdc_alloc(env, (size_t) n * m->n_numeric * sizeof(float));
		if (m->n_classes > 0)
			cls = wdc_alloc(env, (size_t) n * sizeof(int32_t));
		if (!m->calibration_cond || !nul || (m->n_numeric > 0 && !numeric) ||
			(m->n_classes > 0 && !cls))
			st = wdc_error(env, WDC_ERR_NOMEM, "out of memory for calibration");
	}
	if (rows == NULL || m->calibration == NULL)
		st = wdc_error(env, WDC_ERR_NOMEM, "out of memory for calibration");

	if (st == WDC_OK)
	{
		for (r = 0; r < n; r++)
		{
			int64_t		row = td->order[r];

			memcpy(rows + (size_t) r * m->d, data + (size_t) row * m->d,
				   (size_t) m->d * sizeof(float));
			if (nul)
				nul[r] = td->is_null[row];
			if (numeric)
				memcpy(numeric + (size_t) r * m->n_numeric,
					   cond->numeric + (size_t) row * m->n_numeric,
					   (size_t) m->n_numeric * sizeof(float));
			if (cls)
				cls[r] = td->cls[row];
		}
		sub.numeric = numeric;
		sub.class_index = cls;
		sub.null_row = nul;

		flow_solve_options_default(&opt);
		opt.guidance = 0.0;
		st = flow_log_density(env, m, rows, NULL, n, &opt, m->calibration);
		if (st == WDC_OK && m->calibration_cond)
		{
			opt.guidance = 1.0;
			st = flow_log_density(env, m, rows, &sub, n, &opt,
								  m->calibration_cond);
		}
	}
	if (st == WDC_OK)
	{
		m->n_calibration = n;
		qsort(m->calibration, n, sizeof(double), compare_double);
		if (m->calibration_cond)
			qsort(m->calibration_cond, n, sizeof(double), compare_double);
	}
	wdc_free(env, rows);
	wdc_free(env, numeric);
	wdc_free(env, cls);
	wdc_free(env, nul);
	return st;
}

/* Copy condition names and labels into the model. */
static WdcStatus
copy_names(const WdcEnv *env, FlowModel *m, const char *const *numeric_names,
		   const char *class_name, const char *const *class_labels)
{
	int			j;

	for (j = 0; j < m->n_numeric; j++)
	{
		m->numeric_names[j] = flow_strdup(env, numeric_names ? numeric_names[j] : "");
		if (m->numeric_names[j] == NULL)
			return wdc_error(env, WDC_ERR_NOMEM, "out of memory for flow model");
	}
	if (m->n_classes > 0)
	{
		m->class_name = flow_strdup(env, class_name ? class_name : "");
		if (m->class_name == NULL)
			return wdc_error(env, WDC_ERR_NOMEM, "out of memory for flow model");
		for (j = 0; j < m->n_classes; j++)
		{
			m->class_labels[j] = flow_strdup(env, class_labels ? class_labels[j] : "");
			if (m->class_labels[j] == NULL)
				return wdc_error(env, WDC_ERR_NOMEM, "out of memory for flow model");
		}
	}
	return WDC_OK;
}

WdcStatus
flow_train(const WdcEnv *env, const float *data, int64_t n, int d,
		   const FlowConditions *cond, int n_numeric,
		   const char *const *numeric_names, const char *class_name,
		   int n_classes, const char *const *class_labels,
		   const FlowTrainOptions *o, FlowProgressFn progress,
		   void *progress_state, FlowModel **out)
{
	FlowModel  *m = NULL;
	FlowModel	g;
	TrainData	td;
	TrainWork	w;
	FlowRng		rng_setup;
	FlowRng		rng_train;
	WdcStatus	st;
	int			embed_dim;
	int64_t		n_train;
	int64_t		step = 0;
	double		best_val = INFINITY;
	double		start = now_seconds();
	float	   *x0;
	float	   *noise;
	int			epoch;
	int			since_best = 0;
	size_t		j;

	*out = NULL;
	memset(&td, 0, sizeof(td));
	memset(&w, 0, sizeof(w));

	/* 1. checks */
	st = flow_train_options_check(env, o);
	if (st != WDC_OK)
		return st;
	if (n < 2)
		return wdc_error(env, WDC_ERR_DATA,
						 "flow training needs at least 2 rows, got %lld",
						 (long long) n);
	if (n > INT32_MAX)
		return wdc_error(env, WDC_ERR_LIMIT,
						 "flow training accepts at most %d rows", INT32_MAX);
	if (d < 1 || d > FLOW_MAX_DIM)
		return wdc_error(env, WDC_ERR_LIMIT,
						 "latent dimension %d is out of range", d);
	if ((n_numeric > 0 || n_classes > 0) && cond == NULL)
		return wdc_error(env, WDC_ERR_INVALID,
						 "condition columns declared but no condition values given");
	if ((n_numeric > 0 && cond->numeric == NULL) ||
		(n_classes > 0 && cond->class_index == NULL))
		return wdc_error(env, WDC_ERR_INVALID,
						 "condition columns declared but their values are missing");
	for (j = 0; j < (size_t) n * d; j++)
		if (!isfinite(data[j]))
			return wdc_error(env, WDC_ERR_DATA,
							 "latent row %zu has a non-finite value in dimension %zu",
							 j / d + 1, j % d + 1);
	if (n_classes > 0)
		for (j = 0; j < (size_t) n; j++)
			if (cond->class_index[j] < -1 || cond->class_index[j] >= n_classes)
				return wdc_error(env, WDC_ERR_DATA,
								 "class index %d of row %zu is out of range",
								 (int) cond->class_index[j], j + 1);
	embed_dim = n_classes > 0 ?
		(o->embed_dim > 0 ? o->embed_dim : (n_classes < 16 ? n_classes : 16)) : 0;

	st = flow_model_alloc(env, d, o->hidden, o->layers, n_numeric, n_classes,
						  embed_dim, &m);
	if (st != WDC_OK)
		return st;
	st = copy_names(env, m, numeric_names, class_name, class_labels);

	/* 2. data; 3. weights */
	flow_rng_seed(&rng_setup, o->seed);
	flow_rng_seed(&rng_train, o->seed ^ 0x5eed5eed5eed5eedULL);
	if (st == WDC_OK)
		st = prepare_data(env, m, data, n, cond, o, &rng_setup, &td);
	if (st == WDC_OK)
	{
		init_weights(m, o, &rng_setup);
		st = train_work_alloc(env, m, o->batch_size, &w);
	}
	x0 = wdc_alloc(env, (size_t) d * sizeof(float));
	noise = wdc_alloc(env, (size_t) d * sizeof(float));
	if (st == WDC_OK && (!x0 || !noise))
		st = wdc_error(env, WDC_ERR_NOMEM, "out of memory for flow training");
	if (st != WDC_OK)
		goto done;
	param_view(m, w.grad, &g);
	memcpy(w.best, m->params, m->n_params * sizeof(float));
	n_train = n - td.n_val;

	/* 4. epochs */
	for (epoch = 1; epoch <= o->max_epochs; epoch++)
	{
		int64_t    *train_rows = td.order + td.n_val;
		double		loss_sum = 0.0;
		int64_t		first;
		double		val_loss = NAN;
		FlowProgress pr;
		double		elapsed;
		int64_t		i;

		/* shuffle the training rows */
		for (i = n_train - 1; i > 0; i--)
		{
			int64_t		k = (int64_t) flow_rng_below(&rng_train, (uint64_t) i + 1);
			int64_t		tmp = train_rows[i];

			train_rows[i] = train_rows[k];
			train_rows[k] = tmp;
		}

		for (first = 0; first < n_train; first += o->batch_size)
		{
			int			count = (int) (n_train - first < o->batch_size ?
									   n_train - first : o->batch_size);
			int			r;
			int			k;

			if (wdc_interrupted(env))
			{
				st = wdc_error(env, WDC_ERR_CANCELED, "flow training canceled");
				goto done;
			}
			for (r = 0; r < count; r++)
			{
				float		t;
				int			drop;

				for (k = 0; k < d; k++)
				{
					x0[k] = (float) flow_rng_normal(&rng_train);
					noise[k] = (float) (o->train_noise * flow_rng_normal(&rng_train));
				}
				t = (float) flow_rng_uniform(&rng_train);
				drop = flow_rng_uniform(&rng_train) < o->p_null;
				fill_row(m, &td, &w, r, train_rows[first + r], x0, noise, t, drop);
			}
			loss_sum += train_forward(m, &w, count) * count;
			train_backward(m, &g, &w, count);
			clip_gradient(w.grad, m->n_params, o->grad_clip);
			step++;
			adamw_step(m->params, w.grad, w.adam_m, w.adam_v, m->n_params, o, step);
		}

		/* 5. validation and early stopping */
		m->info.epochs = epoch;
		m->info.train_loss = loss_sum / (double) n_train;
		if (td.n_val > 0)
		{
			val_loss = validation_loss(m, &td, &w);
			if (val_loss < best_val - o->min_delta)
			{
				best_val = val_loss;
				since_best = 0;
				m->info.best_epoch = epoch;
				memcpy(w.best, m->params, m->n_params * sizeof(float));
			}
			else
				since_best++;
		}
		else
		{
			m->info.best_epoch = epoch;
			memcpy(w.best, m->params, m->n_params * sizeof(float));
		}

		elapsed = now_seconds() - start;
		if (progress)
		{
			pr.epoch = epoch;
			pr.max_epochs = o->max_epochs;
			pr.train_loss = m->info.train_loss;
			pr.val_loss = val_loss;
			pr.best_val_loss = td.n_val > 0 ? best_val : NAN;
			pr.rows_per_second = elapsed > 0 ? (double) n_train * epoch / elapsed : 0;
			pr.eta_seconds = elapsed / epoch * (o->max_epochs - epoch);
			progress(progress_state, &pr);
		}
		if (td.n_val > 0 && since_best >= o->patience)
			break;
	}

	memcpy(m->params, w.best, m->n_params * sizeof(float));
	m->info.train_rows = n_train;
	m->info.val_rows = td.n_val;
	m->info.val_loss = td.n_val > 0 ? best_val : NAN;
	m->info.options = *o;

	/* 6. calibration */
	st = calibrate(env, m, data, cond, &td, o->calibration_rows);
	m->info.seconds = now_seconds() - start;

done:
	wdc_free(env, x0);
	wdc_free(env, noise);
	train_work_free(env, &w);
	train_data_free(env, &td);
	if (st != WDC_OK)
	{
		flow_free(env, m);
		return st;
	}
	*out = m;
	return WDC_OK;
}
