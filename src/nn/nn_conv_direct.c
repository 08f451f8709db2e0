/*
 * nn_conv_direct.c
 *	  Direct 2-D convolution with AVX-512F or AVX2 and FMA, chosen at run
 *	  time, for Conv steps with constant weights.
 *
 * Lowering.  A vector register contains DC_V consecutive output pixels
 * q = oh * OW + ow of one output channel (16 with AVX-512, 8 with AVX2).
 * For every input channel and kernel tap, the input values those pixels
 * read must then be one contiguous load.  So each image's input is first
 * copied into tap planes: for channel c, row phase rh < sh and kernel
 * column kw, a plane of hq x OW floats
 *	  plane[c][rh][kw][i][ow] = x_padded[i * sh + rh][ow * sw + kw * dw],
 * zero where it falls on padding.  A plane is as wide as the output, so
 * pixel q reads tap (kh, kw) at element q + (kh * dh / sh) * OW of plane
 * (c, kh * dh % sh, kw), and no lane is spent on columns past OW.  The
 * copy holds about KW / sw times the input (1.5x for 3x3 stride 2), small
 * next to the arithmetic, which reads each copied value M times.
 *
 * A tile is DC_NP pixel vectors by DC_NM output channels of accumulators
 * (3 x 8 zmm registers with AVX-512).  Its inner loop runs over the
 * (channel, tap) pairs of one group: DC_NP vector loads at a precomputed
 * offset, DC_NM weights broadcast from weights packed at plan time as
 * [group][channel block][channel][kh][kw][DC_NM], and DC_NP * DC_NM FMAs.
 * Each accumulator is a run of output pixels of one channel, so it is
 * stored as it is, with bias and the fused activation, and with a mask for
 * the last vector of an image.  Pixel vectors of several images share the
 * tiles, which keeps small deep layers (4x4 outputs) busy.  A plan whose
 * runs have fewer pixel vectors than a tile (batch 1 with 4x4 outputs)
 * takes tiles of one vector by DC_NM_WIDE channels instead.  A 1x1
 * convolution without strides or pads reads the input in place.
 *
 * The kernel runs wherever it can: on an AMD EPYC (Zen 4) core it beat
 * im2col + OpenBLAS on every layer shape timed, from 1 to 128 input
 * channels, 3x3, 4x4 and 1x1 kernels, strides 1 and 2, groups 2 to 64,
 * and likewise with the AVX2 kernel.  NOTE: with 1 output channel per
 * group (depthwise), 7 of a tile's 8 channels are padding, and the
 * comparison there rests on a few noisy timings on that machine only.
 *
 * The im2col path in nn_ops_linear.c remains the fallback on other CPUs,
 * for weights known only at run time, and for tangents.
 */
#include "nn/nn_int.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define NN_DC_X86 1
#include <immintrin.h>
#endif

int			nn_conv_kernel = NN_CONV_AUTO;

/* Instruction sets of the kernels. */
enum
{
	DC_ISA_NONE, DC_ISA_AVX2, DC_ISA_AVX512
};

/*
 * Tile shapes per instruction set, DC_NP pixel vectors by DC_NM channels
 * or 1 by DC_NM_WIDE: the accumulators, one register per pixel vector and
 * one broadcast weight fit in the register file.
 */
#define DC_NM_AVX512 8
#define DC_NP_AVX512 3
#define DC_NM_WIDE_AVX512 16
#define DC_NM_AVX2 4
#define DC_NP_AVX2 3
#define DC_NM_WIDE_AVX2 8

/* Largest kernel width that build_planes_avx512 handles. */
#define DC_MAX_KW_AVX512 16

/* Largest tap-plane copy of one chunk of images, in bytes. */
#define DC_PLANES_BYTES ((size_t) 256 << 10)

struct NnConvDirect
{
	NnConvGeom	g;
	int			isa;
	int			nm;				/* output channels per tile (block width) */
	int			vlen;			/* pixels per vector */
	int64_t		nmb;			/* channel blocks per group */
	int64_t		kt;				/* (channel, tap) pairs per group */
	int64_t		hq;				/* rows per tap plane */
	int64_t		group_floats;	/* tap planes of one group of channels */
	int64_t		image_floats;	/* tap planes of one image */
	int64_t		chunk;			/* images per tap-plane copy */
	int			identity;		/* the input is its own tap planes */
	uint32_t	phases;			/* bit rh set: row phase rh is read */
	int			plane_lanes;	/* 16 or 8: pixels per copy in
								 * build_planes_avx512, 0: it does not apply */
	float	   *wpack;			/* [G][nmb][kt][nm], zero past M / G */
	float	   *bias;			/* [G][nmb][nm] */
	int32_t    *off;			/* [kt]: offset of each pair's plane row 0 */
	NnConvWino *wino;			/* the Winograd kernel runs instead, or NULL */
	size_t		bytes;			/* size of this allocation */
	NnConvWino *wino_alt;		/* Winograd plan that runs only when the
								 * planner chains it (nn_conv_direct_chain) */
};

static int
detect_isa(void)
{
#ifdef NN_DC_X86
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		return DC_ISA_AVX512;
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return DC_ISA_AVX2;
#endif
	return DC_ISA_NONE;
}

#ifdef NN_DC_X86

#define DC_CAT2(a, b) a##_##b
#define DC_CAT(a, b) DC_CAT2(a, b)
#define DC_NAME(x) DC_CAT(x, DC_SUFFIX)

/* --- AVX-512 ----------------------------------------------------------- */

/*
 * Every function of a section carries its instruction set's target
 * attribute.  (A target pragma would do for gcc, but PGXS also compiles
 * the file to LLVM bitcode with clang, which ignores it.)
 */
#define DC_TARGET __attribute__((target("avx512f,fma")))

#define DC_SUFFIX avx512
#define DC_V 16
#define DC_NM DC_NM_AVX512
#define DC_NP DC_NP_AVX512
#define DC_NM_WIDE DC_NM_WIDE_AVX512
typedef __m512 dc_vec512;
#define dc_vec dc_vec512
#define dc_zero() _mm512_setzero_ps()
#define dc_load(p) _mm512_loadu_ps(p)
#define dc_set1(v) _mm512_set1_ps(v)
#define dc_fmadd(a, b, c) _mm512_fmadd_ps(a, b, c)
#define dc_add(a, b) _mm512_add_ps(a, b)
#define dc_act(v, alpha) dc_act_avx512(v, alpha)
#define dc_store(p, v, n) dc_store_avx512(p, v, n)

/* v where v >= 0 (or NaN), alpha * v below zero */
static inline DC_TARGET __m512
dc_act_avx512(__m512 v, float alpha)
{
	__mmask16	neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);

	return _mm512_mask_mul_ps(v, neg, v, _mm512_set1_ps(alpha));
}

/* Store the first n (1 to 16) lanes. */
static inline DC_TARGET void
dc_store_avx512(float *p, __m512 v, int n)
{
	if (n == 16)
		_mm512_storeu_ps(p, v);
	else
		_mm512_mask_storeu_ps(p, (__mmask16) ((1u << n) - 1), v);
}

#include "nn/nn_conv_tile.h"

/* Lanes lo .. hi - 1 of a 16-lane mask (empty when hi <= lo). */
static inline DC_TARGET __mmask16
lane_range(int64_t lo, int64_t hi)
{
	uint32_t	m;

	if (lo < 0)
		lo = 0;
	if (hi > 16)
		hi = 16;
	if (hi <= lo)
		return 0;
	m = (hi - lo == 16) ? 0xFFFFu : ((1u << (hi - lo)) - 1) << lo;
	return (__mmask16) m;
}

/*
 * Fill the pixels of mask out, from ow0 on, of the tap-plane rows of
 * every kernel column kw from one input row: dst[kw * psize + ow] =
 * row[ow * sw + kw * dw - pl] where that column lies in 0 .. W - 1, else
 * 0.  The 32 columns from ow0 * sw - pl on are read once with masked
 * loads, which leave columns outside the row as zeros, and each plane's
 * lanes are picked out with one permute.  The caller checks that the
 * columns read fit in those 32.
 */
static inline DC_TARGET void
plane_rows_avx512(float *dst, int64_t psize, const float *row,
				  const __m512i *index, int64_t nkw, __mmask16 load_lo,
				  __mmask16 load_hi, __mmask16 out, int64_t s0)
{
	__m512		a = _mm512_maskz_loadu_ps(load_lo, row + s0);
	__m512		b = _mm512_maskz_loadu_ps(load_hi, row + s0 + 16);

	for (int64_t kw = 0; kw < nkw; kw++)
		_mm512_mask_storeu_ps(dst + kw * psize, out,
							  _mm512_permutex2var_ps(a, index[kw], b));
}

/*
 * Same as build_planes (below), d->plane_lanes output pixels at a time,
 * for kernels at most DC_MAX_KW_AVX512 wide whose columns for that many
 * output pixels span at most 32 input columns.
 */
static DC_TARGET void
build_planes_avx512(const NnConvDirect *d, const float *x, float *planes)
{
	const NnConvGeom *g = &d->g;
	int64_t		OW = g->OW,
				psize = d->hq * OW;
	__m512i		lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
										 12, 13, 14, 15);
	__m512i		index[DC_MAX_KW_AVX512];

	/* output lane k of column kw reads window element k * sw + kw * dw */
	for (int64_t kw = 0; kw < g->KW; kw++)
		index[kw] = _mm512_add_epi32(_mm512_mullo_epi32(lane, _mm512_set1_epi32((int) g->SW)),
									 _mm512_set1_epi32((int) (kw * g->DW)));

	for (int64_t ow0 = 0; ow0 < OW; ow0 += d->plane_lanes)
	{
		/* the 32 columns read start at s0 */
		int64_t		s0 = ow0 * g->SW - g->PL;
		__mmask16	load_lo = lane_range(-s0, g->W - s0),
					load_hi = lane_range(-s0 - 16, g->W - s0 - 16),
					out = lane_range(0, OW - ow0 < d->plane_lanes ?
									 OW - ow0 : d->plane_lanes);

		for (int64_t c = 0; c < g->C; c++)
			for (int64_t rh = 0; rh < g->SH; rh++)
			{
				float	   *dst = planes + (c * g->SH + rh) * g->KW * psize + ow0;

				if (!(d->phases & (1u << rh)))
					continue;
				for (int64_t i = 0; i < d->hq; i++, dst += OW)
				{
					int64_t		ih = i * g->SH + rh - g->PT;

					if (ih >= 0 && ih < g->H)
						plane_rows_avx512(dst, psize, x + (c * g->H + ih) * g->W,
										  index, g->KW, load_lo, load_hi, out, s0);
					else
						for (int64_t kw = 0; kw < g->KW; kw++)
							_mm512_mask_storeu_ps(dst + kw * psize, out,
												  _mm512_setzero_ps());
				}
			}
	}
}

#undef DC_TARGET

/* --- AVX2 -------------------------------------------------------------- */

#define DC_TARGET __attribute__((target("avx2,fma")))

#define DC_SUFFIX avx2
#define DC_V 8
#define DC_NM DC_NM_AVX2
#define DC_NP DC_NP_AVX2
#define DC_NM_WIDE DC_NM_WIDE_AVX2
typedef __m256 dc_vec256;
#define dc_vec dc_vec256
#define dc_zero() _mm256_setzero_ps()
#define dc_load(p) _mm256_loadu_ps(p)
#define dc_set1(v) _mm256_set1_ps(v)
#define dc_fmadd(a, b, c) _mm256_fmadd_ps(a, b, c)
#define dc_add(a, b) _mm256_add_ps(a, b)
#define dc_act(v, alpha) dc_act_avx2(v, alpha)
#define dc_store(p, v, n) dc_store_avx2(p, v, n)

static inline DC_TARGET __m256
dc_act_avx2(__m256 v, float alpha)
{
	__m256		neg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ);

	return _mm256_blendv_ps(v, _mm256_mul_ps(v, _mm256_set1_ps(alpha)), neg);
}

/* Store the first n (1 to 8) lanes. */
static inline DC_TARGET void
dc_store_avx2(float *p, __m256 v, int n)
{
	if (n == 8)
		_mm256_storeu_ps(p, v);
	else
	{
		__m256i		lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);

		_mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane), v);
	}
}

#include "nn/nn_conv_tile.h"

#undef DC_TARGET

#endif							/* NN_DC_X86 */

/* --- tap planes ------------------------------------------------------------ */

/*
 * Copy one image x[C][H][W] into its tap planes (see the file header).
 * Rows of a row phase that no tap reads are left unwritten.
 * NOTE: the AVX2 kernel always copies with this scalar loop.  With the
 * AVX-512 kernel on the 32x32 reference encoder, this loop took about a
 * third of the run time on a Zen 4 core, against 13% for
 * build_planes_avx512.
 */
static void
build_planes(const NnConvDirect *d, const float *x, float *planes)
{
	const NnConvGeom *g = &d->g;
	int64_t		OW = g->OW,
				psize = d->hq * OW;

	for (int64_t c = 0; c < g->C; c++)
		for (int64_t rh = 0; rh < g->SH; rh++)
		{
			if (!(d->phases & (1u << rh)))
				continue;
			for (int64_t kw = 0; kw < g->KW; kw++)
			{
				float	   *plane = planes + ((c * g->SH + rh) * g->KW + kw) * psize;
				/* input column of output column ow: ow * sw + cw */
				int64_t		cw = kw * g->DW - g->PL;
				int64_t		lo = cw >= 0 ? 0 : (-cw + g->SW - 1) / g->SW;
				int64_t		hi = g->W - 1 - cw < 0 ? -1 : (g->W - 1 - cw) / g->SW;

				if (hi > OW - 1)
					hi = OW - 1;
				for (int64_t i = 0; i < d->hq; i++)
				{
					int64_t		ih = i * g->SH + rh - g->PT;
					float	   *dst = plane + i * OW;
					const float *row;

					if (ih < 0 || ih >= g->H || lo > hi)
					{
						memset(dst, 0, OW * sizeof(float));
						continue;
					}
					row = x + (c * g->H + ih) * g->W;
					for (int64_t ow = 0; ow < lo; ow++)
						dst[ow] = 0.0f;
					if (g->SW == 1)
						memcpy(dst + lo, row + lo + cw, (hi - lo + 1) * sizeof(float));
					else
						for (int64_t ow = lo; ow <= hi; ow++)
							dst[ow] = row[ow * g->SW + cw];
					for (int64_t ow = hi + 1; ow < OW; ow++)
						dst[ow] = 0.0f;
				}
			}
		}
}

/* --- plan and run -------------------------------------------------------- */

void
nn_conv_direct_pack(NnConvDirect *d, const float *w, const float *b)
{
	int64_t		mg = d->g.M / d->g.G;
	int64_t		nm = d->nm;

	if (d->wino_alt)
		nn_conv_wino_pack(d->wino_alt, w, b);
	if (d->wino)
	{
		nn_conv_wino_pack(d->wino, w, b);
		return;
	}

	for (int64_t grp = 0; grp < d->g.G; grp++)
		for (int64_t mb = 0; mb < d->nmb; mb++)
		{
			int64_t		block = grp * d->nmb + mb;
			float	   *wp = d->wpack + block * d->kt * nm;

			for (int64_t j = 0; j < nm; j++)
			{
				int64_t		m = mb * nm + j;
				const float *wm = w + (grp * mg + m) * d->kt;

				d->bias[block * nm + j] = m < mg && b ? b[grp * mg + m] : 0.0f;
				for (int64_t t = 0; t < d->kt; t++)
					wp[t * nm + j] = m < mg ? wm[t] : 0.0f;
			}
		}
}

WdcStatus
nn_conv_direct_plan(NnCtx *c, const NnConvGeom *g, const float *w,
					const float *b, NnConvDirect **out, size_t *scratch)
{
	int			isa = detect_isa();
	int64_t		cg = g->C / g->G,
				mg = g->M / g->G;
	int64_t		hq,
				image_floats,
				chunk;
	int64_t		ohw = g->OH * g->OW;
	int			nm,
				vlen,
				wino_lanes;
	uint32_t	phases = 0;
	NnConvDirect *d;
	size_t		bytes,
				alt_bytes = 0,
				alt_offset = 0,
				alt_scratch = 0;
	int64_t		nmb,
				kt = cg * g->KH * g->KW;

	*out = NULL;
	*scratch = 0;
	if (nn_conv_kernel == NN_CONV_IM2COL || isa == DC_ISA_NONE || w == NULL)
		return WDC_OK;
	if (nn_conv_kernel == NN_CONV_DIRECT_AVX2 ||
		nn_conv_kernel == NN_CONV_WINOGRAD_AVX2)
		isa = DC_ISA_AVX2;
	wino_lanes = isa == DC_ISA_AVX512 ? 16 : 8;
	if (nn_conv_kernel == NN_CONV_AUTO || nn_conv_kernel == NN_CONV_WINOGRAD ||
		nn_conv_kernel == NN_CONV_WINOGRAD_AVX2)
	{
		size_t		wscratch;

		bytes = nn_conv_wino_bytes(g, nn_conv_kernel == NN_CONV_AUTO ?
								   NN_WINO_AUTO : NN_WINO_FORCE, wino_lanes,
								   &wscratch);
		if (bytes > 0)
		{
			d = wdc_alloc0(c->env, sizeof(NnConvDirect) + bytes);
			if (d == NULL)
				return wdc_error(c->env, WDC_ERR_NOMEM, "out of memory planning model");
			d->bytes = sizeof(NnConvDirect) + bytes;
			d->g = *g;
			d->wino = nn_conv_wino_init(d + 1, g, wino_lanes, w, b);
			*out = d;
			*scratch = wscratch;
			return WDC_OK;
		}
	}
	/* phases index a 32-bit mask */
	if (g->SH > 32)
		return WDC_OK;
	vlen = isa == DC_ISA_AVX512 ? 16 : 8;

	for (int64_t kh = 0; kh < g->KH; kh++)
		phases |= 1u << ((kh * g->DH) % g->SH);
	hq = g->OH + ((g->KH - 1) * g->DH) / g->SH;
	/* offsets are int32, so larger inputs stay on im2col */
	if (__builtin_mul_overflow(g->C * g->SH, g->KW, &image_floats) ||
		__builtin_mul_overflow(image_floats, hq, &image_floats) ||
		__builtin_mul_overflow(image_floats, g->OW, &image_floats) ||
		image_floats > INT32_MAX / 2)
		return WDC_OK;
	chunk = (int64_t) (DC_PLANES_BYTES / sizeof(float)) / image_floats;
	if (chunk > g->N)
		chunk = g->N;
	if (chunk < 1)
		chunk = 1;

	/*
	 * With fewer pixel vectors per run than a tile has, a tile of one
	 * vector by more channels loads fewer values per FMA, unless the
	 * channels pad out the wider block.
	 */
	{
		int			narrow = isa == DC_ISA_AVX512 ? DC_NM_AVX512 : DC_NM_AVX2,
					wide = isa == DC_ISA_AVX512 ? DC_NM_WIDE_AVX512 : DC_NM_WIDE_AVX2,
					np = isa == DC_ISA_AVX512 ? DC_NP_AVX512 : DC_NP_AVX2;
		int64_t		vectors = (ohw + vlen - 1) / vlen * chunk;

		nm = narrow;
		if (vectors < np && (mg + wide - 1) / wide * wide <= (mg + narrow - 1) / narrow * narrow)
			nm = wide;
	}

	nmb = (mg + nm - 1) / nm;
	if (!wdc_size_mul((size_t) (g->G * nmb * nm), (size_t) kt + 1, &bytes))
		return WDC_OK;
	bytes = sizeof(NnConvDirect) + bytes * sizeof(float) + (size_t) kt * sizeof(int32_t);
	/* a Winograd plan to switch to if the step joins a chain, 8-byte aligned */
	if (nn_conv_kernel == NN_CONV_AUTO)
	{
		alt_bytes = nn_conv_wino_bytes(g, NN_WINO_CHAIN, wino_lanes, &alt_scratch);
		if (alt_bytes > 0)
		{
			alt_offset = (bytes + 7) / 8 * 8;
			bytes = alt_offset + alt_bytes;
		}
	}
	d = wdc_alloc0(c->env, bytes);
	if (d == NULL)
		return wdc_error(c->env, WDC_ERR_NOMEM, "out of memory planning model");
	d->bytes = bytes;
	d->g = *g;
	d->isa = isa;
	d->nm = nm;
	d->vlen = vlen;
	d->nmb = nmb;
	d->kt = kt;
	d->hq = hq;
	d->group_floats = cg * g->SH * g->KW * hq * g->OW;
	d->image_floats = image_floats;
	d->chunk = chunk;

	/*
	 * A 1x1 convolution without strides and pads reads the input as its
	 * tap planes, as long as no vector reads past an image.
	 */
	d->identity = g->KH == 1 && g->KW == 1 && g->SH == 1 && g->SW == 1 &&
		g->PT == 0 && g->PL == 0 && g->OH == g->H && g->OW == g->W &&
		ohw % vlen == 0;
	d->phases = phases;
	/*
	 * build_planes_avx512 copies 16 or 8 output pixels of a row at a time
	 * from 32 input columns, see plane_rows_avx512.
	 */
	for (int lanes = 16; lanes >= 8 && isa == DC_ISA_AVX512 &&
		 g->KW <= DC_MAX_KW_AVX512; lanes -= 8)
	{
		int64_t		span = ((g->OW < lanes ? g->OW : lanes) - 1) * g->SW +
			(g->KW - 1) * g->DW + 1;

		if (span <= 32)
		{
			d->plane_lanes = lanes;
			break;
		}
	}
	d->wpack = (float *) (d + 1);
	d->bias = d->wpack + g->G * nmb * kt * nm;
	d->off = (int32_t *) (d->bias + g->G * nmb * nm);
	for (int64_t ci = 0; ci < cg; ci++)
		for (int64_t kh = 0; kh < g->KH; kh++)
			for (int64_t kw = 0; kw < g->KW; kw++)
			{
				int64_t		rh = (kh * g->DH) % g->SH;

				d->off[(ci * g->KH + kh) * g->KW + kw] = (int32_t)
					(((ci * g->SH + rh) * g->KW + kw) * hq * g->OW +
					 (kh * g->DH / g->SH) * g->OW);
			}
	if (alt_bytes > 0)
		d->wino_alt = nn_conv_wino_init((char *) d + alt_offset, g, wino_lanes, w, b);
	nn_conv_direct_pack(d, w, b);
	*out = d;
	/* the planes of a chunk and one vector of slack that reads may cross */
	*scratch = d->identity ? 0 :
		(size_t) (chunk * image_floats + vlen) * sizeof(float);
	if (alt_bytes > 0 && alt_scratch > *scratch)
		*scratch = alt_scratch;
	return WDC_OK;
}

size_t
nn_conv_direct_bytes(const NnConvDirect *d)
{
	return d->bytes;
}

NnConvWino *
nn_conv_direct_winograd(const NnConvDirect *d)
{
	return d->wino;
}

NnConvWino *
nn_conv_direct_chain(NnConvDirect *d, int use)
{
	if (d->wino)
		return d->wino;
	if (use)
		d->wino = d->wino_alt;
	return d->wino_alt;
}

/* Run the tiles with the plan's instruction set. */
static void
run_isa(const NnConvDirect *d, const float *planes, int64_t nimg, float *y,
		int act, float alpha)
{
#ifdef NN_DC_X86
	if (d->isa == DC_ISA_AVX512)
		run_avx512(d, planes, nimg, y, act, alpha);
	else
		run_avx2(d, planes, nimg, y, act, alpha);
#endif
}

void
nn_conv_direct_run(const NnConvDirect *d, const float *x, float *y,
				   int64_t nimg, int act, float alpha, float *scratch)
{
	int64_t		in_image = d->g.C * d->g.H * d->g.W;
	int64_t		out_image = d->g.M * d->g.OH * d->g.OW;

	if (d->wino)
	{
		nn_conv_wino_run(d->wino, x, y, nimg, act, alpha, scratch);
		return;
	}
	if (d->identity)
	{
		run_isa(d, x, nimg, y, act, alpha);
		return;
	}
	for (int64_t img0 = 0; img0 < nimg; img0 += d->chunk)
	{
		int64_t		n = nimg - img0 < d->chunk ? nimg - img0 : d->chunk;

		for (int64_t im = 0; im < n; im++)
		{
			const float *xi = x + (img0 + im) * in_image;
			float	   *pi = scratch + im * d->image_floats;

#ifdef NN_DC_X86
			if (d->plane_lanes > 0)
				build_planes_avx512(d, xi, pi);
			else
#endif
				build_planes(d, xi, pi);
		}
		/* the last vector of the last image may read up to vlen - 1 past */
		memset(scratch + n * d->image_floats, 0, d->vlen * sizeof(float));
		run_isa(d, scratch, n, y + img0 * out_image, act, alpha);
	}
}
