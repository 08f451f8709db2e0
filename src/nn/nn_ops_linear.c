/*
 * nn_ops_linear.c
 *	  Operators built on cblas_sgemm (Conv, ConvTranspose, Gemm, MatMul) and
 *	  the pooling operators that share Conv's window geometry.
 *
 * Conv with constant weights runs the direct kernel of nn_conv_direct.c
 * where the CPU has AVX-512F or AVX2 and FMA.  Otherwise, and for
 * tangents, it lowers each group to one GEMM by im2col.  The input
 * patches of several images are laid side by side as the columns of a
 * [C/group * kh * kw, images * OH * OW] matrix.  Deep layers with small
 * feature maps thus still give sgemm a wide N.  1-D operators
 * run as 2-D with a height of 1; 3-D ones are rejected at plan time.
 *
 * Forward-mode tangents of these operators are linear in the input, so a JVP
 * runs the same kernel (without bias) on the k stacked tangent slices as a
 * batch of k * N images: the directions become extra GEMM columns.
 */
#include "nn/nn_int.h"

#include <math.h>
#include <string.h>
#include <cblas.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Upper bound for one im2col matrix; more images are split into chunks. */
#define NN_COLS_BYTES (8u << 20)

/*
 * The one GEMM seam.  C[m x n] = alpha * op(A)[m x k] * op(B)[k x n]
 * + beta * C, all row-major with leading dimensions lda, ldb, ldc.
 */
void
nn_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
		 float alpha, const float *a, int64_t lda,
		 const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
	if (m == 0 || n == 0)
		return;
	if (k == 0)
	{
		for (int64_t i = 0; i < m; i++)
			for (int64_t j = 0; j < n; j++)
				c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
		return;
	}
	cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
				trans_b ? CblasTrans : CblasNoTrans,
				(blasint) m, (blasint) n, (blasint) k, alpha, a, (blasint) lda,
				b, (blasint) ldb, beta, c, (blasint) ldc);
}

/*
 * Reject GEMM dimensions beyond what cblas_sgemm's int arguments take.
 * rows includes the k tangent directions that JVPs stack into one GEMM.
 */
static WdcStatus
check_gemm_dims(NnCtx *c, int64_t rows, int64_t cols, int64_t inner)
{
	int64_t		k = c->plan->jvp_k > 1 ? c->plan->jvp_k : 1;

	if (rows > INT32_MAX / k || cols > INT32_MAX / k || inner > INT32_MAX ||
		rows * cols > NN_MAX_NUMEL)
		return wdc_error(c->env, WDC_ERR_LIMIT,
						 "matrix product of node \"%s\" (%s) is too large",
						 c->step->node->proto->name ? c->step->node->proto->name : "",
						 c->step->op->name),
			wdc_error_hint(c->env, "Plan for a smaller batch size.");
	return WDC_OK;
}

/* --- fused activation ------------------------------------------------- */

/*
 * Fold a Relu or LeakyRelu (slope alpha >= 0 below zero) into the Conv or
 * Gemm step that writes its input, when nothing else reads that input.
 * Returns 1 when fused; the activation step is then skipped.
 */
int
nn_fuse_activation(NnCtx *c, float alpha)
{
	WdcNnPlan  *p = c->plan;
	int			xv = c->step->in[0];
	const NnValue *mv = &p->model->values[xv];
	NnStep	   *prev = NULL;

	if (mv->n_consumers != 1 || mv->is_output)
		return 0;
	/* the writer may differ from the model's producer after folding */
	for (NnStep *st = c->step - 1; st >= p->steps; st--)
		if (!st->skip && st->n_out > 0 && st->out[0] == xv)
		{
			prev = st;
			break;
		}
	if (prev == NULL || prev->p[NN_ACT_SLOT] ||
		(strcmp(prev->op->name, "Conv") != 0 && strcmp(prev->op->name, "Gemm") != 0))
		return 0;
	prev->p[NN_ACT_SLOT] = 1;
	prev->f[NN_ACT_ALPHA] = alpha;
	prev->out[0] = c->step->out[0];
	c->step->skip = 1;
	return 1;
}

static inline float
act_value(float v, float alpha)
{
	return v >= 0 ? v : alpha * v;
}

/*
 * Compute dst[i] = act(src[i] + bias) for one output row, where act is the
 * identity when act == 0.  The loop is written with SSE because gcc -O2
 * leaves the scalar form unvectorized, and it runs over every Conv output.
 */
static void
bias_act_row(float *dst, const float *src, int64_t n, float bias, int act,
			 float alpha)
{
	int64_t		i = 0;

#ifdef __SSE2__
	__m128		vb = _mm_set1_ps(bias);
	__m128		va = _mm_set1_ps(act ? alpha : 1.0f);
	__m128		zero = _mm_setzero_ps();

	for (; i + 4 <= n; i += 4)
	{
		__m128		v = _mm_add_ps(_mm_loadu_ps(src + i), vb);

		/* max(v, 0) + alpha * min(v, 0), which is v when alpha is 1 */
		v = _mm_add_ps(_mm_max_ps(v, zero), _mm_mul_ps(va, _mm_min_ps(v, zero)));
		_mm_storeu_ps(dst + i, v);
	}
#endif
	for (; i < n; i++)
		dst[i] = act ? act_value(src[i] + bias, alpha) : src[i] + bias;
}

/* Multiply k tangent slices by the activation's slope, read from y. */
static void
act_tangent(const NnStep *s, const float *y, float *dy, int64_t n, int k)
{
	float		alpha = s->f[NN_ACT_ALPHA];

	if (!s->p[NN_ACT_SLOT])
		return;
	for (int j = 0; j < k; j++)
		for (int64_t i = 0; i < n; i++)
			if (!(y[i] > 0))
				dy[j * n + i] *= alpha;
}

/* --- shared window geometry --------------------------------------------- */

/* Parameter slots used by Conv, ConvTranspose and the pools. */
enum
{
	P_N, P_C, P_H, P_W, P_M, P_GROUP, P_KH, P_KW, P_SH, P_SW, P_DH, P_DW,
	P_PT, P_PL, P_OH, P_OW, P_IMGS, P_BIAS, P_PB, P_PR, P_COUNT_PAD, P_RANK
};

/*
 * Read kernel_shape, strides, dilations, pads and auto_pad for 1 or 2
 * spatial dimensions (kernel defaults to kdefault).  For auto_pad SAME the
 * pads are derived from the output size ceil(in / stride).  transposed
 * selects ConvTranspose's rule for SAME padding.
 */
static WdcStatus
read_window(NnCtx *c, const NnShape *x, const int64_t *kdefault,
			int transposed)
{
	NnStep	   *s = c->step;
	int			nsp = x->rank - 2;
	int			n;
	const int64_t *v;
	int64_t		k[2] = {1, 1},
				st[2] = {1, 1},
				dl[2] = {1, 1},
				pb[2] = {0, 0},
				pe[2] = {0, 0},
				in[2] = {1, 1};
	char		buf[24];
	const char *autopad;
	int			off = 2 - nsp;	/* 1-D uses slot 1 (width) */

	if (nsp < 1 || nsp > 2)
		return nn_unsupported(c, "%d spatial dimensions", nsp < 0 ? 0 : nsp);
	in[1] = x->d[x->rank - 1];
	if (nsp == 2)
		in[0] = x->d[2];

	v = nn_attr_ints(s->node, "kernel_shape", &n);
	if (v && n != nsp)
		return nn_invalid(c, "kernel_shape has %d values", n);
	for (int i = 0; i < nsp; i++)
		k[off + i] = v ? v[i] : kdefault[i];
	v = nn_attr_ints(s->node, "strides", &n);
	if (v && n != nsp)
		return nn_invalid(c, "strides has %d values", n);
	for (int i = 0; v && i < nsp; i++)
		st[off + i] = v[i];
	v = nn_attr_ints(s->node, "dilations", &n);
	if (v && n != nsp)
		return nn_invalid(c, "dilations has %d values", n);
	for (int i = 0; v && i < nsp; i++)
		dl[off + i] = v[i];
	v = nn_attr_ints(s->node, "pads", &n);
	if (v && n != 2 * nsp)
		return nn_invalid(c, "pads has %d values", n);
	for (int i = 0; v && i < nsp; i++)
	{
		pb[off + i] = v[i];
		pe[off + i] = v[nsp + i];
	}
	for (int i = 0; i < 2; i++)
		if (k[i] < 1 || k[i] > 65536 || st[i] < 1 || st[i] > 65536 ||
			dl[i] < 1 || dl[i] > 65536 || pb[i] < 0 || pe[i] < 0 ||
			pb[i] > 65536 || pe[i] > 65536)
			return nn_invalid(c, "kernel, stride, dilation or pad out of range");

	autopad = nn_attr_string(s->node, "auto_pad", buf, sizeof(buf));
	if (autopad && (strcmp(autopad, "SAME_UPPER") == 0 ||
					strcmp(autopad, "SAME_LOWER") == 0))
	{
		for (int i = 0; i < 2; i++)
		{
			int64_t		ext = (k[i] - 1) * dl[i] + 1;
			int64_t		total;

			if (transposed)
				total = st[i] * (in[i] - 1) + ext - in[i] * st[i];
			else
			{
				int64_t		out = (in[i] + st[i] - 1) / st[i];

				total = (out - 1) * st[i] + ext - in[i];
			}
			if (total < 0)
				total = 0;
			if (strcmp(autopad, "SAME_UPPER") == 0)
				pb[i] = total / 2;
			else
				pb[i] = total - total / 2;
			pe[i] = total - pb[i];
		}
	}
	else if (autopad && strcmp(autopad, "VALID") == 0)
		pb[0] = pb[1] = pe[0] = pe[1] = 0;
	else if (autopad && strcmp(autopad, "NOTSET") != 0)
		return nn_unsupported(c, "auto_pad \"%s\"", autopad);

	s->p[P_N] = x->d[0];
	s->p[P_C] = x->d[1];
	s->p[P_H] = in[0];
	s->p[P_W] = in[1];
	s->p[P_KH] = k[0];
	s->p[P_KW] = k[1];
	s->p[P_SH] = st[0];
	s->p[P_SW] = st[1];
	s->p[P_DH] = dl[0];
	s->p[P_DW] = dl[1];
	s->p[P_PT] = pb[0];
	s->p[P_PL] = pb[1];
	s->p[P_PB] = pe[0];
	s->p[P_PR] = pe[1];
	s->p[P_RANK] = x->rank;
	return WDC_OK;
}

/* Output shape [N, channels, OH, OW] (or [N, channels, OW] for 1-D). */
static void
window_out_shape(const NnStep *s, int64_t channels, NnShape *out)
{
	out->rank = (int) s->p[P_RANK];
	out->d[0] = s->p[P_N];
	out->d[1] = channels;
	if (out->rank == 4)
	{
		out->d[2] = s->p[P_OH];
		out->d[3] = s->p[P_OW];
	}
	else
		out->d[2] = s->p[P_OW];
}

/* --- Conv ------------------------------------------------------------------ */

/*
 * Copies and fills of short runs.  im2col moves one output row (OW floats,
 * often 4 to 32) per call, about 14,000 runs per image on a typical
 * encoder.  Through the library's memcpy and memset, the call overhead cost
 * more than the data moved.  Fixed-size chunks let the compiler emit
 * plain vector moves.
 */
static inline void
copy_run(float *restrict d, const float *restrict s, int64_t n)
{
	while (n >= 8)
	{
		memcpy(d, s, 8 * sizeof(float));
		d += 8;
		s += 8;
		n -= 8;
	}
	if (n >= 4)
	{
		memcpy(d, s, 4 * sizeof(float));
		d += 4;
		s += 4;
		n -= 4;
	}
	while (n-- > 0)
		*d++ = *s++;
}

static inline void
zero_run(float *d, int64_t n)
{
	while (n >= 8)
	{
		memset(d, 0, 8 * sizeof(float));
		d += 8;
		n -= 8;
	}
	while (n-- > 0)
		*d++ = 0.0f;
}

/*
 * Split one input row of W pixels into sw phase rows of wq pixels each,
 * ps floats apart: out[r * ps + j] = row[j * sw + r], zero past the row's
 * end.
 */
static inline void
split_row(float *restrict out, const float *restrict row, int64_t W,
		  int64_t sw, int64_t wq, int64_t ps)
{
	if (sw == 1)
	{
		copy_run(out, row, W);
		return;
	}
	if (sw == 2 && W == 2 * wq)
	{
		float	   *even = out,
				   *odd = out + ps;
		int64_t		j = 0;

#ifdef __SSE2__
		/* four pixel pairs at a time: shuffle evens and odds apart */
		for (; j + 4 <= wq; j += 4)
		{
			__m128		a = _mm_loadu_ps(row + 2 * j);
			__m128		b = _mm_loadu_ps(row + 2 * j + 4);

			_mm_storeu_ps(even + j, _mm_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)));
			_mm_storeu_ps(odd + j, _mm_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
		}
#endif
		for (; j < wq; j++)
		{
			even[j] = row[2 * j];
			odd[j] = row[2 * j + 1];
		}
		return;
	}
	for (int64_t r = 0; r < sw; r++)
		for (int64_t j = 0; j < wq; j++)
			out[r * ps + j] = j * sw + r < W ? row[j * sw + r] : 0.0f;
}

/* floor(a / b) for b > 0 */
static inline int64_t
floor_div(int64_t a, int64_t b)
{
	return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* Fill one row of a tap: zeros, plane[src + lo .. src + hi], zeros. */
static inline void
tap_row(float *d, const float *plane, int64_t src, int64_t OW, int64_t lo,
		int64_t hi)
{
	zero_run(d, lo);
	copy_run(d + lo, plane + src + lo, hi - lo + 1);
	zero_run(d + hi + 1, OW - hi - 1);
}

/*
 * Fill one tap's block of an im2col row for one image: d[oh * OW + ow] =
 * plane[off + oh * pitch + ow] for oh in [ohlo, ohhi] and ow in [lo, hi],
 * and zero elsewhere, where off = qh * pitch + qw.  When the plane's pitch equals
 * OW, the rows strictly between the first and the last are one contiguous
 * run in both, so they move in one copy and only their columns outside
 * [lo, hi] are zeroed afterwards.  That copy reads |qw| < pitch elements
 * past its rows at either end, which still lie in rows ohlo and ohhi of
 * the plane.
 */
static inline void
tap_block(float *d, const float *plane, int64_t off, int64_t qw,
		  int64_t pitch, int64_t OH, int64_t OW, int64_t ohlo, int64_t ohhi,
		  int64_t lo, int64_t hi)
{
	if (ohlo > ohhi || lo > hi)
	{
		zero_run(d, OH * OW);
		return;
	}
	zero_run(d, ohlo * OW);
	zero_run(d + (ohhi + 1) * OW, (OH - 1 - ohhi) * OW);
	if (pitch == OW && qw > -pitch && qw < pitch && ohhi - ohlo >= 2)
	{
		tap_row(d + ohlo * OW, plane, off + ohlo * pitch, OW, lo, hi);
		copy_run(d + (ohlo + 1) * OW, plane + off + (ohlo + 1) * pitch,
				 (ohhi - ohlo - 1) * OW);
		if (lo > 0 || hi < OW - 1)
			for (int64_t oh = ohlo + 1; oh < ohhi; oh++)
			{
				zero_run(d + oh * OW, lo);
				zero_run(d + oh * OW + hi + 1, OW - hi - 1);
			}
		tap_row(d + ohhi * OW, plane, off + ohhi * pitch, OW, lo, hi);
		return;
	}
	for (int64_t oh = ohlo; oh <= ohhi; oh++)
		tap_row(d + oh * OW, plane, off + oh * pitch, OW, lo, hi);
}

/*
 * Fill cols for one group and a run of images (im2col).  cols has one row
 * per (channel, ki, kj) and one column per (image, oh, ow).  Taps outside
 * the image are zero.
 *
 * With strides, the taps of one row are every sh-th input row and every
 * sw-th pixel, a gather that does not vectorize.  So each input plane is
 * first split into sh * sw phase planes (rows i*sh + rh, pixels j*sw + rw)
 * of hq x wq pixels in split, zero-filled past the image.  A tap is then
 * a shifted window of one phase plane (of the input plane itself without
 * strides), and the common "same" geometry, where the plane is as wide as
 * the output, copies it in one run (see tap_block).
 */
static void
im2col(const int64_t *p, const float *x, int64_t c0, int64_t cg, int64_t img0,
	   int64_t nimg, float *cols, float *split)
{
	int64_t		C = p[P_C],
				H = p[P_H],
				W = p[P_W];
	int64_t		OH = p[P_OH],
				OW = p[P_OW],
				ohw = OH * OW;
	int64_t		ncols = nimg * ohw;
	int64_t		sh = p[P_SH],
				sw = p[P_SW];
	/* phase plane height and width; the input plane's without strides */
	int64_t		hq = (H + sh - 1) / sh,
				wq = (W + sw - 1) / sw,
				phases = sh * sw,
				psize = hq * wq;
	int			strided = sh > 1 || sw > 1;

	/* split[im][ch][rh][rw][i][j] = x[.., i*sh + rh, j*sw + rw] */
	if (strided)
		for (int64_t im = 0; im < nimg; im++)
			for (int64_t ch = 0; ch < cg; ch++)
			{
				const float *plane = x + ((img0 + im) * C + c0 + ch) * H * W;
				float	   *sp = split + (im * cg + ch) * phases * psize;

				for (int64_t rh = 0; rh < sh; rh++)
					for (int64_t i = 0; i < hq; i++)
					{
						float	   *out = sp + rh * sw * psize + i * wq;

						if (i * sh + rh < H)
							split_row(out, plane + (i * sh + rh) * W, W, sw, wq,
									  psize);
						else
							for (int64_t rw = 0; rw < sw; rw++)
								zero_run(out + rw * psize, wq);
					}
			}

	for (int64_t ki = 0; ki < p[P_KH]; ki++)
	{
		/* input row ih = oh*sh + offh = (oh + qh)*sh + rh */
		int64_t		offh = ki * p[P_DH] - p[P_PT];
		int64_t		qh = floor_div(offh, sh),
					rh = offh - qh * sh;
		int64_t		ohlo = qh < 0 ? -qh : 0,
					ohhi = hq - 1 - qh;

		if (ohhi > OH - 1)
			ohhi = OH - 1;
		for (int64_t kj = 0; kj < p[P_KW]; kj++)
		{
			int64_t		offw = kj * p[P_DW] - p[P_PL];
			int64_t		qw = floor_div(offw, sw),
						rw = offw - qw * sw;
			int64_t		lo = qw < 0 ? -qw : 0,
						hi = wq - 1 - qw;

			if (hi > OW - 1)
				hi = OW - 1;
			for (int64_t ch = 0; ch < cg; ch++)
			{
				float	   *row = cols + ((ch * p[P_KH] + ki) * p[P_KW] + kj) * ncols;

				for (int64_t im = 0; im < nimg; im++)
				{
					const float *plane = strided ?
						split + ((im * cg + ch) * phases + rh * sw + rw) * psize :
						x + ((img0 + im) * C + c0 + ch) * H * W;

					tap_block(row + im * ohw, plane, qh * wq + qw, qw, wq, OH, OW,
							  ohlo, ohhi, lo, hi);
				}
			}
		}
	}
}

/*
 * Convolve nbatch images: y[n, m] = sum over the group's channels of
 * w[m] (*) x[n] + bias[m], then the fused activation when act is set.
 * bias may be NULL.  scratch contains the im2col matrix, the
 * [Mg, images*OHW] result when several images share a GEMM, and the
 * phase planes of strided convolutions (see im2col).
 */
static void
conv_apply(const int64_t *p, int64_t nbatch, const float *x, const float *w,
		   const float *bias, int act, float alpha, float *y, float *scratch)
{
	int64_t		C = p[P_C],
				M = p[P_M],
				G = p[P_GROUP];
	int64_t		cg = C / G,
				mg = M / G;
	int64_t		kg = cg * p[P_KH] * p[P_KW];
	int64_t		ohw = p[P_OH] * p[P_OW];
	int64_t		chunk = p[P_IMGS];
	int			pointwise = p[P_KH] == 1 && p[P_KW] == 1 && p[P_SH] == 1 &&
		p[P_SW] == 1 && p[P_PT] == 0 && p[P_PL] == 0 && p[P_PB] == 0 &&
		p[P_PR] == 0;

	for (int64_t img0 = 0; img0 < nbatch; img0 += chunk)
	{
		int64_t		nimg = nbatch - img0 < chunk ? nbatch - img0 : chunk;
		int64_t		ncols = nimg * ohw;

		for (int64_t g = 0; g < G; g++)
		{
			const float *wg = w + g * mg * kg;
			const float *cols = scratch;
			float	   *ytmp = scratch + kg * ncols;
			float	   *split = ytmp + (chunk > 1 ? mg * ncols : 0);

			/* a 1x1 convolution reads the image itself as the column matrix */
			if (pointwise && nimg == 1)
				cols = x + (img0 * C + g * cg) * ohw;
			else
				im2col(p, x, g * cg, cg, img0, nimg, scratch, split);

			if (nimg == 1)
			{
				/* Y_g[mg, ohw] = W_g[mg, kg] * cols[kg, ohw], straight into y */
				float	   *yg = y + (img0 * M + g * mg) * ohw;

				nn_sgemm(0, 0, mg, ohw, kg, 1.0f, wg, kg, cols, ohw, 0.0f, yg, ohw);
				for (int64_t m = 0; m < mg && (bias || act); m++)
					bias_act_row(yg + m * ohw, yg + m * ohw, ohw,
								 bias ? bias[g * mg + m] : 0.0f, act, alpha);
				continue;
			}

			/* Y[mg, nimg*ohw] = W_g[mg, kg] * cols[kg, nimg*ohw], then scatter */
			nn_sgemm(0, 0, mg, ncols, kg, 1.0f, wg, kg, cols, ncols, 0.0f,
					 ytmp, ncols);
			for (int64_t im = 0; im < nimg; im++)
				for (int64_t m = 0; m < mg; m++)
				{
					const float *src = ytmp + m * ncols + im * ohw;
					float	   *dst = y + ((img0 + im) * M + g * mg + m) * ohw;
					float		bv = bias ? bias[g * mg + m] : 0.0f;

					bias_act_row(dst, src, ohw, bv, act, alpha);
				}
		}
	}
}

/* Images per im2col chunk: enough for a wide GEMM, bounded in memory. */
static int64_t
conv_chunk(const int64_t *p, int64_t kg, int64_t mg, int64_t nbatch)
{
	int64_t		ohw = p[P_OH] * p[P_OW];
	int64_t		n = ohw >= 512 ? 1 : (512 + ohw - 1) / (ohw ? ohw : 1);

	if (n > nbatch)
		n = nbatch;
	while (n > 1 && (kg + mg) * n * ohw * (int64_t) sizeof(float) > NN_COLS_BYTES)
		n--;
	return n < 1 ? 1 : n;
}

static size_t
conv_scratch(const int64_t *p, int64_t cg, int64_t kg, int64_t mg,
			 int64_t chunk)
{
	int64_t		sh = p[P_SH],
				sw = p[P_SW];
	int64_t		split = sh > 1 || sw > 1 ?
		chunk * cg * sh * sw * ((p[P_H] + sh - 1) / sh) * ((p[P_W] + sw - 1) / sw) : 0;

	/* columns, the wide GEMM result, and the phase planes (see im2col) */
	return (size_t) ((kg + (chunk > 1 ? mg : 0)) * chunk * p[P_OH] * p[P_OW] +
					 split) * sizeof(float);
}

/*
 * Plan the direct kernel (nn_conv_direct.c) when the weights and bias are
 * constant.  It then runs the forward pass, with its own scratch, and the
 * JVP keeps the im2col path and s->tscratch.
 */
static WdcStatus
conv_plan_direct(NnCtx *c)
{
	NnStep	   *s = c->step;
	const int64_t *p = s->p;
	NnConvGeom	g = {
		p[P_N], p[P_C], p[P_H], p[P_W], p[P_M], p[P_GROUP], p[P_KH], p[P_KW],
		p[P_SH], p[P_SW], p[P_DH], p[P_DW], p[P_PT], p[P_PL], p[P_OH], p[P_OW]
	};
	const float *w = nn_in_const(c, 1);
	const float *b = p[P_BIAS] ? nn_in_const(c, 2) : NULL;
	size_t		scratch;
	WdcStatus	st;

	if (w == NULL || (p[P_BIAS] && b == NULL))
		return WDC_OK;
	st = nn_conv_direct_plan(c, &g, w, b, &s->direct, &scratch);
	if (st == WDC_OK && s->direct)
		s->scratch = scratch;
	return st;
}

static WdcStatus
conv_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	const NnShape *x = nn_in_shape(c, 0);
	const NnShape *w = nn_in_shape(c, 1);
	int64_t		kdef[2];
	int64_t		G = nn_attr_int(s->node, "group", 1);
	int64_t		eh,
				ew,
				kg,
				mg;
	NnShape		out;
	WdcStatus	st;

	if (nn_in_elem(c, 0) != WDC_NN_FLOAT || nn_in_elem(c, 1) != WDC_NN_FLOAT)
		return nn_unsupported(c, "non-float inputs");
	if (x->rank < 3 || w->rank != x->rank)
		return nn_unsupported(c, "input rank %d with weight rank %d", x->rank,
							  w->rank);
	kdef[0] = w->d[2];
	kdef[1] = w->rank > 3 ? w->d[3] : 1;
	st = read_window(c, x, kdef, 0);
	if (st != WDC_OK)
		return st;
	if ((x->rank == 4 && (s->p[P_KH] != w->d[2] || s->p[P_KW] != w->d[3])) ||
		(x->rank == 3 && s->p[P_KW] != w->d[2]))
		return nn_invalid(c, "kernel_shape does not match the weights");
	if (G < 1 || x->d[1] % G != 0 || w->d[0] % G != 0 || w->d[1] * G != x->d[1])
		return nn_invalid(c, "group %lld does not divide the channels",
						  (long long) G);
	if (nn_has_in(c, 2) && (nn_in_shape(c, 2)->rank != 1 ||
							nn_in_shape(c, 2)->d[0] != w->d[0] ||
							nn_in_elem(c, 2) != WDC_NN_FLOAT))
		return nn_invalid(c, "bias must have one value per output channel");

	eh = (s->p[P_KH] - 1) * s->p[P_DH] + 1;
	ew = (s->p[P_KW] - 1) * s->p[P_DW] + 1;
	if (s->p[P_H] + s->p[P_PT] + s->p[P_PB] < eh ||
		s->p[P_W] + s->p[P_PL] + s->p[P_PR] < ew)
		return nn_invalid(c, "kernel larger than the padded input");
	s->p[P_OH] = (s->p[P_H] + s->p[P_PT] + s->p[P_PB] - eh) / s->p[P_SH] + 1;
	s->p[P_OW] = (s->p[P_W] + s->p[P_PL] + s->p[P_PR] - ew) / s->p[P_SW] + 1;
	s->p[P_M] = w->d[0];
	s->p[P_GROUP] = G;
	s->p[P_BIAS] = nn_has_in(c, 2);
	kg = w->d[1] * s->p[P_KH] * s->p[P_KW];
	mg = w->d[0] / G;
	s->p[P_IMGS] = conv_chunk(s->p, kg, mg, x->d[0]);
	st = check_gemm_dims(c, mg, s->p[P_IMGS] * s->p[P_OH] * s->p[P_OW], kg);
	if (st != WDC_OK)
		return st;
	s->scratch = conv_scratch(s->p, w->d[1], kg, mg, s->p[P_IMGS]);
	s->tscratch = s->scratch;
	st = conv_plan_direct(c);
	if (st != WDC_OK)
		return st;
	window_out_shape(s, w->d[0], &out);
	return nn_set_out(c, 0, &out, WDC_NN_FLOAT);
}

static void
conv_exec_rows(NnRun *r, int64_t in_row0, int64_t out_row0, int64_t nrows)
{
	const NnStep *s = r->s;
	const float *w = s->w ? s->w : r->in[1];
	const float *b = s->b ? s->b : (s->p[P_BIAS] ? r->in[2] : NULL);
	int64_t		in_image = s->p[P_C] * s->p[P_H] * s->p[P_W];
	int64_t		out_image = s->p[P_M] * s->p[P_OH] * s->p[P_OW];

	if (s->direct)
	{
		nn_conv_direct_run(s->direct, (const float *) r->in[0] + in_row0 * in_image,
						   (float *) r->out[0] + out_row0 * out_image, nrows,
						   (int) s->p[NN_ACT_SLOT], s->f[NN_ACT_ALPHA], r->scratch);
		return;
	}
	conv_apply(s->p, nrows, (const float *) r->in[0] + in_row0 * in_image, w, b,
			   (int) s->p[NN_ACT_SLOT], s->f[NN_ACT_ALPHA],
			   (float *) r->out[0] + out_row0 * out_image, r->scratch);
}

static void
conv_exec(NnRun *r)
{
	conv_exec_rows(r, 0, 0, r->s->p[P_N]);
}

/* The tangent is the convolution of the tangent: k*N images, no bias. */
static void
conv_jvp(NnRun *r)
{
	const NnStep *s = r->s;
	const float *w = s->w ? s->w : r->in[1];

	/*
	 * Tangents flow through the data input only; weights computed from the
	 * JVP input would need a product rule this kernel does not apply.
	 * NaN makes such a result unusable instead of quietly wrong.
	 */
	if (r->tin[1] || (s->n_in > 2 && r->tin[2]))
	{
		int64_t		n = nn_numel(r->osh[0]) * r->k;

		for (int64_t i = 0; i < n; i++)
			r->tout[0][i] = NAN;
		return;
	}
	conv_apply(s->p, s->p[P_N] * r->k, r->tin[0], w, NULL, 0, 0.0f, r->tout[0],
			   r->scratch);
	act_tangent(s, r->out[0], r->tout[0], nn_numel(r->osh[0]), r->k);
}

/* --- ConvTranspose ---------------------------------------------------- */

static WdcStatus
convt_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	const NnShape *x = nn_in_shape(c, 0);
	const NnShape *w = nn_in_shape(c, 1);
	int64_t		kdef[2];
	int64_t		G = nn_attr_int(s->node, "group", 1);
	int64_t		opad[2] = {0, 0};
	int			n;
	const int64_t *v;
	NnShape		out;
	int			nsp;
	WdcStatus	st;

	if (nn_in_elem(c, 0) != WDC_NN_FLOAT || nn_in_elem(c, 1) != WDC_NN_FLOAT)
		return nn_unsupported(c, "non-float inputs");
	if (x->rank < 3 || w->rank != x->rank)
		return nn_unsupported(c, "input rank %d with weight rank %d", x->rank,
							  w->rank);
	nsp = x->rank - 2;
	kdef[0] = w->d[2];
	kdef[1] = w->rank > 3 ? w->d[3] : 1;
	st = read_window(c, x, kdef, 1);
	if (st != WDC_OK)
		return st;
	if (G < 1 || x->d[1] != w->d[0] || w->d[0] % G != 0)
		return nn_invalid(c, "weights do not match the input channels");
	v = nn_attr_ints(s->node, "output_padding", &n);
	if (v && n != nsp)
		return nn_invalid(c, "output_padding has %d values", n);
	for (int i = 0; v && i < nsp; i++)
		opad[2 - nsp + i] = v[i];
	s->p[P_M] = w->d[1] * G;
	s->p[P_GROUP] = G;
	s->p[P_BIAS] = nn_has_in(c, 2);
	if (s->p[P_BIAS] && (nn_in_shape(c, 2)->rank != 1 ||
						 nn_in_shape(c, 2)->d[0] != s->p[P_M]))
		return nn_invalid(c, "bias must have one value per output channel");

	/* output size: stride * (in - 1) + opad + extent - pads */
	for (int i = 0; i < 2; i++)
	{
		int64_t		in = i ? s->p[P_W] : s->p[P_H];
		int64_t		ext = ((i ? s->p[P_KW] : s->p[P_KH]) - 1) *
			(i ? s->p[P_DW] : s->p[P_DH]) + 1;
		int64_t		full = (i ? s->p[P_SW] : s->p[P_SH]) * (in - 1) + opad[i] + ext;

		s->p[P_OH + i] = full - (i ? s->p[P_PL] + s->p[P_PR] : s->p[P_PT] + s->p[P_PB]);
	}
	v = nn_attr_ints(s->node, "output_shape", &n);
	if (v)
	{
		/* the requested size decides the padding, extra going to the end */
		if (n != nsp)
			return nn_invalid(c, "output_shape has %d values", n);
		for (int i = 0; i < nsp; i++)
		{
			int			sl = 2 - nsp + i;
			int64_t		in = sl ? s->p[P_W] : s->p[P_H];
			int64_t		ext = ((sl ? s->p[P_KW] : s->p[P_KH]) - 1) *
				(sl ? s->p[P_DW] : s->p[P_DH]) + 1;
			int64_t		total = (sl ? s->p[P_SW] : s->p[P_SH]) * (in - 1) +
				opad[sl] + ext - v[i];

			int64_t		half = total >= 0 ? total / 2 : -((1 - total) / 2);
			char		buf[24];
			const char *ap = nn_attr_string(s->node, "auto_pad", buf, sizeof(buf));

			/*
			 * SAME_UPPER puts the odd pad at the end, everything else at the
			 * start; a negative total (output_shape beyond the full output)
			 * appends zero rows.  half is floor(total / 2).
			 */
			if (ap && strcmp(ap, "SAME_UPPER") == 0)
			{
				s->p[sl ? P_PL : P_PT] = half;
				s->p[sl ? P_PR : P_PB] = total - half;
			}
			else
			{
				s->p[sl ? P_PL : P_PT] = total - half;
				s->p[sl ? P_PR : P_PB] = half;
			}
			s->p[P_OH + sl] = v[i];
		}
	}
	if (s->p[P_OH] < 1 || s->p[P_OW] < 1)
		return nn_invalid(c, "empty output");
	st = check_gemm_dims(c, w->d[1] * s->p[P_KH] * s->p[P_KW],
						 s->p[P_H] * s->p[P_W], w->d[0] / G);
	if (st != WDC_OK)
		return st;
	s->scratch = (size_t) (w->d[1] * s->p[P_KH] * s->p[P_KW]) *
		(size_t) (s->p[P_H] * s->p[P_W]) * sizeof(float);
	s->tscratch = s->scratch;
	window_out_shape(s, s->p[P_M], &out);
	return nn_set_out(c, 0, &out, WDC_NN_FLOAT);
}

/*
 * Transposed convolution as GEMM + col2im: for each image and group,
 * cols[mg*kh*kw, H*W] = W_g^T * X_g, then each column entry is added to the
 * output pixel it maps to.
 */
static void
convt_apply(const int64_t *p, int64_t nbatch, const float *x, const float *w,
			const float *bias, float *y, float *cols)
{
	int64_t		C = p[P_C],
				M = p[P_M],
				G = p[P_GROUP];
	int64_t		cg = C / G,
				mg = M / G;
	int64_t		H = p[P_H],
				W = p[P_W],
				hw = H * W;
	int64_t		KH = p[P_KH],
				KW = p[P_KW];
	int64_t		OH = p[P_OH],
				OW = p[P_OW];
	int64_t		rows = mg * KH * KW;

	for (int64_t n = 0; n < nbatch; n++)
	{
		float	   *yn = y + n * M * OH * OW;

		for (int64_t m = 0; m < M; m++)
			for (int64_t i = 0; i < OH * OW; i++)
				yn[m * OH * OW + i] = bias ? bias[m] : 0.0f;
		for (int64_t g = 0; g < G; g++)
		{
			/* W is [C, mg, KH, KW]: group g's block is [cg, rows] */
			nn_sgemm(1, 0, rows, hw, cg, 1.0f, w + g * cg * rows, rows,
					 x + (n * C + g * cg) * hw, hw, 0.0f, cols, hw);
			for (int64_t m = 0; m < mg; m++)
				for (int64_t ki = 0; ki < KH; ki++)
					for (int64_t kj = 0; kj < KW; kj++)
					{
						const float *row = cols + ((m * KH + ki) * KW + kj) * hw;
						float	   *plane = yn + (g * mg + m) * OH * OW;

						for (int64_t ih = 0; ih < H; ih++)
						{
							int64_t		oh = ih * p[P_SH] - p[P_PT] + ki * p[P_DH];

							if (oh < 0 || oh >= OH)
								continue;
							for (int64_t iw = 0; iw < W; iw++)
							{
								int64_t		ow = iw * p[P_SW] - p[P_PL] + kj * p[P_DW];

								if (ow >= 0 && ow < OW)
									plane[oh * OW + ow] += row[ih * W + iw];
							}
						}
					}
		}
	}
}

static void
convt_exec(NnRun *r)
{
	const NnStep *s = r->s;

	convt_apply(s->p, s->p[P_N], r->in[0], r->in[1],
				s->p[P_BIAS] ? r->in[2] : NULL, r->out[0], r->scratch);
}

static void
convt_jvp(NnRun *r)
{
	const NnStep *s = r->s;

	if (r->tin[1] || (s->n_in > 2 && r->tin[2]))
	{
		int64_t		n = nn_numel(r->osh[0]) * r->k;

		/* as in conv_jvp: no tangents through weights */
		for (int64_t i = 0; i < n; i++)
			r->tout[0][i] = NAN;
		return;
	}
	convt_apply(s->p, s->p[P_N] * r->k, r->tin[0], r->in[1], NULL, r->tout[0],
				r->scratch);
}

/* --- Gemm --------------------------------------------------------------- */

enum
{
	G_M, G_N, G_K, G_TA, G_TB, G_HASC, G_CROWS, G_CCOLS
};

static WdcStatus
gemm_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	const NnShape *a = nn_in_shape(c, 0);
	const NnShape *b = nn_in_shape(c, 1);
	int			ta = (int) nn_attr_int(s->node, "transA", 0);
	int			tb = (int) nn_attr_int(s->node, "transB", 0);
	int64_t		M,
				N,
				K;
	NnShape		out;
	WdcStatus	st;

	if (nn_in_elem(c, 0) != WDC_NN_FLOAT || nn_in_elem(c, 1) != WDC_NN_FLOAT)
		return nn_unsupported(c, "non-float inputs");
	if (a->rank != 2 || b->rank != 2)
		return nn_invalid(c, "A and B must be matrices");
	M = ta ? a->d[1] : a->d[0];
	K = ta ? a->d[0] : a->d[1];
	N = tb ? b->d[0] : b->d[1];
	if ((tb ? b->d[1] : b->d[0]) != K)
		return nn_invalid(c, "inner dimensions %lld and %lld differ",
						  (long long) K, (long long) (tb ? b->d[1] : b->d[0]));
	st = check_gemm_dims(c, M, N, K);
	if (st != WDC_OK)
		return st;
	s->p[G_M] = M;
	s->p[G_N] = N;
	s->p[G_K] = K;
	s->p[G_TA] = ta;
	s->p[G_TB] = tb;
	s->p[G_HASC] = nn_has_in(c, 2);
	s->f[0] = nn_attr_float(s->node, "alpha", 1.0f);
	s->f[1] = nn_attr_float(s->node, "beta", 1.0f);
	if (s->p[G_HASC])
	{
		const NnShape *cs = nn_in_shape(c, 2);

		/* C broadcasts to [M, N]: keep its row and column counts */
		if (cs->rank > 2 || nn_in_elem(c, 2) != WDC_NN_FLOAT)
			return nn_invalid(c, "C must have at most 2 dimensions");
		s->p[G_CROWS] = cs->rank == 2 ? cs->d[0] : 1;
		s->p[G_CCOLS] = cs->rank >= 1 ? cs->d[cs->rank - 1] : 1;
		if ((s->p[G_CROWS] != 1 && s->p[G_CROWS] != M) ||
			(s->p[G_CCOLS] != 1 && s->p[G_CCOLS] != N))
			return nn_invalid(c, "C cannot be broadcast to the output");
	}
	out.rank = 2;
	out.d[0] = M;
	out.d[1] = N;
	return nn_set_out(c, 0, &out, WDC_NN_FLOAT);
}

static void
gemm_fill_c(const NnStep *s, const float *cm, float beta, float *y, int64_t M)
{
	int64_t		N = s->p[G_N];
	int64_t		cr = s->p[G_CROWS],
				cc = s->p[G_CCOLS];

	for (int64_t i = 0; i < M; i++)
		for (int64_t j = 0; j < N; j++)
			y[i * N + j] = beta * cm[(cr == 1 ? 0 : i) * cc + (cc == 1 ? 0 : j)];
}

static void
gemm_exec(NnRun *r)
{
	const NnStep *s = r->s;
	int64_t		M = s->p[G_M],
				N = s->p[G_N],
				K = s->p[G_K];
	const float *b = s->w ? s->w : r->in[1];
	float		beta = 0.0f;

	/* Y[M, N] = alpha op(A)[M, K] op(B)[K, N] + beta C */
	if (s->b)
	{
		/* folded BatchNormalization: C is the per-column bias s->b */
		for (int64_t i = 0; i < M; i++)
			memcpy((float *) r->out[0] + i * N, s->b, sizeof(float) * N);
		beta = 1.0f;
	}
	else if (s->p[G_HASC])
	{
		gemm_fill_c(s, r->in[2], s->f[1], r->out[0], M);
		beta = 1.0f;
	}
	nn_sgemm((int) s->p[G_TA], (int) s->p[G_TB], M, N, K, s->f[0],
			 r->in[0], s->p[G_TA] ? M : K, b, s->p[G_TB] ? K : N, beta,
			 r->out[0], N);
	if (s->p[NN_ACT_SLOT])
	{
		float	   *y = r->out[0];

		for (int64_t i = 0; i < M * N; i++)
			y[i] = act_value(y[i], s->f[NN_ACT_ALPHA]);
	}
}

/*
 * dY = alpha (dA B + A dB) + beta dC.  With A untransposed, the k slices of
 * dA stack into one [k*M, K] matrix: one GEMM for all directions.
 */
static void
gemm_jvp(NnRun *r)
{
	const NnStep *s = r->s;
	int64_t		M = s->p[G_M],
				N = s->p[G_N],
				K = s->p[G_K];
	int			ta = (int) s->p[G_TA],
				tb = (int) s->p[G_TB];
	const float *b = s->w ? s->w : r->in[1];
	float	   *dy = r->tout[0];
	int			k = r->k;

	memset(dy, 0, sizeof(float) * M * N * k);
	if (r->tin[0] && !ta)
		nn_sgemm(0, tb, M * k, N, K, s->f[0], r->tin[0], K, b, tb ? K : N,
				 0.0f, dy, N);
	else if (r->tin[0])
		for (int j = 0; j < k; j++)
			nn_sgemm(1, tb, M, N, K, s->f[0], r->tin[0] + j * M * K, M, b,
					 tb ? K : N, 0.0f, dy + j * M * N, N);
	if (r->tin[1])
		for (int j = 0; j < k; j++)
			nn_sgemm(ta, tb, M, N, K, s->f[0], r->in[0], ta ? M : K,
					 r->tin[1] + j * K * N, tb ? K : N, 1.0f, dy + j * M * N, N);
	if (s->p[G_HASC] && r->tin[2])
	{
		int64_t		nc = s->p[G_CROWS] * s->p[G_CCOLS];

		for (int j = 0; j < k; j++)
		{
			const float *dc = r->tin[2] + j * nc;
			float	   *d = dy + j * M * N;
			int64_t		cr = s->p[G_CROWS],
						cc = s->p[G_CCOLS];

			for (int64_t i = 0; i < M; i++)
				for (int64_t q = 0; q < N; q++)
					d[i * N + q] += s->f[1] * dc[(cr == 1 ? 0 : i) * cc + (cc == 1 ? 0 : q)];
		}
	}
	act_tangent(s, r->out[0], dy, M * N, k);
}

/* --- MatMul (numpy semantics) -------------------------------------------- */

enum
{
	MM_M, MM_N, MM_K, MM_BATCH, MM_B2D, MM_RANK
};

/* p[MM_RANK+1 ..]: output batch dims; then A's and B's batch strides */
static WdcStatus
matmul_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	NnShape		a = *nn_in_shape(c, 0),
				b = *nn_in_shape(c, 1);
	int			a1 = a.rank == 1,
				b1 = b.rank == 1;
	int			br;
	NnShape		out;
	int64_t		batch = 1;

	if (nn_in_elem(c, 0) != WDC_NN_FLOAT || nn_in_elem(c, 1) != WDC_NN_FLOAT)
		return nn_unsupported(c, "non-float inputs");
	if (a.rank < 1 || b.rank < 1)
		return nn_invalid(c, "scalar operand");
	/* a 1-D A is a row vector, a 1-D B a column vector */
	if (a1)
	{
		a.d[1] = a.d[0];
		a.d[0] = 1;
		a.rank = 2;
	}
	if (b1)
	{
		b.d[1] = 1;
		b.rank = 2;
	}
	if (a.d[a.rank - 1] != b.d[b.rank - 2])
		return nn_invalid(c, "inner dimensions %lld and %lld differ",
						  (long long) a.d[a.rank - 1], (long long) b.d[b.rank - 2]);
	br = (a.rank > b.rank ? a.rank : b.rank) - 2;
	if (br > 6)
		return nn_unsupported(c, "more than 6 batch dimensions");
	out.rank = 0;
	{
		int64_t		sa = 1,
					sb = 1;
		int64_t		stra[6],
					strb[6];

		/* batch strides in whole matrices, 0 where broadcast */
		for (int i = br - 1; i >= 0; i--)
		{
			int			ia = i - (br - (a.rank - 2)),
						ib = i - (br - (b.rank - 2));
			int64_t		da = ia >= 0 ? a.d[ia] : 1,
						db = ib >= 0 ? b.d[ib] : 1;

			if (da != db && da != 1 && db != 1)
				return nn_invalid(c, "batch dimensions cannot be broadcast");
			s->p[MM_RANK + 1 + i] = da == 1 ? db : da;
			stra[i] = da == 1 ? 0 : sa;
			strb[i] = db == 1 ? 0 : sb;
			sa *= da;
			sb *= db;
		}
		for (int i = 0; i < br; i++)
		{
			s->p[MM_RANK + 7 + i] = stra[i];
			s->p[MM_RANK + 13 + i] = strb[i];
			out.d[out.rank++] = s->p[MM_RANK + 1 + i];
			batch *= s->p[MM_RANK + 1 + i];
		}
	}
	s->p[MM_M] = a.d[a.rank - 2];
	s->p[MM_K] = a.d[a.rank - 1];
	s->p[MM_N] = b.d[b.rank - 1];
	s->p[MM_BATCH] = batch;
	s->p[MM_B2D] = b.rank == 2;
	s->p[MM_RANK] = br;
	{
		/* with a shared B, all batch rows go through one GEMM */
		WdcStatus	st = check_gemm_dims(c, s->p[MM_M] * (s->p[MM_B2D] ? batch : 1),
										 s->p[MM_N], s->p[MM_K]);

		if (st != WDC_OK)
			return st;
	}
	if (!a1)
		out.d[out.rank++] = s->p[MM_M];
	if (!b1)
		out.d[out.rank++] = s->p[MM_N];
	return nn_set_out(c, 0, &out, WDC_NN_FLOAT);
}

/* C[batch] = A[batch] B[batch] with broadcast batch strides. */
static void
matmul_apply(const NnStep *s, const float *a, const float *b, float *y,
			 float beta)
{
	int64_t		M = s->p[MM_M],
				N = s->p[MM_N],
				K = s->p[MM_K];
	int			br = (int) s->p[MM_RANK];
	int64_t		idx[6] = {0};

	if (s->p[MM_B2D])
	{
		/* B shared by the whole batch: all of A's rows in one GEMM */
		int			a_full = 1;

		for (int i = 0; i < br; i++)
			if (s->p[MM_RANK + 7 + i] == 0 && s->p[MM_RANK + 1 + i] > 1)
				a_full = 0;
		if (a_full)
		{
			nn_sgemm(0, 0, M * s->p[MM_BATCH], N, K, 1.0f, a, K, b, N, beta, y, N);
			return;
		}
	}
	for (int64_t t = 0; t < s->p[MM_BATCH]; t++)
	{
		int64_t		oa = 0,
					ob = 0;

		for (int i = 0; i < br; i++)
		{
			oa += idx[i] * s->p[MM_RANK + 7 + i];
			ob += idx[i] * s->p[MM_RANK + 13 + i];
		}
		nn_sgemm(0, 0, M, N, K, 1.0f, a + oa * M * K, K, b + ob * K * N, N,
				 beta, y + t * M * N, N);
		for (int i = br - 1; i >= 0; i--)
		{
			if (++idx[i] < s->p[MM_RANK + 1 + i])
				break;
			idx[i] = 0;
		}
	}
}

static void
matmul_exec(NnRun *r)
{
	matmul_apply(r->s, r->in[0], r->in[1], r->out[0], 0.0f);
}

/* dY = dA B + A dB, one direction after another (dA B merges rows). */
static void
matmul_jvp(NnRun *r)
{
	const NnStep *s = r->s;
	const NnShape *as = r->ish[0],
			   *bs = r->ish[1];
	int64_t		na = nn_numel(as),
				nb = nn_numel(bs),
				ny = nn_numel(r->osh[0]);
	int			a_full = s->p[MM_B2D];

	for (int i = 0; i < s->p[MM_RANK]; i++)
		if (s->p[MM_RANK + 7 + i] == 0 && s->p[MM_RANK + 1 + i] > 1)
			a_full = 0;
	if (a_full && r->tin[1] == NULL)
	{
		/* B constant and shared: all k directions' rows in one GEMM */
		nn_sgemm(0, 0, s->p[MM_M] * s->p[MM_BATCH] * r->k, s->p[MM_N],
				 s->p[MM_K], 1.0f, r->tin[0], s->p[MM_K], r->in[1], s->p[MM_N],
				 0.0f, r->tout[0], s->p[MM_N]);
		return;
	}
	for (int j = 0; j < r->k; j++)
	{
		float	   *dy = r->tout[0] + j * ny;

		if (r->tin[0])
			matmul_apply(s, r->tin[0] + j * na, r->in[1], dy, 0.0f);
		else
			memset(dy, 0, sizeof(float) * ny);
		if (r->tin[1])
			matmul_apply(s, r->in[0], r->tin[1] + j * nb, dy, 1.0f);
	}
}

/* --- pooling ------------------------------------------------------------- */

static WdcStatus
pool_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	const NnShape *x = nn_in_shape(c, 0);
	int64_t		kdef[2] = {1, 1};
	int			is_max = strcmp(s->op->name, "MaxPool") == 0;
	int			ceil_mode = (int) nn_attr_int(s->node, "ceil_mode", 0);
	NnShape		out;
	WdcStatus	st;
	int			n;

	if (nn_in_elem(c, 0) != WDC_NN_FLOAT)
		return nn_unsupported(c, "a non-float input");
	if (s->n_out > 1 && s->out[1] >= 0)
		return nn_unsupported(c, "the Indices output");
	if (nn_attr_ints(s->node, "kernel_shape", &n) == NULL)
		return nn_invalid(c, "kernel_shape is missing");
	st = read_window(c, x, kdef, 0);
	if (st != WDC_OK)
		return st;
	if (!is_max && (s->p[P_DH] != 1 || s->p[P_DW] != 1))
		return nn_unsupported(c, "dilations");
	for (int i = 0; i < 2; i++)
	{
		int64_t		in = i ? s->p[P_W] : s->p[P_H];
		int64_t		pad = i ? s->p[P_PL] + s->p[P_PR] : s->p[P_PT] + s->p[P_PB];
		int64_t		ext = ((i ? s->p[P_KW] : s->p[P_KH]) - 1) *
			(i ? s->p[P_DW] : s->p[P_DH]) + 1;
		int64_t		stride = i ? s->p[P_SW] : s->p[P_SH];
		int64_t		span = in + pad - ext;
		int64_t		o;

		if (span < 0)
			return nn_invalid(c, "kernel larger than the padded input");
		o = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
		/* a window must start inside the input or the leading pad */
		if (ceil_mode && (o - 1) * stride >= in + (i ? s->p[P_PL] : s->p[P_PT]))
			o--;
		s->p[P_OH + i] = o;
	}
	s->p[P_M] = x->d[1];
	s->p[P_GROUP] = is_max;
	s->p[P_COUNT_PAD] = nn_attr_int(s->node, "count_include_pad", 0);
	window_out_shape(s, x->d[1], &out);
	return nn_set_out(c, 0, &out, WDC_NN_FLOAT);
}

/*
 * Pool nbatch images.  With tx/ty set (MaxPool JVP), the tangent at each
 * window's maximum is copied instead of the value.
 */
static void
pool_apply(const int64_t *p, int64_t nbatch, const float *x, float *y,
		   const float *tx, float *ty, int k)
{
	int64_t		C = p[P_C],
				H = p[P_H],
				W = p[P_W],
				OH = p[P_OH],
				OW = p[P_OW];
	int			is_max = (int) p[P_GROUP];

	for (int64_t pl = 0; pl < nbatch * C; pl++)
	{
		const float *xp = x + pl * H * W;
		float	   *yp = y + pl * OH * OW;

		for (int64_t oh = 0; oh < OH; oh++)
			for (int64_t ow = 0; ow < OW; ow++)
			{
				int64_t		h0 = oh * p[P_SH] - p[P_PT],
							w0 = ow * p[P_SW] - p[P_PL];
				float		best = -INFINITY;
				int64_t		arg = -1;
				double		sum = 0;
				int64_t		cnt = 0;

				for (int64_t ki = 0; ki < p[P_KH]; ki++)
				{
					int64_t		ih = h0 + ki * p[P_DH];

					if (ih < 0 || ih >= H)
						continue;
					for (int64_t kj = 0; kj < p[P_KW]; kj++)
					{
						int64_t		iw = w0 + kj * p[P_DW];

						if (iw < 0 || iw >= W)
							continue;
						if (xp[ih * W + iw] > best || arg < 0)
						{
							best = xp[ih * W + iw];
							arg = ih * W + iw;
						}
						sum += xp[ih * W + iw];
						cnt++;
					}
				}
				if (is_max)
				{
					if (ty)
						for (int j = 0; j < k; j++)
							ty[(j * nbatch * C + pl) * OH * OW + oh * OW + ow] =
								arg >= 0 ? tx[(j * nbatch * C + pl) * H * W + arg] : 0.0f;
					else
						yp[oh * OW + ow] = best;
				}
				else
				{
					if (p[P_COUNT_PAD])
					{
						/* the window clipped to the padded input */
						int64_t		he = h0 + p[P_KH] < H + p[P_PB] ? h0 + p[P_KH] : H + p[P_PB];
						int64_t		we = w0 + p[P_KW] < W + p[P_PR] ? w0 + p[P_KW] : W + p[P_PR];

						cnt = (he - h0) * (we - w0);
					}
					yp[oh * OW + ow] = cnt > 0 ? (float) (sum / cnt) : 0.0f;
				}
			}
	}
}

static void
pool_exec(NnRun *r)
{
	pool_apply(r->s->p, r->s->p[P_N], r->in[0], r->out[0], NULL, NULL, 0);
}

static void
pool_jvp(NnRun *r)
{
	if (r->s->p[P_GROUP])
		pool_apply(r->s->p, r->s->p[P_N], r->in[0], r->out[0], r->tin[0],
				   r->tout[0], r->k);
	else
		pool_apply(r->s->p, r->s->p[P_N] * r->k, r->tin[0], r->tout[0], NULL,
				   NULL, 0);
}

static WdcStatus
gap_prepare(NnCtx *c)
{
	const NnShape *x = nn_in_shape(c, 0);
	NnShape		out = *x;

	if (nn_in_elem(c, 0) != WDC_NN_FLOAT)
		return nn_unsupported(c, "a non-float input");
	if (x->rank < 3)
		return nn_invalid(c, "input needs spatial dimensions");
	for (int i = 2; i < x->rank; i++)
		out.d[i] = 1;
	c->step->p[0] = x->d[0] * x->d[1];
	c->step->p[1] = nn_numel(x) / (c->step->p[0] ? c->step->p[0] : 1);
	return nn_set_out(c, 0, &out, WDC_NN_FLOAT);
}

static void
gap_apply(const int64_t *p, int64_t planes, const float *x, float *y)
{
	for (int64_t i = 0; i < planes; i++)
	{
		double		sum = 0;

		for (int64_t j = 0; j < p[1]; j++)
			sum += x[i * p[1] + j];
		y[i] = p[1] ? (float) (sum / p[1]) : 0.0f;
	}
}

static void
gap_exec(NnRun *r)
{
	gap_apply(r->s->p, r->s->p[0], r->in[0], r->out[0]);
}

static void
gap_jvp(NnRun *r)
{
	gap_apply(r->s->p, r->s->p[0] * r->k, r->tin[0], r->tout[0]);
}

const NnOpDef nn_ops_linear[] = {
	{"Conv", 1, 2, 3, 1, 1, conv_prepare, conv_exec, conv_jvp, conv_exec_rows},
	{"ConvTranspose", 1, 2, 3, 1, 1, convt_prepare, convt_exec, convt_jvp},
	{"Gemm", 1, 2, 3, 1, 1, gemm_prepare, gemm_exec, gemm_jvp},
	{"MatMul", 1, 2, 2, 1, 1, matmul_prepare, matmul_exec, matmul_jvp},
	{"MaxPool", 1, 1, 1, 1, 2, pool_prepare, pool_exec, pool_jvp},
	{"AveragePool", 1, 1, 1, 1, 1, pool_prepare, pool_exec, pool_jvp},
	{"GlobalAveragePool", 1, 1, 1, 1, 1, gap_prepare, gap_exec, gap_jvp},
	{NULL}
};
