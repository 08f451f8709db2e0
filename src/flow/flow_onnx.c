/*
 * flow_onnx.c
 *	  A flow as an ONNX model: writing the graph and metadata, and reading
 *	  back graphs this file wrote.
 *
 * Graph (opset 13, only standard operators, so onnx.reference, ONNX Runtime
 * or a hand-built PyTorch module can evaluate it):
 *	inputs	x [N][d] standardised latent, t [N][1] time, and when the model
 *			has conditions c [N][m] encoded condition
 *	film	gamma = Gemm(c, film_gamma_w, film_gamma_b, transB=1), likewise
 *			beta; without conditions both are constant [H] initializers
 *	layer 1	a = Gemm(Concat(x, t), w_in, b_in, transB=1)
 *	each	p = a * gamma + beta; h = p * (Erf(p / sqrt 2) + 1) * 0.5
 *	output	v = Gemm(h, w_out, b_out, transB=1) -> v [N][d]
 * The class embedding and the null condition travel as initializers
 * (class_embedding, null_condition) that the graph does not read: callers
 * build c as [z-scored numeric columns, class_embedding[class]] or use
 * null_condition for an unconditional velocity.
 *
 * metadata_props carry everything else under "wdc.flow.*" keys: shape,
 * standardisation (mean and std, %.17g lists), condition encoding (names as
 * JSON string arrays, means and stds), calibration log densities and the
 * training summary (a JSON object).
 */
#include "flow/flow_int.h"
#include "onnx.pb-c.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FLOW_ONNX_FORMAT	1
#define FLOW_ONNX_OPSET		13

/* Allocation list for the message tree built by the writer. */
typedef struct Arena
{
	const WdcEnv *env;
	void	  **ptrs;
	size_t		n;
	size_t		cap;
	int			failed;
} Arena;

static void *
arena_alloc(Arena *a, size_t size)
{
	void	   *p;

	if (a->failed)
		return NULL;
	if (a->n == a->cap)
	{
		size_t		cap = a->cap ? 2 * a->cap : 64;
		void	  **grown = wdc_alloc(a->env, cap * sizeof(void *));

		if (grown == NULL)
		{
			a->failed = 1;
			return NULL;
		}
		if (a->ptrs)
			memcpy(grown, a->ptrs, a->n * sizeof(void *));
		wdc_free(a->env, a->ptrs);
		a->ptrs = grown;
		a->cap = cap;
	}
	p = wdc_alloc0(a->env, size);
	if (p == NULL)
	{
		a->failed = 1;
		return NULL;
	}
	a->ptrs[a->n++] = p;
	return p;
}

static void
arena_free(Arena *a)
{
	size_t		i;

	for (i = 0; i < a->n; i++)
		wdc_free(a->env, a->ptrs[i]);
	wdc_free(a->env, a->ptrs);
}

/* printf into an arena string. */
static char *
arena_printf(Arena *a, const char *fmt,...) __attribute__((format(printf, 2, 3)));

static char *
arena_printf(Arena *a, const char *fmt,...)
{
	va_list		ap;
	int			len;
	char	   *s;

	va_start(ap, fmt);
	len = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	s = arena_alloc(a, (size_t) len + 1);
	if (s == NULL)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(s, (size_t) len + 1, fmt, ap);
	va_end(ap);
	return s;
}

/* Growable string for metadata values. */
typedef struct StrBuf
{
	Arena	   *arena;
	char	   *data;
	size_t		len;
	size_t		cap;
} StrBuf;

static void
sb_append(StrBuf *sb, const char *s, size_t len)
{
	if (sb->arena->failed)
		return;
	if (sb->len + len + 1 > sb->cap)
	{
		size_t		cap = sb->cap ? sb->cap : 256;
		char	   *grown;

		while (cap < sb->len + len + 1)
			cap *= 2;
		grown = arena_alloc(sb->arena, cap);
		if (grown == NULL)
			return;
		if (sb->data)
			memcpy(grown, sb->data, sb->len);
		sb->data = grown;
		sb->cap = cap;
	}
	memcpy(sb->data + sb->len, s, len);
	sb->len += len;
	sb->data[sb->len] = '\0';
}

static void
sb_printf(StrBuf *sb, const char *fmt,...) __attribute__((format(printf, 2, 3)));

static void
sb_printf(StrBuf *sb, const char *fmt,...)
{
	char		buf[64];
	va_list		ap;
	int			len;

	va_start(ap, fmt);
	len = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (len >= (int) sizeof(buf))
		len = sizeof(buf) - 1;
	sb_append(sb, buf, (size_t) len);
}

/* Comma-separated %.17g list, which round-trips doubles exactly. */
static char *
double_list(Arena *a, const double *v, int n)
{
	StrBuf		sb = {a, NULL, 0, 0};
	int			i;

	sb_append(&sb, "", 0);
	for (i = 0; i < n; i++)
		sb_printf(&sb, i ? ",%.17g" : "%.17g", v[i]);
	return sb.data;
}

/* JSON string literal of s (quotes, backslashes and controls escaped). */
static void
sb_json_string(StrBuf *sb, const char *s)
{
	sb_append(sb, "\"", 1);
	for (; *s; s++)
	{
		unsigned char ch = (unsigned char) *s;

		if (ch == '"' || ch == '\\')
		{
			char		esc[2] = {'\\', (char) ch};

			sb_append(sb, esc, 2);
		}
		else if (ch < 0x20)
			sb_printf(sb, "\\u%04x", ch);
		else
			sb_append(sb, (const char *) &ch, 1);
	}
	sb_append(sb, "\"", 1);
}

static char *
json_string_array(Arena *a, char *const *items, int n)
{
	StrBuf		sb = {a, NULL, 0, 0};
	int			i;

	sb_append(&sb, "[", 1);
	for (i = 0; i < n; i++)
	{
		if (i)
			sb_append(&sb, ",", 1);
		sb_json_string(&sb, items[i]);
	}
	sb_append(&sb, "]", 1);
	return sb.data;
}

/* JSON number, with null for NaN and infinities. */
static void
sb_json_number(StrBuf *sb, const char *key, double v, int first)
{
	if (!first)
		sb_append(sb, ",", 1);
	sb_json_string(sb, key);
	if (isfinite(v))
		sb_printf(sb, ":%.17g", v);
	else
		sb_append(sb, ":null", 5);
}

static char *
train_json(Arena *a, const FlowTrainInfo *info)
{
	StrBuf		sb = {a, NULL, 0, 0};
	const FlowTrainOptions *o = &info->options;

	sb_append(&sb, "{", 1);
	sb_json_number(&sb, "train_rows", (double) info->train_rows, 1);
	sb_json_number(&sb, "val_rows", (double) info->val_rows, 0);
	sb_json_number(&sb, "epochs", info->epochs, 0);
	sb_json_number(&sb, "best_epoch", info->best_epoch, 0);
	sb_json_number(&sb, "train_loss", info->train_loss, 0);
	sb_json_number(&sb, "val_loss", info->val_loss, 0);
	sb_json_number(&sb, "seconds", info->seconds, 0);
	sb_json_number(&sb, "hidden", o->hidden, 0);
	sb_json_number(&sb, "layers", o->layers, 0);
	sb_json_number(&sb, "embed_dim", o->embed_dim, 0);
	sb_json_number(&sb, "learning_rate", o->learning_rate, 0);
	sb_json_number(&sb, "weight_decay", o->weight_decay, 0);
	sb_json_number(&sb, "beta1", o->beta1, 0);
	sb_json_number(&sb, "beta2", o->beta2, 0);
	sb_json_number(&sb, "adam_eps", o->adam_eps, 0);
	sb_json_number(&sb, "batch_size", o->batch_size, 0);
	sb_json_number(&sb, "max_epochs", o->max_epochs, 0);
	sb_json_number(&sb, "patience", o->patience, 0);
	sb_json_number(&sb, "min_delta", o->min_delta, 0);
	sb_json_number(&sb, "val_fraction", o->val_fraction, 0);
	sb_json_number(&sb, "p_null", o->p_null, 0);
	sb_json_number(&sb, "grad_clip", o->grad_clip, 0);
	sb_json_number(&sb, "train_noise", o->train_noise, 0);
	sb_json_number(&sb, "init_std", o->init_std, 0);
	sb_json_number(&sb, "film_gamma_bias", o->film_gamma_bias, 0);
	sb_json_number(&sb, "calibration_rows", o->calibration_rows, 0);
	/* the seed as a string: JSON numbers lose 64-bit integers */
	sb_append(&sb, ",\"seed\":", 8);
	sb_printf(&sb, "\"%llu\"", (unsigned long long) o->seed);
	sb_append(&sb, "}", 1);
	return sb.data;
}

/* Float initializer with the given dims (copied into raw_data). */
static Onnx__TensorProto *
make_tensor(Arena *a, const char *name, const float *data, int ndims,
			int64_t dim0, int64_t dim1)
{
	Onnx__TensorProto *t = arena_alloc(a, sizeof(*t));
	int64_t    *dims = arena_alloc(a, 2 * sizeof(int64_t));
	size_t		count = ndims == 0 ? 1 : (ndims == 1 ? (size_t) dim0 : (size_t) (dim0 * dim1));
	uint8_t    *raw = arena_alloc(a, count * sizeof(float));

	if (t == NULL || dims == NULL || raw == NULL)
		return NULL;
	onnx__tensor_proto__init(t);
	dims[0] = dim0;
	dims[1] = dim1;
	t->n_dims = (size_t) ndims;
	t->dims = dims;
	t->has_data_type = 1;
	t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
	t->name = (char *) name;
	/* raw_data is little-endian, as on every platform PostgreSQL runs wdc */
	memcpy(raw, data, count * sizeof(float));
	t->has_raw_data = 1;
	t->raw_data.data = raw;
	t->raw_data.len = count * sizeof(float);
	return t;
}

/* Node with up to three inputs and one output; attr_name sets an int. */
static Onnx__NodeProto *
make_node(Arena *a, const char *op, const char *out, const char *in0,
		  const char *in1, const char *in2, const char *attr_name,
		  int64_t attr_value)
{
	Onnx__NodeProto *n = arena_alloc(a, sizeof(*n));
	char	  **inputs = arena_alloc(a, 3 * sizeof(char *));
	char	  **outputs = arena_alloc(a, sizeof(char *));

	if (n == NULL || inputs == NULL || outputs == NULL)
		return NULL;
	onnx__node_proto__init(n);
	n->op_type = (char *) op;
	n->name = arena_printf(a, "%s_%s", op, out);
	inputs[0] = (char *) in0;
	inputs[1] = (char *) in1;
	inputs[2] = (char *) in2;
	n->n_input = in2 ? 3 : (in1 ? 2 : 1);
	n->input = inputs;
	outputs[0] = (char *) out;
	n->n_output = 1;
	n->output = outputs;
	if (attr_name)
	{
		Onnx__AttributeProto *at = arena_alloc(a, sizeof(*at));
		Onnx__AttributeProto **list = arena_alloc(a, sizeof(*list));

		if (at == NULL || list == NULL)
			return NULL;
		onnx__attribute_proto__init(at);
		at->name = (char *) attr_name;
		at->has_type = 1;
		at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
		at->has_i = 1;
		at->i = attr_value;
		list[0] = at;
		n->n_attribute = 1;
		n->attribute = list;
	}
	return n;
}

/* Float tensor value info [batch][cols] with a symbolic batch dimension. */
static Onnx__ValueInfoProto *
make_value_info(Arena *a, const char *name, int64_t cols)
{
	Onnx__ValueInfoProto *vi = arena_alloc(a, sizeof(*vi));
	Onnx__TypeProto *type = arena_alloc(a, sizeof(*type));
	Onnx__TypeProto__Tensor *tt = arena_alloc(a, sizeof(*tt));
	Onnx__TensorShapeProto *shape = arena_alloc(a, sizeof(*shape));
	Onnx__TensorShapeProto__Dimension **dims = arena_alloc(a, 2 * sizeof(*dims));
	Onnx__TensorShapeProto__Dimension *d0 = arena_alloc(a, sizeof(*d0));
	Onnx__TensorShapeProto__Dimension *d1 = arena_alloc(a, sizeof(*d1));

	if (!vi || !type || !tt || !shape || !dims || !d0 || !d1)
		return NULL;
	onnx__value_info_proto__init(vi);
	onnx__type_proto__init(type);
	onnx__type_proto__tensor__init(tt);
	onnx__tensor_shape_proto__init(shape);
	onnx__tensor_shape_proto__dimension__init(d0);
	onnx__tensor_shape_proto__dimension__init(d1);
	d0->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
	d0->dim_param = "N";
	d1->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
	d1->dim_value = cols;
	dims[0] = d0;
	dims[1] = d1;
	shape->n_dim = 2;
	shape->dim = dims;
	tt->has_elem_type = 1;
	tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
	tt->shape = shape;
	type->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
	type->tensor_type = tt;
	vi->name = (char *) name;
	vi->type = type;
	return vi;
}

/* Lists that grow inside the arena (capacity fixed up front). */
typedef struct Lists
{
	Onnx__NodeProto **nodes;
	size_t		n_nodes;
	Onnx__TensorProto **inits;
	size_t		n_inits;
	Onnx__StringStringEntryProto **props;
	size_t		n_props;
} Lists;

static void
add_node(Lists *l, Onnx__NodeProto *n)
{
	l->nodes[l->n_nodes++] = n;
}

static void
add_init(Lists *l, Onnx__TensorProto *t)
{
	l->inits[l->n_inits++] = t;
}

static void
add_prop(Arena *a, Lists *l, const char *key, char *value)
{
	Onnx__StringStringEntryProto *e = arena_alloc(a, sizeof(*e));

	if (e == NULL)
		return;
	onnx__string_string_entry_proto__init(e);
	e->key = (char *) key;
	e->value = value ? value : "";
	l->props[l->n_props++] = e;
}

/* Build the graph's nodes and initializers into l. */
static void
build_graph(Arena *a, const FlowModel *m, Lists *l)
{
	int			H = m->hidden;
	int			M = m->cond_dim;
	static const float sqrt2 = 1.41421356237309505f;
	static const float one = 1.0f;
	static const float half = 0.5f;
	const char *h_prev;
	int			layer;

	add_init(l, make_tensor(a, "sqrt2", &sqrt2, 0, 0, 0));
	add_init(l, make_tensor(a, "one", &one, 0, 0, 0));
	add_init(l, make_tensor(a, "half", &half, 0, 0, 0));

	/* FiLM */
	if (M > 0)
	{
		add_init(l, make_tensor(a, "film_gamma_w", m->w_film, 2, H, M));
		add_init(l, make_tensor(a, "film_gamma_b", m->b_film, 1, H, 0));
		add_init(l, make_tensor(a, "film_beta_w", m->w_film + (size_t) H * M, 2, H, M));
		add_init(l, make_tensor(a, "film_beta_b", m->b_film + H, 1, H, 0));
		add_node(l, make_node(a, "Gemm", "gamma", "c", "film_gamma_w", "film_gamma_b", "transB", 1));
		add_node(l, make_node(a, "Gemm", "beta", "c", "film_beta_w", "film_beta_b", "transB", 1));
		add_init(l, make_tensor(a, "null_condition", m->null_cond, 1, M, 0));
		if (m->n_classes > 0)
			add_init(l, make_tensor(a, "class_embedding", m->class_embed, 2,
									m->n_classes, m->embed_dim));
	}
	else
	{
		add_init(l, make_tensor(a, "gamma", m->b_film, 1, H, 0));
		add_init(l, make_tensor(a, "beta", m->b_film + H, 1, H, 0));
	}

	/* input layer on [x, t] */
	add_node(l, make_node(a, "Concat", "xt", "x", "t", NULL, "axis", 1));
	add_init(l, make_tensor(a, "w_in", m->w_in, 2, H, m->d + 1));
	add_init(l, make_tensor(a, "b_in", m->b_in, 1, H, 0));
	h_prev = "xt";

	for (layer = 0; layer < m->layers; layer++)
	{
		const char *w_name = layer == 0 ? "w_in" : arena_printf(a, "w_hidden_%d", layer);
		const char *b_name = layer == 0 ? "b_in" : arena_printf(a, "b_hidden_%d", layer);
		char	   *a_name = arena_printf(a, "a%d", layer + 1);
		char	   *s_name = arena_printf(a, "scaled%d", layer + 1);
		char	   *p_name = arena_printf(a, "p%d", layer + 1);
		char	   *q_name = arena_printf(a, "q%d", layer + 1);
		char	   *e_name = arena_printf(a, "erf%d", layer + 1);
		char	   *e1_name = arena_printf(a, "erf_plus1_%d", layer + 1);
		char	   *g_name = arena_printf(a, "gelu2_%d", layer + 1);
		char	   *h_name = arena_printf(a, "h%d", layer + 1);

		if (layer > 0)
		{
			add_init(l, make_tensor(a, w_name, m->w_hidden + (size_t) (layer - 1) * H * H, 2, H, H));
			add_init(l, make_tensor(a, b_name, m->b_hidden + (size_t) (layer - 1) * H, 1, H, 0));
		}
		add_node(l, make_node(a, "Gemm", a_name, h_prev, w_name, b_name, "transB", 1));
		add_node(l, make_node(a, "Mul", s_name, a_name, "gamma", NULL, NULL, 0));
		add_node(l, make_node(a, "Add", p_name, s_name, "beta", NULL, NULL, 0));
		add_node(l, make_node(a, "Div", q_name, p_name, "sqrt2", NULL, NULL, 0));
		add_node(l, make_node(a, "Erf", e_name, q_name, NULL, NULL, NULL, 0));
		add_node(l, make_node(a, "Add", e1_name, e_name, "one", NULL, NULL, 0));
		add_node(l, make_node(a, "Mul", g_name, p_name, e1_name, NULL, NULL, 0));
		add_node(l, make_node(a, "Mul", h_name, g_name, "half", NULL, NULL, 0));
		h_prev = h_name;
	}

	add_init(l, make_tensor(a, "w_out", m->w_out, 2, m->d, H));
	add_init(l, make_tensor(a, "b_out", m->b_out, 1, m->d, 0));
	add_node(l, make_node(a, "Gemm", "v", h_prev, "w_out", "b_out", "transB", 1));
}

WdcStatus
flow_to_onnx(const WdcEnv *env, const FlowModel *m, uint8_t **bytes,
			 size_t *len)
{
	Arena		a = {env, NULL, 0, 0, 0};
	Lists		l;
	Onnx__ModelProto model;
	Onnx__GraphProto graph;
	Onnx__OperatorSetIdProto opset;
	Onnx__OperatorSetIdProto *opsets[1];
	Onnx__ValueInfoProto *inputs[3];
	Onnx__ValueInfoProto *outputs[1];
	size_t		max_nodes = 8 + 8 * (size_t) m->layers;
	size_t		size;
	uint8_t    *buf;
	size_t		i;

	*bytes = NULL;
	*len = 0;
	l.nodes = arena_alloc(&a, max_nodes * sizeof(void *));
	l.inits = arena_alloc(&a, (16 + 2 * (size_t) m->layers) * sizeof(void *));
	l.props = arena_alloc(&a, 32 * sizeof(void *));
	l.n_nodes = l.n_inits = l.n_props = 0;
	if (a.failed)
	{
		arena_free(&a);
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory writing flow ONNX");
	}

	build_graph(&a, m, &l);

	/* metadata */
	add_prop(&a, &l, "wdc.kind", "flow");
	add_prop(&a, &l, "wdc.flow.format", arena_printf(&a, "%d", FLOW_ONNX_FORMAT));
	add_prop(&a, &l, "wdc.flow.d", arena_printf(&a, "%d", m->d));
	add_prop(&a, &l, "wdc.flow.hidden", arena_printf(&a, "%d", m->hidden));
	add_prop(&a, &l, "wdc.flow.layers", arena_printf(&a, "%d", m->layers));
	add_prop(&a, &l, "wdc.flow.n_numeric", arena_printf(&a, "%d", m->n_numeric));
	add_prop(&a, &l, "wdc.flow.n_classes", arena_printf(&a, "%d", m->n_classes));
	add_prop(&a, &l, "wdc.flow.embed_dim", arena_printf(&a, "%d", m->embed_dim));
	add_prop(&a, &l, "wdc.flow.mean", double_list(&a, m->mean, m->d));
	add_prop(&a, &l, "wdc.flow.std", double_list(&a, m->std, m->d));
	if (m->n_numeric > 0)
	{
		add_prop(&a, &l, "wdc.flow.numeric_names",
				 json_string_array(&a, m->numeric_names, m->n_numeric));
		add_prop(&a, &l, "wdc.flow.cond_mean", double_list(&a, m->cond_mean, m->n_numeric));
		add_prop(&a, &l, "wdc.flow.cond_std", double_list(&a, m->cond_std, m->n_numeric));
	}
	if (m->n_classes > 0)
	{
		add_prop(&a, &l, "wdc.flow.class_name", m->class_name);
		add_prop(&a, &l, "wdc.flow.class_labels",
				 json_string_array(&a, m->class_labels, m->n_classes));
	}
	if (m->n_calibration > 0)
	{
		add_prop(&a, &l, "wdc.flow.calibration",
				 double_list(&a, m->calibration, m->n_calibration));
		if (m->calibration_cond)
			add_prop(&a, &l, "wdc.flow.calibration_cond",
					 double_list(&a, m->calibration_cond, m->n_calibration));
	}
	add_prop(&a, &l, "wdc.flow.train", train_json(&a, &m->info));
	add_prop(&a, &l, "wdc.flow.condition",
			 m->cond_dim > 0 ?
			 "c = [(numeric - cond_mean) / cond_std, class_embedding[class]], or null_condition for the unconditional field" :
			 "unconditional");
	add_prop(&a, &l, "wdc.flow.space",
			 "x = (z - mean) / std; log p(z) = log p(x) - sum(log std); t = 0 noise, t = 1 data");

	inputs[0] = make_value_info(&a, "x", m->d);
	inputs[1] = make_value_info(&a, "t", 1);
	inputs[2] = m->cond_dim > 0 ? make_value_info(&a, "c", m->cond_dim) : NULL;
	outputs[0] = make_value_info(&a, "v", m->d);

	/* any failed allocation left a NULL somewhere: check once here */
	for (i = 0; i < l.n_nodes; i++)
		if (l.nodes[i] == NULL)
			a.failed = 1;
	for (i = 0; i < l.n_inits; i++)
		if (l.inits[i] == NULL)
			a.failed = 1;
	if (a.failed || !inputs[0] || !inputs[1] || !outputs[0] ||
		(m->cond_dim > 0 && !inputs[2]))
	{
		arena_free(&a);
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory writing flow ONNX");
	}

	onnx__graph_proto__init(&graph);
	graph.name = "wdc_flow";
	graph.n_node = l.n_nodes;
	graph.node = l.nodes;
	graph.n_initializer = l.n_inits;
	graph.initializer = l.inits;
	graph.n_input = m->cond_dim > 0 ? 3 : 2;
	graph.input = inputs;
	graph.n_output = 1;
	graph.output = outputs;

	onnx__operator_set_id_proto__init(&opset);
	opset.domain = "";
	opset.has_version = 1;
	opset.version = FLOW_ONNX_OPSET;
	opsets[0] = &opset;

	onnx__model_proto__init(&model);
	model.has_ir_version = 1;
	model.ir_version = 8;
	model.n_opset_import = 1;
	model.opset_import = opsets;
	model.producer_name = "wdc";
	model.producer_version = "0.1.0";
	model.graph = &graph;
	model.n_metadata_props = l.n_props;
	model.metadata_props = l.props;

	size = onnx__model_proto__get_packed_size(&model);
	buf = wdc_alloc(env, size);
	if (buf == NULL)
	{
		arena_free(&a);
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory writing flow ONNX");
	}
	onnx__model_proto__pack(&model, buf);
	arena_free(&a);
	*bytes = buf;
	*len = size;
	return WDC_OK;
}

/* --- reading ------------------------------------------------------------ */

static void *
pb_alloc(void *state, size_t size)
{
	return wdc_alloc((const WdcEnv *) state, size);
}

static void
pb_free(void *state, void *ptr)
{
	wdc_free((const WdcEnv *) state, ptr);
}

static const char *
find_prop(const Onnx__ModelProto *mp, const char *key)
{
	size_t		i;

	for (i = 0; i < mp->n_metadata_props; i++)
		if (mp->metadata_props[i]->key && strcmp(mp->metadata_props[i]->key, key) == 0)
			return mp->metadata_props[i]->value ? mp->metadata_props[i]->value : "";
	return NULL;
}

static int
prop_int(const Onnx__ModelProto *mp, const char *key, int *out)
{
	const char *s = find_prop(mp, key);
	char	   *end;
	long		v;

	if (s == NULL)
		return 0;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end != '\0' || v < INT32_MIN || v > INT32_MAX)
		return 0;
	*out = (int) v;
	return 1;
}

/* Parse exactly n comma-separated doubles into out. */
static int
parse_double_list(const char *s, double *out, int n)
{
	int			i;

	if (s == NULL)
		return 0;
	for (i = 0; i < n; i++)
	{
		char	   *end;

		errno = 0;
		out[i] = strtod(s, &end);
		if (errno == ERANGE && fabs(out[i]) > 1.0)
			return 0;
		if (end == s)
			return 0;
		s = end;
		if (i < n - 1)
		{
			if (*s != ',')
				return 0;
			s++;
		}
	}
	return *s == '\0';
}

/* Count comma-separated entries of a non-empty list. */
static int
count_list(const char *s)
{
	int			n = 1;

	if (s == NULL || *s == '\0')
		return 0;
	for (; *s; s++)
		n += *s == ',';
	return n;
}

/* Append the UTF-8 encoding of code point cp to out at *pos. */
static void
put_utf8(char *out, size_t *pos, unsigned cp)
{
	if (cp < 0x80)
		out[(*pos)++] = (char) cp;
	else if (cp < 0x800)
	{
		out[(*pos)++] = (char) (0xc0 | (cp >> 6));
		out[(*pos)++] = (char) (0x80 | (cp & 0x3f));
	}
	else if (cp < 0x10000)
	{
		out[(*pos)++] = (char) (0xe0 | (cp >> 12));
		out[(*pos)++] = (char) (0x80 | ((cp >> 6) & 0x3f));
		out[(*pos)++] = (char) (0x80 | (cp & 0x3f));
	}
	else
	{
		out[(*pos)++] = (char) (0xf0 | (cp >> 18));
		out[(*pos)++] = (char) (0x80 | ((cp >> 12) & 0x3f));
		out[(*pos)++] = (char) (0x80 | ((cp >> 6) & 0x3f));
		out[(*pos)++] = (char) (0x80 | (cp & 0x3f));
	}
}

static int
hex4(const char *s, unsigned *out)
{
	unsigned	v = 0;
	int			i;

	for (i = 0; i < 4; i++)
	{
		char		c = s[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned) (c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned) (c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned) (c - 'A' + 10);
		else
			return 0;
	}
	*out = v;
	return 1;
}

/*
 * Parse a JSON array of exactly n strings into newly allocated items.
 * Returns 0 on malformed input (items allocated so far stay in out for
 * flow_free to release).
 */
static int
parse_string_array(const WdcEnv *env, const char *s, char **out, int n)
{
	int			i;

	if (s == NULL || *s++ != '[')
		return 0;
	for (i = 0; i < n; i++)
	{
		const char *start;
		char	   *item;
		size_t		pos = 0;

		while (*s == ' ')
			s++;
		if (i > 0)
		{
			if (*s++ != ',')
				return 0;
			while (*s == ' ')
				s++;
		}
		if (*s++ != '"')
			return 0;
		start = s;
		/* the decoded string is never longer than its escaped form */
		while (*s && *s != '"')
			s += (*s == '\\' && s[1]) ? 2 : 1;
		if (*s != '"')
			return 0;
		item = wdc_alloc(env, (size_t) (s - start) + 1);
		if (item == NULL)
			return 0;
		out[i] = item;
		for (s = start; *s != '"'; s++)
		{
			unsigned	cp;

			if (*s != '\\')
			{
				item[pos++] = *s;
				continue;
			}
			s++;
			switch (*s)
			{
				case 'n':
					item[pos++] = '\n';
					break;
				case 't':
					item[pos++] = '\t';
					break;
				case 'r':
					item[pos++] = '\r';
					break;
				case 'b':
					item[pos++] = '\b';
					break;
				case 'f':
					item[pos++] = '\f';
					break;
				case 'u':
					if (!hex4(s + 1, &cp))
						return 0;
					s += 4;
					/* a \u escape (6 chars) never decodes to more than 3 bytes */
					if (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff))
						return 0;
					put_utf8(item, &pos, cp);
					break;
				default:
					item[pos++] = *s;
					break;
			}
		}
		item[pos] = '\0';
		s++;					/* closing quote */
	}
	while (*s == ' ')
		s++;
	return s[0] == ']' && s[1] == '\0';
}

/* Number stored under "key" in a flat JSON object; NaN when absent/null. */
static double
json_number(const char *json, const char *key)
{
	char		pattern[64];
	const char *at;

	if (json == NULL)
		return NAN;
	snprintf(pattern, sizeof(pattern), "\"%s\":", key);
	at = strstr(json, pattern);
	if (at == NULL)
		return NAN;
	at += strlen(pattern);
	if (*at == '"')
		at++;
	if (strncmp(at, "null", 4) == 0)
		return NAN;
	return strtod(at, NULL);
}

static void
read_train_info(const char *json, FlowTrainInfo *info)
{
	FlowTrainOptions *o = &info->options;
	const char *seed;

	flow_train_options_default(o);
	if (json == NULL)
		return;
	info->train_rows = (int64_t) json_number(json, "train_rows");
	info->val_rows = (int64_t) json_number(json, "val_rows");
	info->epochs = (int) json_number(json, "epochs");
	info->best_epoch = (int) json_number(json, "best_epoch");
	info->train_loss = json_number(json, "train_loss");
	info->val_loss = json_number(json, "val_loss");
	info->seconds = json_number(json, "seconds");
	o->hidden = (int) json_number(json, "hidden");
	o->layers = (int) json_number(json, "layers");
	o->embed_dim = (int) json_number(json, "embed_dim");
	o->learning_rate = json_number(json, "learning_rate");
	o->weight_decay = json_number(json, "weight_decay");
	o->beta1 = json_number(json, "beta1");
	o->beta2 = json_number(json, "beta2");
	o->adam_eps = json_number(json, "adam_eps");
	o->batch_size = (int) json_number(json, "batch_size");
	o->max_epochs = (int) json_number(json, "max_epochs");
	o->patience = (int) json_number(json, "patience");
	o->min_delta = json_number(json, "min_delta");
	o->val_fraction = json_number(json, "val_fraction");
	o->p_null = json_number(json, "p_null");
	o->grad_clip = json_number(json, "grad_clip");
	o->train_noise = json_number(json, "train_noise");
	o->init_std = json_number(json, "init_std");
	o->film_gamma_bias = json_number(json, "film_gamma_bias");
	o->calibration_rows = (int) json_number(json, "calibration_rows");
	seed = strstr(json, "\"seed\":\"");
	if (seed)
		o->seed = strtoull(seed + strlen("\"seed\":\""), NULL, 10);
}

static const Onnx__TensorProto *
find_init(const Onnx__GraphProto *g, const char *name)
{
	size_t		i;

	for (i = 0; i < g->n_initializer; i++)
		if (g->initializer[i]->name && strcmp(g->initializer[i]->name, name) == 0)
			return g->initializer[i];
	return NULL;
}

/* Copy a float initializer of exactly count values; 0 when absent or off. */
static int
copy_init(const Onnx__GraphProto *g, const char *name, float *dst, size_t count)
{
	const Onnx__TensorProto *t = find_init(g, name);
	size_t		total = 1;
	size_t		i;

	if (t == NULL || !t->has_data_type || t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
		return 0;
	for (i = 0; i < t->n_dims; i++)
		total *= (size_t) t->dims[i];
	if (total != count)
		return 0;
	if (t->has_raw_data && t->raw_data.len == count * sizeof(float))
		memcpy(dst, t->raw_data.data, count * sizeof(float));
	else if (t->n_float_data == count)
		memcpy(dst, t->float_data, count * sizeof(float));
	else
		return 0;
	return 1;
}

/*
 * Fill model weights from the graph; returns the name of the first missing
 * or misshapen initializer (in missing [64] for numbered ones), or NULL.
 */
static const char *
read_weights(const Onnx__GraphProto *g, FlowModel *m, char *missing)
{
	size_t		H = (size_t) m->hidden;
	size_t		M = (size_t) m->cond_dim;
	int			l;

	if (!copy_init(g, "w_in", m->w_in, H * (size_t) (m->d + 1)))
		return "w_in";
	if (!copy_init(g, "b_in", m->b_in, H))
		return "b_in";
	for (l = 1; l < m->layers; l++)
	{
		char		name[32];

		snprintf(name, sizeof(name), "w_hidden_%d", l);
		if (!copy_init(g, name, m->w_hidden + (size_t) (l - 1) * H * H, H * H))
		{
			snprintf(missing, 64, "%s", name);
			return missing;
		}
		snprintf(name, sizeof(name), "b_hidden_%d", l);
		if (!copy_init(g, name, m->b_hidden + (size_t) (l - 1) * H, H))
		{
			snprintf(missing, 64, "%s", name);
			return missing;
		}
	}
	if (!copy_init(g, "w_out", m->w_out, (size_t) m->d * H))
		return "w_out";
	if (!copy_init(g, "b_out", m->b_out, (size_t) m->d))
		return "b_out";
	if (M > 0)
	{
		if (!copy_init(g, "film_gamma_w", m->w_film, H * M))
			return "film_gamma_w";
		if (!copy_init(g, "film_beta_w", m->w_film + H * M, H * M))
			return "film_beta_w";
		if (!copy_init(g, "film_gamma_b", m->b_film, H))
			return "film_gamma_b";
		if (!copy_init(g, "film_beta_b", m->b_film + H, H))
			return "film_beta_b";
		if (!copy_init(g, "null_condition", m->null_cond, M))
			return "null_condition";
		if (m->n_classes > 0 &&
			!copy_init(g, "class_embedding", m->class_embed,
					   (size_t) m->n_classes * m->embed_dim))
			return "class_embedding";
	}
	else
	{
		if (!copy_init(g, "gamma", m->b_film, H))
			return "gamma";
		if (!copy_init(g, "beta", m->b_film + H, H))
			return "beta";
	}
	return NULL;
}

/* Metadata beyond the weights: names, standardisation, calibration. */
static WdcStatus
read_metadata(const WdcEnv *env, const Onnx__ModelProto *mp, FlowModel *m)
{
	const char *cal;
	int			j;

	if (!parse_double_list(find_prop(mp, "wdc.flow.mean"), m->mean, m->d) ||
		!parse_double_list(find_prop(mp, "wdc.flow.std"), m->std, m->d))
		return wdc_error(env, WDC_ERR_CORRUPT,
						 "flow ONNX has no valid standardisation (wdc.flow.mean, wdc.flow.std)");
	for (j = 0; j < m->d; j++)
		if (!(m->std[j] > 0) || !isfinite(m->mean[j]) || !isfinite(m->std[j]))
			return wdc_error(env, WDC_ERR_CORRUPT,
							 "flow ONNX standardisation of dimension %d is invalid", j + 1);
	if (m->n_numeric > 0)
	{
		if (!parse_double_list(find_prop(mp, "wdc.flow.cond_mean"), m->cond_mean, m->n_numeric) ||
			!parse_double_list(find_prop(mp, "wdc.flow.cond_std"), m->cond_std, m->n_numeric) ||
			!parse_string_array(env, find_prop(mp, "wdc.flow.numeric_names"),
								m->numeric_names, m->n_numeric))
			return wdc_error(env, WDC_ERR_CORRUPT,
							 "flow ONNX numeric condition metadata is missing or malformed");
		for (j = 0; j < m->n_numeric; j++)
			if (!(m->cond_std[j] > 0))
				return wdc_error(env, WDC_ERR_CORRUPT,
								 "flow ONNX condition standard deviation %d is invalid", j + 1);
	}
	if (m->n_classes > 0)
	{
		m->class_name = flow_strdup(env, find_prop(mp, "wdc.flow.class_name") ?
									find_prop(mp, "wdc.flow.class_name") : "");
		if (m->class_name == NULL ||
			!parse_string_array(env, find_prop(mp, "wdc.flow.class_labels"),
								m->class_labels, m->n_classes))
			return wdc_error(env, WDC_ERR_CORRUPT,
							 "flow ONNX class metadata is missing or malformed");
	}

	cal = find_prop(mp, "wdc.flow.calibration");
	m->n_calibration = count_list(cal);
	if (m->n_calibration > 0)
	{
		const char *cal_cond = find_prop(mp, "wdc.flow.calibration_cond");

		m->calibration = wdc_alloc(env, (size_t) m->n_calibration * sizeof(double));
		if (m->calibration == NULL)
			return wdc_error(env, WDC_ERR_NOMEM, "out of memory reading flow ONNX");
		if (!parse_double_list(cal, m->calibration, m->n_calibration))
			return wdc_error(env, WDC_ERR_CORRUPT, "flow ONNX calibration is malformed");
		if (cal_cond)
		{
			m->calibration_cond = wdc_alloc(env, (size_t) m->n_calibration * sizeof(double));
			if (m->calibration_cond == NULL)
				return wdc_error(env, WDC_ERR_NOMEM, "out of memory reading flow ONNX");
			if (!parse_double_list(cal_cond, m->calibration_cond, m->n_calibration))
				return wdc_error(env, WDC_ERR_CORRUPT,
								 "flow ONNX conditional calibration is malformed");
		}
	}
	read_train_info(find_prop(mp, "wdc.flow.train"), &m->info);
	return WDC_OK;
}

/* The graph must have the node pattern flow_to_onnx writes. */
static int
graph_matches(const Onnx__GraphProto *g, const FlowModel *m)
{
	size_t		i;
	int			gemm = 0;
	int			erf = 0;

	for (i = 0; i < g->n_node; i++)
	{
		const char *op = g->node[i]->op_type ? g->node[i]->op_type : "";

		if (strcmp(op, "Gemm") == 0)
			gemm++;
		else if (strcmp(op, "Erf") == 0)
			erf++;
		else if (strcmp(op, "Mul") != 0 && strcmp(op, "Add") != 0 &&
				 strcmp(op, "Div") != 0 && strcmp(op, "Concat") != 0)
			return 0;
	}
	return erf == m->layers &&
		gemm == m->layers + 1 + (m->cond_dim > 0 ? 2 : 0) &&
		g->n_output == 1 &&
		g->n_input == (size_t) (m->cond_dim > 0 ? 3 : 2);
}

WdcStatus
flow_from_onnx(const WdcEnv *env, const uint8_t *bytes, size_t len,
			   FlowModel **out)
{
	ProtobufCAllocator alloc = {pb_alloc, pb_free, (void *) env};
	Onnx__ModelProto *mp;
	FlowModel  *m = NULL;
	const char *kind;
	const char *missing;
	char		missing_buf[64];
	int			format;
	int			d;
	int			hidden;
	int			layers;
	int			n_numeric;
	int			n_classes;
	int			embed_dim;
	WdcStatus	st;

	*out = NULL;
	mp = onnx__model_proto__unpack(&alloc, len, bytes);
	if (mp == NULL)
		return wdc_error(env, WDC_ERR_CORRUPT, "flow model is not a valid ONNX protobuf");

	kind = find_prop(mp, "wdc.kind");
	if (kind == NULL || strcmp(kind, "flow") != 0 || mp->graph == NULL)
	{
		onnx__model_proto__free_unpacked(mp, &alloc);
		wdc_error(env, WDC_ERR_UNSUPPORTED, "ONNX model is not a wdc flow");
		return wdc_error_detail(env, "Only graphs written by wdc carry the metadata key wdc.kind = flow; run other flows through the general ONNX runtime.");
	}
	if (!prop_int(mp, "wdc.flow.format", &format) || format != FLOW_ONNX_FORMAT ||
		!prop_int(mp, "wdc.flow.d", &d) || !prop_int(mp, "wdc.flow.hidden", &hidden) ||
		!prop_int(mp, "wdc.flow.layers", &layers) ||
		!prop_int(mp, "wdc.flow.n_numeric", &n_numeric) ||
		!prop_int(mp, "wdc.flow.n_classes", &n_classes) ||
		!prop_int(mp, "wdc.flow.embed_dim", &embed_dim))
	{
		onnx__model_proto__free_unpacked(mp, &alloc);
		return wdc_error(env, WDC_ERR_CORRUPT,
						 "flow ONNX shape metadata is missing or has an unknown format");
	}

	st = flow_model_alloc(env, d, hidden, layers, n_numeric, n_classes,
						  embed_dim, &m);
	if (st == WDC_OK && !graph_matches(mp->graph, m))
		st = wdc_error(env, WDC_ERR_CORRUPT,
					   "flow ONNX graph does not have the expected layer pattern");
	if (st == WDC_OK && (missing = read_weights(mp->graph, m, missing_buf)) != NULL)
		st = wdc_error(env, WDC_ERR_CORRUPT,
					   "flow ONNX initializer \"%s\" is missing or has the wrong shape",
					   missing);
	if (st == WDC_OK)
		st = read_metadata(env, mp, m);
	onnx__model_proto__free_unpacked(mp, &alloc);
	if (st != WDC_OK)
	{
		flow_free(env, m);
		return st;
	}
	*out = m;
	return WDC_OK;
}
