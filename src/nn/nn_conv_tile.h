/*
 * nn_conv_tile.h
 *	  Tile loop of the direct convolution, included once per instruction
 *	  set by nn_conv_direct.c.
 *
 * The includer defines the vector type and operations (dc_vec, dc_zero,
 * dc_load, dc_set1, dc_fmadd, dc_add, dc_act, dc_store) and the vector
 * width DC_V.  It also defines two tile shapes, DC_NP pixel vectors by
 * DC_NM output channels and 1 by DC_NM_WIDE.  DC_NAME(x) appends the
 * instruction set's suffix to x, and DC_TARGET is the target attribute of
 * every function here.  The end of this file undefines all of them except
 * DC_NAME and DC_TARGET, which the includer's own functions use.
 */

/*
 * Compute one tile: np pixel vectors by bw output channels (both
 * constants after inlining, np <= DC_NP and bw <= DC_NM_WIDE) over the kt
 * (channel, tap) pairs of one group.  src[j] points at pixel vector j's
 * first element in the group's first tap plane, and off[t] is the offset
 * of pair t from there.  w holds the block's packed weights, [kt][bw].
 * Writes channels 0 .. nm - 1 of vector j to dst[j] + m * ohw, nvalid[j]
 * pixels each, with bias and the fused activation.
 */
static inline __attribute__((always_inline)) DC_TARGET void
DC_NAME(tile) (int np, int bw, const float *const *src, float *const *dst,
			   const int *nvalid, const int32_t *off, int64_t kt,
			   const float *w, const float *bias, int nm, int64_t ohw,
			   int act, float alpha)
{
	dc_vec		acc[DC_NP][DC_NM_WIDE];
	dc_vec		x[DC_NP];

#pragma GCC unroll 4
	for (int j = 0; j < np; j++)
#pragma GCC unroll 16
		for (int m = 0; m < bw; m++)
			acc[j][m] = dc_zero();

	for (int64_t t = 0; t < kt; t++)
	{
		const float *wt = w + t * bw;
		int32_t		o = off[t];

#pragma GCC unroll 4
		for (int j = 0; j < np; j++)
			x[j] = dc_load(src[j] + o);
#pragma GCC unroll 16
		for (int m = 0; m < bw; m++)
		{
			dc_vec		wv = dc_set1(wt[m]);

#pragma GCC unroll 4
			for (int j = 0; j < np; j++)
				acc[j][m] = dc_fmadd(x[j], wv, acc[j][m]);
		}
	}

#pragma GCC unroll 4
	for (int j = 0; j < np; j++)
#pragma GCC unroll 16
		for (int m = 0; m < bw; m++)
		{
			dc_vec		v;

			if (m >= nm)
				break;
			v = dc_add(acc[j][m], dc_set1(bias[m]));
			if (act)
				v = dc_act(v, alpha);
			dc_store(dst[j] + m * ohw, v, nvalid[j]);
		}
}

/*
 * Convolve nimg images whose tap planes lie in planes (d->image_floats
 * apart) into y, the images' [M][OH][OW] outputs.  Tiles are DC_NP
 * vectors by DC_NM channels, or 1 by DC_NM_WIDE when d->nm is DC_NM_WIDE.
 */
static DC_TARGET void
DC_NAME(run) (const NnConvDirect *d, const float *planes, int64_t nimg,
			  float *y, int act, float alpha)
{
	int64_t		ohw = d->g.OH * d->g.OW;
	int64_t		mg = d->g.M / d->g.G;
	int64_t		nvec = (ohw + DC_V - 1) / DC_V;
	int64_t		total = nimg * nvec;
	int			bw = d->nm;
	int			step = bw == DC_NM ? DC_NP : 1;

	for (int64_t grp = 0; grp < d->g.G; grp++)
		for (int64_t mb = 0; mb < d->nmb; mb++)
		{
			int64_t		block = grp * d->nmb + mb;
			const float *w = d->wpack + block * d->kt * bw;
			const float *bias = d->bias + block * bw;
			int			nm = (int) (mg - mb * bw < bw ? mg - mb * bw : bw);
			int64_t		m0 = grp * mg + mb * bw;
			int64_t		im = 0,
						q0 = 0;

			for (int64_t v0 = 0; v0 < total; v0 += step)
			{
				const float *src[DC_NP];
				float	   *dst[DC_NP];
				int			nvalid[DC_NP];
				int			np = (int) (total - v0 < step ? total - v0 : step);

				/* vector v0 + j is pixels q0 .. q0 + DC_V - 1 of image im */
				for (int j = 0; j < np; j++)
				{
					src[j] = planes + im * d->image_floats + grp * d->group_floats + q0;
					dst[j] = y + (im * d->g.M + m0) * ohw + q0;
					nvalid[j] = (int) (ohw - q0 < DC_V ? ohw - q0 : DC_V);
					q0 += DC_V;
					if (q0 >= ohw)
					{
						q0 = 0;
						im++;
					}
				}
				/* np and bw are constants in each call, which is unrolled */
				if (bw != DC_NM)
					DC_NAME(tile) (1, DC_NM_WIDE, src, dst, nvalid, d->off, d->kt, w,
								   bias, nm, ohw, act, alpha);
				else if (np == DC_NP)
					DC_NAME(tile) (DC_NP, DC_NM, src, dst, nvalid, d->off, d->kt, w,
								   bias, nm, ohw, act, alpha);
				else if (DC_NP > 3 && np == 3)
					DC_NAME(tile) (3, DC_NM, src, dst, nvalid, d->off, d->kt, w, bias,
								   nm, ohw, act, alpha);
				else if (DC_NP > 2 && np == 2)
					DC_NAME(tile) (2, DC_NM, src, dst, nvalid, d->off, d->kt, w, bias,
								   nm, ohw, act, alpha);
				else
					DC_NAME(tile) (1, DC_NM, src, dst, nvalid, d->off, d->kt, w, bias,
								   nm, ohw, act, alpha);
			}
		}
}

#undef DC_SUFFIX
#undef DC_V
#undef DC_NM
#undef DC_NP
#undef DC_NM_WIDE
#undef dc_vec
#undef dc_zero
#undef dc_load
#undef dc_set1
#undef dc_fmadd
#undef dc_add
#undef dc_act
#undef dc_store
