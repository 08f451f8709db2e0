/*
 * encode_bench.c
 *	  Time wdc's ONNX runtime on the reference encoder called directly from
 *	  C, without PostgreSQL, so that the per-row cost of SQL is visible next
 *	  to bench/encode_bench.sh's figures.
 *
 * Usage:
 *	  encode_bench ENCODER.onnx RAW.f32 N REPEAT [name=value ...]
 *
 * RAW.f32 holds [m][32][32] float32 raw cutouts (tools/make_cutouts.c);
 * N images are taken from it, cycling when m < N.  The name=value
 * arguments are the model's preprocessing options.  Each mode runs REPEAT
 * times and the fastest run counts, because other jobs on a shared
 * machine only ever add time.  Prints one line per mode,
 * "mode images/s seconds":
 *	  c_prep_batch1   preprocess + batch-1 plan per image (what wdc.encode does)
 *	  c_batch1        batch-1 plan on preprocessed images
 *	  c_batch64       batch-64 plan on preprocessed images (last group padded)
 * and "checksum" lines so the three modes can be compared.  Runs on one
 * thread (wdc_nn_init pins OpenBLAS to one).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/wdc_core.h"
#include "fits/preprocess.h"
#include "nn/nn.h"

#define SIDE 32
#define PIXELS (SIDE * SIDE)
#define BATCH 64

/* Print the core's error and exit. */
static void
die(const WdcError *error, const char *what)
{
	fprintf(stderr, "encode_bench: %s: %s %s\n", what, error->message, error->detail);
	exit(1);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Read a whole file into malloc'd memory. */
static void *
read_file(const char *path, size_t *len)
{
	FILE	   *f = fopen(path, "rb");
	void	   *buf;

	if (f == NULL || fseek(f, 0, SEEK_END) != 0)
	{
		fprintf(stderr, "encode_bench: cannot read %s\n", path);
		exit(1);
	}
	*len = (size_t) ftell(f);
	rewind(f);
	buf = malloc(*len + 1);
	if (buf == NULL || fread(buf, 1, *len, f) != *len)
	{
		fprintf(stderr, "encode_bench: cannot read %s\n", path);
		exit(1);
	}
	fclose(f);
	return buf;
}

/* Run plan on inputs, writing output 0 ("mean") to mean; other outputs to scratch. */
static void
run(const WdcEnv *env, WdcNnPlan *plan, const float *input, float *mean, float *scratch)
{
	const void *inputs[1] = {input};
	void	   *outputs[2] = {mean, scratch};

	if (wdc_nn_run(env, plan, inputs, outputs) != WDC_OK)
		die(env->error, "run");
}

int
main(int argc, char **argv)
{
	WdcEnv		env;
	WdcError	error;
	WdcPreprocess pp;
	WdcNnModel *model;
	WdcNnPlan  *plan1;
	WdcNnPlan  *plan64;
	size_t		onnx_len,
				raw_len;
	void	   *onnx;
	float	   *raw;
	float	   *prepared;
	float	   *means;
	float	   *scratch;
	size_t		m;
	long		n;
	size_t		latent;
	int			repeat;
	double		t;
	double		best;
	double		sum;

	if (argc < 5)
	{
		fprintf(stderr, "usage: encode_bench ENCODER.onnx RAW.f32 N REPEAT [name=value ...]\n");
		return 2;
	}
	wdc_nn_init();
	wdc_env_init_default(&env, &error);

	/* 1. model, plans, preprocessing options */
	onnx = read_file(argv[1], &onnx_len);
	if (wdc_nn_load(&env, onnx, onnx_len, &model) != WDC_OK)
		die(&error, argv[1]);
	if (wdc_nn_plan_create(&env, model, 1, &plan1) != WDC_OK ||
		wdc_nn_plan_create(&env, model, BATCH, &plan64) != WDC_OK)
		die(&error, "plan");
	latent = wdc_nn_numel(wdc_nn_plan_output(plan1, 0));
	wdc_preprocess_init(&pp);
	for (int i = 5; i < argc; i++)
	{
		char	   *eq = strchr(argv[i], '=');

		if (eq == NULL)
			return 2;
		*eq = '\0';
		if (wdc_preprocess_set(&env, &pp, argv[i], eq + 1) != WDC_OK)
			die(&error, argv[i]);
	}

	/* 2. N raw cutouts, cycling over the file */
	raw = read_file(argv[2], &raw_len);
	m = raw_len / sizeof(float) / PIXELS;
	n = atol(argv[3]);
	repeat = atoi(argv[4]);
	if (m == 0 || n < 1 || repeat < 1)
	{
		fprintf(stderr, "encode_bench: no cutouts\n");
		return 1;
	}
	prepared = calloc((size_t) (n + BATCH) * PIXELS, sizeof(float));
	means = calloc((size_t) (n + BATCH) * latent, sizeof(float));
	scratch = calloc((size_t) BATCH * latent, sizeof(float));

	/* 3. preprocess + batch 1, the per-row wdc.encode work minus SQL */
	best = INFINITY;
	for (int r = 0; r < repeat; r++)
	{
		t = now();
		for (long i = 0; i < n; i++)
		{
			WdcImage	in = {SIDE, SIDE, raw + (i % m) * PIXELS};
			WdcImage	out;

			if (wdc_preprocess_run(&env, &pp, &in, &out) != WDC_OK)
				die(&error, "preprocess");
			memcpy(prepared + i * PIXELS, out.pixels, sizeof(float) * PIXELS);
			wdc_image_free(&env, &out);
			run(&env, plan1, prepared + i * PIXELS, means + i * latent, scratch);
		}
		best = fmin(best, now() - t);
	}
	t = best;
	sum = 0;
	for (long i = 0; i < n * (long) latent; i++)
		sum += means[i];
	printf("c_prep_batch1 %.0f %.3f\n", n / t, t);
	printf("checksum c_prep_batch1 %.6f\n", sum);

	/* 4. batch 1 on preprocessed images */
	best = INFINITY;
	for (int r = 0; r < repeat; r++)
	{
		t = now();
		for (long i = 0; i < n; i++)
			run(&env, plan1, prepared + i * PIXELS, means + i * latent, scratch);
		best = fmin(best, now() - t);
	}
	t = best;
	printf("c_batch1 %.0f %.3f\n", n / t, t);

	/* 5. batch 64; the zero padding after the last image fills its group */
	best = INFINITY;
	for (int r = 0; r < repeat; r++)
	{
		t = now();
		for (long i = 0; i < n; i += BATCH)
			run(&env, plan64, prepared + i * PIXELS, means + i * latent, scratch);
		best = fmin(best, now() - t);
	}
	t = best;
	sum = 0;
	for (long i = 0; i < n * (long) latent; i++)
		sum += means[i];
	printf("c_batch64 %.0f %.3f\n", n / t, t);
	printf("checksum c_batch64 %.6f\n", sum);

	wdc_nn_plan_free(&env, plan1);
	wdc_nn_plan_free(&env, plan64);
	wdc_nn_free(&env, model);
	free(onnx);
	free(raw);
	free(prepared);
	free(means);
	free(scratch);
	return 0;
}
