/*
 * nn_load_fuzz.c
 *	  libFuzzer target for the ONNX loader and planner (src/nn).
 *
 * Each input is treated as ONNX model bytes: load, plan for batch 2 and
 * for batch 16, and run each plan on zeros when its work memory is small.  Allocations above
 * 64 MiB fail through the env's allocator hook, as palloc would refuse
 * them in a backend, so hostile sizes exercise the out-of-memory paths
 * instead of exhausting the fuzzer.  Build and run with fuzz/run-nn.
 */
#include "nn/nn.h"

#include <stdlib.h>
#include <string.h>

#define FUZZ_MAX_ALLOC ((size_t) 64 << 20)

static void *
capped_alloc(void *state, size_t size)
{
	return size > FUZZ_MAX_ALLOC ? NULL : malloc(size);
}

static void
plain_free(void *state, void *ptr)
{
	free(ptr);
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Plan model for batch and run the plan on zeros when its memory is small. */
static void
plan_and_run(WdcEnv *env, WdcNnModel *model, int64_t batch)
{
	WdcNnPlan  *plan = NULL;

	if (wdc_nn_plan_create(env, model, batch, &plan) == WDC_OK &&
		wdc_nn_plan_arena_bytes(plan) < FUZZ_MAX_ALLOC)
	{
		int			nin = wdc_nn_input_count(model);
		int			nout = wdc_nn_output_count(model);
		const void **inputs = calloc(nin + 1, sizeof(void *));
		void	  **outputs = calloc(nout + 1, sizeof(void *));
		int			ok = 1;

		/* zero inputs and output buffers sized from the plan */
		for (int i = 0; i < nin && ok; i++)
		{
			size_t		n = wdc_nn_numel(wdc_nn_plan_input(plan, i));

			ok = n < FUZZ_MAX_ALLOC / 8;
			inputs[i] = ok ? calloc(n + 1, 8) : NULL;
		}
		for (int i = 0; i < nout && ok; i++)
		{
			size_t		n = wdc_nn_numel(wdc_nn_plan_output(plan, i));

			ok = n < FUZZ_MAX_ALLOC / 8;
			outputs[i] = ok ? calloc(n + 1, 8) : NULL;
		}
		if (ok)
			wdc_nn_run(env, plan, inputs, outputs);
		for (int i = 0; i < nin; i++)
			free((void *) inputs[i]);
		for (int i = 0; i < nout; i++)
			free(outputs[i]);
		free(inputs);
		free(outputs);
	}
	wdc_nn_plan_free(env, plan);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	WdcError	err;
	WdcEnv		env;
	WdcNnModel *model = NULL;

	wdc_env_init_default(&env, &err);
	env.alloc = capped_alloc;
	env.free = plain_free;
	if (wdc_nn_load(&env, data, size, &model) != WDC_OK)
		return 0;
	plan_and_run(&env, model, 2);
	/* 16 images reach the Winograd kernel and its chunk layout */
	plan_and_run(&env, model, 16);
	wdc_nn_free(&env, model);
	return 0;
}
