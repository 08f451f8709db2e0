/*
 * nn_load.c
 *	  Parse ONNX model bytes into a checked, topologically ordered graph.
 *
 * Loading runs in four steps:
 *	1. unpack the ModelProto with protobuf-c, allocating through the env;
 *	2. index every tensor name (initializers, inputs, node outputs), convert
 *	   initializers to float32 or int64;
 *	3. resolve node inputs and outputs to values, look up each operator and
 *	   reject unsupported ones with operator, node name and opset;
 *	4. order nodes topologically (Kahn's algorithm), which also finds cycles.
 * Everything read from the file is bounds-checked: a truncated or hostile
 * model yields WDC_ERR_CORRUPT or WDC_ERR_UNSUPPORTED, never a crash.
 */
#include "nn/nn_int.h"

#include <string.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "raw_data decoding assumes a little-endian host"
#endif

/* protobuf-c allocation through the env's hooks. */
static void *
pb_alloc(void *data, size_t size)
{
	return wdc_alloc((const WdcEnv *) data, size);
}

static void
pb_free(void *data, void *ptr)
{
	wdc_free((const WdcEnv *) data, ptr);
}

/* IEEE 754 binary16 to float. */
static float
half_to_float(uint16_t h)
{
	uint32_t	sign = (uint32_t) (h & 0x8000) << 16;
	uint32_t	exp = (h >> 10) & 0x1f;
	uint32_t	man = h & 0x3ff;
	uint32_t	bits;
	float		f;

	if (exp == 0)
	{
		/* zero or subnormal: value is man * 2^-24 */
		f = (float) man * 5.9604644775390625e-8f;
		return sign ? -f : f;
	}
	if (exp == 31)
		bits = sign | 0x7f800000 | (man << 13);
	else
		bits = sign | ((exp + 112) << 23) | (man << 13);
	memcpy(&f, &bits, 4);
	return f;
}

static float
bf16_to_float(uint16_t h)
{
	uint32_t	bits = (uint32_t) h << 16;
	float		f;

	memcpy(&f, &bits, 4);
	return f;
}

/*
 * Convert a TensorProto to float32 (FLOAT, FLOAT16, BFLOAT16, DOUBLE) or
 * int64 (INT64, INT32, BOOL) data allocated from env.  Returns
 * WDC_ERR_CORRUPT when the data does not match the dims.
 */
WdcStatus
nn_tensor_convert(const WdcEnv *env, const Onnx__TensorProto *t,
				  int *elem, NnShape *shape, void **data)
{
	const char *name = t->name ? t->name : "";
	int			dt = t->has_data_type ? t->data_type : 0;
	int64_t		n = 1;
	int64_t		span = 1;
	size_t		raw_width;
	size_t		typed_count;
	int			out_elem;
	void	   *buf;

	/* dims: rank and element count */
	if (t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL ||
		t->n_external_data > 0)
		return wdc_error(env, WDC_ERR_UNSUPPORTED,
						 "tensor \"%s\" keeps its data in an external file",
						 name),
			wdc_error_hint(env, "Save the model with all tensors inside the ONNX file (onnx.save_model with save_as_external_data=False).");
	if (t->segment)
		return wdc_error(env, WDC_ERR_UNSUPPORTED,
						 "tensor \"%s\" is segmented", name);
	if (t->n_dims > NN_MAX_RANK)
		return wdc_error(env, WDC_ERR_UNSUPPORTED,
						 "tensor \"%s\" has rank %zu, more than %d",
						 name, t->n_dims, NN_MAX_RANK);
	shape->rank = (int) t->n_dims;
	for (size_t i = 0; i < t->n_dims; i++)
	{
		/*
		 * Bound the product of the dimensions with zeros counted as one, so
		 * that an empty tensor cannot hide dimensions whose strides overflow.
		 */
		if (t->dims[i] < 0 || t->dims[i] > NN_MAX_NUMEL ||
			__builtin_mul_overflow(span, t->dims[i] ? t->dims[i] : 1, &span) ||
			span > NN_MAX_NUMEL)
			return wdc_error(env, WDC_ERR_CORRUPT,
							 "tensor \"%s\" has invalid dimension %lld",
							 name, (long long) t->dims[i]);
		n *= t->dims[i];
		shape->d[i] = t->dims[i];
	}

	/* element type: the width of raw_data items and the typed field used */
	switch (dt)
	{
		case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
			raw_width = 4, typed_count = t->n_float_data, out_elem = WDC_NN_FLOAT;
			break;
		case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16:
		case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16:
			raw_width = 2, typed_count = t->n_int32_data, out_elem = WDC_NN_FLOAT;
			break;
		case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
			raw_width = 8, typed_count = t->n_double_data, out_elem = WDC_NN_FLOAT;
			break;
		case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
			raw_width = 8, typed_count = t->n_int64_data, out_elem = WDC_NN_INT64;
			break;
		case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
			raw_width = 4, typed_count = t->n_int32_data, out_elem = WDC_NN_INT64;
			break;
		case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL:
			raw_width = 1, typed_count = t->n_int32_data, out_elem = WDC_NN_INT64;
			break;
		default:
			return wdc_error(env, WDC_ERR_UNSUPPORTED,
							 "tensor \"%s\" has unsupported data type %d",
							 name, dt),
				wdc_error_detail(env, "Supported types are FLOAT, FLOAT16, BFLOAT16, DOUBLE, INT64, INT32 and BOOL.");
	}

	/* the item count must match the dims exactly */
	if (t->has_raw_data && t->raw_data.len > 0)
	{
		if (t->raw_data.len / raw_width != (size_t) n ||
			t->raw_data.len % raw_width != 0)
			return wdc_error(env, WDC_ERR_CORRUPT,
							 "tensor \"%s\" has %zu bytes of raw data, expected %lld",
							 name, t->raw_data.len,
							 (long long) n * (long long) raw_width);
	}
	else if (typed_count != (size_t) n)
		return wdc_error(env, WDC_ERR_CORRUPT,
						 "tensor \"%s\" has %zu values, expected %lld",
						 name, typed_count, (long long) n);

	buf = wdc_alloc(env, (size_t) n * nn_elem_size(out_elem));
	if (buf == NULL)
		return wdc_error(env, WDC_ERR_NOMEM,
						 "out of memory reading tensor \"%s\"", name);

	/* convert item by item; raw_data is little-endian, as is the host */
	for (int64_t i = 0; i < n; i++)
	{
		const uint8_t *raw = (t->has_raw_data && t->raw_data.len > 0)
			? t->raw_data.data + (size_t) i * raw_width : NULL;
		float		fv = 0;
		int64_t		iv = 0;

		switch (dt)
		{
			case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
				if (raw)
					memcpy(&fv, raw, 4);
				else
					fv = t->float_data[i];
				break;
			case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16:
			case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16:
				{
					uint16_t	h;

					if (raw)
						memcpy(&h, raw, 2);
					else
						h = (uint16_t) t->int32_data[i];
					fv = dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16
						? half_to_float(h) : bf16_to_float(h);
				}
				break;
			case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
				{
					double		d;

					if (raw)
						memcpy(&d, raw, 8);
					else
						d = t->double_data[i];
					fv = (float) d;
				}
				break;
			case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
				if (raw)
					memcpy(&iv, raw, 8);
				else
					iv = t->int64_data[i];
				break;
			case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
				{
					int32_t		v;

					if (raw)
						memcpy(&v, raw, 4);
					else
						v = t->int32_data[i];
					iv = v;
				}
				break;
			case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL:
				iv = raw ? (raw[0] != 0) : (t->int32_data[i] != 0);
				break;
		}
		if (out_elem == WDC_NN_FLOAT)
			((float *) buf)[i] = fv;
		else
			((int64_t *) buf)[i] = iv;
	}
	*elem = out_elem;
	*data = buf;
	return WDC_OK;
}

/* --- name index: open addressing over value names --------------------- */

typedef struct NameIndex
{
	size_t		cap;			/* power of two */
	int		   *slot;			/* value index or -1 */
	NnValue    *values;
	int			n;
	int			max;
} NameIndex;

static uint64_t
hash_name(const char *s)
{
	uint64_t	h = 1469598103934665603ULL; /* FNV-1a */

	for (; *s; s++)
		h = (h ^ (unsigned char) *s) * 1099511628211ULL;
	return h;
}

/* Find a name; with add, insert it when absent.  Returns -1 if absent. */
static int
name_lookup(NameIndex *ix, const char *name, int add)
{
	size_t		i = hash_name(name) & (ix->cap - 1);

	while (ix->slot[i] >= 0)
	{
		if (strcmp(ix->values[ix->slot[i]].name, name) == 0)
			return ix->slot[i];
		i = (i + 1) & (ix->cap - 1);
	}
	if (!add || ix->n >= ix->max)
		return -1;
	ix->slot[i] = ix->n;
	memset(&ix->values[ix->n], 0, sizeof(NnValue));
	ix->values[ix->n].name = name;
	ix->values[ix->n].producer = -1;
	ix->values[ix->n].input = -1;
	return ix->n++;
}

/* Read a graph input or output declaration into info. */
static WdcStatus
read_value_info(const WdcEnv *env, const Onnx__ValueInfoProto *vi,
				WdcNnTensorInfo *info, int is_input)
{
	const char *what = is_input ? "input" : "output";
	const Onnx__TypeProto__Tensor *tt;

	info->name = vi->name ? vi->name : "";
	if (vi->type == NULL ||
		vi->type->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE ||
		vi->type->tensor_type == NULL)
		return wdc_error(env, WDC_ERR_UNSUPPORTED,
						 "graph %s \"%s\" is not a tensor", what, info->name);
	tt = vi->type->tensor_type;
	switch (tt->has_elem_type ? tt->elem_type : 0)
	{
		case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
			info->elem_type = WDC_NN_FLOAT;
			break;
		case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
			info->elem_type = WDC_NN_INT64;
			break;
		default:
			return wdc_error(env, WDC_ERR_UNSUPPORTED,
							 "graph %s \"%s\" has unsupported element type %d",
							 what, info->name,
							 tt->has_elem_type ? tt->elem_type : 0),
				wdc_error_detail(env, "Graph inputs and outputs must be FLOAT or INT64.");
	}
	if (tt->shape == NULL)
	{
		/* unknown rank: only acceptable for outputs, inferred by the plan */
		if (is_input)
			return wdc_error(env, WDC_ERR_UNSUPPORTED,
							 "graph input \"%s\" has no shape", info->name);
		info->rank = -1;
		return WDC_OK;
	}
	if (tt->shape->n_dim > NN_MAX_RANK)
		return wdc_error(env, WDC_ERR_UNSUPPORTED,
						 "graph %s \"%s\" has rank %zu, more than %d",
						 what, info->name, tt->shape->n_dim, NN_MAX_RANK);
	info->rank = (int) tt->shape->n_dim;
	for (size_t i = 0; i < tt->shape->n_dim; i++)
	{
		const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];

		if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE)
		{
			if (d->dim_value < 0 || d->dim_value > NN_MAX_NUMEL)
				return wdc_error(env, WDC_ERR_CORRUPT,
								 "graph %s \"%s\" has invalid dimension %lld",
								 what, info->name, (long long) d->dim_value);
			info->dims[i] = d->dim_value;
		}
		else
			info->dims[i] = -1;
	}
	return WDC_OK;
}

/* Find the default-domain opset; 0 when the model imports none. */
static int
find_opset(const Onnx__ModelProto *m)
{
	for (size_t i = 0; i < m->n_opset_import; i++)
	{
		const Onnx__OperatorSetIdProto *o = m->opset_import[i];

		if ((o->domain == NULL || o->domain[0] == '\0' ||
			 strcmp(o->domain, "ai.onnx") == 0) && o->has_version)
			return o->version > 1000 ? 1000 : (int) o->version;
	}
	return 0;
}

/* Step 3 for one node: resolve names and look up the operator. */
static WdcStatus
resolve_node(const WdcEnv *env, NameIndex *ix, WdcNnModel *m, NnNode *nd,
			 int index)
{
	Onnx__NodeProto *p = nd->proto;
	const char *op = p->op_type ? p->op_type : "";
	const char *nname = (p->name && p->name[0]) ? p->name : "(unnamed)";
	const NnOpDef *def;

	if (p->domain && p->domain[0] && strcmp(p->domain, "ai.onnx") != 0)
		return wdc_error(env, WDC_ERR_UNSUPPORTED,
						 "operator \"%s\" of domain \"%s\" (node \"%s\") is not supported",
						 op, p->domain, nname);
	def = nn_op_find(op);
	if (def == NULL || m->opset < def->min_opset)
		return wdc_error(env, WDC_ERR_UNSUPPORTED,
						 "operator \"%s\" (node \"%s\", opset %d) is not supported",
						 op, nname, m->opset),
			wdc_error_detail(env, "Supported operators are listed in src/nn/OPERATORS.md.");
	nd->op = def;
	if (p->n_input < (size_t) def->min_in ||
		(def->max_in >= 0 && p->n_input > (size_t) def->max_in) ||
		p->n_input > 16 ||
		p->n_output < (size_t) def->min_out || p->n_output > (size_t) def->max_out)
		return wdc_error(env, WDC_ERR_CORRUPT,
						 "node \"%s\" (%s) has %zu inputs and %zu outputs",
						 nname, op, p->n_input, p->n_output);
	nd->n_in = (int) p->n_input;
	nd->n_out = (int) p->n_output;
	nd->in = wdc_alloc(env, sizeof(int) * (nd->n_in + 1));
	nd->out = wdc_alloc(env, sizeof(int) * (nd->n_out + 1));
	if (!nd->in || !nd->out)
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory loading model");
	for (int i = 0; i < nd->n_out; i++)
	{
		const char *name = p->output[i];
		int			v;

		if (name[0] == '\0')
		{
			nd->out[i] = -1;
			continue;
		}
		v = name_lookup(ix, name, 1);
		if (v < 0)
			return wdc_error(env, WDC_ERR_INTERNAL, "value index full");
		if (m->values[v].producer >= 0 || m->values[v].is_init ||
			m->values[v].input >= 0)
			return wdc_error(env, WDC_ERR_CORRUPT,
							 "tensor \"%s\" is defined more than once (node \"%s\")",
							 name, nname);
		m->values[v].producer = index;
		nd->out[i] = v;
	}
	return WDC_OK;
}

/* Step 4: Kahn's algorithm over the node list. */
static WdcStatus
sort_nodes(const WdcEnv *env, WdcNnModel *m)
{
	int			n = m->n_nodes;
	int		   *pending = wdc_alloc0(env, sizeof(int) * (n + 1));
	int		   *queue = wdc_alloc(env, sizeof(int) * (n + 1));
	int		   *order = wdc_alloc(env, sizeof(int) * (n + 1));
	NnNode	   *sorted = wdc_alloc(env, sizeof(NnNode) * (n + 1));
	int			head = 0,
				tail = 0,
				done = 0;
	WdcStatus	st = WDC_OK;

	if (!pending || !queue || !order || !sorted)
	{
		st = wdc_error(env, WDC_ERR_NOMEM, "out of memory loading model");
		goto out;
	}

	/* a node waits for every input produced by another node */
	for (int i = 0; i < n; i++)
	{
		for (int j = 0; j < m->nodes[i].n_in; j++)
		{
			int			v = m->nodes[i].in[j];

			if (v >= 0 && m->values[v].producer >= 0)
				pending[i]++;
		}
		if (pending[i] == 0)
			queue[tail++] = i;
	}
	while (head < tail)
	{
		int			i = queue[head++];

		order[done++] = i;
		for (int o = 0; o < m->nodes[i].n_out; o++)
		{
			int			v = m->nodes[i].out[o];

			if (v < 0)
				continue;
			/* release consumers: scan all nodes (graphs are small) */
			for (int c = 0; c < n; c++)
				for (int j = 0; j < m->nodes[c].n_in; j++)
					if (m->nodes[c].in[j] == v && --pending[c] == 0)
						queue[tail++] = c;
		}
	}
	if (done != n)
	{
		for (int i = 0; i < n; i++)
			if (pending[i] > 0)
			{
				const char *nm = m->nodes[i].proto->name;

				st = wdc_error(env, WDC_ERR_CORRUPT,
							   "graph has a cycle through node \"%s\" (%s)",
							   nm && nm[0] ? nm : "(unnamed)",
							   m->nodes[i].proto->op_type);
				break;
			}
		goto out;
	}

	/* renumber producers to the sorted positions */
	for (int i = 0; i < n; i++)
		sorted[i] = m->nodes[order[i]];
	memcpy(m->nodes, sorted, sizeof(NnNode) * n);
	for (int i = 0; i < n; i++)
		for (int o = 0; o < m->nodes[i].n_out; o++)
			if (m->nodes[i].out[o] >= 0)
				m->values[m->nodes[i].out[o]].producer = i;

out:
	wdc_free(env, pending);
	wdc_free(env, queue);
	wdc_free(env, order);
	wdc_free(env, sorted);
	return st;
}

static WdcStatus
build_graph(const WdcEnv *env, WdcNnModel *m)
{
	Onnx__GraphProto *g = m->proto->graph;
	NameIndex	ix;
	size_t		max_values = 0;
	int			n_real_inputs = 0;
	WdcStatus	st;

	/* step 2: size the index by every name the graph can mention */
	max_values = g->n_initializer + g->n_input + g->n_output;
	for (size_t i = 0; i < g->n_node; i++)
		max_values += g->node[i]->n_input + g->node[i]->n_output;
	if (max_values > (size_t) 1 << 24 || g->n_node > (size_t) 1 << 20)
		return wdc_error(env, WDC_ERR_LIMIT, "model graph is too large");
	memset(&ix, 0, sizeof(ix));
	ix.cap = 16;
	while (ix.cap < 2 * max_values + 2)
		ix.cap <<= 1;
	ix.slot = wdc_alloc(env, sizeof(int) * ix.cap);
	m->values = wdc_alloc0(env, sizeof(NnValue) * (max_values + 1));
	m->nodes = wdc_alloc0(env, sizeof(NnNode) * (g->n_node + 1));
	if (!ix.slot || !m->values || !m->nodes)
	{
		wdc_free(env, ix.slot);
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory loading model");
	}
	memset(ix.slot, 0xff, sizeof(int) * ix.cap);
	ix.values = m->values;
	ix.max = (int) max_values;

	/* initializers */
	for (size_t i = 0; i < g->n_initializer; i++)
	{
		Onnx__TensorProto *t = g->initializer[i];
		int			v;

		if (t->name == NULL || t->name[0] == '\0')
		{
			st = wdc_error(env, WDC_ERR_CORRUPT, "initializer %zu has no name", i);
			goto fail;
		}
		v = name_lookup(&ix, t->name, 1);
		if (m->values[v].is_init)
		{
			st = wdc_error(env, WDC_ERR_CORRUPT,
						   "initializer \"%s\" appears more than once", t->name);
			goto fail;
		}
		m->values[v].is_init = 1;
		st = nn_tensor_convert(env, t, &m->values[v].elem, &m->values[v].shape,
							   &m->values[v].data);
		if (st != WDC_OK)
			goto fail;
	}

	/* graph inputs that are not initializers are the model's inputs */
	m->inputs = wdc_alloc0(env, sizeof(WdcNnTensorInfo) * (g->n_input + 1));
	m->input_value = wdc_alloc0(env, sizeof(int) * (g->n_input + 1));
	m->outputs = wdc_alloc0(env, sizeof(WdcNnTensorInfo) * (g->n_output + 1));
	m->output_value = wdc_alloc0(env, sizeof(int) * (g->n_output + 1));
	if (!m->inputs || !m->input_value || !m->outputs || !m->output_value)
	{
		st = wdc_error(env, WDC_ERR_NOMEM, "out of memory loading model");
		goto fail;
	}
	for (size_t i = 0; i < g->n_input; i++)
	{
		const char *name = g->input[i]->name;
		int			v;

		if (name == NULL || name[0] == '\0')
		{
			st = wdc_error(env, WDC_ERR_CORRUPT, "graph input %zu has no name", i);
			goto fail;
		}
		v = name_lookup(&ix, name, 1);
		if (m->values[v].is_init)
			continue;			/* an initializer with a declared type */
		if (m->values[v].input >= 0)
		{
			st = wdc_error(env, WDC_ERR_CORRUPT,
						   "graph input \"%s\" appears more than once", name);
			goto fail;
		}
		st = read_value_info(env, g->input[i], &m->inputs[n_real_inputs], 1);
		if (st != WDC_OK)
			goto fail;
		m->values[v].input = n_real_inputs;
		m->input_value[n_real_inputs++] = v;
	}
	m->n_inputs = n_real_inputs;

	/* step 3: nodes */
	m->n_nodes = (int) g->n_node;
	for (int i = 0; i < m->n_nodes; i++)
	{
		m->nodes[i].proto = g->node[i];
		st = resolve_node(env, &ix, m, &m->nodes[i], i);
		if (st != WDC_OK)
			goto fail;
	}
	for (int i = 0; i < m->n_nodes; i++)
	{
		NnNode	   *nd = &m->nodes[i];

		for (int j = 0; j < nd->n_in; j++)
		{
			const char *name = nd->proto->input[j];
			int			v;

			if (name[0] == '\0')
			{
				nd->in[j] = -1;
				continue;
			}
			v = name_lookup(&ix, name, 0);
			if (v < 0 || (m->values[v].producer < 0 && !m->values[v].is_init &&
						  m->values[v].input < 0))
			{
				st = wdc_error(env, WDC_ERR_CORRUPT,
							   "tensor \"%s\" read by node \"%s\" (%s) is not defined",
							   name, nd->proto->name ? nd->proto->name : "",
							   nd->proto->op_type),
					wdc_error_detail(env, "It is neither an initializer, a graph input nor a node output.");
				goto fail;
			}
			nd->in[j] = v;
			m->values[v].n_consumers++;
		}
	}

	/* graph outputs */
	for (size_t i = 0; i < g->n_output; i++)
	{
		const char *name = g->output[i]->name ? g->output[i]->name : "";
		int			v = name_lookup(&ix, name, 0);

		if (v < 0)
		{
			st = wdc_error(env, WDC_ERR_CORRUPT,
						   "graph output \"%s\" is not defined", name);
			goto fail;
		}
		st = read_value_info(env, g->output[i], &m->outputs[i], 0);
		if (st != WDC_OK)
			goto fail;
		m->values[v].is_output = 1;
		m->output_value[i] = v;
	}
	m->n_outputs = (int) g->n_output;
	if (m->n_outputs == 0)
	{
		st = wdc_error(env, WDC_ERR_CORRUPT, "model graph has no outputs");
		goto fail;
	}
	m->n_values = ix.n;
	wdc_free(env, ix.slot);

	/* step 4 */
	return sort_nodes(env, m);

fail:
	m->n_values = ix.n;
	wdc_free(env, ix.slot);
	return st;
}

WdcStatus
wdc_nn_load(const WdcEnv *env, const void *bytes, size_t len,
			WdcNnModel **model)
{
	ProtobufCAllocator pa = {pb_alloc, pb_free, (void *) env};
	WdcNnModel *m;
	WdcStatus	st;

	*model = NULL;
	m = wdc_alloc0(env, sizeof(WdcNnModel));
	if (m == NULL)
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory loading model");

	/* step 1 */
	m->proto = onnx__model_proto__unpack(&pa, len, bytes);
	if (m->proto == NULL)
	{
		wdc_free(env, m);
		return wdc_error(env, WDC_ERR_CORRUPT, "invalid ONNX model"),
			wdc_error_detail(env, "The %zu bytes are not a valid ModelProto (truncated or not ONNX).", len);
	}
	if (m->proto->graph == NULL)
	{
		st = wdc_error(env, WDC_ERR_CORRUPT, "ONNX model has no graph");
		goto fail;
	}
	m->opset = find_opset(m->proto);
	if (m->opset < 1)
	{
		if (m->proto->n_opset_import > 0 && m->proto->opset_import[0]->domain)
			st = wdc_error(env, WDC_ERR_UNSUPPORTED,
						   "operator set domain \"%s\" is not supported",
						   m->proto->opset_import[0]->domain);
		else
			st = wdc_error(env, WDC_ERR_CORRUPT,
						   "ONNX model imports no default-domain opset");
		goto fail;
	}
	if (m->proto->graph->n_sparse_initializer > 0)
	{
		st = wdc_error(env, WDC_ERR_UNSUPPORTED,
					   "sparse initializers are not supported");
		goto fail;
	}

	/* steps 2 to 4 */
	st = build_graph(env, m);
	if (st != WDC_OK)
		goto fail;
	*model = m;
	return WDC_OK;

fail:
	wdc_nn_free(env, m);
	return st;
}

void
wdc_nn_free(const WdcEnv *env, WdcNnModel *m)
{
	ProtobufCAllocator pa = {pb_alloc, pb_free, (void *) env};

	if (m == NULL)
		return;
	if (m->values)
		for (int i = 0; i < m->n_values; i++)
			wdc_free(env, m->values[i].data);
	if (m->nodes)
		for (int i = 0; i < m->n_nodes; i++)
		{
			wdc_free(env, m->nodes[i].in);
			wdc_free(env, m->nodes[i].out);
		}
	wdc_free(env, m->values);
	wdc_free(env, m->nodes);
	wdc_free(env, m->inputs);
	wdc_free(env, m->input_value);
	wdc_free(env, m->outputs);
	wdc_free(env, m->output_value);
	if (m->proto)
		onnx__model_proto__free_unpacked(m->proto, &pa);
	wdc_free(env, m);
}

int
wdc_nn_input_count(const WdcNnModel *m)
{
	return m->n_inputs;
}

const WdcNnTensorInfo *
wdc_nn_input(const WdcNnModel *m, int i)
{
	return (i >= 0 && i < m->n_inputs) ? &m->inputs[i] : NULL;
}

int
wdc_nn_output_count(const WdcNnModel *m)
{
	return m->n_outputs;
}

const WdcNnTensorInfo *
wdc_nn_output(const WdcNnModel *m, int i)
{
	return (i >= 0 && i < m->n_outputs) ? &m->outputs[i] : NULL;
}

int
wdc_nn_find_output(const WdcNnModel *m, const char *name)
{
	for (int i = 0; i < m->n_outputs; i++)
		if (strcmp(m->outputs[i].name, name) == 0)
			return i;
	return -1;
}

int
wdc_nn_find_input(const WdcNnModel *m, const char *name)
{
	for (int i = 0; i < m->n_inputs; i++)
		if (strcmp(m->inputs[i].name, name) == 0)
			return i;
	return -1;
}

int
wdc_nn_metadata_count(const WdcNnModel *m)
{
	return (int) m->proto->n_metadata_props;
}

void
wdc_nn_metadata(const WdcNnModel *m, int i, const char **key,
				const char **value)
{
	const Onnx__StringStringEntryProto *e = m->proto->metadata_props[i];

	*key = e->key ? e->key : "";
	*value = e->value ? e->value : "";
}

const char *
wdc_nn_metadata_get(const WdcNnModel *m, const char *key)
{
	const char *found = NULL;

	for (size_t i = 0; i < m->proto->n_metadata_props; i++)
	{
		const Onnx__StringStringEntryProto *e = m->proto->metadata_props[i];

		if (e->key && strcmp(e->key, key) == 0)
			found = e->value ? e->value : "";
	}
	return found;
}

int
wdc_nn_opset(const WdcNnModel *m)
{
	return m->opset;
}
