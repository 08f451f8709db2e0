/*
 * nn_int.h
 *	  Internal structures of the ONNX runtime: model, plan, operator table.
 *
 * A model (nn_load.c) is the parsed protobuf plus an index: values (every
 * tensor name in the graph) and nodes in topological order.  A plan
 * (nn_plan.c) gives each value a concrete shape, constant data when it could
 * be folded, and an offset in the arena.  Each node becomes a step with its
 * operator parameters resolved.  Kernels (nn_ops_*.c) read those parameters
 * and raw buffers only.
 */
#ifndef WDC_NN_INT_H
#define WDC_NN_INT_H

#include "nn/nn.h"
#include "onnx.pb-c.h"

#define NN_MAX_RANK WDC_NN_MAX_RANK
#define NN_MAX_PARAMS 48

/*
 * Parameter slots of a Relu or LeakyRelu fused into the Conv or Gemm that
 * feeds it: p[NN_ACT_SLOT] is 1 when fused, f[NN_ACT_ALPHA] the slope for
 * negative inputs (0 for Relu).
 */
#define NN_ACT_SLOT (NN_MAX_PARAMS - 2)
#define NN_ACT_ALPHA 7

/*
 * Largest tensor the runtime accepts, in elements.  It keeps every size
 * computation far from overflow (2^40 floats is 4 TiB, beyond any backend).
 */
#define NN_MAX_NUMEL (((int64_t) 1) << 40)

typedef struct NnShape
{
	int			rank;
	int64_t		d[NN_MAX_RANK];
} NnShape;

/* One named tensor of the graph. */
typedef struct NnValue
{
	const char *name;			/* points into the protobuf */
	int			producer;		/* node index, or -1 */
	int			input;			/* graph input index, or -1 */
	int			n_consumers;	/* node inputs that read it */
	int			is_output;		/* a graph output */
	/* initializers only: */
	int			is_init;
	int			elem;			/* WDC_NN_FLOAT or WDC_NN_INT64 */
	NnShape		shape;
	void	   *data;			/* converted, owned by the model */
} NnValue;

struct NnOpDef;

typedef struct NnNode
{
	Onnx__NodeProto *proto;
	const struct NnOpDef *op;
	int			n_in;
	int			n_out;
	int		   *in;				/* value index, -1 for an omitted input */
	int		   *out;
} NnNode;

struct WdcNnModel
{
	Onnx__ModelProto *proto;
	int			opset;
	int			n_values;
	NnValue    *values;
	int			n_nodes;
	NnNode	   *nodes;			/* topological order */
	int			n_inputs;
	int		   *input_value;
	WdcNnTensorInfo *inputs;
	int			n_outputs;
	int		   *output_value;
	WdcNnTensorInfo *outputs;
};

/* Per-plan state of a value. */
typedef struct NnPVal
{
	NnShape		shape;
	int			elem;
	int			known;			/* shape has been inferred */
	void	   *cdata;			/* constant data, or NULL */
	int			owned;			/* cdata allocated by the plan */
	int64_t		offset;			/* arena offset, -1 when not in the arena */
	size_t		bytes;
	int			first;			/* step that writes it, -1 for inputs */
	int			last;			/* last step that reads it */
	int			tangent;		/* depends on the JVP input */
	int64_t		toffset;		/* arena offset of its k tangents */
	int64_t		slice_rows;		/* > 0: holds only one slice of a row run */
	void	   *buf;			/* resolved address during a run */
	float	   *tbuf;			/* resolved tangent address during a run */
} NnPVal;

/* One executed node with resolved parameters. */
typedef struct NnStep
{
	const struct NnOpDef *op;
	const NnNode *node;
	int			n_in;
	int			n_out;
	int		   *in;				/* value indices; may differ from the node's */
	int		   *out;
	int			skip;			/* folded away or merged into another step */
	int64_t		p[NN_MAX_PARAMS];	/* operator parameters */
	float		f[8];
	float	   *w;				/* plan-owned weights (folded BatchNorm), or NULL */
	float	   *b;
	struct NnConvDirect *direct;	/* Conv's direct kernel, or NULL */
	size_t		scratch;		/* bytes of scratch the kernel needs */
	size_t		tscratch;		/* bytes of scratch its JVP needs */
	int			run_end;		/* > index: first step of a row run that ends
								 * before step run_end */
	int64_t		run_slice;		/* images per slice of that run */
} NnStep;

struct WdcNnPlan
{
	const WdcNnModel *model;
	NnPVal	   *vals;
	int			n_steps;
	NnStep	   *steps;
	WdcNnTensorInfo *inputs;
	WdcNnTensorInfo *outputs;
	char	   *arena;
	size_t		arena_bytes;
	size_t		scratch_offset;
	int			jvp_input;
	int			jvp_k;
	int			only_output;	/* output computed alone, or -1 for all */
};

/* Arguments of an operator's prepare function. */
typedef struct NnCtx
{
	const WdcEnv *env;
	WdcNnPlan  *plan;
	NnStep	   *step;
	int			opset;
} NnCtx;

/* Kernel arguments during a run. */
typedef struct NnRun
{
	const NnStep *s;
	void	   *in[16];			/* input buffers, NULL for omitted inputs */
	void	   *out[8];
	const NnShape *ish[16];
	const NnShape *osh[8];
	float	   *scratch;
	/* JVP: tangents of inputs (NULL = zero) and outputs, k directions */
	float	   *tin[16];
	float	   *tout[8];
	int			k;
} NnRun;

typedef struct NnOpDef
{
	const char *name;
	int			min_opset;
	int			min_in;
	int			max_in;			/* -1: variadic */
	int			min_out;
	int			max_out;
	/* infer output shapes and fill step parameters */
	WdcStatus	(*prepare) (NnCtx *c);
	/* compute outputs; no failure is possible after prepare */
	void		(*exec) (NnRun *r);
	/* compute output tangents from input tangents; NULL = not differentiable */
	void		(*jvp) (NnRun *r);

	/*
	 * Compute nrows images of the batch only: input 0 from row in_row0 of
	 * r->in[0], output 0 to row out_row0 of r->out[0].  Set for operators
	 * whose every output image depends only on the same image of input 0 and
	 * on constant inputs; see plan_row_runs.
	 */
	void		(*exec_rows) (NnRun *r, int64_t in_row0, int64_t out_row0,
							  int64_t nrows);
} NnOpDef;

/* nn_ops.c */
extern const NnOpDef *nn_op_find(const char *name);
extern int64_t nn_attr_int(const NnNode *node, const char *name, int64_t dflt);
extern float nn_attr_float(const NnNode *node, const char *name, float dflt);
extern const int64_t *nn_attr_ints(const NnNode *node, const char *name,
								   int *n);
extern const char *nn_attr_string(const NnNode *node, const char *name,
								  char *buf, size_t buflen);
extern const Onnx__AttributeProto *nn_attr(const NnNode *node,
										   const char *name);
extern WdcStatus nn_unsupported(NnCtx *c, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));
extern WdcStatus nn_invalid(NnCtx *c, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));

/* nn_plan.c: helpers for prepare functions */
extern const NnShape *nn_in_shape(NnCtx *c, int i);
extern int	nn_in_elem(NnCtx *c, int i);
extern int	nn_has_in(NnCtx *c, int i);
extern const void *nn_in_const(NnCtx *c, int i);
extern WdcStatus nn_set_out(NnCtx *c, int i, const NnShape *shape, int elem);
extern WdcStatus nn_set_out_const(NnCtx *c, int i, const NnShape *shape,
								  int elem, const void *data);
extern WdcStatus nn_const_ints(NnCtx *c, int i, int64_t *out, int max, int *n);
extern int64_t nn_numel(const NnShape *s);
extern int	nn_norm_axis(int64_t axis, int rank, int *out);
extern WdcStatus nn_check_shape(NnCtx *c, const NnShape *s);

/* nn_load.c */
extern WdcStatus nn_tensor_convert(const WdcEnv *env, const Onnx__TensorProto *t,
								   int *elem, NnShape *shape, void **data);

static inline size_t
nn_elem_size(int elem)
{
	return elem == WDC_NN_INT64 ? 8 : 4;
}

/* Operator tables, one per source file. */
extern const NnOpDef nn_ops_elem[];
extern const NnOpDef nn_ops_linear[];
extern const NnOpDef nn_ops_norm[];
extern const NnOpDef nn_ops_shape[];

/* nn_ops_linear.c */
extern int	nn_fuse_activation(NnCtx *c, float alpha);
/* the one GEMM seam */
extern void nn_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
					 float alpha, const float *a, int64_t lda,
					 const float *b, int64_t ldb, float beta,
					 float *c, int64_t ldc);

/* nn_conv_direct.c */

/*
 * Kernel choice for Conv, read when a step is planned.  AUTO runs the
 * Winograd kernel (nn_conv_wino.c) where it applies and saves arithmetic,
 * else the direct kernel wherever it can run (constant weights, an AVX2 or
 * AVX-512 CPU).  DIRECT never runs the Winograd kernel, DIRECT_AVX2 runs
 * the direct kernel with AVX2, WINOGRAD runs the Winograd kernel wherever
 * its geometry allows (any batch), WINOGRAD_AVX2 likewise with AVX2, and
 * IM2COL runs neither.  All but AUTO exist for tests and benchmarks.
 */
enum
{
	NN_CONV_AUTO, NN_CONV_IM2COL, NN_CONV_DIRECT_AVX2, NN_CONV_DIRECT,
	NN_CONV_WINOGRAD, NN_CONV_WINOGRAD_AVX2
};
extern int	nn_conv_kernel;

/* Geometry of a 2-D convolution (1-D runs with H = KH = 1). */
typedef struct NnConvGeom
{
	int64_t		N,
				C,
				H,
				W,
				M,
				G,
				KH,
				KW,
				SH,
				SW,
				DH,
				DW,
				PT,
				PL,
				OH,
				OW;
} NnConvGeom;

typedef struct NnConvDirect NnConvDirect;

/*
 * Plan the direct kernel for a convolution with weights w [M][C/G][KH][KW]
 * and bias b (or NULL), both packed into *out.  Sets *out to NULL when
 * the kernel does not apply, else *scratch to the bytes it needs per run.
 * The result is one allocation, released with wdc_free.
 */
extern WdcStatus nn_conv_direct_plan(NnCtx *c, const NnConvGeom *g,
									 const float *w, const float *b,
									 NnConvDirect **out, size_t *scratch);
/* Bytes of the plan's allocation (packed weights included). */
extern size_t nn_conv_direct_bytes(const NnConvDirect *d);
/* Pack new weights and bias of the same shape (after a BatchNorm fold). */
extern void nn_conv_direct_pack(NnConvDirect *d, const float *w,
								const float *b);
/* Convolve nimg images x into y, then bias and the fused activation. */
extern void nn_conv_direct_run(const NnConvDirect *d, const float *x,
							   float *y, int64_t nimg, int act, float alpha,
							   float *scratch);

/* nn_conv_wino.c: used through nn_conv_direct_plan and its run and pack. */
typedef struct NnConvWino NnConvWino;

/*
 * When nn_conv_wino_bytes accepts a geometry: AUTO where it saves
 * arithmetic on its own, CHAIN also where it does only inside a chain of
 * Winograd steps (few phase channels), FORCE wherever the geometry allows.
 */
enum
{
	NN_WINO_AUTO, NN_WINO_CHAIN, NN_WINO_FORCE
};

/*
 * Bytes of a Winograd plan for g with vectors of lanes floats (16:
 * AVX-512F, 8: AVX2 and FMA), or 0 where the kernel does not apply under
 * mode or the CPU lacks the instructions; *scratch gets a run's bytes.
 */
extern size_t nn_conv_wino_bytes(const NnConvGeom *g, int mode, int lanes,
								 size_t *scratch);
/*
 * Output tile side for phase kernels of 2x2 taps: 0 picks F(2x2, 2x2) or
 * F(4x4, 2x2) by the products each needs, 2 or 4 forces one (for tests).
 */
extern int	nn_conv_wino_tile;
/* Set up a plan in mem (nn_conv_wino_bytes bytes) with packed weights. */
extern NnConvWino *nn_conv_wino_init(void *mem, const NnConvGeom *g,
									 int lanes, const float *w,
									 const float *b);
extern void nn_conv_wino_pack(NnConvWino *wg, const float *w, const float *b);
/* The Winograd plan that a direct-kernel plan runs, or NULL. */
extern NnConvWino *nn_conv_direct_winograd(const NnConvDirect *d);
/*
 * The Winograd plan a step runs or could run inside a chain, or NULL; use
 * switches the step to it.
 */
extern NnConvWino *nn_conv_direct_chain(NnConvDirect *d, int use);
/*
 * Have a Winograd plan read its input (in = 1) or write its output (out =
 * 1) in chunk layout; -1 leaves that side as it is.
 */
extern void nn_conv_wino_set_chunked(NnConvWino *wg, int in, int out);
/* Which sides are in chunk layout: 1 the input, 2 the output. */
extern int	nn_conv_wino_chunked(const NnConvWino *wg);
extern void nn_conv_wino_run(const NnConvWino *wg, const float *x, float *y,
							 int64_t nimg, int act, float alpha,
							 float *scratch);

#endif							/* WDC_NN_INT_H */
