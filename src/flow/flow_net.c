/*
 * flow_net.c
 *	  Batched evaluation of the velocity MLP and its exact divergence.
 *
 * Forward pass for n rows (H = hidden, row-major activations [n][H]):
 *	1. a = [x, t] w_in^T + b_in; p = gamma * a + beta; h = gelu(p)
 *	2. each hidden layer: a = h w^T + b; p = gamma * a + beta; h = gelu(p)
 *	3. v = h w_out^T + b_out
 *
 * Divergence by forward-mode tangents, all d input directions at once.  The
 * Jacobian of layer 1 with respect to x is diag(s1) w_in[:, :d] with
 * s = gamma * gelu'(p); each later layer multiplies by diag(s) w.  Keeping
 * the tangents of row r and direction i as row r * d + i of a matrix
 * T [n d][H], step 2 becomes one GEMM per layer, T <- (T w^T) scaled row by
 * row with s, and div = sum_i w_out[i] . T[r d + i] takes only the diagonal
 * of w_out T.  Cost per row and layer: 2 H^2 d FLOPs, against 2 H^2 for the
 * forward pass.
 *
 * All GEMMs go through cblas_sgemm on row-major arrays; weights are stored
 * [out][in] as in PyTorch's Linear, so every product uses B = w transposed.
 */
#include "flow/flow_int.h"
#include "flow/flow_vec.h"

#include <cblas.h>
#include <string.h>

/* Rows per batch: enough to keep GEMMs efficient, tangents within bounds. */
int
flow_net_batch_rows(const FlowModel *m)
{
	int			rows = FLOW_TANGENT_ROWS / m->d;

	if (rows < 1)
		rows = 1;
	if (rows > FLOW_MAX_BATCH)
		rows = FLOW_MAX_BATCH;
	return rows;
}

void
flow_net_work_free(const WdcEnv *env, FlowNetWork *w)
{
	wdc_free(env, w->input);
	wdc_free(env, w->act);
	wdc_free(env, w->h);
	wdc_free(env, w->slope);
	wdc_free(env, w->deriv);
	wdc_free(env, w->tan_a);
	wdc_free(env, w->tan_b);
	wdc_free(env, w->w_in_t);
	memset(w, 0, sizeof(*w));
}

/*
 * Allocate buffers for batches of up to `rows` rows, capped at
 * flow_net_batch_rows(m), so a call for one row does not allocate tangent
 * buffers for a full batch.
 */
WdcStatus
flow_net_work_alloc(const WdcEnv *env, const FlowModel *m, int with_tangents,
					int rows_wanted, FlowNetWork *w)
{
	size_t		h = (size_t) m->hidden;
	size_t		rows;
	int			i;
	int			k;

	memset(w, 0, sizeof(*w));
	w->max_rows = flow_net_batch_rows(m);
	if (rows_wanted >= 1 && rows_wanted < w->max_rows)
		w->max_rows = rows_wanted;
	rows = (size_t) w->max_rows;
	w->input = wdc_alloc(env, rows * (size_t) (m->d + 1) * sizeof(float));
	w->act = wdc_alloc(env, rows * h * sizeof(float));
	w->h = wdc_alloc(env, rows * h * sizeof(float));
	w->slope = wdc_alloc(env, rows * h * sizeof(float));
	w->deriv = wdc_alloc(env, rows * h * sizeof(float));
	if (with_tangents)
	{
		w->tan_a = wdc_alloc(env, rows * (size_t) m->d * h * sizeof(float));
		w->tan_b = wdc_alloc(env, rows * (size_t) m->d * h * sizeof(float));
		w->w_in_t = wdc_alloc(env, (size_t) m->d * h * sizeof(float));
	}
	if (w->input == NULL || w->act == NULL || w->h == NULL ||
		w->slope == NULL || w->deriv == NULL ||
		(with_tangents && (w->tan_a == NULL || w->tan_b == NULL ||
						   w->w_in_t == NULL)))
	{
		flow_net_work_free(env, w);
		return wdc_error(env, WDC_ERR_NOMEM,
						 "out of memory for flow evaluation buffers");
	}
	if (with_tangents)
		for (i = 0; i < m->d; i++)
			for (k = 0; k < m->hidden; k++)
				w->w_in_t[(size_t) i * h + k] =
					m->w_in[(size_t) k * (m->d + 1) + i];
	return WDC_OK;
}

/*
 * Apply bias, FiLM and GELU for one layer.  On entry act [n][H] contains
 * a without bias.  h receives gelu(p) and, when slope is wanted,
 * slope = gamma gelu'(p).
 */
static void
film_gelu(const FlowModel *m, FlowNetWork *w, int n, const float *bias,
		  const float *film, int want_slope)
{
	int			H = m->hidden;
	int			r;

	for (r = 0; r < n; r++)
	{
		const float *gamma = film + (size_t) r * 2 * H;

		flow_vec_film(w->act + (size_t) r * H, bias, gamma, gamma + H, H);
	}
	flow_gelu(w->act, w->h, want_slope ? w->deriv : NULL, n * H);
	if (want_slope)
		for (r = 0; r < n; r++)
			flow_vec_mul(w->slope + (size_t) r * H, film + (size_t) r * 2 * H,
						 w->deriv + (size_t) r * H, H);
}

/*
 * Tangent products at small batch sizes.  For a single row (d tangent rows)
 * OpenBLAS 0.3.21 packs the whole H x H weight matrix on every call, which
 * cost as much as the product itself.  Blocks of at most
 * FLOW_SMALL_GEMM_MNK multiply-adds go through its unpacked small-matrix
 * kernels instead: per-row log density at d = 16 went from 194 to 344 rows/s
 * on the AVX-512 development machine, and large batches keep one call.
 * NOTE: the threshold suits OpenBLAS's AVX-512 kernels; on other BLAS builds
 * the blocking is only a few more calls.
 */
#define FLOW_SMALL_GEMM_MNK		262144.0
#define FLOW_SMALL_GEMM_MAX_ROWS	64

/* out [rows][H] = tan [rows][H] x w^T [H][H]. */
static void
tangent_gemm(int rows, int H, const float *tan, const float *w, float *out)
{
	int			block = rows;
	int			first;

	if (rows <= FLOW_SMALL_GEMM_MAX_ROWS &&
		rows * (double) H * H > FLOW_SMALL_GEMM_MNK)
		block = (int) (FLOW_SMALL_GEMM_MNK / ((double) H * H));
	if (block < 1)
		block = 1;
	for (first = 0; first < rows; first += block)
	{
		int			count = rows - first < block ? rows - first : block;

		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, count, H, H,
					1.0f, tan + (size_t) first * H, H, w, H, 0.0f,
					out + (size_t) first * H, H);
	}
}

/* Multiply tangent row r * d + i by slope[r] for all i. */
static void
scale_tangents(const FlowModel *m, const FlowNetWork *w, int n, float *tan)
{
	int			H = m->hidden;
	int			r;
	int			i;

	for (r = 0; r < n; r++)
	{
		const float *s = w->slope + (size_t) r * H;

		for (i = 0; i < m->d; i++)
		{
			float	   *row = tan + ((size_t) r * m->d + i) * H;

			flow_vec_mul(row, row, s, H);
		}
	}
}

/*
 * Evaluate n <= w->max_rows rows: x [n][d] standardised latents, time t,
 * film [n][2H].  Writes v [n][d] and, when div is not NULL (and w has
 * tangent buffers), div [n].
 */
void
flow_net_forward(const FlowModel *m, FlowNetWork *w, int n, const float *x,
				 double t, const float *film, float *v, double *div)
{
	int			d = m->d;
	int			H = m->hidden;
	int			l;
	int			r;
	int			i;
	float	   *tan = w->tan_a;
	float	   *tan_next = w->tan_b;

	/* 1. input layer: [n][d+1] x w_in^T [d+1][H] -> act [n][H] */
	for (r = 0; r < n; r++)
	{
		memcpy(w->input + (size_t) r * (d + 1), x + (size_t) r * d,
			   (size_t) d * sizeof(float));
		w->input[(size_t) r * (d + 1) + d] = (float) t;
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, H, d + 1,
				1.0f, w->input, d + 1, m->w_in, d + 1, 0.0f, w->act, H);
	film_gelu(m, w, n, m->b_in, film, div != NULL);
	if (div)
		for (r = 0; r < n; r++)
		{
			const float *s = w->slope + (size_t) r * H;

			for (i = 0; i < d; i++)
			{
				flow_vec_mul(tan + ((size_t) r * d + i) * H, s,
							 w->w_in_t + (size_t) i * H, H);
			}
		}

	/* 2. hidden layers: h [n][H] x w^T -> act; tangents [n d][H] x w^T */
	for (l = 0; l < m->layers - 1; l++)
	{
		const float *wl = m->w_hidden + (size_t) l * H * H;

		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, H, H,
					1.0f, w->h, H, wl, H, 0.0f, w->act, H);
		film_gelu(m, w, n, m->b_hidden + (size_t) l * H, film, div != NULL);
		if (div)
		{
			float	   *swap;

			tangent_gemm(n * d, H, tan, wl, tan_next);
			scale_tangents(m, w, n, tan_next);
			swap = tan;
			tan = tan_next;
			tan_next = swap;
		}
	}

	/* 3. output layer: h [n][H] x w_out^T [H][d] -> v [n][d] */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, d, H,
				1.0f, w->h, H, m->w_out, H, 0.0f, v, d);
	for (r = 0; r < n; r++)
		for (i = 0; i < d; i++)
			v[(size_t) r * d + i] += m->b_out[i];

	/* divergence: trace of w_out T, diagonal only */
	if (div)
		for (r = 0; r < n; r++)
		{
			double		acc = 0.0;

			for (i = 0; i < d; i++)
			{
				acc += flow_vec_dot(m->w_out + (size_t) i * H,
									tan + ((size_t) r * d + i) * H, H);
			}
			div[r] = acc;
		}
}
