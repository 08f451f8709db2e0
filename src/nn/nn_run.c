/*
 * nn_run.c
 *	  Execute a plan: resolve buffers in the arena, run the steps in order,
 *	  optionally carry tangents (forward-mode JVP) alongside.
 *
 * Arithmetic on denormal floats takes a slow microcode path on many x86
 * cores, which can slow convolutions and MLPs by an order of magnitude.  So
 * a run sets the flush-to-zero and denormals-are-zero bits of MXCSR.  It
 * restores the caller's MXCSR before returning, so the rest of the backend
 * keeps IEEE behaviour.
 */
#include "nn/nn_int.h"

#include <string.h>
#include <cblas.h>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define NN_HAVE_MXCSR 1
#endif

/* OpenBLAS's own thread setter; declared here as older cblas.h lacks it. */
extern void openblas_set_num_threads(int num_threads);

void
wdc_nn_init(void)
{
	/*
	 * One BLAS thread: a PostgreSQL backend is a single-threaded process and
	 * parallelism comes from parallel query workers, each with its own
	 * backend.  OpenBLAS threads per backend would oversubscribe the cores
	 * and spin in the background between calls.
	 */
	openblas_set_num_threads(1);
}

/* Set FTZ and DAZ; return the previous control word. */
static unsigned
fp_enter(void)
{
#ifdef NN_HAVE_MXCSR
	unsigned	saved = _mm_getcsr();

	_mm_setcsr(saved | 0x8040);	/* FTZ (bit 15) | DAZ (bit 6) */
	return saved;
#else
	return 0;
#endif
}

static void
fp_leave(unsigned saved)
{
#ifdef NN_HAVE_MXCSR
	/* clear the exception flags raised inside, restore the caller's modes */
	_mm_setcsr(saved);
#else
	(void) saved;
#endif
}

static char *
arena_base(WdcNnPlan *p)
{
	/* align the base to 64 bytes; plan_arena allocated the slack */
	uintptr_t	a = (uintptr_t) p->arena;

	return (char *) ((a + 63) & ~(uintptr_t) 63);
}

/* Point every value at its constant data or arena slot. */
static void
resolve_buffers(WdcNnPlan *p)
{
	char	   *base = arena_base(p);

	for (int v = 0; v < p->model->n_values; v++)
	{
		NnPVal	   *pv = &p->vals[v];

		pv->buf = pv->cdata ? pv->cdata
			: (pv->offset >= 0 ? base + pv->offset : NULL);
		pv->tbuf = pv->toffset >= 0 ? (float *) (base + pv->toffset) : NULL;
	}
}

static void
fill_run(WdcNnPlan *p, const NnStep *s, NnRun *r, int with_tangents)
{
	memset(r, 0, sizeof(*r));
	r->s = s;
	r->scratch = (float *) (arena_base(p) + p->scratch_offset);
	r->k = p->jvp_k;
	for (int i = 0; i < s->n_in; i++)
		if (s->in[i] >= 0)
		{
			NnPVal	   *v = &p->vals[s->in[i]];

			r->in[i] = v->buf;
			r->ish[i] = &v->shape;
			if (with_tangents && v->tangent)
				r->tin[i] = v->tbuf;
		}
	for (int i = 0; i < s->n_out; i++)
		if (s->out[i] >= 0)
		{
			NnPVal	   *v = &p->vals[s->out[i]];

			r->out[i] = v->buf;
			r->osh[i] = &v->shape;
			if (with_tangents && v->tangent)
				r->tout[i] = v->tbuf;
		}
}

/*
 * Execute the row run that starts at step first (see plan_row_runs): each
 * slice of images through every step of the run.  A value with one slice
 * of space is addressed from its first row.
 */
static WdcStatus
run_slices(const WdcEnv *env, WdcNnPlan *p, int first)
{
	const NnStep *head = &p->steps[first];
	int64_t		batch = p->vals[head->in[0]].shape.d[0];

	for (int64_t row0 = 0; row0 < batch; row0 += head->run_slice)
	{
		int64_t		rows = batch - row0 < head->run_slice ?
			batch - row0 : head->run_slice;

		if (wdc_interrupted(env))
			return wdc_error(env, WDC_ERR_CANCELED, "canceling model execution");
		for (int t = first; t < head->run_end; t++)
		{
			const NnStep *st = &p->steps[t];
			NnRun		r;

			if (st->skip)
				continue;
			fill_run(p, st, &r, 0);
			st->op->exec_rows(&r, p->vals[st->in[0]].slice_rows ? 0 : row0,
							  p->vals[st->out[0]].slice_rows ? 0 : row0, rows);
		}
	}
	return WDC_OK;
}

static WdcStatus
run_common(const WdcEnv *env, WdcNnPlan *p, const void *const *inputs,
		   const float *tangent_in, void *const *outputs,
		   float *const *tangent_out)
{
	const WdcNnModel *m = p->model;
	int			jvp = tangent_in != NULL && p->jvp_k > 0;
	unsigned	fpstate;
	WdcStatus	st = WDC_OK;

	resolve_buffers(p);

	/* copy run-time inputs into the arena */
	for (int i = 0; i < m->n_inputs; i++)
	{
		NnPVal	   *v = &p->vals[m->input_value[i]];

		if (v->cdata)
			continue;
		if (inputs == NULL || inputs[i] == NULL)
			return wdc_error(env, WDC_ERR_INVALID,
							 "model input \"%s\" is missing", m->inputs[i].name);
		if (v->buf)
			memcpy(v->buf, inputs[i], v->bytes);
		if (jvp && i == p->jvp_input && v->tbuf)
			memcpy(v->tbuf, tangent_in, v->bytes * p->jvp_k);
	}

	fpstate = fp_enter();
	for (int s = 0; s < p->n_steps; s++)
	{
		const NnStep *step = &p->steps[s];
		NnRun		r;
		int			any_tangent = 0;

		if (step->skip)
			continue;
		if (wdc_interrupted(env))
		{
			st = wdc_error(env, WDC_ERR_CANCELED, "canceling model execution");
			break;
		}
		if (step->run_end > s)
		{
			/* only plans without tangents have row runs */
			st = run_slices(env, p, s);
			if (st != WDC_OK)
				break;
			s = step->run_end - 1;
			continue;
		}
		fill_run(p, step, &r, jvp);
		step->op->exec(&r);
		if (!jvp)
			continue;
		for (int i = 0; i < step->n_in; i++)
			if (r.tin[i])
				any_tangent = 1;
		if (any_tangent)
		{
			r.scratch = (float *) ((char *) r.scratch + step->scratch);
			step->op->jvp(&r);
		}
	}
	fp_leave(fpstate);
	if (st != WDC_OK)
		return st;

	/* copy outputs (and their tangents) out of the arena */
	for (int i = 0; i < m->n_outputs; i++)
	{
		NnPVal	   *v = &p->vals[m->output_value[i]];
		size_t		bytes = (size_t) nn_numel(&v->shape) * nn_elem_size(v->elem);

		if (p->only_output >= 0 && p->only_output != i)
			continue;			/* not computed */
		if (outputs && outputs[i])
			memcpy(outputs[i], v->buf, bytes);
		if (jvp && tangent_out && tangent_out[i] && v->elem == WDC_NN_FLOAT)
		{
			if (v->tangent)
				memcpy(tangent_out[i], v->tbuf, bytes * p->jvp_k);
			else
				memset(tangent_out[i], 0, bytes * p->jvp_k);
		}
	}
	return WDC_OK;
}

WdcStatus
wdc_nn_run(const WdcEnv *env, WdcNnPlan *plan, const void *const *inputs,
		   void *const *outputs)
{
	return run_common(env, plan, inputs, NULL, outputs, NULL);
}

WdcStatus
wdc_nn_run_jvp(const WdcEnv *env, WdcNnPlan *plan, const void *const *inputs,
			   const float *tangent_in, void *const *outputs,
			   float *const *tangent_out)
{
	if (plan->jvp_k <= 0 || tangent_in == NULL)
		return wdc_error(env, WDC_ERR_INVALID,
						 "plan was not created for tangents"),
			wdc_error_hint(env, "Set jvp_k in the plan options.");
	return run_common(env, plan, inputs, tangent_in, outputs, tangent_out);
}
