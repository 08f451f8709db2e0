/*
 * nn_bench.c
 *	  Time the ONNX runtime on one model at batch 1 and 64, and the machine's
 *	  single-thread cblas_sgemm peak, in the same process.
 *
 *	  nn_bench MODEL.onnx REFDIR MFLOP_PER_IMAGE [SECONDS]
 *
 * REFDIR contains input.f32 (64 images) and mu.f32 (PyTorch's output 0 for
 * them), both written by bench/nn_vae_encoder.py.  The maximum difference
 * from that reference is printed before any timing.  Run by
 * bench/nn_bench.sh.
 */
#include "nn/nn.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float *
read_floats(const char *dir, const char *name, size_t n)
{
	char		path[1024];
	FILE	   *f;
	float	   *buf = malloc(sizeof(float) * n);

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "rb");
	if (f == NULL || fread(buf, sizeof(float), n, f) != n)
	{
		fprintf(stderr, "cannot read %zu floats from %s\n", n, path);
		exit(1);
	}
	fclose(f);
	return buf;
}

/* Best single-thread sgemm rate over square sizes, in GFLOP/s. */
static double
sgemm_peak(double seconds)
{
	static const int sizes[] = {256, 512, 1024};
	double		best = 0;

	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
	{
		int			n = sizes[s];
		float	   *a = malloc(sizeof(float) * n * n),
				   *b = malloc(sizeof(float) * n * n),
				   *c = malloc(sizeof(float) * n * n);
		double		start;
		long		calls = 0;
		double		rate;

		for (int i = 0; i < n * n; i++)
		{
			a[i] = (float) (i % 13) * 0.01f;
			b[i] = (float) (i % 7) * 0.02f;
		}
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f,
					a, n, b, n, 0.0f, c, n);
		start = now();
		do
		{
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n,
						1.0f, a, n, b, n, 0.0f, c, n);
			calls++;
		} while (now() - start < seconds / 3);
		rate = 2.0 * n * n * (double) n * calls / (now() - start) / 1e9;
		printf("sgemm %d^3: %.1f GFLOP/s\n", n, rate);
		if (rate > best)
			best = rate;
		free(a);
		free(b);
		free(c);
	}
	return best;
}

static void
fail(const WdcError *err)
{
	fprintf(stderr, "error: %s\n%s\n", err->message, err->detail);
	exit(1);
}

int
main(int argc, char **argv)
{
	WdcError	err;
	WdcEnv		env;
	WdcNnModel *model;
	FILE	   *f;
	long		len;
	unsigned char *bytes;
	float	   *input,
			   *ref;
	double		mflop,
				seconds,
				peak;
	int			mu;

	if (argc < 4)
	{
		fprintf(stderr, "usage: nn_bench MODEL.onnx REFDIR MFLOP_PER_IMAGE [SECONDS]\n");
		return 2;
	}
	mflop = atof(argv[3]);
	seconds = argc > 4 ? atof(argv[4]) : 2.0;
	wdc_nn_init();
	wdc_env_init_default(&env, &err);

	/* load */
	f = fopen(argv[1], "rb");
	if (f == NULL)
	{
		perror(argv[1]);
		return 1;
	}
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	fseek(f, 0, SEEK_SET);
	bytes = malloc(len);
	if (fread(bytes, 1, len, f) != (size_t) len)
		return 1;
	fclose(f);
	if (wdc_nn_load(&env, bytes, len, &model) != WDC_OK)
		fail(&err);
	free(bytes);
	mu = wdc_nn_find_output(model, wdc_nn_metadata_get(model, "wdc output")
							? wdc_nn_metadata_get(model, "wdc output") : "mu");
	if (mu < 0)
		mu = 0;

	/* agreement with PyTorch on 64 images */
	input = read_floats(argv[2], "input.f32", 64 * 64 * 64);
	ref = read_floats(argv[2], "mu.f32", 64 * 32);
	{
		WdcNnPlan  *plan;
		int			nout = wdc_nn_output_count(model);
		void	  **outs = calloc(nout, sizeof(void *));
		const void *ins[1] = {input};
		double		maxdiff = 0,
					maxref = 0;

		if (wdc_nn_plan_create(&env, model, 64, &plan) != WDC_OK)
			fail(&err);
		for (int i = 0; i < nout; i++)
			outs[i] = malloc(sizeof(float) * wdc_nn_numel(wdc_nn_plan_output(plan, i)));
		if (wdc_nn_run(&env, plan, ins, outs) != WDC_OK)
			fail(&err);
		for (int i = 0; i < 64 * 32; i++)
		{
			maxdiff = fmax(maxdiff, fabs(((float *) outs[mu])[i] - ref[i]));
			maxref = fmax(maxref, fabs(ref[i]));
		}
		printf("wdc vs torch: max |diff| %.3g (max |mu| %.3g)\n", maxdiff, maxref);
		printf("arena at batch 64: %.1f MiB\n",
			   wdc_nn_plan_arena_bytes(plan) / 1048576.0);
		for (int i = 0; i < nout; i++)
			free(outs[i]);
		free(outs);
		wdc_nn_plan_free(&env, plan);
	}

	/* throughput at batch 1 and 64 */
	for (int batch = 1; batch <= 64; batch *= 64)
	{
		WdcNnPlan  *plan;
		int			nout = wdc_nn_output_count(model);
		void	  **outs = calloc(nout, sizeof(void *));
		const void *ins[1] = {input};
		long		runs = 0;
		double		start,
					ips;

		if (wdc_nn_plan_create(&env, model, batch, &plan) != WDC_OK)
			fail(&err);
		for (int i = 0; i < nout; i++)
			outs[i] = malloc(sizeof(float) * wdc_nn_numel(wdc_nn_plan_output(plan, i)));
		wdc_nn_run(&env, plan, ins, outs);
		start = now();
		do
		{
			wdc_nn_run(&env, plan, ins, outs);
			runs++;
		} while (now() - start < seconds);
		ips = runs * batch / (now() - start);
		printf("wdc batch %d: %.0f images/s, %.1f GFLOP/s\n", batch, ips,
			   ips * mflop / 1e3);
		for (int i = 0; i < nout; i++)
			free(outs[i]);
		free(outs);
		wdc_nn_plan_free(&env, plan);
	}

	peak = sgemm_peak(seconds);
	printf("sgemm peak (one thread): %.1f GFLOP/s\n", peak);
	free(input);
	free(ref);
	wdc_nn_free(&env, model);
	return 0;
}
