/*
 * nn_plan.c
 *	  Plan a loaded model for concrete input shapes.
 *
 * Planning walks the nodes in topological order once:
 *	1. give every input its shape (symbolic dimensions become the batch size)
 *	   and every initializer its data;
 *	2. for each node, let the operator's prepare function check attributes,
 *	   infer output shapes and resolve parameters.  When all its inputs are
 *	   constant, run the kernel right away and keep the result as a
 *	   constant.  This folds the Shape/Gather/Unsqueeze/Concat/Reshape
 *	   chains that exporters emit for dynamic batch sizes.
 *	   BatchNormalization folds itself into a preceding Conv or Gemm, and
 *	   Relu/LeakyRelu into a preceding Conv or Gemm, in their prepare
 *	   functions.  When one output is asked for alone, the steps it does
 *	   not depend on are left out;
 *	3. mark the values that carry tangents when a JVP is requested;
 *	4. compute each remaining buffer's lifetime (first writer, last reader)
 *	   and place buffers in one arena, first fit by offset, so that buffers
 *	   whose lifetimes do not overlap share memory.
 * The arena is allocated once here and reused by every run of the plan.
 */
#include "nn/nn_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NN_ALIGN 64

int64_t
nn_numel(const NnShape *s)
{
	int64_t		n = 1;

	for (int i = 0; i < s->rank; i++)
		n *= s->d[i];
	return n;
}

/* Normalize a possibly negative axis; returns 0 when out of range. */
int
nn_norm_axis(int64_t axis, int rank, int *out)
{
	if (axis < -rank || axis >= rank)
		return 0;
	*out = (int) (axis < 0 ? axis + rank : axis);
	return 1;
}

static const char *
node_name(NnCtx *c)
{
	const char *n = c->step->node->proto->name;

	return (n && n[0]) ? n : "(unnamed)";
}

WdcStatus
nn_unsupported(NnCtx *c, const char *fmt,...)
{
	char		msg[160];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return wdc_error(c->env, WDC_ERR_UNSUPPORTED,
					 "operator \"%s\" (node \"%s\", opset %d): %s is not supported",
					 c->step->op->name, node_name(c), c->opset, msg);
}

WdcStatus
nn_invalid(NnCtx *c, const char *fmt,...)
{
	char		msg[160];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return wdc_error(c->env, WDC_ERR_CORRUPT,
					 "invalid node \"%s\" (%s): %s",
					 node_name(c), c->step->op->name, msg);
}

int
nn_has_in(NnCtx *c, int i)
{
	return i < c->step->n_in && c->step->in[i] >= 0;
}

const NnShape *
nn_in_shape(NnCtx *c, int i)
{
	return &c->plan->vals[c->step->in[i]].shape;
}

int
nn_in_elem(NnCtx *c, int i)
{
	return c->plan->vals[c->step->in[i]].elem;
}

const void *
nn_in_const(NnCtx *c, int i)
{
	if (!nn_has_in(c, i))
		return NULL;
	return c->plan->vals[c->step->in[i]].cdata;
}

/* Check that a shape is within the runtime's limits. */
WdcStatus
nn_check_shape(NnCtx *c, const NnShape *s)
{
	int64_t		n = 1;

	if (s->rank < 0 || s->rank > NN_MAX_RANK)
		return nn_unsupported(c, "rank %d", s->rank);
	for (int i = 0; i < s->rank; i++)
	{
		if (s->d[i] < 0 || s->d[i] > NN_MAX_NUMEL)
			return nn_invalid(c, "dimension %lld out of range",
							  (long long) s->d[i]);
		/* zeros count as one, as in nn_tensor_convert */
		if (__builtin_mul_overflow(n, s->d[i] ? s->d[i] : 1, &n) ||
			n > NN_MAX_NUMEL)
			return wdc_error(c->env, WDC_ERR_LIMIT,
							 "tensor of node \"%s\" (%s) is too large",
							 node_name(c), c->step->op->name);
	}
	return WDC_OK;
}

WdcStatus
nn_set_out(NnCtx *c, int i, const NnShape *shape, int elem)
{
	NnPVal	   *v;
	WdcStatus	st;

	if (i >= c->step->n_out || c->step->out[i] < 0)
		return WDC_OK;			/* optional output not requested */
	st = nn_check_shape(c, shape);
	if (st != WDC_OK)
		return st;
	v = &c->plan->vals[c->step->out[i]];
	v->shape = *shape;
	v->elem = elem;
	v->known = 1;
	return WDC_OK;
}

/* Set an output to a constant computed at plan time (data is copied). */
WdcStatus
nn_set_out_const(NnCtx *c, int i, const NnShape *shape, int elem,
				 const void *data)
{
	NnPVal	   *v;
	size_t		bytes;
	WdcStatus	st = nn_set_out(c, i, shape, elem);

	if (st != WDC_OK || i >= c->step->n_out || c->step->out[i] < 0)
		return st;
	v = &c->plan->vals[c->step->out[i]];
	bytes = (size_t) nn_numel(shape) * nn_elem_size(elem);
	v->cdata = wdc_alloc(c->env, bytes);
	if (v->cdata == NULL)
		return wdc_error(c->env, WDC_ERR_NOMEM, "out of memory planning model");
	v->owned = 1;
	memcpy(v->cdata, data, bytes);
	return WDC_OK;
}

/*
 * Read a constant integer input (int64, or float holding whole numbers) of
 * at most max elements.
 */
WdcStatus
nn_const_ints(NnCtx *c, int i, int64_t *out, int max, int *n)
{
	const NnPVal *v;
	int64_t		cnt;

	if (!nn_has_in(c, i))
		return nn_invalid(c, "input %d is missing", i);
	v = &c->plan->vals[c->step->in[i]];
	cnt = nn_numel(&v->shape);
	if (v->cdata == NULL)
		return nn_unsupported(c, "a non-constant input %d", i);
	if (v->shape.rank > 1 || cnt > max)
		return nn_invalid(c, "input %d must be a vector of at most %d values",
						  i, max);
	for (int64_t j = 0; j < cnt; j++)
		out[j] = v->elem == WDC_NN_INT64 ? ((int64_t *) v->cdata)[j]
			: (int64_t) ((float *) v->cdata)[j];
	*n = (int) cnt;
	return WDC_OK;
}

/* --- arena placement ---------------------------------------------------- */

typedef struct Block
{
	int64_t		offset;
	size_t		size;
	int			first;
	int			last;
} Block;

static int
cmp_block_offset(const void *a, const void *b)
{
	const Block *x = *(const Block *const *) a;
	const Block *y = *(const Block *const *) b;

	return (x->offset > y->offset) - (x->offset < y->offset);
}

/*
 * Place blocks (in the given order) at the lowest offset that does not
 * overlap, in memory, any earlier block whose lifetime intersects its own.
 * Returns the arena size, or SIZE_MAX when out of memory.
 */
static size_t
place_blocks(const WdcEnv *env, Block *blocks, int n)
{
	Block	  **live = wdc_alloc(env, sizeof(Block *) * (n + 1));
	size_t		total = 0;

	if (live == NULL)
		return SIZE_MAX;
	for (int i = 0; i < n; i++)
	{
		Block	   *b = &blocks[i];
		int			nl = 0;
		size_t		at = 0;

		for (int j = 0; j < i; j++)
			if (blocks[j].first <= b->last && b->first <= blocks[j].last)
				live[nl++] = &blocks[j];
		qsort(live, nl, sizeof(Block *), cmp_block_offset);
		for (int j = 0; j < nl; j++)
		{
			if ((size_t) live[j]->offset >= at + b->size)
				break;
			if ((size_t) live[j]->offset + live[j]->size > at)
				at = (size_t) live[j]->offset + live[j]->size;
		}
		b->offset = (int64_t) at;
		if (at + b->size > total)
			total = at + b->size;
	}
	wdc_free(env, live);
	return total;
}

static size_t
round_up(size_t n)
{
	return (n + NN_ALIGN - 1) & ~(size_t) (NN_ALIGN - 1);
}

/*
 * Row runs: depth-first execution of per-image steps.  Executed layer by
 * layer, a batch's activations pass through memory once per layer.  The
 * four convolutions of a 64x64 encoder write 15 MiB for 64 images, far
 * more than a core's L2 cache, so the next layer reads them back from
 * further away.  A run of two or more consecutive steps whose operators
 * have exec_rows instead executes on slices of a few images, each slice
 * through every step of the run (run_common).  Values written and read
 * only inside the run then need one slice of space, reused by every slice,
 * so a slice's activations stay in cache.  Every image is computed by the
 * same arithmetic, so results do not change.
 *
 * Plans with tangents keep layer-by-layer execution: a JVP runs every step
 * on the whole batch and needs full buffers.
 */
#define NN_SLICE_BYTES ((size_t) 2 << 20)	/* activations of one slice */

/* Plan the run of steps first..last (non-skipped ones all have exec_rows). */
static void
plan_one_run(WdcNnPlan *p, int first, int last)
{
	int64_t		batch = -1,
				slice;
	size_t		per_image = 0;

	/* data flows through input 0 only; every other input is constant */
	for (int u = first; u <= last; u++)
	{
		const NnStep *st = &p->steps[u];

		if (st->skip)
			continue;
		if (st->n_out != 1 || st->in[0] < 0 || st->out[0] < 0)
			return;
		for (int i = 1; i < st->n_in; i++)
			if (st->in[i] >= 0 && p->vals[st->in[i]].cdata == NULL)
				return;
		for (int j = 0; j < 2; j++)
		{
			const NnPVal *v = &p->vals[j == 0 ? st->in[0] : st->out[0]];

			if (v->cdata || !v->known || v->shape.rank < 1 ||
				(batch >= 0 && v->shape.d[0] != batch))
				return;
			batch = v->shape.d[0];
		}
		per_image += (size_t) nn_numel(&p->vals[st->out[0]].shape) *
			nn_elem_size(p->vals[st->out[0]].elem) / (size_t) batch;
		if (u == first)
			per_image += (size_t) nn_numel(&p->vals[st->in[0]].shape) *
				nn_elem_size(p->vals[st->in[0]].elem) / (size_t) batch;
	}
	if (batch <= 1 || per_image == 0)
		return;
	slice = (int64_t) (NN_SLICE_BYTES / per_image);
	/* whole chunks of 16 images, which the Winograd kernel needs */
	if (slice > 16)
		slice -= slice % 16;
	if (slice < 1)
		slice = 1;
	if (slice >= batch)
		return;

	/*
	 * A value that the run writes and only the run reads gets one slice of
	 * space.  Every value of the run stays live over the whole run, so none
	 * shares space with another, because a later slice still reads the
	 * run's input after the first step has run on earlier slices.
	 */
	for (int u = first; u <= last; u++)
	{
		const NnStep *st = &p->steps[u];

		if (st->skip)
			continue;
		for (int j = 0; j < 2; j++)
		{
			NnPVal	   *v = &p->vals[j == 0 ? st->in[0] : st->out[0]];

			if (v->first >= first && v->last <= last)
				v->slice_rows = slice;
			if (v->first > first)
				v->first = first;
			if (v->last < last)
				v->last = last;
		}
	}
	p->steps[first].run_end = last + 1;
	p->steps[first].run_slice = slice;
}

/* Find the row runs of a plan without tangents and plan each. */
static void
plan_row_runs(WdcNnPlan *p)
{
	int			s = 0;

	if (p->jvp_k > 0)
		return;
	while (s < p->n_steps)
	{
		int			first = -1,
					last = -1,
					count = 0,
					t;

		for (t = s; t < p->n_steps; t++)
		{
			if (p->steps[t].skip)
				continue;
			if (p->steps[t].op->exec_rows == NULL)
				break;
			if (first < 0)
				first = t;
			last = t;
			count++;
		}
		if (count >= 2)
			plan_one_run(p, first, last);
		s = t + 1;
	}
}

/*
 * Chunk layout between Winograd steps.  A Winograd Conv step transposes
 * its input into chunks of L images (16 with AVX-512, 8 with AVX2),
 * [N / L][C][H][W][L], and its output back.  Where a Conv's output is read only by a Winograd Conv, the
 * value stays in chunk layout: the writer skips its transpose out and the
 * reader its transpose in.  The value keeps its size, but it exists only
 * in whole chunks, so the batch and every row-run slice must be multiples
 * of 16.  A step with few phase channels runs the direct kernel unless it
 * joins such a pair with a step that runs the Winograd kernel anyway.
 * Plans with tangents keep the usual layout, because the JVP reads the
 * forward values element by element.
 */
static void
plan_wino_chains(WdcNnPlan *p)
{
	const WdcNnModel *m = p->model;
	int			changed = 1;

	if (p->jvp_k > 0)
		return;
	for (int s = 0; s < p->n_steps; s++)
		if (!p->steps[s].skip && p->steps[s].run_end > s &&
			p->steps[s].run_slice % 16 != 0)
			return;
	/* a step switched to Winograd can bring in its other neighbour */
	while (changed)
	{
		changed = 0;
		for (int s = 0; s < p->n_steps; s++)
		{
			NnStep	   *st = &p->steps[s];
			NnStep	   *rt = NULL;
			NnConvWino *writer,
					   *reader;
			int			v,
						reads = 0;

			if (st->skip || st->direct == NULL ||
				nn_conv_direct_chain(st->direct, 0) == NULL)
				continue;
			v = st->out[0];
			if (v < 0 || m->values[v].is_output || p->vals[v].shape.rank < 1 ||
				p->vals[v].shape.d[0] % 16 != 0)
				continue;
			for (int t = 0; t < p->n_steps; t++)
			{
				if (p->steps[t].skip)
					continue;
				for (int i = 0; i < p->steps[t].n_in; i++)
					if (p->steps[t].in[i] == v)
					{
						reads++;
						rt = i == 0 ? &p->steps[t] : NULL;
					}
			}
			if (reads != 1 || rt == NULL || rt->direct == NULL ||
				nn_conv_direct_chain(rt->direct, 0) == NULL)
				continue;
			/* at least one side runs the Winograd kernel on its own */
			if (nn_conv_direct_winograd(st->direct) == NULL &&
				nn_conv_direct_winograd(rt->direct) == NULL)
				continue;
			writer = nn_conv_direct_chain(st->direct, 1);
			reader = nn_conv_direct_chain(rt->direct, 1);
			if (nn_conv_wino_chunked(writer) & 2)
				continue;
			nn_conv_wino_set_chunked(writer, -1, 1);
			nn_conv_wino_set_chunked(reader, 1, -1);
			changed = 1;
		}
	}
}

/* Step 4: lifetimes and arena offsets. */
static WdcStatus
plan_arena(const WdcEnv *env, WdcNnPlan *p)
{
	const WdcNnModel *m = p->model;
	int			nv = m->n_values;
	Block	   *blocks = wdc_alloc(env, sizeof(Block) * (2 * nv + 1));
	int		   *owner = wdc_alloc(env, sizeof(int) * (2 * nv + 1));
	int			nb = 0;
	size_t		scratch = 0;
	size_t		total;

	if (!blocks || !owner)
	{
		wdc_free(env, blocks);
		wdc_free(env, owner);
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory planning model");
	}

	/* lifetimes: inputs live from before the first step */
	for (int v = 0; v < nv; v++)
	{
		p->vals[v].first = m->values[v].input >= 0 ? -1 : INT32_MAX;
		p->vals[v].last = -2;
	}
	for (int s = 0; s < p->n_steps; s++)
	{
		NnStep	   *st = &p->steps[s];

		if (st->skip)
			continue;
		for (int i = 0; i < st->n_in; i++)
			if (st->in[i] >= 0)
				p->vals[st->in[i]].last = s;
		for (int i = 0; i < st->n_out; i++)
			if (st->out[i] >= 0 && p->vals[st->out[i]].first > s)
				p->vals[st->out[i]].first = s;
		if (st->scratch + (p->jvp_k ? st->tscratch : 0) > scratch)
			scratch = st->scratch + (p->jvp_k ? st->tscratch : 0);
	}
	for (int i = 0; i < m->n_outputs; i++)
		if (p->only_output < 0 || p->only_output == i)
			p->vals[m->output_value[i]].last = p->n_steps;
	for (int v = 0; v < nv; v++)
	{
		/* an output that no step reads still needs a buffer to be written */
		if (p->vals[v].first != INT32_MAX && p->vals[v].last < p->vals[v].first)
			p->vals[v].last = p->vals[v].first;
	}
	for (int i = 0; i < m->n_inputs; i++)
		if (p->vals[m->input_value[i]].last < -1)
			p->vals[m->input_value[i]].last = -1;
	plan_row_runs(p);
	plan_wino_chains(p);

	/* one block per non-constant buffer, and one for its tangents */
	for (int v = 0; v < nv; v++)
	{
		NnPVal	   *pv = &p->vals[v];

		pv->offset = -1;
		pv->toffset = -1;
		if (pv->cdata || !pv->known || pv->first == INT32_MAX || pv->last < -1)
			continue;
		pv->bytes = (size_t) nn_numel(&pv->shape) * nn_elem_size(pv->elem);
		blocks[nb] = (Block)
		{
			0, round_up(pv->slice_rows ?
						pv->bytes / (size_t) pv->shape.d[0] * (size_t) pv->slice_rows :
						pv->bytes), pv->first, pv->last
		};
		owner[nb++] = v;
		if (pv->tangent)
		{
			size_t		tb;

			if (!wdc_size_mul(pv->bytes, (size_t) p->jvp_k, &tb))
				goto too_big;
			blocks[nb] = (Block)
			{
				0, round_up(tb), pv->first, pv->last
			};
			owner[nb++] = -1 - v;
		}
	}
	total = place_blocks(env, blocks, nb);
	if (total == SIZE_MAX)
	{
		wdc_free(env, blocks);
		wdc_free(env, owner);
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory planning model");
	}
	for (int i = 0; i < nb; i++)
	{
		if (owner[i] >= 0)
			p->vals[owner[i]].offset = blocks[i].offset;
		else
			p->vals[-1 - owner[i]].toffset = blocks[i].offset;
	}
	wdc_free(env, blocks);
	wdc_free(env, owner);

	/* scratch (im2col columns and the like) follows the buffers */
	p->scratch_offset = round_up(total);
	if (!wdc_size_add(p->scratch_offset, round_up(scratch), &p->arena_bytes) ||
		p->arena_bytes > ((size_t) 1 << 42))
		return wdc_error(env, WDC_ERR_LIMIT,
						 "model needs %zu bytes of work memory", p->arena_bytes);
	p->arena = wdc_alloc(env, p->arena_bytes + NN_ALIGN);
	if (p->arena == NULL)
		return wdc_error(env, WDC_ERR_NOMEM,
						 "out of memory allocating %zu bytes of work memory",
						 p->arena_bytes);
	return WDC_OK;

too_big:
	wdc_free(env, blocks);
	wdc_free(env, owner);
	return wdc_error(env, WDC_ERR_LIMIT, "tangent buffers are too large");
}

/*
 * Leave out every step that output `keep` does not depend on, walking the
 * steps backwards from it (steps are in topological order).  An encoder
 * with mean and log-variance heads then computes only the chosen head.
 */
static WdcStatus
prune_steps(const WdcEnv *env, WdcNnPlan *p, int keep)
{
	const WdcNnModel *m = p->model;
	char	   *needed = wdc_alloc0(env, (size_t) m->n_values + 1);

	if (needed == NULL)
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory planning model");
	needed[m->output_value[keep]] = 1;
	for (int s = p->n_steps - 1; s >= 0; s--)
	{
		NnStep	   *st = &p->steps[s];
		int			used = 0;

		if (st->skip)
			continue;
		for (int i = 0; i < st->n_out; i++)
			if (st->out[i] >= 0 && needed[st->out[i]])
				used = 1;
		if (!used)
		{
			st->skip = 1;
			continue;
		}
		for (int i = 0; i < st->n_in; i++)
			if (st->in[i] >= 0)
				needed[st->in[i]] = 1;
	}
	wdc_free(env, needed);
	return WDC_OK;
}

/* Run a step whose inputs are all constant and keep its outputs. */
static WdcStatus
fold_step(NnCtx *c)
{
	NnStep	   *s = c->step;
	NnRun		r;

	memset(&r, 0, sizeof(r));
	r.s = s;
	for (int i = 0; i < s->n_in; i++)
		if (s->in[i] >= 0)
		{
			r.in[i] = c->plan->vals[s->in[i]].cdata;
			r.ish[i] = &c->plan->vals[s->in[i]].shape;
		}
	if (s->scratch)
	{
		r.scratch = wdc_alloc(c->env, s->scratch);
		if (r.scratch == NULL)
			return wdc_error(c->env, WDC_ERR_NOMEM, "out of memory planning model");
	}
	for (int i = 0; i < s->n_out; i++)
	{
		NnPVal	   *v;

		if (s->out[i] < 0)
			continue;
		v = &c->plan->vals[s->out[i]];
		v->cdata = wdc_alloc(c->env,
							 (size_t) nn_numel(&v->shape) * nn_elem_size(v->elem));
		if (v->cdata == NULL)
		{
			wdc_free(c->env, r.scratch);
			return wdc_error(c->env, WDC_ERR_NOMEM, "out of memory planning model");
		}
		v->owned = 1;
		r.out[i] = v->cdata;
		r.osh[i] = &v->shape;
	}
	s->op->exec(&r);
	wdc_free(c->env, r.scratch);
	s->skip = 1;
	return WDC_OK;
}

/* Step 2 for one node. */
static WdcStatus
plan_step(NnCtx *c)
{
	NnStep	   *s = c->step;
	int			all_const = 1;
	WdcStatus	st;

	for (int i = 0; i < s->n_in; i++)
	{
		if (s->in[i] < 0)
		{
			/* only inputs past the operator's minimum count may be omitted */
			if (i < s->op->min_in)
				return nn_invalid(c, "required input %d is empty", i);
			continue;
		}
		if (!c->plan->vals[s->in[i]].known)
			return nn_invalid(c, "input %d has no inferred shape", i);
		if (c->plan->vals[s->in[i]].cdata == NULL)
			all_const = 0;
	}
	st = s->op->prepare(c);
	if (st != WDC_OK)
		return st;
	if (s->skip)
		return WDC_OK;			/* prepare folded or merged it */
	for (int i = 0; i < s->n_out; i++)
		if (s->out[i] >= 0 && !c->plan->vals[s->out[i]].known)
			return wdc_error(c->env, WDC_ERR_INTERNAL,
							 "operator %s left output %d without a shape",
							 s->op->name, i);
	/* Shape and Constant produce constants whatever their input */
	{
		int			outs_const = 1;

		for (int i = 0; i < s->n_out; i++)
			if (s->out[i] >= 0 && c->plan->vals[s->out[i]].cdata == NULL)
				outs_const = 0;
		if (outs_const)
		{
			s->skip = 1;
			return WDC_OK;
		}
	}
	if (all_const)
		return fold_step(c);
	return WDC_OK;
}

/* Step 1: shapes and data of graph inputs. */
static WdcStatus
bind_inputs(const WdcEnv *env, WdcNnPlan *p, const WdcNnPlanOptions *o)
{
	const WdcNnModel *m = p->model;

	for (int i = 0; i < m->n_inputs; i++)
	{
		const WdcNnTensorInfo *mi = &m->inputs[i];
		const WdcNnBinding *b = o->bindings ? &o->bindings[i] : NULL;
		NnPVal	   *v = &p->vals[m->input_value[i]];
		int64_t		n = 1;

		v->elem = mi->elem_type;
		if (b && b->rank >= 0)
		{
			if (b->rank > NN_MAX_RANK)
				return wdc_error(env, WDC_ERR_INVALID,
								 "input \"%s\" has rank %d, more than %d",
								 mi->name, b->rank, NN_MAX_RANK);
			v->shape.rank = b->rank;
			memcpy(v->shape.d, b->dims, sizeof(int64_t) * b->rank);
		}
		else
		{
			v->shape.rank = mi->rank;
			for (int d = 0; d < mi->rank; d++)
				v->shape.d[d] = mi->dims[d] < 0 ? o->batch : mi->dims[d];
		}
		for (int d = 0; d < v->shape.rank; d++)
			if (v->shape.d[d] < 0 ||
				__builtin_mul_overflow(n, v->shape.d[d] ? v->shape.d[d] : 1, &n) ||
				n > NN_MAX_NUMEL)
				return wdc_error(env, WDC_ERR_INVALID,
								 "input \"%s\" has an invalid shape", mi->name);
		v->known = 1;
		if (b && b->data)
		{
			size_t		bytes;

			if (b->elem_type != WDC_NN_FLOAT && b->elem_type != WDC_NN_INT64)
				return wdc_error(env, WDC_ERR_INVALID,
								 "input \"%s\" is bound with element type %d",
								 mi->name, b->elem_type);
			v->elem = b->elem_type;
			bytes = (size_t) nn_numel(&v->shape) * nn_elem_size(v->elem);
			v->cdata = wdc_alloc(env, bytes);
			if (v->cdata == NULL)
				return wdc_error(env, WDC_ERR_NOMEM, "out of memory planning model");
			v->owned = 1;
			memcpy(v->cdata, b->data, bytes);
		}
		p->inputs[i] = *mi;
		p->inputs[i].rank = v->shape.rank;
		p->inputs[i].elem_type = v->elem;
		memcpy(p->inputs[i].dims, v->shape.d, sizeof(int64_t) * v->shape.rank);
	}
	return WDC_OK;
}

/* Step 3: tangent flags. */
static WdcStatus
mark_tangents(const WdcEnv *env, WdcNnPlan *p)
{
	const WdcNnModel *m = p->model;
	NnPVal	   *iv;

	if (p->jvp_input < 0 || p->jvp_input >= m->n_inputs)
		return wdc_error(env, WDC_ERR_INVALID, "JVP input %d does not exist",
						 p->jvp_input);
	iv = &p->vals[m->input_value[p->jvp_input]];
	if (iv->elem != WDC_NN_FLOAT || iv->cdata)
		return wdc_error(env, WDC_ERR_INVALID,
						 "JVP input \"%s\" must be a float input supplied at run time",
						 m->inputs[p->jvp_input].name);
	iv->tangent = 1;
	for (int s = 0; s < p->n_steps; s++)
	{
		NnStep	   *st = &p->steps[s];
		int			any = 0;

		if (st->skip)
			continue;
		for (int i = 0; i < st->n_in; i++)
			if (st->in[i] >= 0 && p->vals[st->in[i]].tangent)
				any = 1;
		if (!any)
			continue;
		if (st->op->jvp == NULL)
		{
			const char *nm = st->node->proto->name;

			return wdc_error(env, WDC_ERR_UNSUPPORTED,
							 "operator \"%s\" (node \"%s\") has no JVP",
							 st->op->name, nm && nm[0] ? nm : "(unnamed)");
		}
		for (int i = 0; i < st->n_out; i++)
			if (st->out[i] >= 0 && p->vals[st->out[i]].elem == WDC_NN_FLOAT)
				p->vals[st->out[i]].tangent = 1;
	}
	return WDC_OK;
}

WdcStatus
wdc_nn_plan_create_ex(const WdcEnv *env, const WdcNnModel *m,
					  const WdcNnPlanOptions *o, WdcNnPlan **plan)
{
	WdcNnPlan  *p;
	WdcNnPlanOptions opts = *o;
	WdcStatus	st;

	/* zero-filled options mean batch 1 */
	if (opts.batch == 0)
		opts.batch = 1;
	o = &opts;
	*plan = NULL;
	if (o->batch < 1 || o->batch > NN_MAX_NUMEL)
		return wdc_error(env, WDC_ERR_INVALID, "batch size %lld is out of range",
						 (long long) o->batch);
	if (o->only_output < 0 || o->only_output > m->n_outputs)
		return wdc_error(env, WDC_ERR_INVALID, "output %d is out of range (1 to %d)",
						 o->only_output, m->n_outputs);
	if (o->jvp_k < 0 || o->jvp_k > 4096)
		return wdc_error(env, WDC_ERR_INVALID,
						 "number of tangent directions %d is out of range (0 to 4096)",
						 o->jvp_k);
	p = wdc_alloc0(env, sizeof(WdcNnPlan));
	if (p == NULL)
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory planning model");
	p->model = m;
	p->jvp_input = o->jvp_input;
	p->jvp_k = o->jvp_k;
	p->only_output = -1;
	p->vals = wdc_alloc0(env, sizeof(NnPVal) * (m->n_values + 1));
	p->steps = wdc_alloc0(env, sizeof(NnStep) * (m->n_nodes + 1));
	p->inputs = wdc_alloc0(env, sizeof(WdcNnTensorInfo) * (m->n_inputs + 1));
	p->outputs = wdc_alloc0(env, sizeof(WdcNnTensorInfo) * (m->n_outputs + 1));
	if (!p->vals || !p->steps || !p->inputs || !p->outputs)
	{
		st = wdc_error(env, WDC_ERR_NOMEM, "out of memory planning model");
		goto fail;
	}

	/* step 1 */
	for (int v = 0; v < m->n_values; v++)
		if (m->values[v].is_init)
		{
			p->vals[v].shape = m->values[v].shape;
			p->vals[v].elem = m->values[v].elem;
			p->vals[v].cdata = m->values[v].data;
			p->vals[v].known = 1;
		}
	st = bind_inputs(env, p, o);
	if (st != WDC_OK)
		goto fail;

	/* step 2 */
	p->n_steps = m->n_nodes;
	for (int i = 0; i < m->n_nodes; i++)
	{
		NnStep	   *s = &p->steps[i];
		const NnNode *nd = &m->nodes[i];
		NnCtx		c = {env, p, s, m->opset};

		s->op = nd->op;
		s->node = nd;
		s->n_in = nd->n_in;
		s->n_out = nd->n_out;
		s->in = wdc_alloc(env, sizeof(int) * (nd->n_in + 1));
		s->out = wdc_alloc(env, sizeof(int) * (nd->n_out + 1));
		if (!s->in || !s->out)
		{
			st = wdc_error(env, WDC_ERR_NOMEM, "out of memory planning model");
			goto fail;
		}
		memcpy(s->in, nd->in, sizeof(int) * nd->n_in);
		memcpy(s->out, nd->out, sizeof(int) * nd->n_out);
		st = plan_step(&c);
		if (st != WDC_OK)
			goto fail;
		if (wdc_interrupted(env))
		{
			st = wdc_error(env, WDC_ERR_CANCELED, "canceling model planning");
			goto fail;
		}
	}

	/* output shapes */
	for (int i = 0; i < m->n_outputs; i++)
	{
		NnPVal	   *v = &p->vals[m->output_value[i]];

		if (!v->known)
		{
			st = wdc_error(env, WDC_ERR_CORRUPT,
						   "graph output \"%s\" has no inferred shape",
						   m->outputs[i].name);
			goto fail;
		}
		p->outputs[i].name = m->outputs[i].name;
		p->outputs[i].elem_type = v->elem;
		p->outputs[i].rank = v->shape.rank;
		memcpy(p->outputs[i].dims, v->shape.d, sizeof(int64_t) * v->shape.rank);
	}

	if (o->only_output > 0)
	{
		p->only_output = o->only_output - 1;
		st = prune_steps(env, p, p->only_output);
		if (st != WDC_OK)
			goto fail;
	}

	/* step 3 */
	if (p->jvp_k > 0)
	{
		st = mark_tangents(env, p);
		if (st != WDC_OK)
			goto fail;
	}

	/* step 4 */
	st = plan_arena(env, p);
	if (st != WDC_OK)
		goto fail;
	*plan = p;
	return WDC_OK;

fail:
	wdc_nn_plan_free(env, p);
	return st;
}

WdcStatus
wdc_nn_plan_create(const WdcEnv *env, const WdcNnModel *model, int64_t batch,
				   WdcNnPlan **plan)
{
	WdcNnPlanOptions o;

	memset(&o, 0, sizeof(o));
	o.batch = batch;
	return wdc_nn_plan_create_ex(env, model, &o, plan);
}

void
wdc_nn_plan_free(const WdcEnv *env, WdcNnPlan *p)
{
	if (p == NULL)
		return;
	if (p->vals)
		for (int v = 0; v < p->model->n_values; v++)
			if (p->vals[v].owned)
				wdc_free(env, p->vals[v].cdata);
	if (p->steps)
		for (int s = 0; s < p->model->n_nodes; s++)
		{
			wdc_free(env, p->steps[s].in);
			wdc_free(env, p->steps[s].out);
			wdc_free(env, p->steps[s].w);
			wdc_free(env, p->steps[s].b);
			wdc_free(env, p->steps[s].direct);
		}
	wdc_free(env, p->vals);
	wdc_free(env, p->steps);
	wdc_free(env, p->inputs);
	wdc_free(env, p->outputs);
	wdc_free(env, p->arena);
	wdc_free(env, p);
}

const WdcNnTensorInfo *
wdc_nn_plan_input(const WdcNnPlan *p, int i)
{
	return (i >= 0 && i < p->model->n_inputs) ? &p->inputs[i] : NULL;
}

const WdcNnTensorInfo *
wdc_nn_plan_output(const WdcNnPlan *p, int i)
{
	return (i >= 0 && i < p->model->n_outputs) ? &p->outputs[i] : NULL;
}

size_t
wdc_nn_numel(const WdcNnTensorInfo *info)
{
	size_t		n = 1;

	for (int i = 0; i < info->rank; i++)
		n *= info->dims[i] < 0 ? 0 : (size_t) info->dims[i];
	return n;
}

size_t
wdc_nn_plan_arena_bytes(const WdcNnPlan *p)
{
	return p->arena_bytes;
}

size_t
wdc_nn_plan_bytes(const WdcNnPlan *p)
{
	size_t		total = p->arena_bytes;

	for (int s = 0; s < p->n_steps; s++)
		if (p->steps[s].direct)
			total += nn_conv_direct_bytes(p->steps[s].direct);
	return total;
}
