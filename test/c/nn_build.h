/*
 * nn_build.h
 *	  Build small ONNX models in memory for the runtime's unit tests.
 *
 * The builder fills protobuf-c structures and packs them into ModelProto
 * bytes, so tests need no committed model files and no Python.  Every
 * allocation goes into the builder's pool and is freed by nnb_free().
 * Capacities are fixed (NNB_MAX items of each kind); overflow aborts.
 */
#ifndef NN_BUILD_H
#define NN_BUILD_H

#include "onnx.pb-c.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NNB_MAX 64

typedef struct NnBuild
{
	Onnx__ModelProto model;
	Onnx__GraphProto graph;
	Onnx__OperatorSetIdProto opset;
	Onnx__OperatorSetIdProto *opsets[1];
	Onnx__NodeProto *nodes[NNB_MAX];
	Onnx__TensorProto *inits[NNB_MAX];
	Onnx__ValueInfoProto *inputs[NNB_MAX];
	Onnx__ValueInfoProto *outputs[NNB_MAX];
	Onnx__StringStringEntryProto *meta[NNB_MAX];
	void	   *pool[4096];
	int			npool;
} NnBuild;

static inline void *
nnb_alloc(NnBuild *b, size_t n)
{
	void	   *p = calloc(1, n ? n : 1);

	if (p == NULL || b->npool >= 4096)
		abort();
	b->pool[b->npool++] = p;
	return p;
}

static inline char *
nnb_str(NnBuild *b, const char *s)
{
	char	   *d = nnb_alloc(b, strlen(s) + 1);

	strcpy(d, s);
	return d;
}

static inline void
nnb_init(NnBuild *b, int opset)
{
	Onnx__ModelProto m = ONNX__MODEL_PROTO__INIT;
	Onnx__GraphProto g = ONNX__GRAPH_PROTO__INIT;
	Onnx__OperatorSetIdProto o = ONNX__OPERATOR_SET_ID_PROTO__INIT;

	memset(b, 0, sizeof(*b));
	b->model = m;
	b->graph = g;
	b->opset = o;
	b->opset.domain = nnb_str(b, "");
	b->opset.has_version = 1;
	b->opset.version = opset;
	b->opsets[0] = &b->opset;
	b->model.n_opset_import = 1;
	b->model.opset_import = b->opsets;
	b->model.has_ir_version = 1;
	b->model.ir_version = 8;
	b->model.graph = &b->graph;
	b->graph.name = nnb_str(b, "test");
	b->graph.node = b->nodes;
	b->graph.initializer = b->inits;
	b->graph.input = b->inputs;
	b->graph.output = b->outputs;
	b->model.metadata_props = b->meta;
}

static inline void
nnb_free(NnBuild *b)
{
	for (int i = 0; i < b->npool; i++)
		free(b->pool[i]);
	b->npool = 0;
}

/* A float tensor value info; dims < 0 become the symbolic dimension "N". */
static inline Onnx__ValueInfoProto *
nnb_value_info(NnBuild *b, const char *name, int elem, int rank,
			   const int64_t *dims)
{
	Onnx__ValueInfoProto *vi = nnb_alloc(b, sizeof(*vi));
	Onnx__TypeProto *tp = nnb_alloc(b, sizeof(*tp));
	Onnx__TypeProto__Tensor *tt = nnb_alloc(b, sizeof(*tt));
	Onnx__TensorShapeProto *sp = nnb_alloc(b, sizeof(*sp));

	onnx__value_info_proto__init(vi);
	onnx__type_proto__init(tp);
	onnx__type_proto__tensor__init(tt);
	onnx__tensor_shape_proto__init(sp);
	vi->name = nnb_str(b, name);
	vi->type = tp;
	tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
	tp->tensor_type = tt;
	tt->has_elem_type = 1;
	tt->elem_type = elem;
	if (rank < 0)
		return vi;				/* shape unknown */
	tt->shape = sp;
	sp->n_dim = rank;
	sp->dim = nnb_alloc(b, sizeof(void *) * (rank + 1));
	for (int i = 0; i < rank; i++)
	{
		Onnx__TensorShapeProto__Dimension *d = nnb_alloc(b, sizeof(*d));

		onnx__tensor_shape_proto__dimension__init(d);
		if (dims[i] < 0)
		{
			d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
			d->dim_param = nnb_str(b, "N");
		}
		else
		{
			d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
			d->dim_value = dims[i];
		}
		sp->dim[i] = d;
	}
	return vi;
}

static inline void
nnb_input(NnBuild *b, const char *name, int rank, const int64_t *dims)
{
	if (b->graph.n_input >= NNB_MAX)
		abort();
	b->inputs[b->graph.n_input++] = nnb_value_info(b, name, 1, rank, dims);
}

static inline void
nnb_output(NnBuild *b, const char *name)
{
	if (b->graph.n_output >= NNB_MAX)
		abort();
	b->outputs[b->graph.n_output++] = nnb_value_info(b, name, 1, -1, NULL);
}

static inline Onnx__TensorProto *
nnb_tensor(NnBuild *b, const char *name, int dtype, int rank,
		   const int64_t *dims)
{
	Onnx__TensorProto *t = nnb_alloc(b, sizeof(*t));

	onnx__tensor_proto__init(t);
	t->name = nnb_str(b, name);
	t->has_data_type = 1;
	t->data_type = dtype;
	t->n_dims = rank;
	t->dims = nnb_alloc(b, sizeof(int64_t) * (rank + 1));
	if (rank > 0)
		memcpy(t->dims, dims, sizeof(int64_t) * rank);
	return t;
}

static inline void
nnb_add_init(NnBuild *b, Onnx__TensorProto *t)
{
	if (b->graph.n_initializer >= NNB_MAX)
		abort();
	b->inits[b->graph.n_initializer++] = t;
}

/* Float initializer in the typed float_data field. */
static inline Onnx__TensorProto *
nnb_init_f(NnBuild *b, const char *name, int rank, const int64_t *dims,
		   const float *data)
{
	Onnx__TensorProto *t = nnb_tensor(b, name, 1, rank, dims);
	size_t		n = 1;

	for (int i = 0; i < rank; i++)
		n *= dims[i];
	t->n_float_data = n;
	t->float_data = nnb_alloc(b, sizeof(float) * n);
	memcpy(t->float_data, data, sizeof(float) * n);
	nnb_add_init(b, t);
	return t;
}

/* Initializer of any type from little-endian raw bytes. */
static inline Onnx__TensorProto *
nnb_init_raw(NnBuild *b, const char *name, int dtype, int rank,
			 const int64_t *dims, const void *bytes, size_t len)
{
	Onnx__TensorProto *t = nnb_tensor(b, name, dtype, rank, dims);

	t->has_raw_data = 1;
	t->raw_data.len = len;
	t->raw_data.data = nnb_alloc(b, len);
	memcpy(t->raw_data.data, bytes, len);
	nnb_add_init(b, t);
	return t;
}

static inline Onnx__TensorProto *
nnb_init_i64(NnBuild *b, const char *name, int rank, const int64_t *dims,
			 const int64_t *data)
{
	Onnx__TensorProto *t = nnb_tensor(b, name, 7, rank, dims);
	size_t		n = 1;

	for (int i = 0; i < rank; i++)
		n *= dims[i];
	t->n_int64_data = n;
	t->int64_data = nnb_alloc(b, sizeof(int64_t) * n);
	memcpy(t->int64_data, data, sizeof(int64_t) * n);
	nnb_add_init(b, t);
	return t;
}

/* Split a comma-separated list; "" entries stay (omitted optional inputs). */
static inline size_t
nnb_split(NnBuild *b, const char *list, char ***out)
{
	size_t		n = 1;
	char	   *copy = nnb_str(b, list);
	char	   *p = copy;

	if (list[0] == '\0')
	{
		*out = NULL;
		return 0;
	}
	for (const char *q = list; *q; q++)
		n += *q == ',';
	*out = nnb_alloc(b, sizeof(char *) * n);
	for (size_t i = 0; i < n; i++)
	{
		char	   *comma = strchr(p, ',');

		if (comma)
			*comma = '\0';
		(*out)[i] = p;
		p = comma ? comma + 1 : p + strlen(p);
	}
	return n;
}

static inline Onnx__NodeProto *
nnb_node(NnBuild *b, const char *op, const char *name, const char *inputs,
		 const char *outputs)
{
	Onnx__NodeProto *nd = nnb_alloc(b, sizeof(*nd));

	if (b->graph.n_node >= NNB_MAX)
		abort();
	onnx__node_proto__init(nd);
	nd->op_type = nnb_str(b, op);
	nd->name = nnb_str(b, name);
	nd->n_input = nnb_split(b, inputs, &nd->input);
	nd->n_output = nnb_split(b, outputs, &nd->output);
	nd->attribute = nnb_alloc(b, sizeof(void *) * 16);
	b->nodes[b->graph.n_node++] = nd;
	return nd;
}

static inline Onnx__AttributeProto *
nnb_attr(NnBuild *b, Onnx__NodeProto *nd, const char *name, int type)
{
	Onnx__AttributeProto *a = nnb_alloc(b, sizeof(*a));

	if (nd->n_attribute >= 16)
		abort();
	onnx__attribute_proto__init(a);
	a->name = nnb_str(b, name);
	a->has_type = 1;
	a->type = type;
	nd->attribute[nd->n_attribute++] = a;
	return a;
}

static inline void
nnb_attr_i(NnBuild *b, Onnx__NodeProto *nd, const char *name, int64_t v)
{
	Onnx__AttributeProto *a = nnb_attr(b, nd, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);

	a->has_i = 1;
	a->i = v;
}

static inline void
nnb_attr_f(NnBuild *b, Onnx__NodeProto *nd, const char *name, float v)
{
	Onnx__AttributeProto *a = nnb_attr(b, nd, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);

	a->has_f = 1;
	a->f = v;
}

static inline void
nnb_attr_ints(NnBuild *b, Onnx__NodeProto *nd, const char *name, int n,
			  const int64_t *v)
{
	Onnx__AttributeProto *a = nnb_attr(b, nd, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);

	a->n_ints = n;
	a->ints = nnb_alloc(b, sizeof(int64_t) * (n + 1));
	memcpy(a->ints, v, sizeof(int64_t) * n);
}

static inline void
nnb_attr_s(NnBuild *b, Onnx__NodeProto *nd, const char *name, const char *v)
{
	Onnx__AttributeProto *a = nnb_attr(b, nd, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);

	a->has_s = 1;
	a->s.len = strlen(v);
	a->s.data = (uint8_t *) nnb_str(b, v);
}

static inline void
nnb_meta(NnBuild *b, const char *key, const char *value)
{
	Onnx__StringStringEntryProto *e = nnb_alloc(b, sizeof(*e));

	onnx__string_string_entry_proto__init(e);
	e->key = nnb_str(b, key);
	e->value = nnb_str(b, value);
	b->meta[b->model.n_metadata_props++] = e;
}

/* Serialized model; the buffer belongs to the pool. */
static inline uint8_t *
nnb_pack(NnBuild *b, size_t *len)
{
	uint8_t    *buf;

	b->graph.node = b->nodes;
	*len = onnx__model_proto__get_packed_size(&b->model);
	buf = nnb_alloc(b, *len);
	onnx__model_proto__pack(&b->model, buf);
	return buf;
}

#endif							/* NN_BUILD_H */
