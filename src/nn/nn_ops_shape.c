/*
 * nn_ops_shape.c
 *	  Operators that move data without arithmetic: Reshape, Flatten,
 *	  Squeeze, Unsqueeze, Identity, Dropout, Transpose, Concat, Split, Slice,
 *	  Gather, Pad, Resize/Upsample, Expand, plus Shape, Constant,
 *	  ConstantOfShape and Cast, which mostly run at plan time inside folded
 *	  shape computations.
 *
 * Kernels work on 4-byte (float) or 8-byte (int64) elements.  Their JVPs
 * apply the same movement to each of the k tangent slices (Pad fills with 0;
 * Resize reuses its interpolation weights).
 */
#include "nn/nn_int.h"

#include <math.h>
#include <string.h>

/* --- plain copies: Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout */

static void
copy_exec(NnRun *r)
{
	size_t		bytes = (size_t) nn_numel(r->ish[0]) *
		nn_elem_size(r->s->p[NN_MAX_PARAMS - 1] ? WDC_NN_INT64 : WDC_NN_FLOAT);

	if (r->out[0] != r->in[0])
		memcpy(r->out[0], r->in[0], bytes);
}

static void
copy_jvp(NnRun *r)
{
	memcpy(r->tout[0], r->tin[0],
		   sizeof(float) * (size_t) nn_numel(r->ish[0]) * r->k);
}

/* Finish a copy operator: remember the element size, set the output. */
static WdcStatus
copy_out(NnCtx *c, const NnShape *out)
{
	if (nn_numel(out) != nn_numel(nn_in_shape(c, 0)))
		return nn_invalid(c, "output has %lld elements, input %lld",
						  (long long) nn_numel(out),
						  (long long) nn_numel(nn_in_shape(c, 0)));
	c->step->p[NN_MAX_PARAMS - 1] = nn_in_elem(c, 0) == WDC_NN_INT64;
	return nn_set_out(c, 0, out, nn_in_elem(c, 0));
}

static WdcStatus
reshape_prepare(NnCtx *c)
{
	const NnShape *x = nn_in_shape(c, 0);
	int64_t		want[NN_MAX_RANK];
	int			n;
	int			allowzero = (int) nn_attr_int(c->step->node, "allowzero", 0);
	int			infer = -1;
	int64_t		known = 1;
	NnShape		out;

	if (c->opset < 5)
	{
		const int64_t *v = nn_attr_ints(c->step->node, "shape", &n);

		if (v == NULL || n > NN_MAX_RANK)
			return nn_invalid(c, "shape attribute missing or too long");
		memcpy(want, v, sizeof(int64_t) * n);
	}
	else
	{
		WdcStatus	st = nn_const_ints(c, 1, want, NN_MAX_RANK, &n);

		if (st != WDC_OK)
			return st;
		c->step->n_in = 1;
	}
	out.rank = n;
	for (int i = 0; i < n; i++)
	{
		if (want[i] == -1)
		{
			if (infer >= 0)
				return nn_invalid(c, "more than one -1 in the shape");
			infer = i;
			continue;
		}
		if (want[i] == 0 && !allowzero)
		{
			if (i >= x->rank)
				return nn_invalid(c, "0 refers to a missing input dimension");
			out.d[i] = x->d[i];
		}
		else if (want[i] < 0)
			return nn_invalid(c, "negative dimension %lld", (long long) want[i]);
		else
			out.d[i] = want[i];
		if (__builtin_mul_overflow(known, out.d[i], &known) || known > NN_MAX_NUMEL)
			return nn_invalid(c, "shape too large");
	}
	if (infer >= 0)
	{
		if (known == 0 || nn_numel(x) % known != 0)
			return nn_invalid(c, "cannot infer the -1 dimension");
		out.d[infer] = nn_numel(x) / known;
	}
	return copy_out(c, &out);
}

static WdcStatus
flatten_prepare(NnCtx *c)
{
	const NnShape *x = nn_in_shape(c, 0);
	int64_t		axis = nn_attr_int(c->step->node, "axis", 1);
	NnShape		out;

	if (axis < 0)
		axis += x->rank;
	if (axis < 0 || axis > x->rank)
		return nn_invalid(c, "axis out of range");
	out.rank = 2;
	out.d[0] = 1;
	out.d[1] = 1;
	for (int i = 0; i < x->rank; i++)
		out.d[i < axis ? 0 : 1] *= x->d[i];
	return copy_out(c, &out);
}

/* Axes of Squeeze/Unsqueeze: attribute before opset 13, input from 13. */
static WdcStatus
read_axes(NnCtx *c, int64_t *axes, int *n)
{
	if (c->opset >= 13)
	{
		WdcStatus	st;

		*n = 0;
		if (!nn_has_in(c, 1))
			return WDC_OK;
		st = nn_const_ints(c, 1, axes, NN_MAX_RANK, n);
		c->step->n_in = 1;
		return st;
	}
	else
	{
		const int64_t *v = nn_attr_ints(c->step->node, "axes", n);

		if (*n > NN_MAX_RANK)
			return nn_invalid(c, "too many axes");
		if (v)
			memcpy(axes, v, sizeof(int64_t) * *n);
		if (*n < 0)
			*n = 0;
		return WDC_OK;
	}
}

static WdcStatus
squeeze_prepare(NnCtx *c)
{
	const NnShape *x = nn_in_shape(c, 0);
	int64_t		axes[NN_MAX_RANK];
	int			n;
	int			drop[NN_MAX_RANK] = {0};
	NnShape		out;
	WdcStatus	st = read_axes(c, axes, &n);

	if (st != WDC_OK)
		return st;
	for (int i = 0; i < n; i++)
	{
		int			a;

		if (!nn_norm_axis(axes[i], x->rank, &a) || x->d[a] != 1)
			return nn_invalid(c, "axis %lld is not a dimension of size 1",
							  (long long) axes[i]);
		drop[a] = 1;
	}
	out.rank = 0;
	for (int i = 0; i < x->rank; i++)
		if (!(n == 0 ? x->d[i] == 1 : drop[i]))
			out.d[out.rank++] = x->d[i];
	return copy_out(c, &out);
}

static WdcStatus
unsqueeze_prepare(NnCtx *c)
{
	const NnShape *x = nn_in_shape(c, 0);
	int64_t		axes[NN_MAX_RANK];
	int			n;
	int			ins[NN_MAX_RANK] = {0};
	NnShape		out;
	WdcStatus	st = read_axes(c, axes, &n);

	if (st != WDC_OK)
		return st;
	out.rank = x->rank + n;
	if (n == 0 || out.rank > NN_MAX_RANK)
		return nn_invalid(c, "axes missing or result rank above %d", NN_MAX_RANK);
	for (int i = 0; i < n; i++)
	{
		int			a;

		if (!nn_norm_axis(axes[i], out.rank, &a) || ins[a])
			return nn_invalid(c, "axis %lld out of range or repeated",
							  (long long) axes[i]);
		ins[a] = 1;
	}
	for (int i = 0, j = 0; i < out.rank; i++)
		out.d[i] = ins[i] ? 1 : x->d[j++];
	return copy_out(c, &out);
}

static WdcStatus
identity_prepare(NnCtx *c)
{
	return copy_out(c, nn_in_shape(c, 0));
}

static WdcStatus
dropout_prepare(NnCtx *c)
{
	/* inference: the identity; a requested mask is not produced */
	if (c->step->n_out > 1 && c->step->out[1] >= 0)
		return nn_unsupported(c, "the mask output");
	if (nn_has_in(c, 2))
	{
		const void *t = nn_in_const(c, 2);

		if (t == NULL || nn_numel(nn_in_shape(c, 2)) != 1 ||
			(nn_in_elem(c, 2) == WDC_NN_INT64 ? *(const int64_t *) t != 0
			 : *(const float *) t != 0))
			return nn_unsupported(c, "training mode");
	}
	if (nn_attr_int(c->step->node, "is_test", 1) == 0 && c->opset < 7)
		return nn_unsupported(c, "training mode");
	c->step->n_in = 1;
	return copy_out(c, nn_in_shape(c, 0));
}

/* --- Transpose ------------------------------------------------------------ */

/*
 * Strided copy shared by Transpose, Slice and Expand: out element (i0..ir) reads
 * in[base + sum i_d * stride_d].  p[0] rank, p[1] base, p[2..9] out dims,
 * p[10..17] strides, p[47] int64 flag.
 */
static void
strided_copy(const int64_t *p, const void *in, void *out, int64_t total,
			 size_t es)
{
	int			rank = (int) p[0];
	int64_t		idx[NN_MAX_RANK] = {0};
	int64_t		off = p[1];

	for (int64_t o = 0; o < total; o++)
	{
		memcpy((char *) out + o * es, (const char *) in + off * es, es);
		for (int q = rank - 1; q >= 0; q--)
		{
			off += p[10 + q];
			if (++idx[q] < p[2 + q])
				break;
			off -= p[10 + q] * p[2 + q];
			idx[q] = 0;
		}
	}
}

static void
strided_exec(NnRun *r)
{
	strided_copy(r->s->p, r->in[0], r->out[0], nn_numel(r->osh[0]),
				 nn_elem_size(r->s->p[NN_MAX_PARAMS - 1] ? WDC_NN_INT64 : WDC_NN_FLOAT));
}

static void
strided_jvp(NnRun *r)
{
	int64_t		ni = nn_numel(r->ish[0]),
				no = nn_numel(r->osh[0]);

	for (int j = 0; j < r->k; j++)
		strided_copy(r->s->p, r->tin[0] + j * ni, r->tout[0] + j * no, no,
					 sizeof(float));
}

static WdcStatus
transpose_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	const NnShape *x = nn_in_shape(c, 0);
	int			n;
	const int64_t *perm = nn_attr_ints(s->node, "perm", &n);
	int64_t		stride[NN_MAX_RANK];
	int			used[NN_MAX_RANK] = {0};
	NnShape		out;

	if (perm && n != x->rank)
		return nn_invalid(c, "perm has %d entries for rank %d", n, x->rank);
	stride[x->rank - 1 < 0 ? 0 : x->rank - 1] = 1;
	for (int i = x->rank - 2; i >= 0; i--)
		stride[i] = stride[i + 1] * x->d[i + 1];
	out.rank = x->rank;
	s->p[0] = x->rank;
	s->p[1] = 0;
	for (int i = 0; i < x->rank; i++)
	{
		int64_t		a = perm ? perm[i] : x->rank - 1 - i;

		if (a < 0 || a >= x->rank || used[a])
			return nn_invalid(c, "perm is not a permutation");
		used[a] = 1;
		out.d[i] = x->d[a];
		s->p[2 + i] = x->d[a];
		s->p[10 + i] = stride[a];
	}
	s->p[NN_MAX_PARAMS - 1] = nn_in_elem(c, 0) == WDC_NN_INT64;
	return nn_set_out(c, 0, &out, nn_in_elem(c, 0));
}

/* --- Expand ----------------------------------------------------------------- */

/* Broadcast the input to a constant shape, numpy style, as a strided copy. */
static WdcStatus
expand_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	const NnShape *x = nn_in_shape(c, 0);
	int64_t		want[NN_MAX_RANK];
	int			n;
	NnShape		out;
	int64_t		stride = 1;
	WdcStatus	st = nn_const_ints(c, 1, want, NN_MAX_RANK, &n);

	if (st != WDC_OK)
		return st;
	s->n_in = 1;
	out.rank = n > x->rank ? n : x->rank;
	for (int i = 0; i < out.rank; i++)
	{
		int			ix = i - (out.rank - x->rank),
					iw = i - (out.rank - n);
		int64_t		dx = ix >= 0 ? x->d[ix] : 1,
					dw = iw >= 0 ? want[iw] : 1;

		if (dw < 0 || (dx != dw && dx != 1 && dw != 1))
			return nn_invalid(c, "cannot expand dimension %lld to %lld",
							  (long long) dx, (long long) dw);
		out.d[i] = dx == 1 ? dw : dx;
	}
	st = nn_set_out(c, 0, &out, nn_in_elem(c, 0));
	if (st != WDC_OK)
		return st;

	/* strided_copy layout: stretched dimensions get stride 0 */
	s->p[0] = out.rank;
	s->p[1] = 0;
	for (int i = out.rank - 1; i >= 0; i--)
	{
		int			ix = i - (out.rank - x->rank);
		int64_t		dx = ix >= 0 ? x->d[ix] : 1;

		s->p[2 + i] = out.d[i];
		s->p[10 + i] = dx == 1 ? 0 : stride;
		stride *= dx;
	}
	s->p[NN_MAX_PARAMS - 1] = nn_in_elem(c, 0) == WDC_NN_INT64;
	return WDC_OK;
}

/* --- Slice ------------------------------------------------------------------ */

static WdcStatus
slice_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	const NnShape *x = nn_in_shape(c, 0);
	int64_t		starts[NN_MAX_RANK],
				ends[NN_MAX_RANK],
				axes[NN_MAX_RANK],
				steps[NN_MAX_RANK];
	int			n,
				ne,
				na,
				ns;
	int64_t		stride[NN_MAX_RANK];
	int64_t		st_d[NN_MAX_RANK],
				step_d[NN_MAX_RANK];
	int			seen[NN_MAX_RANK] = {0};
	NnShape		out = *x;
	WdcStatus	st;

	/* starts, ends, axes, steps: attributes before opset 10, inputs after */
	if (c->opset < 10)
	{
		const int64_t *v;

		v = nn_attr_ints(s->node, "starts", &n);
		if (v == NULL || n > NN_MAX_RANK)
			return nn_invalid(c, "starts missing");
		memcpy(starts, v, sizeof(int64_t) * n);
		v = nn_attr_ints(s->node, "ends", &ne);
		if (v == NULL || ne != n)
			return nn_invalid(c, "ends missing");
		memcpy(ends, v, sizeof(int64_t) * n);
		v = nn_attr_ints(s->node, "axes", &na);
		if (v && na != n)
			return nn_invalid(c, "axes and starts differ in length");
		for (int i = 0; i < n; i++)
			axes[i] = v ? v[i] : i;
		for (int i = 0; i < n; i++)
			steps[i] = 1;
	}
	else
	{
		if ((st = nn_const_ints(c, 1, starts, NN_MAX_RANK, &n)) != WDC_OK ||
			(st = nn_const_ints(c, 2, ends, NN_MAX_RANK, &ne)) != WDC_OK)
			return st;
		if (ne != n)
			return nn_invalid(c, "starts and ends differ in length");
		if (nn_has_in(c, 3))
		{
			if ((st = nn_const_ints(c, 3, axes, NN_MAX_RANK, &na)) != WDC_OK)
				return st;
			if (na != n)
				return nn_invalid(c, "axes and starts differ in length");
		}
		else
			for (int i = 0; i < n; i++)
				axes[i] = i;
		if (nn_has_in(c, 4))
		{
			if ((st = nn_const_ints(c, 4, steps, NN_MAX_RANK, &ns)) != WDC_OK)
				return st;
			if (ns != n)
				return nn_invalid(c, "steps and starts differ in length");
		}
		else
			for (int i = 0; i < n; i++)
				steps[i] = 1;
		s->n_in = 1;
	}

	for (int i = 0; i < x->rank; i++)
	{
		st_d[i] = 0;
		step_d[i] = 1;
	}
	for (int i = 0; i < n; i++)
	{
		int			a;
		int64_t		dim,
					b,
					e,
					cnt;

		if (!nn_norm_axis(axes[i], x->rank, &a) || seen[a])
			return nn_invalid(c, "axis %lld out of range or repeated",
							  (long long) axes[i]);
		seen[a] = 1;
		dim = x->d[a];
		if (steps[i] == 0 || steps[i] < -NN_MAX_NUMEL || steps[i] > NN_MAX_NUMEL)
			return nn_invalid(c, "step out of range");
		/* clamp as numpy does, after counting negatives from the end */
		b = starts[i] < -NN_MAX_NUMEL ? -NN_MAX_NUMEL :
			starts[i] > NN_MAX_NUMEL ? NN_MAX_NUMEL : starts[i];
		e = ends[i] < -NN_MAX_NUMEL ? -NN_MAX_NUMEL :
			ends[i] > NN_MAX_NUMEL ? NN_MAX_NUMEL : ends[i];
		if (b < 0)
			b += dim;
		if (e < 0)
			e += dim;
		if (steps[i] > 0)
		{
			b = b < 0 ? 0 : (b > dim ? dim : b);
			e = e < 0 ? 0 : (e > dim ? dim : e);
			cnt = e > b ? (e - b + steps[i] - 1) / steps[i] : 0;
		}
		else
		{
			b = b < 0 ? -1 : (b > dim - 1 ? dim - 1 : b);
			e = e < -1 ? -1 : (e > dim - 1 ? dim - 1 : e);
			cnt = b > e ? (b - e + (-steps[i]) - 1) / (-steps[i]) : 0;
		}
		out.d[a] = cnt;
		st_d[a] = cnt > 0 ? b : 0;
		step_d[a] = steps[i];
	}

	stride[x->rank - 1 < 0 ? 0 : x->rank - 1] = 1;
	for (int i = x->rank - 2; i >= 0; i--)
		stride[i] = stride[i + 1] * x->d[i + 1];
	s->p[0] = x->rank;
	s->p[1] = 0;
	for (int i = 0; i < x->rank; i++)
	{
		s->p[1] += st_d[i] * stride[i];
		s->p[2 + i] = out.d[i];
		s->p[10 + i] = step_d[i] * stride[i];
	}
	s->p[NN_MAX_PARAMS - 1] = nn_in_elem(c, 0) == WDC_NN_INT64;
	return nn_set_out(c, 0, &out, nn_in_elem(c, 0));
}

/* --- Concat and Split ------------------------------------------------------ */

static WdcStatus
concat_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	const NnShape *x0 = nn_in_shape(c, 0);
	int			axis;
	NnShape		out = *x0;
	int64_t		inner = 1;

	if (!nn_norm_axis(nn_attr_int(s->node, "axis", c->opset < 4 ? 1 : 0),
					  x0->rank, &axis))
		return nn_invalid(c, "axis out of range");
	out.d[axis] = 0;
	for (int i = 0; i < s->n_in; i++)
	{
		const NnShape *xi;

		if (!nn_has_in(c, i))
			return nn_invalid(c, "input %d is empty", i);
		xi = nn_in_shape(c, i);
		if (xi->rank != x0->rank || nn_in_elem(c, i) != nn_in_elem(c, 0))
			return nn_invalid(c, "inputs differ in rank or type");
		for (int d = 0; d < x0->rank; d++)
			if (d != axis && xi->d[d] != x0->d[d])
				return nn_invalid(c, "inputs differ outside the axis");
		out.d[axis] += xi->d[axis];
		if (out.d[axis] > NN_MAX_NUMEL)
			return nn_invalid(c, "result too large");
	}
	for (int d = axis + 1; d < x0->rank; d++)
		inner *= x0->d[d];
	s->p[0] = axis;
	s->p[1] = inner;
	s->p[NN_MAX_PARAMS - 1] = nn_in_elem(c, 0) == WDC_NN_INT64;
	return nn_set_out(c, 0, &out, nn_in_elem(c, 0));
}

/*
 * Concat (split = 0) or Split (split = 1) along p[0]: each outer index
 * joins or cuts the blocks of d_i[axis] * inner elements.
 */
static void
concat_apply(const NnStep *s, const NnShape *const *parts, void *const *bufs,
			 int nparts, void *whole, const NnShape *wshape, size_t es,
			 int split)
{
	int			axis = (int) s->p[0];
	int64_t		inner = s->p[1];
	int64_t		outer = 1;
	int64_t		row = wshape->d[axis] * inner;

	for (int d = 0; d < axis; d++)
		outer *= wshape->d[d];
	for (int64_t o = 0; o < outer; o++)
	{
		int64_t		at = 0;

		for (int i = 0; i < nparts; i++)
		{
			int64_t		len = parts[i]->d[axis] * inner;
			char	   *w = (char *) whole + (o * row + at) * es;
			char	   *pbuf = (char *) bufs[i] + o * len * es;

			if (bufs[i] != NULL)
			{
				if (split)
					memcpy(pbuf, w, len * es);
				else
					memcpy(w, pbuf, len * es);
			}
			at += len;
		}
	}
}

static void
concat_exec(NnRun *r)
{
	size_t		es = r->s->p[NN_MAX_PARAMS - 1] ? 8 : 4;

	concat_apply(r->s, r->ish, r->in, r->s->n_in, r->out[0], r->osh[0], es, 0);
}

static void
concat_jvp(NnRun *r)
{
	int64_t		no = nn_numel(r->osh[0]);
	float	   *zeros = r->scratch;

	for (int i = 0; i < r->s->n_in; i++)
		if (r->tin[i] == NULL)
			memset(zeros, 0, sizeof(float) * nn_numel(r->ish[i]));
	for (int j = 0; j < r->k; j++)
	{
		void	   *parts[16];

		/* inputs without a tangent contribute zeros */
		for (int i = 0; i < r->s->n_in; i++)
		{
			int64_t		ni = nn_numel(r->ish[i]);

			parts[i] = r->tin[i] ? r->tin[i] + j * ni : zeros;
		}
		concat_apply(r->s, r->ish, parts, r->s->n_in, r->tout[0] + j * no,
					 r->osh[0], sizeof(float), 0);
	}
}

static WdcStatus
concat_prepare_jvp(NnCtx *c)
{
	WdcStatus	st = concat_prepare(c);
	int64_t		maxn = 0;

	if (st != WDC_OK)
		return st;
	for (int i = 0; i < c->step->n_in; i++)
		if (nn_numel(nn_in_shape(c, i)) > maxn)
			maxn = nn_numel(nn_in_shape(c, i));
	/* a zero block for inputs that carry no tangent (see concat_jvp) */
	c->step->tscratch = (size_t) maxn * sizeof(float);
	return WDC_OK;
}

static WdcStatus
split_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	const NnShape *x = nn_in_shape(c, 0);
	int			axis;
	int64_t		sizes[16];
	int			n = 0;
	int64_t		inner = 1,
				sum = 0;

	if (!nn_norm_axis(nn_attr_int(s->node, "axis", 0), x->rank, &axis))
		return nn_invalid(c, "axis out of range");
	if (c->opset >= 13 && nn_has_in(c, 1))
	{
		WdcStatus	st = nn_const_ints(c, 1, sizes, 16, &n);

		if (st != WDC_OK)
			return st;
	}
	else if (c->opset < 13)
	{
		const int64_t *v = nn_attr_ints(s->node, "split", &n);

		if (n > 16)
			return nn_invalid(c, "too many parts");
		if (v)
			memcpy(sizes, v, sizeof(int64_t) * n);
		else
			n = 0;
	}
	s->n_in = 1;
	if (n == 0)
	{
		/* equal parts, the last one smaller if needed (num_outputs) */
		int64_t		parts = s->n_out;
		int64_t		each = (x->d[axis] + parts - 1) / parts;

		for (int i = 0; i < parts; i++)
		{
			sizes[i] = x->d[axis] - i * each < each ? x->d[axis] - i * each : each;
			if (sizes[i] < 0)
				sizes[i] = 0;
		}
		n = (int) parts;
		if (c->opset < 18 && x->d[axis] % parts != 0)
			return nn_invalid(c, "dimension %lld does not split into %lld parts",
							  (long long) x->d[axis], (long long) parts);
	}
	if (n != s->n_out)
		return nn_invalid(c, "%d sizes for %d outputs", n, s->n_out);
	for (int i = 0; i < n; i++)
	{
		NnShape		o = *x;
		WdcStatus	st;

		if (sizes[i] < 0)
			return nn_invalid(c, "negative part size");
		sum += sizes[i];
		o.d[axis] = sizes[i];
		st = nn_set_out(c, i, &o, nn_in_elem(c, 0));
		if (st != WDC_OK)
			return st;
	}
	if (sum != x->d[axis])
		return nn_invalid(c, "part sizes add up to %lld, not %lld",
						  (long long) sum, (long long) x->d[axis]);
	for (int d = axis + 1; d < x->rank; d++)
		inner *= x->d[d];
	s->p[0] = axis;
	s->p[1] = inner;
	s->p[NN_MAX_PARAMS - 1] = nn_in_elem(c, 0) == WDC_NN_INT64;
	return WDC_OK;
}

static void
split_exec(NnRun *r)
{
	size_t		es = r->s->p[NN_MAX_PARAMS - 1] ? 8 : 4;

	concat_apply(r->s, r->osh, r->out, r->s->n_out, r->in[0], r->ish[0], es, 1);
}

static void
split_jvp(NnRun *r)
{
	int64_t		ni = nn_numel(r->ish[0]);

	for (int j = 0; j < r->k; j++)
	{
		void	   *parts[8] = {0};

		for (int i = 0; i < r->s->n_out; i++)
			if (r->tout[i])
				parts[i] = r->tout[i] + j * nn_numel(r->osh[i]);
		concat_apply(r->s, r->osh, parts, r->s->n_out, r->tin[0] + j * ni,
					 r->ish[0], sizeof(float), 1);
	}
}

/* --- Gather (constant indices) --------------------------------------------- */

static WdcStatus
gather_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	const NnShape *x = nn_in_shape(c, 0);
	const NnShape *is = nn_in_shape(c, 1);
	const int64_t *idx = nn_in_const(c, 1);
	int			axis;
	NnShape		out;
	int64_t		inner = 1;

	if (!nn_norm_axis(nn_attr_int(s->node, "axis", 0), x->rank, &axis))
		return nn_invalid(c, "axis out of range");
	if (idx == NULL)
		return nn_unsupported(c, "non-constant indices");
	if (nn_in_elem(c, 1) != WDC_NN_INT64)
		return nn_invalid(c, "indices must be integers");
	if (x->rank - 1 + is->rank > NN_MAX_RANK)
		return nn_unsupported(c, "result rank above %d", NN_MAX_RANK);
	for (int64_t i = 0; i < nn_numel(is); i++)
		if (idx[i] < -x->d[axis] || idx[i] >= x->d[axis])
			return nn_invalid(c, "index %lld out of range for dimension %lld",
							  (long long) idx[i], (long long) x->d[axis]);
	out.rank = 0;
	for (int i = 0; i < axis; i++)
		out.d[out.rank++] = x->d[i];
	for (int i = 0; i < is->rank; i++)
		out.d[out.rank++] = is->d[i];
	for (int i = axis + 1; i < x->rank; i++)
	{
		out.d[out.rank++] = x->d[i];
		inner *= x->d[i];
	}
	s->p[0] = axis;
	s->p[1] = inner;
	s->p[2] = x->d[axis];
	s->p[3] = nn_numel(is);
	s->p[NN_MAX_PARAMS - 1] = nn_in_elem(c, 0) == WDC_NN_INT64;
	return nn_set_out(c, 0, &out, nn_in_elem(c, 0));
}

static void
gather_apply(const NnStep *s, const int64_t *idx, const void *x, void *y,
			 int64_t outer, size_t es)
{
	int64_t		inner = s->p[1],
				dim = s->p[2],
				ni = s->p[3];

	for (int64_t o = 0; o < outer; o++)
		for (int64_t i = 0; i < ni; i++)
		{
			int64_t		k = idx[i] < 0 ? idx[i] + dim : idx[i];

			memcpy((char *) y + ((o * ni + i) * inner) * es,
				   (const char *) x + ((o * dim + k) * inner) * es, inner * es);
		}
}

static int64_t
gather_outer(const NnStep *s, const NnShape *x)
{
	int64_t		outer = 1;

	for (int i = 0; i < s->p[0]; i++)
		outer *= x->d[i];
	return outer;
}

static void
gather_exec(NnRun *r)
{
	gather_apply(r->s, r->in[1], r->in[0], r->out[0], gather_outer(r->s, r->ish[0]),
				 r->s->p[NN_MAX_PARAMS - 1] ? 8 : 4);
}

static void
gather_jvp(NnRun *r)
{
	int64_t		ni = nn_numel(r->ish[0]),
				no = nn_numel(r->osh[0]);

	for (int j = 0; j < r->k; j++)
		gather_apply(r->s, r->in[1], r->tin[0] + j * ni, r->tout[0] + j * no,
					 gather_outer(r->s, r->ish[0]), sizeof(float));
}

/* --- Shape, Constant, Cast ------------------------------------------------ */

static WdcStatus
shape_prepare(NnCtx *c)
{
	const NnShape *x = nn_in_shape(c, 0);
	int64_t		start = nn_attr_int(c->step->node, "start", 0);
	int64_t		end = nn_attr_int(c->step->node, "end", x->rank);
	NnShape		out;

	/* opset 15 start/end, clamped like Slice */
	if (start < 0)
		start += x->rank;
	if (end < 0)
		end += x->rank;
	start = start < 0 ? 0 : (start > x->rank ? x->rank : start);
	end = end < 0 ? 0 : (end > x->rank ? x->rank : end);
	out.rank = 1;
	out.d[0] = end > start ? end - start : 0;
	return nn_set_out_const(c, 0, &out, WDC_NN_INT64, x->d + start);
}

static WdcStatus
constant_prepare(NnCtx *c)
{
	const NnNode *nd = c->step->node;
	const Onnx__AttributeProto *a;

	if ((a = nn_attr(nd, "value")) != NULL && a->t)
	{
		int			elem;
		NnShape		shape;
		void	   *data;
		WdcStatus	st = nn_tensor_convert(c->env, a->t, &elem, &shape, &data);

		if (st != WDC_OK)
			return st;
		st = nn_set_out_const(c, 0, &shape, elem, data);
		wdc_free(c->env, data);
		return st;
	}
	if ((a = nn_attr(nd, "value_float")) != NULL && a->has_f)
	{
		NnShape		shape = {0};

		return nn_set_out_const(c, 0, &shape, WDC_NN_FLOAT, &a->f);
	}
	if ((a = nn_attr(nd, "value_int")) != NULL && a->has_i)
	{
		NnShape		shape = {0};

		return nn_set_out_const(c, 0, &shape, WDC_NN_INT64, &a->i);
	}
	if ((a = nn_attr(nd, "value_floats")) != NULL)
	{
		NnShape		shape = {1, {(int64_t) a->n_floats}};

		return nn_set_out_const(c, 0, &shape, WDC_NN_FLOAT, a->floats);
	}
	if ((a = nn_attr(nd, "value_ints")) != NULL)
	{
		NnShape		shape = {1, {(int64_t) a->n_ints}};

		return nn_set_out_const(c, 0, &shape, WDC_NN_INT64, a->ints);
	}
	return nn_unsupported(c, "a value attribute other than value, value_float(s) or value_int(s)");
}

/* ConstantOfShape: a constant tensor of the given shape filled with value. */
static WdcStatus
constant_of_shape_prepare(NnCtx *c)
{
	const Onnx__AttributeProto *a = nn_attr(c->step->node, "value");
	int64_t		dims[NN_MAX_RANK];
	int			n;
	int			elem = WDC_NN_FLOAT;
	void	   *fill = NULL;
	NnShape		shape,
				fshape;
	void	   *data;
	int64_t		count;
	size_t		es;
	WdcStatus	st = nn_const_ints(c, 0, dims, NN_MAX_RANK, &n);

	if (st != WDC_OK)
		return st;
	shape.rank = n;
	memcpy(shape.d, dims, sizeof(int64_t) * n);
	st = nn_check_shape(c, &shape);
	if (st != WDC_OK)
		return st;
	if (a && a->t)
	{
		st = nn_tensor_convert(c->env, a->t, &elem, &fshape, &fill);
		if (st != WDC_OK)
			return st;
		if (nn_numel(&fshape) != 1)
		{
			wdc_free(c->env, fill);
			return nn_invalid(c, "value must have one element");
		}
	}

	/* build the filled tensor, then hand it over as the constant output */
	count = nn_numel(&shape);
	es = nn_elem_size(elem);
	data = wdc_alloc0(c->env, (size_t) count * es);
	if (data == NULL)
	{
		wdc_free(c->env, fill);
		return wdc_error(c->env, WDC_ERR_NOMEM, "out of memory planning model");
	}
	for (int64_t i = 0; fill && i < count; i++)
		memcpy((char *) data + i * es, fill, es);
	st = nn_set_out_const(c, 0, &shape, elem, data);
	wdc_free(c->env, data);
	wdc_free(c->env, fill);
	return st;
}

static WdcStatus
cast_prepare(NnCtx *c)
{
	int64_t		to = nn_attr_int(c->step->node, "to", 0);
	int			elem;

	switch (to)
	{
		case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
			elem = WDC_NN_FLOAT;
			break;
		case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
		case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
			elem = WDC_NN_INT64;
			break;
		default:
			return nn_unsupported(c, "cast to type %lld", (long long) to);
	}
	c->step->p[0] = nn_in_elem(c, 0);
	c->step->p[1] = elem;
	c->step->p[2] = to == ONNX__TENSOR_PROTO__DATA_TYPE__INT32;
	return nn_set_out(c, 0, nn_in_shape(c, 0), elem);
}

static void
cast_exec(NnRun *r)
{
	int64_t		n = nn_numel(r->ish[0]);
	int			from = (int) r->s->p[0],
				to = (int) r->s->p[1];

	for (int64_t i = 0; i < n; i++)
	{
		if (from == WDC_NN_FLOAT && to == WDC_NN_FLOAT)
			((float *) r->out[0])[i] = ((const float *) r->in[0])[i];
		else if (from == WDC_NN_INT64 && to == WDC_NN_INT64)
		{
			int64_t		v = ((const int64_t *) r->in[0])[i];

			((int64_t *) r->out[0])[i] = r->s->p[2] ? (int32_t) v : v;
		}
		else if (from == WDC_NN_INT64)
			((float *) r->out[0])[i] = (float) ((const int64_t *) r->in[0])[i];
		else
		{
			/* float to integer truncates toward zero; NaN and overflow give 0 */
			float		f = ((const float *) r->in[0])[i];

			((int64_t *) r->out[0])[i] =
				(isfinite(f) && fabsf(f) < 9.2e18f) ? (int64_t) f : 0;
		}
	}
}

static void
cast_jvp(NnRun *r)
{
	if (r->s->p[1] == WDC_NN_FLOAT)
		copy_jvp(r);
}

/* --- Pad (constant mode) ------------------------------------------------- */

static WdcStatus
pad_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	const NnShape *x = nn_in_shape(c, 0);
	int64_t		pads[2 * NN_MAX_RANK];
	int			n;
	char		buf[16];
	const char *mode = nn_attr_string(s->node, "mode", buf, sizeof(buf));
	NnShape		out = *x;
	int64_t		stride[NN_MAX_RANK];

	if (mode && strcmp(mode, "constant") != 0)
		return nn_unsupported(c, "mode \"%s\"", mode);
	s->f[0] = 0.0f;
	if (c->opset < 11)
	{
		const int64_t *v = nn_attr_ints(s->node, c->opset < 2 ? "paddings" : "pads", &n);

		if (v == NULL || n != 2 * x->rank)
			return nn_invalid(c, "pads must have 2 values per dimension");
		memcpy(pads, v, sizeof(int64_t) * n);
		s->f[0] = nn_attr_float(s->node, "value", 0.0f);
	}
	else
	{
		WdcStatus	st = nn_const_ints(c, 1, pads, 2 * NN_MAX_RANK, &n);

		if (st != WDC_OK)
			return st;
		if (nn_has_in(c, 3))
			return nn_unsupported(c, "the axes input");
		if (n != 2 * x->rank)
			return nn_invalid(c, "pads must have 2 values per dimension");
		if (nn_has_in(c, 2))
		{
			const float *v = nn_in_const(c, 2);

			if (v == NULL || nn_in_elem(c, 2) != WDC_NN_FLOAT ||
				nn_numel(nn_in_shape(c, 2)) != 1)
				return nn_unsupported(c, "a non-constant or non-float pad value");
			s->f[0] = *v;
		}
		s->n_in = 1;
	}
	if (nn_in_elem(c, 0) != WDC_NN_FLOAT)
		return nn_unsupported(c, "a non-float input");
	for (int i = 0; i < x->rank; i++)
	{
		if (pads[i] < -NN_MAX_NUMEL || pads[i] > NN_MAX_NUMEL ||
			pads[x->rank + i] < -NN_MAX_NUMEL || pads[x->rank + i] > NN_MAX_NUMEL)
			return nn_invalid(c, "pad out of range");
		out.d[i] = x->d[i] + pads[i] + pads[x->rank + i];
		if (out.d[i] < 0)
			return nn_invalid(c, "pads remove more than the dimension");
	}
	stride[x->rank - 1 < 0 ? 0 : x->rank - 1] = 1;
	for (int i = x->rank - 2; i >= 0; i--)
		stride[i] = stride[i + 1] * x->d[i + 1];
	s->p[0] = x->rank;
	for (int i = 0; i < x->rank; i++)
	{
		s->p[2 + i] = out.d[i];
		s->p[10 + i] = stride[i];
		s->p[18 + i] = pads[i];
		s->p[26 + i] = x->d[i];
	}
	return nn_set_out(c, 0, &out, WDC_NN_FLOAT);
}

static void
pad_apply(const int64_t *p, const float *x, float *y, int64_t total, float value)
{
	int			rank = (int) p[0];
	int64_t		idx[NN_MAX_RANK] = {0};

	for (int64_t o = 0; o < total; o++)
	{
		int64_t		off = 0;
		int			inside = 1;

		for (int q = 0; q < rank; q++)
		{
			int64_t		i = idx[q] - p[18 + q];

			if (i < 0 || i >= p[26 + q])
			{
				inside = 0;
				break;
			}
			off += i * p[10 + q];
		}
		y[o] = inside ? x[off] : value;
		for (int q = rank - 1; q >= 0; q--)
		{
			if (++idx[q] < p[2 + q])
				break;
			idx[q] = 0;
		}
	}
}

static void
pad_exec(NnRun *r)
{
	pad_apply(r->s->p, r->in[0], r->out[0], nn_numel(r->osh[0]), r->s->f[0]);
}

static void
pad_jvp(NnRun *r)
{
	int64_t		ni = nn_numel(r->ish[0]),
				no = nn_numel(r->osh[0]);

	for (int j = 0; j < r->k; j++)
		pad_apply(r->s->p, r->tin[0] + j * ni, r->tout[0] + j * no, no, 0.0f);
}

/* --- Resize / Upsample (nearest and linear) ------------------------------- */

enum
{
	R_HALF_PIXEL, R_ASYMMETRIC, R_ALIGN_CORNERS, R_PYTORCH_HALF_PIXEL,
	R_TF_HALF_PIXEL_NN
};
enum
{
	N_PREFER_FLOOR, N_PREFER_CEIL, N_FLOOR, N_CEIL
};

/* p: [0] rank, [1] linear, [2] coordinate mode, [3] nearest mode,
 * [8..15] input dims, [16..23] output dims; f[0..7] scales */
static WdcStatus
resize_prepare(NnCtx *c)
{
	NnStep	   *s = c->step;
	const NnShape *x = nn_in_shape(c, 0);
	int			is_upsample = strcmp(s->op->name, "Upsample") == 0;
	char		buf[40];
	const char *mode = nn_attr_string(s->node, "mode", buf, sizeof(buf));
	float		scales[NN_MAX_RANK];
	int64_t		sizes[NN_MAX_RANK];
	int			have_sizes = 0;
	NnShape		out = *x;
	int			resized = 0;

	if (nn_in_elem(c, 0) != WDC_NN_FLOAT)
		return nn_unsupported(c, "a non-float input");
	if (mode == NULL || strcmp(mode, "nearest") == 0)
		s->p[1] = 0;
	else if (strcmp(mode, "linear") == 0 || strcmp(mode, "bilinear") == 0)
		s->p[1] = 1;
	else
		return nn_unsupported(c, "mode \"%s\"", mode);

	/* coordinate transformation and rounding */
	s->p[2] = R_HALF_PIXEL;
	s->p[3] = N_PREFER_FLOOR;
	if (is_upsample || c->opset < 11)
	{
		s->p[2] = R_ASYMMETRIC;
		s->p[3] = N_FLOOR;
	}
	else
	{
		const char *ct = nn_attr_string(s->node, "coordinate_transformation_mode",
										buf, sizeof(buf));
		const char *nm;

		if (ct == NULL || strcmp(ct, "half_pixel") == 0)
			s->p[2] = R_HALF_PIXEL;
		else if (strcmp(ct, "asymmetric") == 0)
			s->p[2] = R_ASYMMETRIC;
		else if (strcmp(ct, "align_corners") == 0)
			s->p[2] = R_ALIGN_CORNERS;
		else if (strcmp(ct, "pytorch_half_pixel") == 0)
			s->p[2] = R_PYTORCH_HALF_PIXEL;
		else if (strcmp(ct, "tf_half_pixel_for_nn") == 0)
			s->p[2] = R_TF_HALF_PIXEL_NN;
		else
			return nn_unsupported(c, "coordinate_transformation_mode \"%s\"", ct);
		nm = nn_attr_string(s->node, "nearest_mode", buf, sizeof(buf));
		if (nm == NULL || strcmp(nm, "round_prefer_floor") == 0)
			s->p[3] = N_PREFER_FLOOR;
		else if (strcmp(nm, "round_prefer_ceil") == 0)
			s->p[3] = N_PREFER_CEIL;
		else if (strcmp(nm, "floor") == 0)
			s->p[3] = N_FLOOR;
		else if (strcmp(nm, "ceil") == 0)
			s->p[3] = N_CEIL;
		else
			return nn_unsupported(c, "nearest_mode \"%s\"", nm);
		if (nn_attr_int(s->node, "antialias", 0) != 0)
			return nn_unsupported(c, "antialias");
		if (nn_attr(s->node, "axes") != NULL)
			return nn_unsupported(c, "the axes attribute");
		if (nn_attr(s->node, "keep_aspect_ratio_policy") != NULL)
			return nn_unsupported(c, "keep_aspect_ratio_policy");
	}

	/* scales or sizes: attribute (Upsample-7), input 1 (opset 9/10), 2 or 3 */
	for (int i = 0; i < x->rank; i++)
		scales[i] = 1.0f;
	if (is_upsample && c->opset < 9)
	{
		int			n;
		const Onnx__AttributeProto *a = nn_attr(s->node, "scales");

		n = a ? (int) a->n_floats : -1;
		if (n != x->rank)
			return nn_invalid(c, "scales must have one value per dimension");
		memcpy(scales, a->floats, sizeof(float) * n);
	}
	else
	{
		int			si = (is_upsample || c->opset < 11) ? 1 : 2;
		const void *sc = nn_in_const(c, si);

		if (nn_has_in(c, si) && nn_numel(nn_in_shape(c, si)) > 0)
		{
			if (sc == NULL || nn_in_elem(c, si) != WDC_NN_FLOAT)
				return nn_unsupported(c, "non-constant scales");
			if (nn_numel(nn_in_shape(c, si)) != x->rank)
				return nn_invalid(c, "scales must have one value per dimension");
			memcpy(scales, sc, sizeof(float) * x->rank);
		}
		else if (si == 2 && nn_has_in(c, 3))
		{
			int			n;
			WdcStatus	st = nn_const_ints(c, 3, sizes, NN_MAX_RANK, &n);

			if (st != WDC_OK)
				return st;
			if (n != x->rank)
				return nn_invalid(c, "sizes must have one value per dimension");
			have_sizes = 1;
		}
		else
			return nn_invalid(c, "neither scales nor sizes given");
	}
	for (int i = 0; i < x->rank; i++)
	{
		if (have_sizes)
		{
			if (sizes[i] < 0 || sizes[i] > NN_MAX_NUMEL)
				return nn_invalid(c, "size out of range");
			out.d[i] = sizes[i];
			scales[i] = x->d[i] ? (float) sizes[i] / (float) x->d[i] : 1.0f;
		}
		else
		{
			double		o = floor((double) x->d[i] * scales[i]);

			if (!(scales[i] > 0) || o > (double) NN_MAX_NUMEL)
				return nn_invalid(c, "scale out of range");
			out.d[i] = (int64_t) o;
		}
		if (out.d[i] != x->d[i] || scales[i] != 1.0f)
			resized++;
	}
	if (s->p[1] && resized > 2)
		return nn_unsupported(c, "linear resizing of more than 2 dimensions");
	s->p[0] = x->rank;
	for (int i = 0; i < x->rank; i++)
	{
		s->p[8 + i] = x->d[i];
		s->p[16 + i] = out.d[i];
		s->f[i] = scales[i];
	}
	s->n_in = 1;
	s->scratch = 0;
	for (int i = 0; i < x->rank; i++)
		s->scratch += (size_t) out.d[i] * 3 * sizeof(int64_t);
	s->tscratch = s->scratch;
	return nn_set_out(c, 0, &out, WDC_NN_FLOAT);
}

/*
 * Source coordinate of output index o along a dimension.  As in ONNX's
 * reference, the resized length is in * scale, not the rounded output
 * size, when scales are given.
 */
static double
resize_coord(int mode, int64_t o, int64_t in, double scale)
{
	double		len = (double) in * scale;

	switch (mode)
	{
		case R_ASYMMETRIC:
			return o / scale;
		case R_ALIGN_CORNERS:
			return len > 1 ? (double) o * (in - 1) / (len - 1) : 0.0;
		case R_PYTORCH_HALF_PIXEL:
			return len > 1 ? (o + 0.5) / scale - 0.5 : 0.0;
		case R_TF_HALF_PIXEL_NN:
			return (o + 0.5) / scale;
		default:
			return (o + 0.5) / scale - 0.5;
	}
}

/*
 * Build per-dimension tables in scratch: for each output coordinate, the
 * two source indices and the weight of the second (nearest: one index).
 */
static void
resize_tables(const NnStep *s, void *scratch, int64_t **i0, int64_t **i1,
			  float **wt)
{
	const int64_t *p = s->p;
	char	   *at = scratch;

	for (int d = 0; d < p[0]; d++)
	{
		int64_t		in = p[8 + d],
					out = p[16 + d];

		i0[d] = (int64_t *) at;
		at += out * sizeof(int64_t);
		i1[d] = (int64_t *) at;
		at += out * sizeof(int64_t);
		wt[d] = (float *) at;
		at += out * sizeof(int64_t);	/* keeps the next int64 table aligned */
		for (int64_t o = 0; o < out; o++)
		{
			double		x = resize_coord((int) p[2], o, in, s->f[d]);

			if (p[1])
			{
				double		fl;

				if (x < 0)
					x = 0;
				if (x > in - 1)
					x = in - 1;
				fl = floor(x);
				i0[d][o] = (int64_t) fl;
				i1[d][o] = i0[d][o] + 1 < in ? i0[d][o] + 1 : in - 1;
				wt[d][o] = (float) (x - fl);
			}
			else
			{
				double		r;

				switch (p[3])
				{
					case N_FLOOR:
						r = floor(x);
						break;
					case N_CEIL:
						r = ceil(x);
						break;
					case N_PREFER_CEIL:
						r = (x - floor(x) == 0.5) ? ceil(x) : round(x);
						break;
					default:
						r = (x - floor(x) == 0.5) ? floor(x) : round(x);
						break;
				}
				if (r < 0)
					r = 0;
				if (r > in - 1)
					r = in - 1;
				i0[d][o] = i1[d][o] = (int64_t) r;
				wt[d][o] = 0.0f;
			}
		}
	}
}

static void
resize_apply(const NnStep *s, void *scratch, const float *x, float *y)
{
	const int64_t *p = s->p;
	int			rank = (int) p[0];
	int64_t    *i0[NN_MAX_RANK],
			   *i1[NN_MAX_RANK];
	float	   *wt[NN_MAX_RANK];
	int64_t		stride[NN_MAX_RANK];
	int64_t		idx[NN_MAX_RANK] = {0};
	int64_t		total = 1;
	int			lin[NN_MAX_RANK];
	int			nl = 0;

	resize_tables(s, scratch, i0, i1, wt);
	stride[rank - 1] = 1;
	for (int d = rank - 2; d >= 0; d--)
		stride[d] = stride[d + 1] * p[8 + d + 1];
	for (int d = 0; d < rank; d++)
	{
		total *= p[16 + d];
		if (p[1] && (p[8 + d] != p[16 + d] || s->f[d] != 1.0f))
			lin[nl++] = d;
	}
	for (int64_t o = 0; o < total; o++)
	{
		int64_t		base = 0;
		float		v;

		for (int d = 0; d < rank; d++)
			base += i0[d][idx[d]] * stride[d];
		if (nl == 0)
			v = x[base];
		else
		{
			/* bilinear (or linear) blend over the resized dimensions */
			v = 0.0f;
			for (int corner = 0; corner < (1 << nl); corner++)
			{
				int64_t		off = base;
				float		w = 1.0f;

				for (int q = 0; q < nl; q++)
				{
					int			d = lin[q];
					float		t = wt[d][idx[d]];

					if (corner & (1 << q))
					{
						off += (i1[d][idx[d]] - i0[d][idx[d]]) * stride[d];
						w *= t;
					}
					else
						w *= 1.0f - t;
				}
				v += w * x[off];
			}
		}
		y[o] = v;
		for (int d = rank - 1; d >= 0; d--)
		{
			if (++idx[d] < p[16 + d])
				break;
			idx[d] = 0;
		}
	}
}

static void
resize_exec(NnRun *r)
{
	resize_apply(r->s, r->scratch, r->in[0], r->out[0]);
}

static void
resize_jvp(NnRun *r)
{
	int64_t		ni = nn_numel(r->ish[0]),
				no = nn_numel(r->osh[0]);

	for (int j = 0; j < r->k; j++)
		resize_apply(r->s, r->scratch, r->tin[0] + j * ni, r->tout[0] + j * no);
}

#define COPY_OP(name, prep, minin, maxin, maxout) \
	{name, 1, minin, maxin, 1, maxout, prep, copy_exec, copy_jvp}

const NnOpDef nn_ops_shape[] = {
	COPY_OP("Reshape", reshape_prepare, 1, 2, 1),
	COPY_OP("Flatten", flatten_prepare, 1, 1, 1),
	COPY_OP("Squeeze", squeeze_prepare, 1, 2, 1),
	COPY_OP("Unsqueeze", unsqueeze_prepare, 1, 2, 1),
	COPY_OP("Identity", identity_prepare, 1, 1, 1),
	COPY_OP("Dropout", dropout_prepare, 1, 3, 2),
	{"Transpose", 1, 1, 1, 1, 1, transpose_prepare, strided_exec, strided_jvp},
	{"Slice", 1, 1, 5, 1, 1, slice_prepare, strided_exec, strided_jvp},
	{"Expand", 8, 2, 2, 1, 1, expand_prepare, strided_exec, strided_jvp},
	{"ConstantOfShape", 9, 1, 1, 1, 1, constant_of_shape_prepare, NULL, NULL},
	{"Concat", 1, 1, -1, 1, 1, concat_prepare_jvp, concat_exec, concat_jvp},
	{"Split", 1, 1, 2, 1, 8, split_prepare, split_exec, split_jvp},
	{"Gather", 1, 2, 2, 1, 1, gather_prepare, gather_exec, gather_jvp},
	{"Shape", 1, 1, 1, 1, 1, shape_prepare, NULL, NULL},
	{"Constant", 1, 0, 0, 1, 1, constant_prepare, NULL, NULL},
	{"Cast", 1, 1, 1, 1, 1, cast_prepare, cast_exec, cast_jvp},
	{"Pad", 1, 1, 4, 1, 1, pad_prepare, pad_exec, pad_jvp},
	{"Resize", 10, 1, 4, 1, 1, resize_prepare, resize_exec, resize_jvp},
	{"Upsample", 1, 1, 2, 1, 1, resize_prepare, resize_exec, resize_jvp},
	{NULL}
};
