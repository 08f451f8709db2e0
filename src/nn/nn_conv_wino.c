/*
 * nn_conv_wino.c
 *	  Winograd convolution with AVX-512F or AVX2 and FMA, for Conv steps
 *	  with constant weights in plans of 16 images or more.
 *
 * Phases.  A convolution with strides SH, SW is a sum over SH * SW phase
 * planes of a stride-1 convolution:
 *	  P[c][rh][rw][u][v] = x_padded[u * SH + rh][v * SW + rw]
 *	  w'[m][c][rh][rw][a][b] = w[m][c][a * SH + rh][b * SW + rw]
 * (zero where a * SH + rh >= KH or b * SW + rw >= KW), and y[m][oh][ow]
 * sums w' * P[.][oh + a][ow + b] over the K = C * SH * SW phase channels
 * and the r x r taps, r = ceil(KH / SH) = ceil(KW / SW).  A 4x4 kernel
 * with stride 2 gives r = 2, a 3x3 kernel with stride 1 r = 3.
 *
 * Winograd.  F(m, r) computes m outputs of an r-tap correlation from
 * alpha = m + r - 1 inputs with alpha products instead of m * r (Lavin and
 * Gray, 2016).  In 2-D, each m x m output tile takes alpha^2 products per
 * (input, output) channel pair instead of m^2 * r^2.  This file has
 * F(2x2, 3x3) (16 instead of 36), F(2x2, 2x2) (9 instead of 16) and
 * F(4x4, 2x2) (25 instead of 64).  For 2x2 taps the plan takes the tile
 * that needs fewer products on its output size.  With the input tile d
 * (alpha x alpha) and kernel g (r x r) of one pair,
 *	  Y = A^T [ (G g G^T) (.) (B^T d B) ] A,
 * and summing the products over the K phase channels before the output
 * transform turns the middle step into alpha^2 independent matrix
 * products: M[xi] (M x tiles) = U[xi] (M x K) * V[xi] (K x tiles).  The
 * transforms come from the interpolation points 0, 1, -1 (and 2 for
 * F(4, 2)) and infinity.  B and A then hold small integers, and the
 * fractions of G are applied to the weights once, in double, at plan
 * time.  In a float32 simulation on random data with 128 phase channels,
 * the error of F(4x4, 2x2) was about 7e-7 of the largest output.
 *
 * Layout.  Images go through in chunks of L (16 with AVX-512, 8 with
 * AVX2), one per vector lane.  The chunk's input is transposed to
 * [C][H][W][L], so every transform step is one vector operation on L
 * images.  The output is transposed back from [M][OH][OW][L].  The
 * products run over groups of WG_TILES output tiles, so a group's V
 * (alpha^2 x K rows of WG_TILES * L floats) stays near the core, in tiles
 * of 4 vectors (2 with AVX2) by WG_NM output channels of accumulators.  In
 * a chunk of fewer than L images the empty lanes hold zeros, and their
 * results are dropped.  Between two Winograd steps the planner keeps the
 * value in the chunk layout, and both transposes are skipped.  The
 * instruction-set code is in nn_conv_wino_kern.h.
 *
 * NOTE: the AVX2 kernel was timed only on a Zen 4 core (2.2x the AVX2
 * direct kernel on the reference encoder at batch 64).
 */
#include "nn/nn_int.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define NN_WG_X86 1
#include <immintrin.h>
#endif

#define WG_TILES 4				/* output tiles per group of products */
#define WG_NM 6					/* output channels of a product tile */
#define WG_MAX_ALPHA 5

/* Largest scratch of a plan.  Larger layers keep the direct kernel. */
#define WG_MAX_SCRATCH ((size_t) 256 << 20)

struct NnConvWino
{
	NnConvGeom	g;
	int			lanes;			/* images per chunk: 16 with AVX-512, 8 with
								 * AVX2 */
	int			r;				/* taps per phase kernel side, 2 or 3 */
	int			mt;				/* outputs per tile side, 2 or 4 */
	int			alpha;			/* mt + r - 1: inputs per tile side */
	int64_t		K;				/* phase channels C * SH * SW */
	int64_t		nmb;			/* output channel blocks of WG_NM */
	int64_t		TY,
				TX;				/* output tiles per column and row */
	/* scratch offsets, in floats */
	size_t		off_v,
				off_m,
				off_y;
	/*
	 * Floats from one transform point xi to the next in V and M.  Rows of
	 * whole 4 KB pages would put the alpha^2 rows that a tile transform
	 * reads or writes in one set of the L1 cache, so one cache line pads
	 * each.
	 */
	int64_t		vstride,
				mstride;
	float	   *u;				/* [alpha^2][nmb][K][WG_NM], zero past M */
	float	   *bias;			/* [M] */
	/*
	 * Input or output in chunk layout, [N / lanes][C][H][W][lanes],
	 * between two Winograd steps; set by plan_wino_chains in nn_plan.c.
	 */
	int			in_chunked,
				out_chunked;
};

/* Round a count of floats up to whole 64-byte cache lines. */
static size_t
floats64(size_t floats)
{
	return (floats + 15) / 16 * 16;
}

int			nn_conv_wino_tile = 0;

/*
 * Taps per phase kernel side r and outputs per tile side mt for g, or
 * r = 0 where the geometry does not fit: F(2x2, 3x3) for r = 3, and for
 * r = 2 F(2x2, 2x2) or F(4x4, 2x2), whichever needs fewer products (the
 * larger tile wastes more on partial tiles of small outputs).
 */
static void
choose_tiles(const NnConvGeom *g, int *r, int *mt)
{
	int64_t		rh = (g->KH + g->SH - 1) / g->SH,
				rw = (g->KW + g->SW - 1) / g->SW;

	*r = 0;
	*mt = 2;
	if (g->G != 1 || g->DH != 1 || g->DW != 1 || g->SH < 1 || g->SW < 1 ||
		g->OH < 1 || g->OW < 1 || g->M < 1 || rh != rw || (rh != 2 && rh != 3))
		return;
	*r = (int) rh;
	if (rh == 2)
	{
		double		p2 = (double) ((g->OH + 1) / 2) * ((g->OW + 1) / 2) * 9,
					p4 = (double) ((g->OH + 3) / 4) * ((g->OW + 3) / 4) * 25;

		if (nn_conv_wino_tile == 4 || (nn_conv_wino_tile == 0 && p4 < p2))
			*mt = 4;
	}
}

/*
 * Fill the tile choice, sizes and scratch offsets of wg for geometry g with
 * vectors of lanes floats.  Return 0 where the geometry does not fit or a
 * size overflows, else 1 with the floats of a run's scratch in *scratch
 * and of the packed weights and bias in *weights.
 */
static int
wino_layout(NnConvWino *wg, const NnConvGeom *g, int lanes, size_t *scratch,
			size_t *weights)
{
	size_t		nxi,
				x16,
				v,
				m,
				y16,
				u;

	memset(wg, 0, sizeof(*wg));
	wg->g = *g;
	wg->lanes = lanes;
	choose_tiles(g, &wg->r, &wg->mt);
	if (wg->r == 0 || g->C > INT32_MAX || g->SH > 64 || g->SW > 64 ||
		g->M > INT32_MAX || g->H > INT32_MAX || g->W > INT32_MAX)
		return 0;
	wg->alpha = wg->mt + wg->r - 1;
	wg->K = g->C * g->SH * g->SW;
	wg->nmb = (g->M + WG_NM - 1) / WG_NM;
	wg->TY = (g->OH + wg->mt - 1) / wg->mt;
	wg->TX = (g->OW + wg->mt - 1) / wg->mt;
	wg->vstride = wg->K * lanes * WG_TILES + 16;
	wg->mstride = g->M * lanes * WG_TILES + 16;
	nxi = (size_t) (wg->alpha * wg->alpha);
	if (!wdc_size_mul((size_t) g->C * g->H, (size_t) g->W * lanes, &x16) ||
		!wdc_size_mul(nxi, (size_t) wg->vstride, &v) ||
		!wdc_size_mul(nxi, (size_t) wg->mstride, &m) ||
		!wdc_size_mul((size_t) g->M * g->OH, (size_t) g->OW * lanes, &y16) ||
		!wdc_size_mul(nxi * wg->nmb * WG_NM, (size_t) wg->K, &u))
		return 0;
	wg->off_v = floats64(x16);
	wg->off_m = wg->off_v + floats64(v);
	wg->off_y = wg->off_m + floats64(m);
	*scratch = wg->off_y + floats64(y16);
	*weights = u + (size_t) g->M;
	return 1;
}

/*
 * Bytes of the plan (struct and packed weights) for geometry g, or 0 when
 * this kernel does not apply under mode (NN_WINO_AUTO, _CHAIN or _FORCE);
 * *scratch gets the bytes a run needs.  NN_WINO_FORCE skips the checks of
 * benefit (batch size, phase channels, arithmetic saved), so tests can
 * reach the kernel on small geometries.
 */
size_t
nn_conv_wino_bytes(const NnConvGeom *g, int mode, int lanes, size_t *scratch)
{
	NnConvWino	layout;
	size_t		scratch_floats,
				weight_floats;

	*scratch = 0;
#ifndef NN_WG_X86
	return 0;
#else
	__builtin_cpu_init();
	if (lanes == 16 ? !__builtin_cpu_supports("avx512f") :
		lanes != 8 || !__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
		return 0;
	if (!wino_layout(&layout, g, lanes, &scratch_floats, &weight_floats))
		return 0;
	if (mode != NN_WINO_FORCE)
	{
		double		wino = (double) layout.TY * layout.TX * layout.alpha * layout.alpha *
			layout.K * g->M,
					direct = (double) g->OH * g->OW * g->C * g->KH * g->KW * g->M;

		/*
		 * Below 16 images lanes stay empty.  With few phase channels the
		 * transforms and transposes cost as much as the products they
		 * save, unless the step's output or input stays in chunk layout.
		 * On the reference encoder, a first layer with K = 4 made the
		 * whole batch-64 run 5% slower alone and 8% faster in a chain.
		 */
		if (g->N < 16 || layout.K < (mode == NN_WINO_CHAIN ? 4 : 16) ||
			4 * wino > 3 * direct)
			return 0;
	}
	if (scratch_floats > WG_MAX_SCRATCH / sizeof(float) ||
		weight_floats > WG_MAX_SCRATCH / sizeof(float))
		return 0;
	*scratch = scratch_floats * sizeof(float) + 64;
	return sizeof(NnConvWino) + 64 + weight_floats * sizeof(float);
#endif
}

/*
 * Set up the plan in mem, which has nn_conv_wino_bytes(g, ...) bytes, and
 * pack weights w [M][C][KH][KW] and bias b (or NULL).
 */
NnConvWino *
nn_conv_wino_init(void *mem, const NnConvGeom *g, int lanes, const float *w,
				  const float *b)
{
	NnConvWino *wg = mem;
	size_t		scratch_floats,
				weight_floats;

	/* nn_conv_wino_bytes accepted this layout */
	(void) wino_layout(wg, g, lanes, &scratch_floats, &weight_floats);
	/* 64-byte aligned weights after the struct, then the bias */
	wg->u = (float *) (((uintptr_t) (wg + 1) + 63) & ~(uintptr_t) 63);
	wg->bias = wg->u + (weight_floats - (size_t) g->M);
	nn_conv_wino_pack(wg, w, b);
	return wg;
}

/*
 * Rows of G, the kernel transform (alpha x r): F(2, 2) and F(2, 3) from
 * the points 0, 1 (and -1) and infinity, F(4, 2) from 0, 1, -1, 2 and
 * infinity.
 */
static const double wg_g22[WG_MAX_ALPHA][3] = {{1, 0}, {1, 1}, {0, 1}};
static const double wg_g23[WG_MAX_ALPHA][3] = {{1, 0, 0}, {0.5, 0.5, 0.5},
{0.5, -0.5, 0.5}, {0, 0, 1}};
static const double wg_g42[WG_MAX_ALPHA][3] = {{0.5, 0}, {-0.5, -0.5},
{-1.0 / 6, 1.0 / 6}, {1.0 / 6, 1.0 / 3}, {0, 1}};

void
nn_conv_wino_pack(NnConvWino *wg, const float *w, const float *b)
{
	const NnConvGeom *g = &wg->g;
	int			r = wg->r,
				alpha = wg->alpha;
	const double (*gm)[3] = wg_g22;

	if (r == 3)
		gm = wg_g23;
	else if (wg->mt == 4)
		gm = wg_g42;

	for (int64_t mo = 0; mo < wg->nmb * WG_NM; mo++)
	{
		int64_t		mb = mo / WG_NM,
					j = mo % WG_NM;

		for (int64_t c = 0; c < g->C; c++)
			for (int64_t rh = 0; rh < g->SH; rh++)
				for (int64_t rw = 0; rw < g->SW; rw++)
				{
					int64_t		k = (c * g->SH + rh) * g->SW + rw;
					double		gk[3][3] = {{0}},
								t[WG_MAX_ALPHA][3],
								u[WG_MAX_ALPHA][WG_MAX_ALPHA];

					/* the phase kernel w'[mo][k], zero past the kernel */
					for (int a = 0; a < r && mo < g->M; a++)
						for (int bb = 0; bb < r; bb++)
						{
							int64_t		kh = a * g->SH + rh,
										kw = bb * g->SW + rw;

							if (kh < g->KH && kw < g->KW)
								gk[a][bb] = w[((mo * g->C + c) * g->KH + kh) * g->KW + kw];
						}
					/* U = G gk G^T */
					for (int p = 0; p < alpha; p++)
						for (int bb = 0; bb < r; bb++)
						{
							t[p][bb] = 0;
							for (int a = 0; a < r; a++)
								t[p][bb] += gm[p][a] * gk[a][bb];
						}
					for (int p = 0; p < alpha; p++)
						for (int q = 0; q < alpha; q++)
						{
							u[p][q] = 0;
							for (int bb = 0; bb < r; bb++)
								u[p][q] += t[p][bb] * gm[q][bb];
							wg->u[(((p * alpha + q) * wg->nmb + mb) * wg->K + k) * WG_NM + j] =
								(float) u[p][q];
						}
				}
	}
	for (int64_t mo = 0; mo < g->M; mo++)
		wg->bias[mo] = b ? b[mo] : 0.0f;
}

#ifdef NN_WG_X86

#define WK_CAT2(a, b) a##_##b
#define WK_CAT(a, b) WK_CAT2(a, b)
#define WK_NAME(x) WK_CAT(x, WK_SUFFIX)

/* --- AVX-512 ----------------------------------------------------------- */

/*
 * Every function of a section carries its instruction set's target
 * attribute, as in nn_conv_direct.c (clang, which PGXS runs for LLVM
 * bitcode, ignores target pragmas).
 */
#define WK_TARGET __attribute__((target("avx512f")))
#define WK_SUFFIX avx512
#define WK_V 16
#define WK_NP 4
#define WK_LOAD_UNROLL 5		/* whole 5x5 tiles fit the 32 registers */
typedef __m512 wk_vec512;
#define wk_vec wk_vec512
#define wk_load(p) _mm512_loadu_ps(p)
#define wk_store(p, v) _mm512_storeu_ps(p, v)
#define wk_zero() _mm512_setzero_ps()
#define wk_set1(v) _mm512_set1_ps(v)
#define wk_add(a, b) _mm512_add_ps(a, b)
#define wk_sub(a, b) _mm512_sub_ps(a, b)
#define wk_fmadd(a, b, c) _mm512_fmadd_ps(a, b, c)
#define wk_fnmadd(a, b, c) _mm512_fnmadd_ps(a, b, c)
#define wk_leaky(v, slope) \
	_mm512_mask_mul_ps(v, _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ), \
					   v, slope)
#define wk_transpose(row) transpose16(row)

/*
 * Transpose 16 rows of 16 floats in place: row i lane j becomes row j
 * lane i.  Interleave 32-bit, then 64-bit elements within 128-bit lanes,
 * then move 128-bit lanes in two steps.
 */
static inline __attribute__((always_inline)) WK_TARGET void
transpose16(__m512 *row)
{
	__m512		t[16],
				u[16];

	for (int i = 0; i < 16; i += 2)
	{
		t[i] = _mm512_unpacklo_ps(row[i], row[i + 1]);
		t[i + 1] = _mm512_unpackhi_ps(row[i], row[i + 1]);
	}
	/* u[4g + e], 128-bit lane L: rows 4g .. 4g + 3 of column 4L + e */
	for (int gi = 0; gi < 16; gi += 4)
	{
		__m512d		a0 = _mm512_castps_pd(t[gi]),
					a1 = _mm512_castps_pd(t[gi + 1]),
					a2 = _mm512_castps_pd(t[gi + 2]),
					a3 = _mm512_castps_pd(t[gi + 3]);

		u[gi] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
		u[gi + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
		u[gi + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
		u[gi + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
	}
	for (int e = 0; e < 4; e++)
	{
		__m512		v0 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0x44),
					v1 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0xEE),
					w0 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0x44),
					w1 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0xEE);

		row[e] = _mm512_shuffle_f32x4(v0, w0, 0x88);
		row[4 + e] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
		row[8 + e] = _mm512_shuffle_f32x4(v1, w1, 0x88);
		row[12 + e] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
	}
}

#include "nn/nn_conv_wino_kern.h"

#undef WK_TARGET
#undef WK_SUFFIX

/* --- AVX2 -------------------------------------------------------------- */

#define WK_TARGET __attribute__((target("avx2,fma")))
#define WK_SUFFIX avx2
#define WK_V 8
#define WK_NP 2
#define WK_LOAD_UNROLL 4		/* 16 registers spill anyway; 4 timed faster */
typedef __m256 wk_vec256;
#define wk_vec wk_vec256
#define wk_load(p) _mm256_loadu_ps(p)
#define wk_store(p, v) _mm256_storeu_ps(p, v)
#define wk_zero() _mm256_setzero_ps()
#define wk_set1(v) _mm256_set1_ps(v)
#define wk_add(a, b) _mm256_add_ps(a, b)
#define wk_sub(a, b) _mm256_sub_ps(a, b)
#define wk_fmadd(a, b, c) _mm256_fmadd_ps(a, b, c)
#define wk_fnmadd(a, b, c) _mm256_fnmadd_ps(a, b, c)
#define wk_leaky(v, slope) \
	_mm256_blendv_ps(v, _mm256_mul_ps(v, slope), \
					 _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ))
#define wk_transpose(row) transpose8(row)

/*
 * Transpose 8 rows of 8 floats in place: interleave 32-bit, then 64-bit
 * elements within 128-bit halves, then swap halves.
 */
static inline __attribute__((always_inline)) WK_TARGET void
transpose8(__m256 *row)
{
	__m256		t[8],
				u[8];

	for (int i = 0; i < 8; i += 2)
	{
		t[i] = _mm256_unpacklo_ps(row[i], row[i + 1]);
		t[i + 1] = _mm256_unpackhi_ps(row[i], row[i + 1]);
	}
	/* u[4g + e], half L: rows 4g .. 4g + 3 of column 4L + e */
	for (int gi = 0; gi < 8; gi += 4)
	{
		u[gi] = _mm256_shuffle_ps(t[gi], t[gi + 2], 0x44);
		u[gi + 1] = _mm256_shuffle_ps(t[gi], t[gi + 2], 0xEE);
		u[gi + 2] = _mm256_shuffle_ps(t[gi + 1], t[gi + 3], 0x44);
		u[gi + 3] = _mm256_shuffle_ps(t[gi + 1], t[gi + 3], 0xEE);
	}
	for (int e = 0; e < 4; e++)
	{
		row[e] = _mm256_permute2f128_ps(u[e], u[4 + e], 0x20);
		row[4 + e] = _mm256_permute2f128_ps(u[e], u[4 + e], 0x31);
	}
}

#include "nn/nn_conv_wino_kern.h"

#undef WK_TARGET
#undef WK_SUFFIX

#endif							/* NN_WG_X86 */

void
nn_conv_wino_set_chunked(NnConvWino *wg, int in, int out)
{
	if (in >= 0)
		wg->in_chunked = in;
	if (out >= 0)
		wg->out_chunked = out;
}

int
nn_conv_wino_chunked(const NnConvWino *wg)
{
	return (wg->in_chunked ? 1 : 0) | (wg->out_chunked ? 2 : 0);
}

void
nn_conv_wino_run(const NnConvWino *wg, const float *x, float *y,
				 int64_t nimg, int act, float alpha, float *scratch)
{
#ifdef NN_WG_X86
	if (wg->lanes == 16)
		run_avx512(wg, x, y, nimg, act, alpha, scratch);
	else
		run_avx2(wg, x, y, nimg, act, alpha, scratch);
#endif
}
