/*
 * flow_rng.c
 *	  Deterministic pseudo-random numbers for flow training and sampling.
 *
 * xoshiro256** (Blackman and Vigna, "Scrambled linear pseudorandom number
 * generators", 2018) seeded through splitmix64, so any 64-bit seed gives a
 * well-mixed state.  Normal deviates use the Box-Muller transform and keep
 * the second value of each pair.  The stream depends only on the seed, never
 * on the platform's rand(), so training is reproducible.
 */
#include "flow/flow_int.h"

#include <math.h>

static uint64_t
splitmix64(uint64_t *x)
{
	uint64_t	z = (*x += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static inline uint64_t
rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

void
flow_rng_seed(FlowRng *rng, uint64_t seed)
{
	uint64_t	x = seed;
	int			i;

	for (i = 0; i < 4; i++)
		rng->s[i] = splitmix64(&x);
	rng->has_spare = 0;
	rng->spare = 0.0;
}

uint64_t
flow_rng_next(FlowRng *rng)
{
	uint64_t   *s = rng->s;
	uint64_t	result = rotl(s[1] * 5, 7) * 9;
	uint64_t	t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

double
flow_rng_uniform(FlowRng *rng)
{
	return (double) (flow_rng_next(rng) >> 11) * 0x1.0p-53;
}

/* Uniform integer in [0, bound) without modulo bias (rejection). */
uint64_t
flow_rng_below(FlowRng *rng, uint64_t bound)
{
	uint64_t	limit;
	uint64_t	r;

	if (bound <= 1)
		return 0;
	limit = UINT64_MAX - UINT64_MAX % bound;
	do
		r = flow_rng_next(rng);
	while (r >= limit);
	return r % bound;
}

double
flow_rng_normal(FlowRng *rng)
{
	double		u1;
	double		u2;
	double		radius;

	if (rng->has_spare)
	{
		rng->has_spare = 0;
		return rng->spare;
	}

	/* u1 in (0, 1] so that log(u1) is finite */
	u1 = 1.0 - flow_rng_uniform(rng);
	u2 = flow_rng_uniform(rng);
	radius = sqrt(-2.0 * log(u1));
	rng->spare = radius * sin(2.0 * M_PI * u2);
	rng->has_spare = 1;
	return radius * cos(2.0 * M_PI * u2);
}
