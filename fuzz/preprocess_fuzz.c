/*
 * preprocess_fuzz.c
 *	  Differential libFuzzer target for the percentile selection of
 *	  src/fits/preprocess.c: wdc_percentile and the two-sided percentile
 *	  clip of wdc_preprocess_run must equal a full sort of the finite values.
 *
 * Input: two bytes choose the percentiles (0 to 100 in steps of 0.5), two
 * bytes how the floats are mapped (raw bits, or a few distinct values, to
 * provoke ties) and which vector path selects near the ends (scalar, AVX2,
 * AVX-512, as far as the CPU has them), and the rest are the pixels.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/wdc_core.h"
#include "fits/preprocess.h"

static int
cmp_float(const void *a, const void *b)
{
	float		x = *(const float *) a;
	float		y = *(const float *) b;

	return (x > y) - (x < y);
}

/* numpy's linear percentile of the finite values, by sorting */
static double
sorted_percentile(const float *data, size_t n, double p)
{
	float	   *s = malloc((n ? n : 1) * sizeof(float));
	size_t		m = 0,
				lo,
				hi;
	double		pos,
				v;

	for (size_t i = 0; i < n; i++)
		if (isfinite(data[i]))
			s[m++] = data[i];
	if (m == 0)
	{
		free(s);
		return NAN;
	}
	qsort(s, m, sizeof(float), cmp_float);
	pos = p / 100.0 * (double) (m - 1);
	lo = (size_t) floor(pos);
	hi = lo + 1 < m ? lo + 1 : lo;
	v = (double) s[lo] + (pos - (double) lo) * ((double) s[hi] - (double) s[lo]);
	free(s);
	return v;
}

static void
check_percentile(const WdcEnv *env, const float *a, size_t n, double p)
{
	double		got,
				want = sorted_percentile(a, n, p);

	if (wdc_percentile(env, a, n, p, &got) != WDC_OK)
		abort();
	if (!(got == want || (isnan(got) && isnan(want))))
	{
		fprintf(stderr, "percentile %g of %zu values: %.9g, sorted %.9g\n",
				p, n, got, want);
		abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	WdcEnv		env;
	WdcError	error;
	WdcPreprocess pp;
	WdcImage	in,
				out;
	size_t		n;
	float	   *a;
	double		p1,
				p2,
				lo,
				hi;
	char		text[32];

	if (size < 4)
		return 0;
	p1 = (data[0] % 201) * 0.5;
	p2 = (data[1] % 201) * 0.5;
	n = (size - 4) / sizeof(float);
	a = malloc((n ? n : 1) * sizeof(float));
	memcpy(a, data + 4, n * sizeof(float));
	/* a few distinct values, ties and non-finite pixels when asked */
	if (data[2] & 1)
		for (size_t i = 0; i < n; i++)
		{
			uint32_t	bits;

			memcpy(&bits, &a[i], sizeof(bits));
			a[i] = bits % 97 == 0 ? NAN : bits % 89 == 0 ? -INFINITY :
				(float) (bits % (1u + data[3] % 16));
		}
	wdc_env_init_default(&env, &error);
	wdc_preprocess_simd = (data[2] >> 1) % 3;
	check_percentile(&env, a, n, p1);
	check_percentile(&env, a, n, p2);

	if (p1 > p2)
	{
		double		t = p1;

		p1 = p2;
		p2 = t;
	}
	if (n == 0 || (p1 == 0.0 && p2 == 100.0) || p1 == p2)
	{
		free(a);
		return 0;
	}
	wdc_preprocess_init(&pp);
	snprintf(text, sizeof(text), "%g", p1);
	if (wdc_preprocess_set(&env, &pp, "clip_low", text) != WDC_OK)
		abort();
	snprintf(text, sizeof(text), "%g", p2);
	if (wdc_preprocess_set(&env, &pp, "clip_high", text) != WDC_OK)
		abort();
	in.width = n;
	in.height = 1;
	in.pixels = a;
	if (wdc_preprocess_run(&env, &pp, &in, &out) != WDC_OK)
		abort();
	lo = sorted_percentile(a, n, p1);
	hi = sorted_percentile(a, n, p2);
	for (size_t i = 0; i < n; i++)
	{
		float		want = a[i];

		if (!isnan(lo) && a[i] < (float) lo)
			want = (float) lo;
		else if (!isnan(hi) && a[i] > (float) hi)
			want = (float) hi;
		if (!(out.pixels[i] == want || (isnan(want) && isnan(out.pixels[i]))))
		{
			fprintf(stderr, "clip [%g, %g] pixel %zu of %zu: %g, sorted %g\n",
					p1, p2, i, n, out.pixels[i], want);
			abort();
		}
	}
	wdc_image_free(&env, &out);

	/* clip then min-max: the range after the clip is [lo, hi] */
	if (wdc_preprocess_set(&env, &pp, "normalize", "minmax") != WDC_OK)
		abort();
	if (wdc_preprocess_run(&env, &pp, &in, &out) != WDC_OK)
		abort();
	{
		float	   *c = malloc(n * sizeof(float));
		double		mn = INFINITY,
					mx = -INFINITY;

		for (size_t i = 0; i < n; i++)
		{
			c[i] = a[i];
			if (!isnan(lo) && a[i] < (float) lo)
				c[i] = (float) lo;
			else if (!isnan(hi) && a[i] > (float) hi)
				c[i] = (float) hi;
			if (isfinite(c[i]))
			{
				mn = fmin(mn, c[i]);
				mx = fmax(mx, c[i]);
			}
		}
		for (size_t i = 0; i < n; i++)
		{
			float		want = c[i];

			if (mn > mx)
				;
			else if (mx > mn)
				want = (float) (((double) c[i] - mn) / (mx - mn));
			else if (!isnan(c[i]))
				want = 0.0f;
			if (!(out.pixels[i] == want || (isnan(want) && isnan(out.pixels[i]))))
			{
				fprintf(stderr, "clip and min-max [%g, %g] pixel %zu of %zu: %g, expected %g\n",
						p1, p2, i, n, out.pixels[i], want);
				abort();
			}
		}
		free(c);
	}
	wdc_image_free(&env, &out);
	free(a);
	return 0;
}
