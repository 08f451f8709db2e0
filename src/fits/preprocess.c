/*
 * preprocess.c
 *	  NaN fill, resize, percentile clip, stretch and normalisation of an
 *	  image, in the order and with the options described in preprocess.h.
 *
 * Statistics (percentiles, min, max, mean) use finite pixels only and are
 * accumulated in double; pixels are stored as float.
 */
#include "fits/preprocess.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void
wdc_preprocess_init(WdcPreprocess *pp)
{
	memset(pp, 0, sizeof(*pp));
	pp->nan_fill = WDC_NAN_KEEP;
	pp->resize = WDC_RESIZE_BILINEAR;
	pp->clip_low = 0.0;
	pp->clip_high = 100.0;
	pp->stretch = WDC_STRETCH_NONE;
	pp->stretch_scale = 1.0;
	pp->normalize = WDC_NORMALIZE_NONE;
}

/* Parse a whole decimal number; false on trailing text or non-finite. */
static bool
parse_number(const char *text, double *out)
{
	char	   *end;

	errno = 0;
	*out = strtod(text, &end);
	while (*end == ' ')
		end++;
	return end != text && *end == '\0' && errno == 0 && isfinite(*out);
}

static WdcStatus
bad_value(const WdcEnv *env, const char *name, const char *value,
		  const char *expected)
{
	wdc_error(env, WDC_ERR_INVALID,
			  "invalid value \"%s\" for preprocessing option \"%s\"", value, name);
	return wdc_error_hint(env, "Expected %s.", expected);
}

/* Parse a pixel count 1..65536 (0 = keep the input size). */
static WdcStatus
set_size(const WdcEnv *env, const char *name, const char *value, size_t *out)
{
	double		v;

	if (!parse_number(value, &v) || v < 0 || v > 65536 || v != floor(v))
		return bad_value(env, name, value, "an integer from 0 (keep) to 65536");
	*out = (size_t) v;
	return WDC_OK;
}

WdcStatus
wdc_preprocess_set(const WdcEnv *env, WdcPreprocess *pp, const char *name,
				   const char *value)
{
	double		v;

	if (strcmp(name, "nan_fill") == 0)
	{
		if (strcmp(value, "keep") == 0)
			pp->nan_fill = WDC_NAN_KEEP;
		else if (strcmp(value, "median") == 0)
			pp->nan_fill = WDC_NAN_MEDIAN;
		else if (strcmp(value, "min") == 0)
			pp->nan_fill = WDC_NAN_MIN;
		else if (parse_number(value, &v) && fabs(v) <= 3.4e38)
		{
			pp->nan_fill = WDC_NAN_VALUE;
			pp->nan_value = (float) v;
		}
		else
			return bad_value(env, name, value, "\"keep\", \"median\", \"min\" or a number");
	}
	else if (strcmp(name, "width") == 0)
		return set_size(env, name, value, &pp->out_width);
	else if (strcmp(name, "height") == 0)
		return set_size(env, name, value, &pp->out_height);
	else if (strcmp(name, "resize") == 0)
	{
		if (strcmp(value, "bilinear") == 0)
			pp->resize = WDC_RESIZE_BILINEAR;
		else if (strcmp(value, "area") == 0)
			pp->resize = WDC_RESIZE_AREA;
		else
			return bad_value(env, name, value, "\"bilinear\" or \"area\"");
	}
	else if (strcmp(name, "clip_low") == 0 || strcmp(name, "clip_high") == 0)
	{
		if (!parse_number(value, &v) || v < 0 || v > 100)
			return bad_value(env, name, value, "a percentile from 0 to 100");
		if (name[5] == 'l')
			pp->clip_low = v;
		else
			pp->clip_high = v;
	}
	else if (strcmp(name, "stretch") == 0)
	{
		if (strcmp(value, "none") == 0 || strcmp(value, "linear") == 0)
			pp->stretch = WDC_STRETCH_NONE;
		else if (strcmp(value, "asinh") == 0)
			pp->stretch = WDC_STRETCH_ASINH;
		else if (strcmp(value, "log") == 0)
			pp->stretch = WDC_STRETCH_LOG;
		else
			return bad_value(env, name, value, "\"none\", \"asinh\" or \"log\"");
	}
	else if (strcmp(name, "stretch_scale") == 0)
	{
		if (!parse_number(value, &v) || v <= 0)
			return bad_value(env, name, value, "a positive number");
		pp->stretch_scale = v;
	}
	else if (strcmp(name, "normalize") == 0)
	{
		if (strcmp(value, "none") == 0)
			pp->normalize = WDC_NORMALIZE_NONE;
		else if (strcmp(value, "minmax") == 0)
			pp->normalize = WDC_NORMALIZE_MINMAX;
		else if (strcmp(value, "zscore") == 0)
			pp->normalize = WDC_NORMALIZE_ZSCORE;
		else
			return bad_value(env, name, value, "\"none\", \"minmax\" or \"zscore\"");
	}
	else
	{
		wdc_error(env, WDC_ERR_INVALID, "unknown preprocessing option \"%s\"", name);
		return wdc_error_hint(env, "Valid options are nan_fill, width, height, "
							  "resize, clip_low, clip_high, stretch, "
							  "stretch_scale and normalize.");
	}
	return WDC_OK;
}

WdcStatus
wdc_preprocess_check(const WdcEnv *env, const WdcPreprocess *pp)
{
	if (pp->clip_low >= pp->clip_high)
	{
		wdc_error(env, WDC_ERR_INVALID,
				  "clip_low %g must be below clip_high %g",
				  pp->clip_low, pp->clip_high);
		return wdc_error_hint(env, "Percentiles run from 0 to 100.");
	}
	if ((pp->out_width == 0) != (pp->out_height == 0))
		return wdc_error(env, WDC_ERR_INVALID,
						 "width and height must be given together");
	return WDC_OK;
}

static int
compare_float(const void *a, const void *b)
{
	float		x = *(const float *) a;
	float		y = *(const float *) b;

	return (x > y) - (x < y);
}

/*
 * Copy of the finite values, in no particular order; *finite is NULL when
 * none is finite.
 */
static WdcStatus
copy_finite(const WdcEnv *env, const float *data, size_t n, float **finite,
			size_t *count)
{
	size_t		m = 0;
	float	   *copy;

	*finite = NULL;
	*count = 0;
	copy = wdc_alloc(env, (n ? n : 1) * sizeof(float));
	if (copy == NULL)
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory ranking pixels");
	for (size_t i = 0; i < n; i++)
		if (isfinite(data[i]))
			copy[m++] = data[i];
	if (m == 0)
	{
		wdc_free(env, copy);
		return WDC_OK;
	}
	*finite = copy;
	*count = m;
	return WDC_OK;
}

static inline void
swap_float(float *a, float *b)
{
	float		t = *a;

	*a = *b;
	*b = t;
}

/*
 * Rearrange a[0..n) so that a[k] is the value of rank k (0-based), with
 * no larger value before it and no smaller one after it.  Quickselect with
 * a median-of-three pivot runs in O(n) on average; the values are finite,
 * so comparisons are a total order.  After 2 log2(n) partitions that
 * shrink the range by less than a quarter, the rest is sorted instead, which
 * bounds the worst case at O(n log n).
 */
static void
select_rank(float *a, size_t n, size_t k)
{
	size_t		lo = 0,
				hi = n - 1;		/* inclusive range that contains rank k */
	int			budget = 2;

	for (size_t s = n; s > 1; s >>= 1)
		budget += 2;
	while (hi > lo)
	{
		size_t		len = hi - lo + 1;
		size_t		mid = lo + len / 2;
		size_t		i,
					j;
		float		pivot;

		if (len <= 16 || budget-- <= 0)
		{
			qsort(a + lo, len, sizeof(float), compare_float);
			return;
		}
		/* median of three into a[mid], smallest at a[lo], largest at a[hi] */
		if (a[mid] < a[lo])
			swap_float(&a[mid], &a[lo]);
		if (a[hi] < a[lo])
			swap_float(&a[hi], &a[lo]);
		if (a[hi] < a[mid])
			swap_float(&a[hi], &a[mid]);
		pivot = a[mid];

		/* Hoare partition of a[lo+1 .. hi-1]; a[lo] and a[hi] are sentinels */
		i = lo;
		j = hi;
		for (;;)
		{
			do
				i++;
			while (a[i] < pivot);
			do
				j--;
			while (a[j] > pivot);
			if (i >= j)
				break;
			swap_float(&a[i], &a[j]);
		}
		/* now a[lo..j] <= pivot <= a[j+1..hi] */
		if (k <= j)
			hi = j;
		else
			lo = j + 1;
		if (hi - lo + 1 > len - len / 4)
			budget--;			/* a poor split: count it twice */
	}
}

/*
 * Rank of the lower neighbour of percentile p (0 to 100) among m values by
 * numpy's linear method: pos = p / 100 * (m - 1) lies between the values of
 * rank floor(pos) and the next, at fraction *t.
 */
static size_t
percentile_rank(size_t m, double p, double *t)
{
	double		pos = p / 100.0 * (double) (m - 1);
	size_t		lo = (size_t) floor(pos);

	*t = pos - (double) lo;
	return lo > m - 1 ? m - 1 : lo;
}

static inline double
interpolate(float below, float above, double t)
{
	return (double) below + t * ((double) above - (double) below);
}

/* Four floats, or their comparison masks, as GCC vector extensions. */
typedef float WdcF4 __attribute__((vector_size(16)));
typedef int32_t WdcI4 __attribute__((vector_size(16)));

/* Lanes where mask is set take a, the others b. */
#define F4_SELECT(mask, a, b) \
	((WdcF4) (((mask) & (WdcI4) (a)) | (~(mask) & (WdcI4) (b))))

/*
 * Minimum and maximum of the finite values of p[0..n), +Inf and -Inf when
 * there are none.  Four lanes at a time: v - v is 0 exactly for finite v
 * (NaN for NaN and infinities), so a lane keeps only finite values.
 */
static void
span_range(const float *p, size_t n, float *mn, float *mx)
{
	WdcF4		lo = {INFINITY, INFINITY, INFINITY, INFINITY},
				hi = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
	float		a = INFINITY,
				b = -INFINITY;
	size_t		i = 0;

	for (; i + 4 <= n; i += 4)
	{
		WdcF4		v;
		WdcI4		finite;

		memcpy(&v, p + i, sizeof(v));
		finite = (v - v) == 0;
		lo = F4_SELECT(finite & (v < lo), v, lo);
		hi = F4_SELECT(finite & (v > hi), v, hi);
	}
	for (int j = 0; j < 4; j++)
	{
		a = lo[j] < a ? lo[j] : a;
		b = hi[j] > b ? hi[j] : b;
	}
	for (; i < n; i++)
		if (isfinite(p[i]))
		{
			a = p[i] < a ? p[i] : a;
			b = p[i] > b ? p[i] : b;
		}
	*mn = a;
	*mx = b;
}

/*
 * Ranks at most this far from either end are found by edge_values, which
 * keeps the smallest or largest values in order, instead of by a copy and
 * quickselect.  Clip percentiles such as 0.5 and 99.5 of a 32 x 32 cutout
 * are ranks 5 and 1,018 of 1,024.
 */
#define EDGE_RANKS 24

/* Values per block and blocks per chunk of edge_values. */
#define EDGE_BLOCK 16
#define EDGE_CHUNK 64

/*
 * The k-th smallest (largest when !smallest) of v[0..n), or the infinity
 * past that end when n < k; 1 <= k <= EDGE_RANKS.
 */
static float
kth_extreme(const float *v, size_t n, size_t k, bool smallest)
{
	float		keep[EDGE_RANKS];
	size_t		have = 0;

	if (n < k)
		return smallest ? INFINITY : -INFINITY;
	for (size_t i = 0; i < n; i++)
	{
		float		x = smallest ? v[i] : -v[i];
		size_t		j;

		if (have == k && !(x < keep[k - 1]))
			continue;
		j = have < k ? have++ : k - 1;
		while (j > 0 && keep[j - 1] > x)
		{
			keep[j] = keep[j - 1];
			j--;
		}
		keep[j] = x;
	}
	return smallest ? keep[k - 1] : -keep[k - 1];
}

/* Insert finite v into the ascending list of the nlow smallest values. */
static inline void
keep_low(float *low, size_t nlow, size_t *nl, float v)
{
	size_t		j;

	if (*nl == nlow && !(v < low[nlow - 1]))
		return;
	/* append, or overwrite the largest kept value, then sink */
	j = *nl < nlow ? (*nl)++ : nlow - 1;
	while (j > 0 && low[j - 1] > v)
	{
		low[j] = low[j - 1];
		j--;
	}
	low[j] = v;
}

/* Insert finite v into the ascending list of the nhigh largest values. */
static inline void
keep_high(float *high, size_t nhigh, size_t *nh, float v)
{
	size_t		j;

	if (*nh < nhigh)
	{
		j = (*nh)++;
		while (j > 0 && high[j - 1] > v)
		{
			high[j] = high[j - 1];
			j--;
		}
		high[j] = v;
		return;
	}
	if (!(v > high[0]))
		return;
	/* drop the smallest kept value and rise into place */
	j = 0;
	while (j + 1 < nhigh && high[j + 1] < v)
	{
		high[j] = high[j + 1];
		j++;
	}
	high[j] = v;
}

/*
 * Write the nlow smallest finite values of data[0..n) to low[] and the
 * nhigh largest to high[], each in ascending order.  The caller
 * guarantees at least max(nlow, nhigh) finite values.
 *
 * The values are read in chunks of EDGE_CHUNK blocks of EDGE_BLOCK, and a
 * vectorized pass finds each block's finite minimum and maximum.  Let T be
 * the nlow-th smallest block minimum of a chunk.  The chunk contains nlow
 * values no larger than T, so no value above T is among the nlow smallest.
 * Only blocks whose minimum is at most T (and below the values already
 * kept) are searched value by value: nlow blocks, or a few more with ties.
 * The largest values are found the same way.
 */
static void
edge_values(const float *data, size_t n, float *low, size_t nlow,
			float *high, size_t nhigh)
{
	float		bmin[EDGE_CHUNK],
				bmax[EDGE_CHUNK];
	size_t		nl = 0,
				nh = 0;

	for (size_t c0 = 0; c0 < n; c0 += EDGE_BLOCK * EDGE_CHUNK)
	{
		size_t		cn = n - c0 < EDGE_BLOCK * EDGE_CHUNK ? n - c0 :
			EDGE_BLOCK * EDGE_CHUNK;
		size_t		nb = (cn + EDGE_BLOCK - 1) / EDGE_BLOCK;
		float		low_limit = -INFINITY,
					high_limit = INFINITY;

		for (size_t b = 0; b < nb; b++)
		{
			size_t		len = cn - b * EDGE_BLOCK < EDGE_BLOCK ?
				cn - b * EDGE_BLOCK : EDGE_BLOCK;

			span_range(data + c0 + b * EDGE_BLOCK, len, &bmin[b], &bmax[b]);
		}
		if (nlow > 0)
		{
			low_limit = kth_extreme(bmin, nb, nlow, true);
			if (nl == nlow && low[nlow - 1] < low_limit)
				low_limit = low[nlow - 1];
		}
		if (nhigh > 0)
		{
			high_limit = kth_extreme(bmax, nb, nhigh, false);
			if (nh == nhigh && high[0] > high_limit)
				high_limit = high[0];
		}
		for (size_t b = 0; b < nb; b++)
		{
			const float *p = data + c0 + b * EDGE_BLOCK;
			size_t		len = cn - b * EDGE_BLOCK < EDGE_BLOCK ?
				cn - b * EDGE_BLOCK : EDGE_BLOCK;
			bool		in_low = nlow > 0 && bmin[b] <= low_limit,
						in_high = nhigh > 0 && bmax[b] >= high_limit;

			if (!in_low && !in_high)
				continue;
			for (size_t i = 0; i < len; i++)
			{
				if (!isfinite(p[i]))
					continue;
				if (in_low)
					keep_low(low, nlow, &nl, p[i]);
				if (in_high)
					keep_high(high, nhigh, &nh, p[i]);
			}
		}
	}
}

#if defined(__x86_64__) && defined(__GNUC__)
#define WDC_EDGE_LANES_X86 1
#include <immintrin.h>
#endif

/* Length of the lane lists.  Edges with more values take edge_values. */
#define EDGE_LANE_K 8

int			wdc_preprocess_simd = -1;

#ifdef WDC_EDGE_LANES_X86

/*
 * Find the EDGE_LANE_K smallest finite values of data[0..n) (of the
 * negated values when negate), in ascending order, +Inf past the finite
 * values.
 *
 * Each lane keeps a sorted list: list[j] lane l is the j-th smallest
 * value among data[l], data[l + 16], data[l + 32], ...  Each vector of
 * data passes down the lists by compare-exchange.  Then the lanes fold in
 * halves: lists A and B of two lanes give the smallest EDGE_LANE_K of both
 * as min(A[j], B[K - 1 - j]), a bitonic sequence that three rounds of
 * compare-exchange sort (a bitonic merge).  After four folds lane 0 contains
 * the answer.
 *
 * Compare-exchange takes min(a, t) and max(t, a): on equal operands they
 * return t and a, so a tie of 0 and -0 keeps both values.
 */
#define CE512(a, b) \
	do { __m512 lo_ = _mm512_min_ps(a, b); \
		(b) = _mm512_max_ps(b, a); (a) = lo_; } while (0)

static __attribute__((target("avx512f"))) void
lane_lists_avx512(const float *data, size_t n, bool negate,
				  float out[EDGE_LANE_K])
{
	__m512		l[EDGE_LANE_K];
	__m512		inf = _mm512_set1_ps(INFINITY),
				zero = _mm512_setzero_ps(),
				sign = _mm512_set1_ps(negate ? -1.0f : 1.0f);

	for (int j = 0; j < EDGE_LANE_K; j++)
		l[j] = inf;
	for (size_t i = 0; i < n; i += 16)
	{
		__mmask16	in = n - i >= 16 ? (__mmask16) 0xffff :
			(__mmask16) ((1u << (n - i)) - 1);
		__m512		v = _mm512_mul_ps(_mm512_mask_loadu_ps(inf, in, data + i), sign);
		/* v - v is 0 for finite v only, so NaN and infinities become +Inf */
		__mmask16	finite = _mm512_cmp_ps_mask(_mm512_sub_ps(v, v), zero, _CMP_EQ_OQ);
		__m512		t = _mm512_mask_blend_ps(finite, inf, v);

#pragma GCC unroll 8
		for (int j = 0; j < EDGE_LANE_K; j++)
			CE512(l[j], t);
	}
	for (int fold = 0; fold < 4; fold++)
	{
		__m512		c[EDGE_LANE_K];

#pragma GCC unroll 8
		for (int j = 0; j < EDGE_LANE_K; j++)
		{
			__m512		b = l[EDGE_LANE_K - 1 - j];

			b = fold == 0 ? _mm512_shuffle_f32x4(b, b, 0x4e) :
				fold == 1 ? _mm512_shuffle_f32x4(b, b, 0xb1) :
				fold == 2 ? _mm512_permute_ps(b, 0x4e) :
				_mm512_permute_ps(b, 0xb1);
			c[j] = _mm512_min_ps(l[j], b);
		}
		for (int d = EDGE_LANE_K / 2; d > 0; d /= 2)
#pragma GCC unroll 8
			for (int j = 0; j < EDGE_LANE_K; j++)
				if ((j & d) == 0)
					CE512(c[j], c[j + d]);
		for (int j = 0; j < EDGE_LANE_K; j++)
			l[j] = c[j];
	}
	for (int j = 0; j < EDGE_LANE_K; j++)
		out[j] = _mm512_cvtss_f32(l[j]);
}

#define CE256(a, b) \
	do { __m256 lo_ = _mm256_min_ps(a, b); \
		(b) = _mm256_max_ps(b, a); (a) = lo_; } while (0)

/* Find the same values as lane_lists_avx512 with 8 lanes, for AVX2. */
static __attribute__((target("avx2"))) void
lane_lists_avx2(const float *data, size_t n, bool negate,
				float out[EDGE_LANE_K])
{
	__m256		l[EDGE_LANE_K];
	__m256		inf = _mm256_set1_ps(INFINITY),
				zero = _mm256_setzero_ps(),
				sign = _mm256_set1_ps(negate ? -1.0f : 1.0f);
	float		tail[8];

	for (int j = 0; j < EDGE_LANE_K; j++)
		l[j] = inf;
	for (size_t i = 0; i < n; i += 8)
	{
		__m256		v,
					t;

		if (n - i >= 8)
			v = _mm256_loadu_ps(data + i);
		else
		{
			for (size_t k = 0; k < 8; k++)
				tail[k] = i + k < n ? data[i + k] : INFINITY;
			v = _mm256_loadu_ps(tail);
		}
		v = _mm256_mul_ps(v, sign);
		t = _mm256_blendv_ps(inf, v,
							 _mm256_cmp_ps(_mm256_sub_ps(v, v), zero, _CMP_EQ_OQ));
#pragma GCC unroll 8
		for (int j = 0; j < EDGE_LANE_K; j++)
			CE256(l[j], t);
	}
	for (int fold = 0; fold < 3; fold++)
	{
		__m256		c[EDGE_LANE_K];

#pragma GCC unroll 8
		for (int j = 0; j < EDGE_LANE_K; j++)
		{
			__m256		b = l[EDGE_LANE_K - 1 - j];

			b = fold == 0 ? _mm256_permute2f128_ps(b, b, 0x01) :
				fold == 1 ? _mm256_permute_ps(b, 0x4e) :
				_mm256_permute_ps(b, 0xb1);
			c[j] = _mm256_min_ps(l[j], b);
		}
		for (int d = EDGE_LANE_K / 2; d > 0; d /= 2)
#pragma GCC unroll 8
			for (int j = 0; j < EDGE_LANE_K; j++)
				if ((j & d) == 0)
					CE256(c[j], c[j + d]);
		for (int j = 0; j < EDGE_LANE_K; j++)
			l[j] = c[j];
	}
	for (int j = 0; j < EDGE_LANE_K; j++)
		out[j] = _mm256_cvtss_f32(l[j]);
}

/*
 * Return the vector instruction set of the lane lists: 2 for AVX-512F, 1
 * for AVX2, 0 for neither (edge_values then does the work), or
 * wdc_preprocess_simd when that is lower.
 */
static int
edge_lanes_isa(void)
{
	static int	isa = -1;

	if (isa < 0)
	{
		__builtin_cpu_init();
		isa = __builtin_cpu_supports("avx512f") ? 2 :
			__builtin_cpu_supports("avx2") ? 1 : 0;
	}
	return wdc_preprocess_simd >= 0 && wdc_preprocess_simd < isa ?
		wdc_preprocess_simd : isa;
}

/*
 * Write the k smallest finite values of data[0..n) (largest when negate)
 * in ascending order to out[0..k); 1 <= k <= EDGE_LANE_K.
 */
static void
lane_edge(const float *data, size_t n, bool negate, int isa, float *out,
		  size_t k)
{
	float		list[EDGE_LANE_K];

	if (isa == 2)
		lane_lists_avx512(data, n, negate, list);
	else
		lane_lists_avx2(data, n, negate, list);
	/* negated, list contains the largest values in descending order */
	for (size_t i = 0; i < k; i++)
		out[i] = negate ? -list[k - 1 - i] : list[i];
}
#endif							/* WDC_EDGE_LANES_X86 */

/*
 * Compute edge_values with lane lists where the CPU has AVX2 or AVX-512F
 * and both edges have at most EDGE_LANE_K values.  The result is the same.
 */
static void
edge_values_fast(const float *data, size_t n, float *low, size_t nlow,
				 float *high, size_t nhigh)
{
#ifdef WDC_EDGE_LANES_X86
	int			isa = edge_lanes_isa();

	if (isa > 0 && nlow <= EDGE_LANE_K && nhigh <= EDGE_LANE_K)
	{
		if (nlow > 0)
			lane_edge(data, n, false, isa, low, nlow);
		if (nhigh > 0)
			lane_edge(data, n, true, isa, high, nhigh);
		return;
	}
#endif
	edge_values(data, n, low, nlow, high, nhigh);
}

/*
 * How percentile p of m finite values can come from edge_values: sets
 * *from_low to the number of smallest values, or *from_high to the number of
 * largest values, that contain ranks lo and lo + 1 (lo from percentile_rank).
 * Returns false when the ranks are too far from both ends.
 */
static bool
edge_plan(size_t m, size_t lo, size_t *from_low, size_t *from_high)
{
	size_t		need = lo + 2 < m ? lo + 2 : m;

	if (need <= EDGE_RANKS)
	{
		if (need > *from_low)
			*from_low = need;
		return true;
	}
	if (m - lo <= EDGE_RANKS)
	{
		if (m - lo > *from_high)
			*from_high = m - lo;
		return true;
	}
	return false;
}

/*
 * Values of ranks lo and lo + 1 (lo itself when it is the last rank) from
 * the kept sets of edge_values, of which edge_plan chose one.
 */
static void
edge_pair(size_t m, size_t lo, const float *low, size_t nlow,
		  const float *high, size_t nhigh, float *below, float *above)
{
	if (nlow >= (lo + 2 < m ? lo + 2 : m))
	{
		*below = low[lo];
		*above = lo + 1 < nlow ? low[lo + 1] : *below;
	}
	else
	{
		/* high[0] has rank m - nhigh */
		size_t		k = lo - (m - nhigh);

		*below = high[k];
		*above = k + 1 < nhigh ? high[k + 1] : *below;
	}
}

/*
 * Return percentile p (0 to 100) of the m values in a by numpy's linear
 * method (see percentile_rank).  Reorders a; only a[from..m) is searched,
 * which the caller guarantees to contain every rank from `from` on (see
 * select_rank).
 */
static double
percentile_select(float *a, size_t m, size_t from, double p, size_t *rank)
{
	double		t;
	size_t		lo = percentile_rank(m, p, &t);
	float		below,
				above;

	if (lo < from)
		lo = from;
	select_rank(a + from, m - from, lo - from);
	below = a[lo];
	above = below;
	/* the next rank is the smallest value after it */
	if (lo + 1 < m)
	{
		above = a[lo + 1];
		for (size_t i = lo + 2; i < m; i++)
			if (a[i] < above)
				above = a[i];
	}
	*rank = lo;
	return interpolate(below, above, t);
}

/*
 * Percentiles plow and phigh of the finite values of data[0..n), of which
 * m are finite (m > 0): by one edge_values pass when both ranks lie near
 * the ends, else by quickselect on a copy.
 */
static WdcStatus
percentile_pair(const WdcEnv *env, const float *data, size_t n, size_t m,
				double plow, double phigh, double *vlow, double *vhigh)
{
	double		tl,
				th;
	size_t		rl = percentile_rank(m, plow, &tl),
				rh = percentile_rank(m, phigh, &th),
				nlow = 0,
				nhigh = 0,
				count,
				rank;
	float		low[EDGE_RANKS],
				high[EDGE_RANKS],
				below,
				above;
	float	   *finite;
	WdcStatus	rc;

	if (edge_plan(m, rl, &nlow, &nhigh) && edge_plan(m, rh, &nlow, &nhigh))
	{
		edge_values_fast(data, n, low, nlow, high, nhigh);
		edge_pair(m, rl, low, nlow, high, nhigh, &below, &above);
		*vlow = interpolate(below, above, tl);
		edge_pair(m, rh, low, nlow, high, nhigh, &below, &above);
		*vhigh = interpolate(below, above, th);
		return WDC_OK;
	}
	rc = copy_finite(env, data, n, &finite, &count);
	if (rc != WDC_OK)
		return rc;
	/* the low selection leaves every higher rank after it */
	*vlow = percentile_select(finite, count, 0, plow, &rank);
	if (phigh == plow)
		*vhigh = *vlow;
	else
		*vhigh = percentile_select(finite, count, plow < phigh ? rank : 0,
								   phigh, &rank);
	wdc_free(env, finite);
	return WDC_OK;
}

WdcStatus
wdc_percentile(const WdcEnv *env, const float *data, size_t n, double p,
			   double *result)
{
	size_t		m = 0;

	for (size_t i = 0; i < n; i++)
		m += isfinite(data[i]) ? 1 : 0;
	if (m == 0)
	{
		*result = NAN;
		return WDC_OK;
	}
	return percentile_pair(env, data, n, m, p, p, result, result);
}

/*
 * Weights of the input samples that make output sample j of an axis
 * resized from n_in to n_out; returns the number of taps written to idx and
 * w (at most n_in / n_out + 2 for area, 2 for bilinear).
 */
static size_t
axis_taps(size_t j, size_t n_in, size_t n_out, WdcResize mode,
		  size_t *idx, double *w)
{
	double		scale = (double) n_in / (double) n_out;

	if (mode == WDC_RESIZE_BILINEAR)
	{
		/* Sample at the output pixel's centre in input coordinates. */
		double		src = ((double) j + 0.5) * scale - 0.5;
		size_t		i0;
		double		t;

		if (src < 0)
			src = 0;
		i0 = (size_t) floor(src);
		if (i0 > n_in - 1)
			i0 = n_in - 1;
		t = src - (double) i0;
		idx[0] = i0;
		w[0] = 1.0 - t;
		idx[1] = i0 + 1 < n_in ? i0 + 1 : i0;
		w[1] = t;
		return 2;
	}
	else
	{
		/* Average over [j * scale, (j + 1) * scale) with partial overlaps. */
		double		a = (double) j * scale;
		double		b = (double) (j + 1) * scale;
		size_t		k = 0;

		for (size_t i = (size_t) floor(a); i < n_in && (double) i < b; i++)
		{
			double		lo = fmax(a, (double) i);
			double		hi = fmin(b, (double) i + 1.0);

			if (hi <= lo)
				continue;
			idx[k] = i;
			w[k] = (hi - lo) / scale;
			k++;
		}
		return k;
	}
}

WdcStatus
wdc_image_resize(const WdcEnv *env, const WdcImage *in, size_t width,
				 size_t height, WdcResize mode, WdcImage *out)
{
	size_t		max_taps;
	size_t	   *idx = NULL;
	double	   *w = NULL;
	double	   *tmp = NULL;
	size_t		n;

	memset(out, 0, sizeof(*out));
	if (width == 0 || height == 0 || in->width == 0 || in->height == 0)
		return wdc_error(env, WDC_ERR_INVALID, "cannot resize to or from an empty image");

	max_taps = (in->width > in->height ? in->width : in->height) /
		(width < height ? width : height) + 3;
	if (!wdc_size_mul(width, height, &n))
		return wdc_error(env, WDC_ERR_LIMIT, "resized image is too large");
	idx = wdc_alloc(env, max_taps * sizeof(size_t));
	w = wdc_alloc(env, max_taps * sizeof(double));
	tmp = wdc_alloc(env, in->height * width * sizeof(double));
	out->pixels = wdc_alloc(env, n * sizeof(float));
	if (!idx || !w || !tmp || !out->pixels)
	{
		wdc_free(env, idx);
		wdc_free(env, w);
		wdc_free(env, tmp);
		wdc_image_free(env, out);
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory resizing an image");
	}
	out->width = width;
	out->height = height;

	/* Pass 1: resize each row to the new width (in->height x width). */
	for (size_t x = 0; x < width; x++)
	{
		size_t		k = axis_taps(x, in->width, width, mode, idx, w);

		for (size_t y = 0; y < in->height; y++)
		{
			const float *row = in->pixels + y * in->width;
			double		acc = 0;

			for (size_t t = 0; t < k; t++)
				if (w[t] != 0.0)
					acc += w[t] * row[idx[t]];
			tmp[y * width + x] = acc;
		}
	}

	/* Pass 2: resize each column to the new height. */
	for (size_t y = 0; y < height; y++)
	{
		size_t		k = axis_taps(y, in->height, height, mode, idx, w);

		for (size_t x = 0; x < width; x++)
		{
			double		acc = 0;

			for (size_t t = 0; t < k; t++)
				if (w[t] != 0.0)
					acc += w[t] * tmp[idx[t] * width + x];
			out->pixels[y * width + x] = (float) acc;
		}
		if (wdc_interrupted(env))
		{
			wdc_free(env, idx);
			wdc_free(env, w);
			wdc_free(env, tmp);
			wdc_image_free(env, out);
			return wdc_error(env, WDC_ERR_CANCELED, "image resize canceled");
		}
	}
	wdc_free(env, idx);
	wdc_free(env, w);
	wdc_free(env, tmp);
	return WDC_OK;
}

/*
 * Minimum and maximum of the finite pixels; false when there are none.
 */
static bool
finite_range(const float *p, size_t n, double *lo, double *hi)
{
	float		a,
				b;

	span_range(p, n, &a, &b);
	if (a > b)
		return false;
	*lo = a;
	*hi = b;
	return true;
}

/*
 * The pixel loops below are built for AVX-512F, AVX2 and the baseline ISA
 * and chosen at load time (GCC's target_clones).  They only compare,
 * select, subtract and divide, so every clone gives the same bits.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define WDC_PIXEL_LOOP __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define WDC_PIXEL_LOOP
#endif

/*
 * Number of NaN and infinite pixels; the fill value (a median needs a sort)
 * is only computed when there is something to fill.
 */
WDC_PIXEL_LOOP size_t
wdc_count_nonfinite(const float *p, size_t n)
{
	size_t		count = 0;

	for (size_t i = 0; i < n; i++)
		count += isfinite(p[i]) ? 0 : 1;
	return count;
}

/* Clip p[0..n) to [lo, hi].  NaN compares false both ways and stays. */
static WDC_PIXEL_LOOP void
clip_pixels(float *p, size_t n, float lo, float hi)
{
	for (size_t i = 0; i < n; i++)
	{
		float		v = p[i];

		p[i] = v < lo ? lo : (v > hi ? hi : v);
	}
}

/* Set p = (p - lo) / range, computed in double and rounded to float. */
static WDC_PIXEL_LOOP void
scale_pixels(float *p, size_t n, double lo, double range)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (float) (((double) p[i] - lo) / range);
}

WdcStatus
wdc_preprocess_run(const WdcEnv *env, const WdcPreprocess *pp,
				   const WdcImage *in, WdcImage *out)
{
	size_t		n;
	size_t		nonfinite;
	float	   *p;
	bool		clipped = false;
	float		clip_lo = 0,
				clip_hi = 0;
	WdcStatus	rc;

	memset(out, 0, sizeof(*out));
	rc = wdc_preprocess_check(env, pp);
	if (rc != WDC_OK)
		return rc;
	if (!wdc_size_mul(in->width, in->height, &n) || n == 0)
		return wdc_error(env, WDC_ERR_INVALID, "cannot preprocess an empty image");

	/* 1. NaN (and infinity) fill, on a copy of the input. */
	out->pixels = wdc_alloc(env, n * sizeof(float));
	if (out->pixels == NULL)
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory preprocessing an image");
	out->width = in->width;
	out->height = in->height;
	memcpy(out->pixels, in->pixels, n * sizeof(float));
	p = out->pixels;
	nonfinite = wdc_count_nonfinite(p, n);
	if (pp->nan_fill != WDC_NAN_KEEP && nonfinite > 0)
	{
		double		fill = pp->nan_value;

		if (pp->nan_fill == WDC_NAN_MEDIAN)
		{
			rc = wdc_percentile(env, p, n, 50.0, &fill);
			if (rc != WDC_OK)
			{
				wdc_image_free(env, out);
				return rc;
			}
		}
		else if (pp->nan_fill == WDC_NAN_MIN)
		{
			double		hi;

			if (!finite_range(p, n, &fill, &hi))
				fill = NAN;
		}
		if (isnan(fill))
			fill = 0.0;			/* no finite pixel at all */
		/* infinities (saturated or overflowed pixels) are filled like NaN */
		for (size_t i = 0; i < n; i++)
			if (!isfinite(p[i]))
				p[i] = (float) fill;
		nonfinite = 0;
	}

	/* 2. Resize. */
	if (pp->out_width > 0 &&
		(pp->out_width != out->width || pp->out_height != out->height))
	{
		WdcImage	resized;
		size_t		bytes;

		if (!wdc_size_mul(pp->out_width, pp->out_height, &bytes) ||
			!wdc_size_mul(bytes, sizeof(float), &bytes) ||
			(pp->max_bytes > 0 && bytes > pp->max_bytes))
		{
			wdc_image_free(env, out);
			wdc_error(env, WDC_ERR_LIMIT,
					  "resizing to %zu x %zu pixels needs %.1f MB, more than the %.1f MB allowed",
					  pp->out_width, pp->out_height, (double) bytes / (1 << 20),
					  (double) pp->max_bytes / (1 << 20));
			return wdc_error_hint(env, "Choose a smaller width and height, or raise wdc.fits_max_mb.");
		}

		rc = wdc_image_resize(env, out, pp->out_width, pp->out_height,
							  pp->resize, &resized);
		wdc_image_free(env, out);
		if (rc != WDC_OK)
			return rc;
		*out = resized;
		p = out->pixels;
		n = out->width * out->height;
		nonfinite = wdc_count_nonfinite(p, n);
	}

	/* 3. Clip to percentiles. */
	if (pp->clip_low > 0.0 || pp->clip_high < 100.0)
	{
		size_t		m = n - nonfinite;
		double		vlow,
					vhigh;

		if (m > 0)
		{
			float		lo,
						hi;

			rc = percentile_pair(env, p, n, m, pp->clip_low, pp->clip_high,
								 &vlow, &vhigh);
			if (rc != WDC_OK)
			{
				wdc_image_free(env, out);
				return rc;
			}
			lo = (float) vlow;
			hi = (float) vhigh;
			clip_pixels(p, n, lo, hi);

			/*
			 * lo and hi lie within the pixel range (a percentile lies
			 * between two pixel values), so after the clip they are the
			 * smallest and largest finite pixels.
			 */
			clipped = true;
			clip_lo = lo;
			clip_hi = hi;
		}
	}

	/* 4. Stretch. */
	if (pp->stretch == WDC_STRETCH_ASINH)
	{
		for (size_t i = 0; i < n; i++)
			p[i] = (float) asinh((double) p[i] / pp->stretch_scale);
	}
	else if (pp->stretch == WDC_STRETCH_LOG)
	{
		double		lo = 0,
					hi = 0;

		if (finite_range(p, n, &lo, &hi))
			for (size_t i = 0; i < n; i++)
				p[i] = (float) log1p(((double) p[i] - lo) / pp->stretch_scale);
	}

	/* 5. Normalise. */
	if (pp->normalize == WDC_NORMALIZE_MINMAX)
	{
		double		lo = 0,
					hi = 0;
		bool		any;

		if (clipped && pp->stretch == WDC_STRETCH_NONE)
		{
			/* the range is known from the clip */
			lo = clip_lo;
			hi = clip_hi;
			any = true;
		}
		else
			any = finite_range(p, n, &lo, &hi);
		if (!any)
			;					/* no finite pixel: nothing to scale */
		else if (hi > lo)
		{
			scale_pixels(p, n, lo, hi - lo);
		}
		else
			for (size_t i = 0; i < n; i++)
				p[i] = isnan(p[i]) ? p[i] : 0.0f;
	}
	else if (pp->normalize == WDC_NORMALIZE_ZSCORE)
	{
		double		sum = 0,
					sq = 0,
					mean,
					sd;
		size_t		m = 0;

		for (size_t i = 0; i < n; i++)
			if (isfinite(p[i]))
			{
				sum += p[i];
				m++;
			}
		mean = m ? sum / (double) m : 0.0;
		for (size_t i = 0; i < n; i++)
			if (isfinite(p[i]))
				sq += ((double) p[i] - mean) * ((double) p[i] - mean);
		sd = m ? sqrt(sq / (double) m) : 0.0;
		for (size_t i = 0; i < n; i++)
			p[i] = sd > 0 ? (float) (((double) p[i] - mean) / sd) :
				(isnan(p[i]) ? p[i] : 0.0f);
	}
	return WDC_OK;
}
