/*
 * flow_gelu_kernel.h
 *	  The GELU kernel body, included by flow_gelu.c once per vector width.
 *
 * Before each inclusion flow_gelu.c defines GK_LANES (floats per vector),
 * GK_SUFFIX (appended to every name) and GK_TARGET (a function attribute
 * such as target("avx2,fma"), or nothing).  The formulas and their accuracy
 * are described in flow_gelu.c.
 */

#define GK_JOIN2(a, b) a##_##b
#define GK_JOIN(a, b) GK_JOIN2(a, b)
#define GK(name) GK_JOIN(name, GK_SUFFIX)
#define VF GK(vf)
#define VI GK(vi)
#define SPLAT(x) ((VF) {0} + (float) (x))

typedef float VF __attribute__((vector_size(GK_LANES * 4)));
typedef int32_t VI __attribute__((vector_size(GK_LANES * 4)));

/* exp(y) for y <= 0; 0 below -87 (float underflow). */
static inline __attribute__((always_inline)) GK_TARGET VF
GK(exp_neg) (VF y)
{
	const VF	log2e = SPLAT(1.44269504088896341f);
	const VF	ln2_hi = SPLAT(0.693359375f);
	const VF	ln2_lo = SPLAT(-2.12194440e-4f);
	const VF	magic = SPLAT(12582912.0f);
	VI			under = y < SPLAT(-87.0f);
	VF			k;
	VF			r;
	VF			poly;
	VI			bits;

	y = (VF) (((VI) y & ~under) | ((VI) SPLAT(-87.0f) & under));
	k = (y * log2e + magic) - magic;
	r = y - k * ln2_hi - k * ln2_lo;

	/* Horner form of sum r^i / i! for i = 0..7 */
	poly = SPLAT(1.0f / 5040.0f);
	poly = poly * r + SPLAT(1.0f / 720.0f);
	poly = poly * r + SPLAT(1.0f / 120.0f);
	poly = poly * r + SPLAT(1.0f / 24.0f);
	poly = poly * r + SPLAT(1.0f / 6.0f);
	poly = poly * r + SPLAT(0.5f);
	poly = poly * r + SPLAT(1.0f);
	poly = poly * r + SPLAT(1.0f);

	bits = (__builtin_convertvector(k, VI) + 127) << 23;
	return (VF) ((VI) (poly * (VF) bits) & ~under);
}

/* gelu and gelu' of one vector. */
static inline __attribute__((always_inline)) GK_TARGET void
GK(gelu_vec) (VF x, VF *h, VF *deriv)
{
	const VF	one = SPLAT(1.0f);
	const VF	half = SPLAT(0.5f);
	VI			neg = x < SPLAT(0.0f);
	VF			ax = (VF) ((VI) x & ((VI) {0} + 0x7fffffff));
	VF			z = ax * SPLAT(0.70710678118654752f);
	VF			t = one / (one + half * z);

	/* ax_hi keeps 12 significant bits, so ax_hi^2 is exact in float */
	VF			ax_hi = (VF) ((VI) ax & ((VI) {0} + (int32_t) 0xfffff000));
	VF			ax_lo = ax - ax_hi;
	VF			zz_hi = half * ax_hi * ax_hi;
	VF			zz_lo = ax_hi * ax_lo + half * ax_lo * ax_lo;
	VF			poly;
	VF			tail;
	VF			cdf;

	poly = SPLAT(0.17087277f);
	poly = poly * t + SPLAT(-0.82215223f);
	poly = poly * t + SPLAT(1.48851587f);
	poly = poly * t + SPLAT(-1.13520398f);
	poly = poly * t + SPLAT(0.27886807f);
	poly = poly * t + SPLAT(-0.18628806f);
	poly = poly * t + SPLAT(0.09678418f);
	poly = poly * t + SPLAT(0.37409196f);
	poly = poly * t + SPLAT(1.00002368f);
	poly = poly * t + SPLAT(-1.26551223f);

	/* Phi(x): erfc/2 on the left, 1 - erfc/2 on the right */
	tail = half * t * GK(exp_neg) ((poly - zz_hi) - zz_lo);
	cdf = (VF) (((VI) tail & neg) | ((VI) (one - tail) & ~neg));

	*h = x * cdf;
	*deriv = cdf + x * (GK(exp_neg) (-zz_hi - zz_lo) * SPLAT(0.39894228040143268f));
}

/* h [n] = gelu(p), deriv [n] = gelu'(p) when not NULL; h may alias p. */
static GK_TARGET void
GK(gelu_loop) (const float *p, float *h, float *deriv, int n)
{
	int			i;

	for (i = 0; i < n; i += GK_LANES)
	{
		int			count = n - i < GK_LANES ? n - i : GK_LANES;
		float		buf[GK_LANES] = {0};
		VF			x;
		VF			hv;
		VF			dv;

		if (count == GK_LANES)
			memcpy(&x, p + i, sizeof(x));
		else
		{
			memcpy(buf, p + i, (size_t) count * sizeof(float));
			memcpy(&x, buf, sizeof(x));
		}
		GK(gelu_vec) (x, &hv, &dv);
		if (count == GK_LANES)
		{
			memcpy(h + i, &hv, sizeof(hv));
			if (deriv)
				memcpy(deriv + i, &dv, sizeof(dv));
		}
		else
		{
			memcpy(buf, &hv, sizeof(buf));
			memcpy(h + i, buf, (size_t) count * sizeof(float));
			if (deriv)
			{
				memcpy(buf, &dv, sizeof(buf));
				memcpy(deriv + i, buf, (size_t) count * sizeof(float));
			}
		}
	}
}

#undef SPLAT
#undef VI
#undef VF
#undef GK
#undef GK_JOIN
#undef GK_JOIN2
