/*
 * nn_conv_wino.c
 *	  Winograd convolution with AVX-512F, for Conv steps with constant
 *	  weights in plans of 16 images or more.
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
 * F(4x4, 2x2) (25 instead of 64); for 2x2 taps the plan takes the tile
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
 * Layout.  Images go through in chunks of 16, one per vector lane: the
 * chunk's input is transposed to [C][H][W][16], so every transform step is
 * one vector operation on 16 images, and the output is transposed back
 * from [M][OH][OW][16].  The products run over groups of WG_TILES output
 * tiles, so a group's V (alpha^2 x K rows of WG_TILES * 16 floats) stays
 * near the core, in a tile of WG_TILES vectors by WG_NM output channels
 * of accumulators, the same register blocking as the direct kernel.  In
 * a chunk of fewer than 16 images the empty lanes hold zeros, and their
 * results are dropped.  Between two Winograd steps the planner keeps the
 * value in the chunk layout, and both transposes are skipped.
 *
 * NOTE: AVX-512 only.  With AVX2, or for other geometries, the direct
 * kernel (nn_conv_direct.c) runs.
 */
#include "nn/nn_int.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define NN_WG_X86 1
#include <immintrin.h>
#endif

#define WG_LANES 16				/* images per chunk, one per vector lane */
#define WG_TILES 4				/* output tiles per group: pixel vectors of a
								 * product tile */
#define WG_NM 6					/* output channels of a product tile */
#define WG_ROW (WG_LANES * WG_TILES)	/* floats per row of V and M */
#define WG_MAX_ALPHA 5

/* Largest scratch of a plan.  Larger layers keep the direct kernel. */
#define WG_MAX_SCRATCH ((size_t) 256 << 20)

struct NnConvWino
{
	NnConvGeom	g;
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
	 * Input or output in chunk layout, [N / 16][C][H][W][16], between two
	 * Winograd steps; set by plan_wino_chains in nn_plan.c.
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
 * Bytes of the plan (struct and packed weights) for geometry g, or 0 when
 * this kernel does not apply under mode (NN_WINO_AUTO, _CHAIN or _FORCE);
 * *scratch gets the bytes a run needs.  NN_WINO_FORCE skips the checks of
 * benefit (batch size, phase channels, arithmetic saved), so tests can
 * reach the kernel on small geometries.
 */
size_t
nn_conv_wino_bytes(const NnConvGeom *g, int mode, size_t *scratch)
{
	int			r,
				mt;
	int64_t		alpha,
				K,
				TY,
				TX,
				nmb;
	size_t		x16,
				v,
				m,
				y16,
				u,
				total;

	*scratch = 0;
#ifndef NN_WG_X86
	return 0;
#else
	__builtin_cpu_init();
	if (!__builtin_cpu_supports("avx512f"))
		return 0;
	choose_tiles(g, &r, &mt);
	if (r == 0)
		return 0;
	if (g->C > INT32_MAX || g->SH > 64 || g->SW > 64 || g->M > INT32_MAX ||
		g->H > INT32_MAX || g->W > INT32_MAX)
		return 0;
	alpha = mt + r - 1;
	TY = (g->OH + mt - 1) / mt;
	TX = (g->OW + mt - 1) / mt;
	K = g->C * g->SH * g->SW;
	nmb = (g->M + WG_NM - 1) / WG_NM;
	if (mode != NN_WINO_FORCE)
	{
		double		wino = (double) TY * TX * alpha * alpha * K * g->M,
					direct = (double) g->OH * g->OW * g->C * g->KH * g->KW * g->M;

		/*
		 * Below 16 images lanes stay empty.  With few phase channels the
		 * transforms and transposes cost as much as the products they
		 * save, unless the step's output or input stays in chunk layout.
		 * On the reference encoder, a first layer with K = 4 made the
		 * whole batch-64 run 5% slower alone and 8% faster in a chain.
		 */
		if (g->N < WG_LANES || K < (mode == NN_WINO_CHAIN ? 4 : 16) ||
			4 * wino > 3 * direct)
			return 0;
	}
	if (!wdc_size_mul((size_t) g->C * g->H, (size_t) g->W * WG_LANES, &x16) ||
		!wdc_size_mul((size_t) (alpha * alpha), (size_t) K * WG_ROW + 16, &v) ||
		!wdc_size_mul((size_t) (alpha * alpha), (size_t) g->M * WG_ROW + 16, &m) ||
		!wdc_size_mul((size_t) g->M * g->OH, (size_t) g->OW * WG_LANES, &y16) ||
		!wdc_size_mul((size_t) (alpha * alpha) * nmb * WG_NM, (size_t) K, &u))
		return 0;
	total = floats64(x16) + floats64(v) + floats64(m) + floats64(y16);
	if (total > WG_MAX_SCRATCH / sizeof(float) ||
		u > WG_MAX_SCRATCH / sizeof(float))
		return 0;
	*scratch = total * sizeof(float) + 64;
	return sizeof(NnConvWino) + 64 + (u + (size_t) g->M) * sizeof(float);
#endif
}

/*
 * Set up the plan in mem, which has nn_conv_wino_bytes(g, ...) bytes, and
 * pack weights w [M][C][KH][KW] and bias b (or NULL).
 */
NnConvWino *
nn_conv_wino_init(void *mem, const NnConvGeom *g, const float *w,
				  const float *b)
{
	NnConvWino *wg = mem;
	size_t		x16,
				v,
				m;

	memset(wg, 0, sizeof(*wg));
	wg->g = *g;
	choose_tiles(g, &wg->r, &wg->mt);
	wg->alpha = wg->mt + wg->r - 1;
	wg->K = g->C * g->SH * g->SW;
	wg->nmb = (g->M + WG_NM - 1) / WG_NM;
	wg->TY = (g->OH + wg->mt - 1) / wg->mt;
	wg->TX = (g->OW + wg->mt - 1) / wg->mt;
	x16 = floats64((size_t) (g->C * g->H * g->W * WG_LANES));
	wg->vstride = wg->K * WG_ROW + 16;
	wg->mstride = g->M * WG_ROW + 16;
	v = floats64((size_t) (wg->alpha * wg->alpha * wg->vstride));
	m = floats64((size_t) (wg->alpha * wg->alpha * wg->mstride));
	wg->off_v = x16;
	wg->off_m = x16 + v;
	wg->off_y = x16 + v + m;
	/* 64-byte aligned weights after the struct */
	wg->u = (float *) (((uintptr_t) (wg + 1) + 63) & ~(uintptr_t) 63);
	wg->bias = wg->u + (size_t) (wg->alpha * wg->alpha) * wg->nmb * WG_NM * wg->K;
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

#define WG_TARGET __attribute__((target("avx512f")))

/*
 * Transpose 16 rows of 16 floats in place: row i lane j becomes row j
 * lane i.  Interleave 32-bit, then 64-bit elements within 128-bit lanes,
 * then move 128-bit lanes in two steps.
 */
static inline __attribute__((always_inline)) WG_TARGET void
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

/*
 * x16[f][i] = x[i * per + f] for the n (1 to 16) images of a chunk, zero
 * in lanes n .. 15.
 */
static WG_TARGET void
transpose_in(const float *x, int64_t n, int64_t per, float *x16)
{
	int64_t		f0 = 0;

	for (; f0 + 16 <= per; f0 += 16)
	{
		__m512		row[16];

		for (int i = 0; i < 16; i++)
			row[i] = i < n ? _mm512_loadu_ps(x + i * per + f0) : _mm512_setzero_ps();
		transpose16(row);
		for (int j = 0; j < 16; j++)
			_mm512_storeu_ps(x16 + (f0 + j) * 16, row[j]);
	}
	for (; f0 < per; f0++)
		for (int i = 0; i < 16; i++)
			x16[f0 * 16 + i] = i < n ? x[i * per + f0] : 0.0f;
}

/* y[i * per + f] = y16[f][i] for the n images of a chunk. */
static WG_TARGET void
transpose_out(const float *y16, int64_t n, int64_t per, float *y)
{
	int64_t		f0 = 0;

	for (; f0 + 16 <= per; f0 += 16)
	{
		__m512		row[16];

		for (int j = 0; j < 16; j++)
			row[j] = _mm512_loadu_ps(y16 + (f0 + j) * 16);
		transpose16(row);
		for (int i = 0; i < n; i++)
			_mm512_storeu_ps(y + i * per + f0, row[i]);
	}
	for (; f0 < per; f0++)
		for (int i = 0; i < n; i++)
			y[i * per + f0] = y16[f0 * 16 + i];
}

/*
 * B^T applied in place to the alpha vectors d[0], d[s], d[2s], ... of
 * F(mt, r) (constants after inlining).
 */
static inline __attribute__((always_inline)) WG_TARGET void
bt(__m512 *d, int s, int r, int mt)
{
	__m512		d0 = d[0],
				d1 = d[s],
				d2 = d[2 * s];

	if (mt == 4)
	{
		/* rows 2 -1 -2 1 0 | 0 -2 -1 1 0 | 0 2 -3 1 0 | 0 -1 0 1 0 | 0 2 -1 -2 1 */
		__m512		d3 = d[3 * s],
					d4 = d[4 * s],
					two = _mm512_set1_ps(2.0f),
					d31 = _mm512_sub_ps(d3, d1);

		d[0] = _mm512_fmadd_ps(two, _mm512_sub_ps(d0, d2), d31);
		d[s] = _mm512_fnmadd_ps(two, d1, _mm512_sub_ps(d3, d2));
		d[2 * s] = _mm512_fnmadd_ps(_mm512_set1_ps(3.0f), d2,
									_mm512_fmadd_ps(two, d1, d3));
		d[3 * s] = d31;
		d[4 * s] = _mm512_fmadd_ps(two, _mm512_sub_ps(d1, d3), _mm512_sub_ps(d4, d2));
	}
	else if (r == 2)
	{
		d[0] = _mm512_sub_ps(d0, d1);
		d[2 * s] = _mm512_sub_ps(d2, d1);
	}
	else
	{
		__m512		d3 = d[3 * s];

		d[0] = _mm512_sub_ps(d0, d2);
		d[s] = _mm512_add_ps(d1, d2);
		d[2 * s] = _mm512_sub_ps(d2, d1);
		d[3 * s] = _mm512_sub_ps(d1, d3);
	}
}

/*
 * A^T of F(mt, r) applied to the alpha vectors m[0], m[s], ...: mt
 * outputs o[0], o[os], ...
 */
static inline __attribute__((always_inline)) WG_TARGET void
at(const __m512 *m, int s, int r, int mt, __m512 *o, int os)
{
	if (mt == 4)
	{
		/* rows 1 1 1 1 0 | 0 1 -1 2 0 | 0 1 1 4 0 | 0 1 -1 8 1 */
		__m512		sum = _mm512_add_ps(m[s], m[2 * s]),
					dif = _mm512_sub_ps(m[s], m[2 * s]),
					m3 = m[3 * s];

		o[0] = _mm512_add_ps(_mm512_add_ps(m[0], sum), m3);
		o[os] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), m3, dif);
		o[2 * os] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), m3, sum);
		o[3 * os] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), m3, dif),
								  m[4 * s]);
	}
	else if (r == 2)
	{
		o[0] = _mm512_add_ps(m[0], m[s]);
		o[os] = _mm512_add_ps(m[s], m[2 * s]);
	}
	else
	{
		o[0] = _mm512_add_ps(_mm512_add_ps(m[0], m[s]), m[2 * s]);
		o[os] = _mm512_sub_ps(_mm512_sub_ps(m[s], m[2 * s]), m[3 * s]);
	}
}

/*
 * Compute V for tiles t0 .. t0 + nt - 1 of the chunk in x16:
 * v[xi * vstride + k * WG_ROW + s * 16 + lane] for tile t0 + s.  r is a
 * constant after inlining, so the tile's alpha^2 vectors stay in
 * registers.
 */
static inline __attribute__((always_inline)) WG_TARGET void
input_transform_r(const NnConvWino *wg, const int r, const int mt,
				  const float *x16, int64_t t0, int nt, float *v)
{
	const NnConvGeom *g = &wg->g;
	const int	alpha = mt + r - 1;
	int64_t		xi_stride = wg->vstride;
	int64_t		SH = g->SH,
				SW = g->SW,
				H = g->H,
				W = g->W;

	for (int s = 0; s < nt; s++)
	{
		int64_t		ty = (t0 + s) / wg->TX,
					tx = (t0 + s) % wg->TX;
		/* input row and column of tap (0, 0) in phase (0, 0) */
		int64_t		h0 = mt * ty * SH - g->PT,
					w0 = mt * tx * SW - g->PL;
		/* every tap of every phase inside the image */
		int			inside = h0 >= 0 && w0 >= 0 &&
			h0 + alpha * SH - 1 < H && w0 + alpha * SW - 1 < W;
		float	   *dst = v + s * 16;

		for (int64_t c = 0; c < g->C; c++)
			for (int64_t rh = 0; rh < SH; rh++)
				for (int64_t rw = 0; rw < SW; rw++)
				{
					int64_t		k = (c * SH + rh) * SW + rw;
					/* offset of tap (0, 0), outside x16 when h0 or w0 < 0 */
					int64_t		base = ((c * H + h0 + rh) * W + w0 + rw) * 16;
					__m512		d[WG_MAX_ALPHA * WG_MAX_ALPHA];

					if (inside)
					{
#pragma GCC unroll 4
						for (int i = 0; i < alpha; i++)
#pragma GCC unroll 4
							for (int j = 0; j < alpha; j++)
								d[i * alpha + j] =
									_mm512_loadu_ps(x16 + base + (i * SH * W + j * SW) * 16);
					}
					else
					{
#pragma GCC unroll 4
						for (int i = 0; i < alpha; i++)
#pragma GCC unroll 4
							for (int j = 0; j < alpha; j++)
							{
								int64_t		h = h0 + rh + i * SH,
											w = w0 + rw + j * SW;

								d[i * alpha + j] = h >= 0 && h < H && w >= 0 && w < W ?
									_mm512_loadu_ps(x16 + base + (i * SH * W + j * SW) * 16) :
									_mm512_setzero_ps();
							}
					}
#pragma GCC unroll 5
					for (int j = 0; j < alpha; j++)
						bt(d + j, alpha, r, mt);
#pragma GCC unroll 5
					for (int i = 0; i < alpha; i++)
						bt(d + i * alpha, 1, r, mt);
#pragma GCC unroll 25
					for (int xi = 0; xi < alpha * alpha; xi++)
						_mm512_storeu_ps(dst + xi * xi_stride + k * WG_ROW, d[xi]);
				}
	}
}

static WG_TARGET void
input_transform(const NnConvWino *wg, const float *x16, int64_t t0, int nt,
				float *v)
{
	if (wg->r == 3)
		input_transform_r(wg, 3, 2, x16, t0, nt, v);
	else if (wg->mt == 4)
		input_transform_r(wg, 2, 4, x16, t0, nt, v);
	else
		input_transform_r(wg, 2, 2, x16, t0, nt, v);
}

/*
 * One product tile: np vectors of tiles by bw output channels over the K
 * phase channels.  v points at row 0 of V[xi], u at the block's packed
 * weights [K][WG_NM], out at row 0 of M[xi] for the block's first channel.
 * np and bw are constants after inlining.
 */
static inline __attribute__((always_inline)) WG_TARGET void
product_tile(int np, int bw, const float *v, const float *u, int64_t K,
			 float *out)
{
	__m512		acc[WG_TILES][WG_NM];

	/* fully unrolled, so the accumulators stay in registers */
#pragma GCC unroll 4
	for (int j = 0; j < np; j++)
#pragma GCC unroll 6
		for (int m = 0; m < bw; m++)
			acc[j][m] = _mm512_setzero_ps();
	for (int64_t k = 0; k < K; k++)
	{
		__m512		x[WG_TILES];
		const float *uk = u + k * WG_NM;

#pragma GCC unroll 4
		for (int j = 0; j < np; j++)
			x[j] = _mm512_loadu_ps(v + k * WG_ROW + j * 16);
#pragma GCC unroll 6
		for (int m = 0; m < bw; m++)
		{
			__m512		wv = _mm512_set1_ps(uk[m]);

#pragma GCC unroll 4
			for (int j = 0; j < np; j++)
				acc[j][m] = _mm512_fmadd_ps(x[j], wv, acc[j][m]);
		}
	}
#pragma GCC unroll 4
	for (int j = 0; j < np; j++)
#pragma GCC unroll 6
		for (int m = 0; m < bw; m++)
			_mm512_storeu_ps(out + m * WG_ROW + j * 16, acc[j][m]);
}

#define WG_PT(np, bw) product_tile(np, bw, v, u, K, out)
#define WG_BW_CASES(np) \
	switch (bw) \
	{ \
		case 1: WG_PT(np, 1); break; \
		case 2: WG_PT(np, 2); break; \
		case 3: WG_PT(np, 3); break; \
		case 4: WG_PT(np, 4); break; \
		case 5: WG_PT(np, 5); break; \
		default: WG_PT(np, 6); break; \
	}

/* Dispatch product_tile with np (1 to WG_TILES) and bw (1 to WG_NM) constant. */
static WG_TARGET void
product_block(int np, int bw, const float *v, const float *u, int64_t K,
			  float *out)
{
	switch (np)
	{
		case 1:
			WG_BW_CASES(1);
			break;
		case 2:
			WG_BW_CASES(2);
			break;
		case 3:
			WG_BW_CASES(3);
			break;
		default:
			WG_BW_CASES(4);
			break;
	}
}

/*
 * Output tiles t0 .. t0 + nt - 1 from M: inverse transform, bias and the
 * fused activation, into y16 [M][OH][OW][16].  r is a constant after
 * inlining.
 */
static inline __attribute__((always_inline)) WG_TARGET void
output_transform_r(const NnConvWino *wg, const int r, const int mt,
				   const float *mbuf, int64_t t0, int nt, int act,
				   float alpha_act, float *y16)
{
	const NnConvGeom *g = &wg->g;
	const int	alpha = mt + r - 1;
	int64_t		xi_stride = wg->mstride;
	__m512		slope = _mm512_set1_ps(alpha_act);

	for (int s = 0; s < nt; s++)
	{
		int64_t		ty = (t0 + s) / wg->TX,
					tx = (t0 + s) % wg->TX;
		int			rows = (int) (g->OH - mt * ty < mt ? g->OH - mt * ty : mt),
					cols = (int) (g->OW - mt * tx < mt ? g->OW - mt * tx : mt);

		for (int64_t mo = 0; mo < g->M; mo++)
		{
			const float *src = mbuf + mo * WG_ROW + s * 16;
			float	   *dst = y16 + ((mo * g->OH + mt * ty) * g->OW + mt * tx) * 16;
			__m512		bias = _mm512_set1_ps(wg->bias[mo]);
			__m512		mv[WG_MAX_ALPHA * WG_MAX_ALPHA],
						t[4 * WG_MAX_ALPHA],
						o[16];

#pragma GCC unroll 25
			for (int xi = 0; xi < alpha * alpha; xi++)
				mv[xi] = _mm512_loadu_ps(src + xi * xi_stride);
			/* t[a * alpha + q] = sum over p of A^T[a][p] mv[p][q] */
#pragma GCC unroll 5
			for (int q = 0; q < alpha; q++)
				at(mv + q, alpha, r, mt, t + q, alpha);
			/* o[a * mt + b] = sum over q of t[a][q] A[q][b] */
#pragma GCC unroll 4
			for (int a = 0; a < mt; a++)
				at(t + a * alpha, 1, r, mt, o + a * mt, 1);
#pragma GCC unroll 4
			for (int a = 0; a < mt; a++)
			{
				if (a >= rows)
					break;
#pragma GCC unroll 4
				for (int b = 0; b < mt; b++)
				{
					__m512		val = _mm512_add_ps(o[a * mt + b], bias);

					if (b >= cols)
						break;
					if (act)
						val = _mm512_mask_mul_ps(val,
												 _mm512_cmp_ps_mask(val, _mm512_setzero_ps(),
																	_CMP_LT_OQ),
												 val, slope);
					_mm512_storeu_ps(dst + (a * g->OW + b) * 16, val);
				}
			}
		}
	}
}

static WG_TARGET void
output_transform(const NnConvWino *wg, const float *mbuf, int64_t t0, int nt,
				 int act, float alpha_act, float *y16)
{
	if (wg->r == 3)
		output_transform_r(wg, 3, 2, mbuf, t0, nt, act, alpha_act, y16);
	else if (wg->mt == 4)
		output_transform_r(wg, 2, 4, mbuf, t0, nt, act, alpha_act, y16);
	else
		output_transform_r(wg, 2, 2, mbuf, t0, nt, act, alpha_act, y16);
}

static WG_TARGET void
run_avx512(const NnConvWino *wg, const float *x, float *y, int64_t nimg,
		   int act, float alpha_act, float *scratch)
{
	const NnConvGeom *g = &wg->g;
	int64_t		in_image = g->C * g->H * g->W,
				out_image = g->M * g->OH * g->OW,
				ntiles = wg->TY * wg->TX,
				K = wg->K;
	int			nxi = wg->alpha * wg->alpha;
	float	   *base = (float *) (((uintptr_t) scratch + 63) & ~(uintptr_t) 63),
			   *vbuf = base + wg->off_v,
			   *mbuf = base + wg->off_m;

	for (int64_t im0 = 0; im0 < nimg; im0 += WG_LANES)
	{
		int64_t		n = nimg - im0 < WG_LANES ? nimg - im0 : WG_LANES;
		const float *x16 = base;
		float	   *y16 = base + wg->off_y;

		/* chunked values come only in whole chunks (plan_wino_chains) */
		if (wg->in_chunked)
			x16 = x + im0 * in_image;
		else
			transpose_in(x + im0 * in_image, n, in_image, base);
		if (wg->out_chunked)
			y16 = y + im0 * out_image;
		for (int64_t t0 = 0; t0 < ntiles; t0 += WG_TILES)
		{
			int			nt = (int) (ntiles - t0 < WG_TILES ? ntiles - t0 : WG_TILES);

			input_transform(wg, x16, t0, nt, vbuf);
			for (int xi = 0; xi < nxi; xi++)
				for (int64_t mb = 0; mb < wg->nmb; mb++)
				{
					int			bw = (int) (g->M - mb * WG_NM < WG_NM ?
											g->M - mb * WG_NM : WG_NM);
					const float *v = vbuf + xi * wg->vstride;
					const float *u = wg->u + (xi * wg->nmb + mb) * K * WG_NM;
					float	   *out = mbuf + xi * wg->mstride + mb * WG_NM * WG_ROW;

					product_block(nt, bw, v, u, K, out);
				}
			output_transform(wg, mbuf, t0, nt, act, alpha_act, y16);
		}
		if (!wg->out_chunked)
			transpose_out(y16, n, out_image, y + im0 * out_image);
	}
}

#undef WG_TARGET

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
	run_avx512(wg, x, y, nimg, act, alpha, scratch);
#endif
}
