/*
 * nn_conv_wino_kern.h
 *	  Transposes, transforms and product tiles of the Winograd convolution,
 *	  included once per instruction set by nn_conv_wino.c.
 *
 * The includer defines the vector type and operations: wk_vec, wk_load,
 * wk_store, wk_zero, wk_set1, wk_add, wk_sub, wk_fmadd, wk_fnmadd,
 * wk_leaky and wk_transpose.  It also defines WK_V, the lanes per vector
 * (images per chunk), WK_NP, the pixel vectors per product tile, and
 * WK_LOAD_UNROLL, how far the loads of a tile's inputs unroll.  The
 * WK_NP x WG_NM accumulators and WK_NP inputs must fit in the register
 * file.  WK_TARGET is the target attribute and WK_NAME(x) appends the
 * instruction set's suffix.  The end of this file undefines the per-set
 * macros except WK_NAME and WK_TARGET.
 */

/* floats per row of V and M: WG_TILES tiles of WK_V images */
#define WK_ROW (WK_V * WG_TILES)

/* #pragma GCC unroll with a macro argument (the pragma does not expand it) */
#define WK_STR(x) #x
#define WK_UNROLL(n) _Pragma(WK_STR(GCC unroll n))

/*
 * Transpose a chunk into chunk layout: xc[f][i] = x[i * per + f] for the
 * n (1 to WK_V) images of the chunk, zero in lanes n .. WK_V - 1.
 */
static WK_TARGET void
WK_NAME(transpose_in)(const float *x, int64_t n, int64_t per, float *xc)
{
	int64_t		f0 = 0;

	for (; f0 + WK_V <= per; f0 += WK_V)
	{
		wk_vec		row[WK_V];

		for (int i = 0; i < WK_V; i++)
			row[i] = i < n ? wk_load(x + i * per + f0) : wk_zero();
		wk_transpose(row);
		for (int j = 0; j < WK_V; j++)
			wk_store(xc + (f0 + j) * WK_V, row[j]);
	}
	for (; f0 < per; f0++)
		for (int i = 0; i < WK_V; i++)
			xc[f0 * WK_V + i] = i < n ? x[i * per + f0] : 0.0f;
}

/* Transpose a chunk back: y[i * per + f] = yc[f][i] for its n images. */
static WK_TARGET void
WK_NAME(transpose_out)(const float *yc, int64_t n, int64_t per, float *y)
{
	int64_t		f0 = 0;

	for (; f0 + WK_V <= per; f0 += WK_V)
	{
		wk_vec		row[WK_V];

		for (int j = 0; j < WK_V; j++)
			row[j] = wk_load(yc + (f0 + j) * WK_V);
		wk_transpose(row);
		for (int i = 0; i < n; i++)
			wk_store(y + i * per + f0, row[i]);
	}
	for (; f0 < per; f0++)
		for (int i = 0; i < n; i++)
			y[i * per + f0] = yc[f0 * WK_V + i];
}

/*
 * Apply B^T of F(mt, r) in place to the alpha vectors d[0], d[s], d[2s],
 * ...  (mt and r are constants after inlining).
 */
static inline __attribute__((always_inline)) WK_TARGET void
WK_NAME(bt)(wk_vec *d, int s, int r, int mt)
{
	wk_vec		d0 = d[0],
				d1 = d[s],
				d2 = d[2 * s];

	if (mt == 4)
	{
		/* rows 2 -1 -2 1 0 | 0 -2 -1 1 0 | 0 2 -3 1 0 | 0 -1 0 1 0 | 0 2 -1 -2 1 */
		wk_vec		d3 = d[3 * s],
					d4 = d[4 * s],
					two = wk_set1(2.0f),
					d31 = wk_sub(d3, d1);

		d[0] = wk_fmadd(two, wk_sub(d0, d2), d31);
		d[s] = wk_fnmadd(two, d1, wk_sub(d3, d2));
		d[2 * s] = wk_fnmadd(wk_set1(3.0f), d2,
									wk_fmadd(two, d1, d3));
		d[3 * s] = d31;
		d[4 * s] = wk_fmadd(two, wk_sub(d1, d3), wk_sub(d4, d2));
	}
	else if (r == 2)
	{
		d[0] = wk_sub(d0, d1);
		d[2 * s] = wk_sub(d2, d1);
	}
	else
	{
		wk_vec		d3 = d[3 * s];

		d[0] = wk_sub(d0, d2);
		d[s] = wk_add(d1, d2);
		d[2 * s] = wk_sub(d2, d1);
		d[3 * s] = wk_sub(d1, d3);
	}
}

/*
 * Apply A^T of F(mt, r) to the alpha vectors m[0], m[s], ..., writing the
 * mt outputs to o[0], o[os], ...
 */
static inline __attribute__((always_inline)) WK_TARGET void
WK_NAME(at)(const wk_vec *m, int s, int r, int mt, wk_vec *o, int os)
{
	if (mt == 4)
	{
		/* rows 1 1 1 1 0 | 0 1 -1 2 0 | 0 1 1 4 0 | 0 1 -1 8 1 */
		wk_vec		sum = wk_add(m[s], m[2 * s]),
					dif = wk_sub(m[s], m[2 * s]),
					m3 = m[3 * s];

		o[0] = wk_add(wk_add(m[0], sum), m3);
		o[os] = wk_fmadd(wk_set1(2.0f), m3, dif);
		o[2 * os] = wk_fmadd(wk_set1(4.0f), m3, sum);
		o[3 * os] = wk_add(wk_fmadd(wk_set1(8.0f), m3, dif),
								  m[4 * s]);
	}
	else if (r == 2)
	{
		o[0] = wk_add(m[0], m[s]);
		o[os] = wk_add(m[s], m[2 * s]);
	}
	else
	{
		o[0] = wk_add(wk_add(m[0], m[s]), m[2 * s]);
		o[os] = wk_sub(wk_sub(m[s], m[2 * s]), m[3 * s]);
	}
}

/*
 * Compute V for tiles t0 .. t0 + nt - 1 of the chunk in xc:
 * v[xi * vstride + k * WK_ROW + s * WK_V + lane] for tile t0 + s.  r is a
 * constant after inlining, so the tile's alpha^2 vectors stay in
 * registers.
 */
static inline __attribute__((always_inline)) WK_TARGET void
WK_NAME(input_transform_r)(const NnConvWino *wg, const int r, const int mt,
				  const float *xc, int64_t t0, int nt, float *v)
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
		float	   *dst = v + s * WK_V;

		for (int64_t c = 0; c < g->C; c++)
			for (int64_t rh = 0; rh < SH; rh++)
				for (int64_t rw = 0; rw < SW; rw++)
				{
					int64_t		k = (c * SH + rh) * SW + rw;
					/* offset of tap (0, 0), outside xc when h0 or w0 < 0 */
					int64_t		base = ((c * H + h0 + rh) * W + w0 + rw) * WK_V;
					wk_vec		d[WG_MAX_ALPHA * WG_MAX_ALPHA];

					if (inside)
					{
WK_UNROLL(WK_LOAD_UNROLL)
						for (int i = 0; i < alpha; i++)
WK_UNROLL(WK_LOAD_UNROLL)
							for (int j = 0; j < alpha; j++)
								d[i * alpha + j] =
									wk_load(xc + base + (i * SH * W + j * SW) * WK_V);
					}
					else
					{
WK_UNROLL(WK_LOAD_UNROLL)
						for (int i = 0; i < alpha; i++)
WK_UNROLL(WK_LOAD_UNROLL)
							for (int j = 0; j < alpha; j++)
							{
								int64_t		h = h0 + rh + i * SH,
											w = w0 + rw + j * SW;

								d[i * alpha + j] = h >= 0 && h < H && w >= 0 && w < W ?
									wk_load(xc + base + (i * SH * W + j * SW) * WK_V) :
									wk_zero();
							}
					}
#pragma GCC unroll 5
					for (int j = 0; j < alpha; j++)
						WK_NAME(bt)(d + j, alpha, r, mt);
#pragma GCC unroll 5
					for (int i = 0; i < alpha; i++)
						WK_NAME(bt)(d + i * alpha, 1, r, mt);
#pragma GCC unroll 25
					for (int xi = 0; xi < alpha * alpha; xi++)
						wk_store(dst + xi * xi_stride + k * WK_ROW, d[xi]);
				}
	}
}

static WK_TARGET void
WK_NAME(input_transform)(const NnConvWino *wg, const float *xc, int64_t t0, int nt,
				float *v)
{
	if (wg->r == 3)
		WK_NAME(input_transform_r)(wg, 3, 2, xc, t0, nt, v);
	else if (wg->mt == 4)
		WK_NAME(input_transform_r)(wg, 2, 4, xc, t0, nt, v);
	else
		WK_NAME(input_transform_r)(wg, 2, 2, xc, t0, nt, v);
}

/*
 * Compute one product tile: np vectors of tiles by bw output channels over
 * the K phase channels.  v points at row 0 of V[xi], u at the block's
 * packed weights [K][WG_NM], out at row 0 of M[xi] for the block's first
 * channel.  np and bw are constants after inlining.
 */
static inline __attribute__((always_inline)) WK_TARGET void
WK_NAME(product_tile)(int np, int bw, const float *v, const float *u, int64_t K,
			 float *out)
{
	wk_vec		acc[WG_TILES][WG_NM];

	/* fully unrolled, so the accumulators stay in registers */
#pragma GCC unroll 4
	for (int j = 0; j < np; j++)
#pragma GCC unroll 6
		for (int m = 0; m < bw; m++)
			acc[j][m] = wk_zero();
	for (int64_t k = 0; k < K; k++)
	{
		wk_vec		x[WG_TILES];
		const float *uk = u + k * WG_NM;

#pragma GCC unroll 4
		for (int j = 0; j < np; j++)
			x[j] = wk_load(v + k * WK_ROW + j * WK_V);
#pragma GCC unroll 6
		for (int m = 0; m < bw; m++)
		{
			wk_vec		wv = wk_set1(uk[m]);

#pragma GCC unroll 4
			for (int j = 0; j < np; j++)
				acc[j][m] = wk_fmadd(x[j], wv, acc[j][m]);
		}
	}
#pragma GCC unroll 4
	for (int j = 0; j < np; j++)
#pragma GCC unroll 6
		for (int m = 0; m < bw; m++)
			wk_store(out + m * WK_ROW + j * WK_V, acc[j][m]);
}

#define WG_PT(np, bw) WK_NAME(product_tile)(np, bw, v, u, K, out)
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

/*
 * Run the product tiles of nt pixel vectors (1 to WG_TILES) by bw output
 * channels (1 to WG_NM), WK_NP vectors per tile, each call with np and bw
 * constant.
 */
static WK_TARGET void
WK_NAME(product_block)(int nt, int bw, const float *v0, const float *u,
					   int64_t K, float *out0)
{
	for (int j0 = 0; j0 < nt; j0 += WK_NP)
	{
		const float *v = v0 + j0 * WK_V;
		float	   *out = out0 + j0 * WK_V;

		switch (nt - j0 < WK_NP ? nt - j0 : WK_NP)
		{
			case 1:
				WG_BW_CASES(1);
				break;
			case 2:
				WG_BW_CASES(2);
				break;
#if WK_NP > 2
			case 3:
				WG_BW_CASES(3);
				break;
			default:
				WG_BW_CASES(4);
				break;
#endif
		}
	}
}

/*
 * Write output tiles t0 .. t0 + nt - 1 from M into yc [M][OH][OW][WK_V]:
 * inverse transform, bias and the fused activation.  r and mt are
 * constants after inlining.
 */
static inline __attribute__((always_inline)) WK_TARGET void
WK_NAME(output_transform_r)(const NnConvWino *wg, const int r, const int mt,
				   const float *mbuf, int64_t t0, int nt, int act,
				   float alpha_act, float *yc)
{
	const NnConvGeom *g = &wg->g;
	const int	alpha = mt + r - 1;
	int64_t		xi_stride = wg->mstride;
	wk_vec		slope = wk_set1(alpha_act);

	for (int s = 0; s < nt; s++)
	{
		int64_t		ty = (t0 + s) / wg->TX,
					tx = (t0 + s) % wg->TX;
		int			rows = (int) (g->OH - mt * ty < mt ? g->OH - mt * ty : mt),
					cols = (int) (g->OW - mt * tx < mt ? g->OW - mt * tx : mt);

		for (int64_t mo = 0; mo < g->M; mo++)
		{
			const float *src = mbuf + mo * WK_ROW + s * WK_V;
			float	   *dst = yc + ((mo * g->OH + mt * ty) * g->OW + mt * tx) * WK_V;
			wk_vec		bias = wk_set1(wg->bias[mo]);
			wk_vec		mv[WG_MAX_ALPHA * WG_MAX_ALPHA],
						t[4 * WG_MAX_ALPHA],
						o[16];

#pragma GCC unroll 25
			for (int xi = 0; xi < alpha * alpha; xi++)
				mv[xi] = wk_load(src + xi * xi_stride);
			/* t[a * alpha + q] = sum over p of A^T[a][p] mv[p][q] */
#pragma GCC unroll 5
			for (int q = 0; q < alpha; q++)
				WK_NAME(at)(mv + q, alpha, r, mt, t + q, alpha);
			/* o[a * mt + b] = sum over q of t[a][q] A[q][b] */
#pragma GCC unroll 4
			for (int a = 0; a < mt; a++)
				WK_NAME(at)(t + a * alpha, 1, r, mt, o + a * mt, 1);
#pragma GCC unroll 4
			for (int a = 0; a < mt; a++)
			{
				if (a >= rows)
					break;
#pragma GCC unroll 4
				for (int b = 0; b < mt; b++)
				{
					wk_vec		val = wk_add(o[a * mt + b], bias);

					if (b >= cols)
						break;
					if (act)
						val = wk_leaky(val, slope);
					wk_store(dst + (a * g->OW + b) * WK_V, val);
				}
			}
		}
	}
}

static WK_TARGET void
WK_NAME(output_transform)(const NnConvWino *wg, const float *mbuf, int64_t t0, int nt,
				 int act, float alpha_act, float *yc)
{
	if (wg->r == 3)
		WK_NAME(output_transform_r)(wg, 3, 2, mbuf, t0, nt, act, alpha_act, yc);
	else if (wg->mt == 4)
		WK_NAME(output_transform_r)(wg, 2, 4, mbuf, t0, nt, act, alpha_act, yc);
	else
		WK_NAME(output_transform_r)(wg, 2, 2, mbuf, t0, nt, act, alpha_act, yc);
}

static WK_TARGET void
WK_NAME(run)(const NnConvWino *wg, const float *x, float *y, int64_t nimg,
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

	for (int64_t im0 = 0; im0 < nimg; im0 += WK_V)
	{
		int64_t		n = nimg - im0 < WK_V ? nimg - im0 : WK_V;
		const float *xc = base;
		float	   *yc = base + wg->off_y;

		/* chunked values come only in whole chunks (plan_wino_chains) */
		if (wg->in_chunked)
			xc = x + im0 * in_image;
		else
			WK_NAME(transpose_in)(x + im0 * in_image, n, in_image, base);
		if (wg->out_chunked)
			yc = y + im0 * out_image;
		for (int64_t t0 = 0; t0 < ntiles; t0 += WG_TILES)
		{
			int			nt = (int) (ntiles - t0 < WG_TILES ? ntiles - t0 : WG_TILES);

			WK_NAME(input_transform)(wg, xc, t0, nt, vbuf);
			for (int xi = 0; xi < nxi; xi++)
				for (int64_t mb = 0; mb < wg->nmb; mb++)
				{
					int			bw = (int) (g->M - mb * WG_NM < WG_NM ?
											g->M - mb * WG_NM : WG_NM);
					const float *v = vbuf + xi * wg->vstride;
					const float *u = wg->u + (xi * wg->nmb + mb) * K * WG_NM;
					float	   *out = mbuf + xi * wg->mstride + mb * WG_NM * WK_ROW;

					WK_NAME(product_block)(nt, bw, v, u, K, out);
				}
			WK_NAME(output_transform)(wg, mbuf, t0, nt, act, alpha_act, yc);
		}
		if (!wg->out_chunked)
			WK_NAME(transpose_out)(yc, n, out_image, y + im0 * out_image);
	}
}


#undef WK_ROW
#undef WK_STR
#undef WK_UNROLL
#undef WG_PT
#undef WG_BW_CASES
#undef WK_V
#undef WK_NP
#undef WK_LOAD_UNROLL
#undef wk_vec
#undef wk_load
#undef wk_store
#undef wk_zero
#undef wk_set1
#undef wk_add
#undef wk_sub
#undef wk_fmadd
#undef wk_fnmadd
#undef wk_leaky
#undef wk_transpose
