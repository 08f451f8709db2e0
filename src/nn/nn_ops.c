/*
 * nn_ops.c
 *	  Operator lookup and node attribute access.
 *
 * Each nn_ops_*.c file exports a table of NnOpDef ending in a NULL name;
 * nn_op_find searches them in turn.
 */
#include "nn/nn_int.h"

#include <string.h>

static const NnOpDef *const op_tables[] = {
	nn_ops_elem, nn_ops_linear, nn_ops_norm, nn_ops_shape
};

const NnOpDef *
nn_op_find(const char *name)
{
	for (size_t t = 0; t < sizeof(op_tables) / sizeof(op_tables[0]); t++)
		for (const NnOpDef *d = op_tables[t]; d->name; d++)
			if (strcmp(d->name, name) == 0)
				return d;
	return NULL;
}

const Onnx__AttributeProto *
nn_attr(const NnNode *node, const char *name)
{
	for (size_t i = 0; i < node->proto->n_attribute; i++)
	{
		const Onnx__AttributeProto *a = node->proto->attribute[i];

		if (a->name && strcmp(a->name, name) == 0)
			return a;
	}
	return NULL;
}

int64_t
nn_attr_int(const NnNode *node, const char *name, int64_t dflt)
{
	const Onnx__AttributeProto *a = nn_attr(node, name);

	return (a && a->has_i) ? a->i : dflt;
}

float
nn_attr_float(const NnNode *node, const char *name, float dflt)
{
	const Onnx__AttributeProto *a = nn_attr(node, name);

	return (a && a->has_f) ? a->f : dflt;
}

/* The ints of a list attribute; NULL (and *n = -1) when absent. */
const int64_t *
nn_attr_ints(const NnNode *node, const char *name, int *n)
{
	const Onnx__AttributeProto *a = nn_attr(node, name);

	if (a == NULL || (a->n_ints == 0 &&
					  a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS))
	{
		*n = -1;
		return NULL;
	}
	*n = a->n_ints > (1 << 20) ? (1 << 20) : (int) a->n_ints;
	return a->ints;
}

/* A string attribute copied into buf (truncated), or NULL when absent. */
const char *
nn_attr_string(const NnNode *node, const char *name, char *buf, size_t buflen)
{
	const Onnx__AttributeProto *a = nn_attr(node, name);
	size_t		len;

	if (a == NULL || !a->has_s)
		return NULL;
	len = a->s.len < buflen - 1 ? a->s.len : buflen - 1;
	memcpy(buf, a->s.data, len);
	buf[len] = '\0';
	return buf;
}
