/*
 * nn.h
 *	  Public interface of the ONNX runtime in the PostgreSQL-free core.
 *
 * A model is loaded once from ONNX bytes (wdc_nn_load) and is read-only
 * afterwards, so one parsed model can serve many plans.  A plan fixes every
 * tensor shape for one batch size, folds constants, and owns one arena for
 * all intermediate buffers.  wdc_nn_run reuses that arena on every call, so
 * running a plan allocates nothing.  Plans are not safe for concurrent runs,
 * which PostgreSQL's single-threaded backends never attempt.
 *
 * Operators and attributes that the runtime cannot run are rejected by
 * wdc_nn_load (operators) or by planning (attributes).  To reject a model
 * when it is registered, load it and plan it for batch 1 right away.
 *
 * Memory: every object comes from env->alloc and is released with env->free,
 * so pass an env with the same allocator to the matching free call.  Errors:
 * each entry point returns a WdcStatus and records a message in env->error;
 * on failure nothing is left allocated.
 *
 * Tensors cross this interface as dense row-major arrays.  Data is float32
 * except where a tensor's elem_type says WDC_NN_INT64.
 *
 * Operators and tested attributes are listed in src/nn/OPERATORS.md.
 */
#ifndef WDC_NN_H
#define WDC_NN_H

#include "core/wdc_core.h"

#define WDC_NN_MAX_RANK 8

/* Element types, numbered as ONNX's TensorProto.DataType. */
#define WDC_NN_FLOAT 1
#define WDC_NN_INT64 7

typedef struct WdcNnModel WdcNnModel;
typedef struct WdcNnPlan WdcNnPlan;

/*
 * Name, element type and shape of a graph input or output.  In a model,
 * dims[i] is -1 where the ONNX file leaves the dimension symbolic (usually
 * the batch); in a plan every dimension is known.
 */
typedef struct WdcNnTensorInfo
{
	const char *name;			/* owned by the model */
	int			elem_type;		/* WDC_NN_FLOAT or WDC_NN_INT64 */
	int			rank;
	int64_t		dims[WDC_NN_MAX_RANK];
} WdcNnTensorInfo;

/*
 * Shape and optional constant value for one graph input, used by
 * wdc_nn_plan_create_ex.  rank < 0 means "take the model's declared shape,
 * with symbolic dimensions set to the batch size".  A non-NULL data makes the
 * input a plan-time constant (copied), which lets the planner fold whatever
 * depends only on it.  Pass NULL for such inputs to wdc_nn_run.
 */
typedef struct WdcNnBinding
{
	int			rank;
	int64_t		dims[WDC_NN_MAX_RANK];
	int			elem_type;		/* WDC_NN_FLOAT or WDC_NN_INT64, for data */
	const void *data;
} WdcNnBinding;

/* Options for wdc_nn_plan_create_ex; zero-filled means "batch 1, no JVP". */
typedef struct WdcNnPlanOptions
{
	int64_t		batch;			/* value for symbolic dimensions, >= 1 */
	const WdcNnBinding *bindings;	/* NULL, or one per model input */
	int			jvp_input;		/* input the tangents refer to */
	int			jvp_k;			/* tangent directions per run; 0 = no JVP */
	int			only_output;	/* > 0: compute graph output only_output - 1
								 * alone (steps it does not need are left
								 * out; other outputs are not written);
								 * 0: every output */
} WdcNnPlanOptions;

/* --- nn_run.c ----------------------------------------------------------- */

/*
 * Pin OpenBLAS to one thread.  Call once per process before the first run
 * (the glue does so in _PG_init).  Idempotent.
 */
extern void wdc_nn_init(void);

/* --- nn_load.c ---------------------------------------------------------- */

/*
 * Parse ONNX bytes into a model.  Checks the graph (known operators with
 * supported opsets, every value defined once, no cycles, initializer sizes)
 * and converts initializers to float32 or int64.  Operators the runtime
 * cannot run are reported here with operator, node name and opset.
 * The bytes are not referenced after return.
 */
extern WdcStatus wdc_nn_load(const WdcEnv *env, const void *bytes, size_t len,
							 WdcNnModel **model);
extern void wdc_nn_free(const WdcEnv *env, WdcNnModel *model);

/* Graph inputs that are not initializers, and graph outputs. */
extern int	wdc_nn_input_count(const WdcNnModel *model);
extern const WdcNnTensorInfo *wdc_nn_input(const WdcNnModel *model, int i);
extern int	wdc_nn_output_count(const WdcNnModel *model);
extern const WdcNnTensorInfo *wdc_nn_output(const WdcNnModel *model, int i);
/* Index of the output or input with that name, or -1. */
extern int	wdc_nn_find_output(const WdcNnModel *model, const char *name);
extern int	wdc_nn_find_input(const WdcNnModel *model, const char *name);

/*
 * ModelProto.metadata_props, in file order.  Strings are owned by the model.
 * wdc_nn_metadata_get returns the value of the last entry with that key, or
 * NULL.
 */
extern int	wdc_nn_metadata_count(const WdcNnModel *model);
extern void wdc_nn_metadata(const WdcNnModel *model, int i,
							const char **key, const char **value);
extern const char *wdc_nn_metadata_get(const WdcNnModel *model,
									   const char *key);
/* Default-domain opset the model imports. */
extern int	wdc_nn_opset(const WdcNnModel *model);

/* --- nn_plan.c ---------------------------------------------------------- */

/*
 * Plan the model for a batch size: symbolic input dimensions become batch.
 * The plan keeps a pointer to the model, which must outlive it.
 */
extern WdcStatus wdc_nn_plan_create(const WdcEnv *env, const WdcNnModel *model,
									int64_t batch, WdcNnPlan **plan);
extern WdcStatus wdc_nn_plan_create_ex(const WdcEnv *env,
									   const WdcNnModel *model,
									   const WdcNnPlanOptions *options,
									   WdcNnPlan **plan);
extern void wdc_nn_plan_free(const WdcEnv *env, WdcNnPlan *plan);

/* Concrete shapes of the plan's inputs and outputs (model order). */
extern const WdcNnTensorInfo *wdc_nn_plan_input(const WdcNnPlan *plan, int i);
extern const WdcNnTensorInfo *wdc_nn_plan_output(const WdcNnPlan *plan, int i);
/* Number of elements of a shape (product of dims). */
extern size_t wdc_nn_numel(const WdcNnTensorInfo *info);
/* Bytes of the plan's arena (intermediates, scratch and tangents). */
extern size_t wdc_nn_plan_arena_bytes(const WdcNnPlan *plan);
/*
 * Bytes the plan holds: its arena and the weights its convolution kernels
 * packed (for Winograd kernels several times the model's weights).
 */
extern size_t wdc_nn_plan_bytes(const WdcNnPlan *plan);

/* --- nn_run.c ----------------------------------------------------------- */

/*
 * Run the plan.  inputs[i] points at wdc_nn_numel(plan input i) elements of
 * the input's type (NULL for inputs bound as constants); outputs[j] receives
 * wdc_nn_numel(plan output j) elements (only the chosen one's is written
 * in a plan made with only_output).  Floating-point control state is
 * restored before return.
 */
extern WdcStatus wdc_nn_run(const WdcEnv *env, WdcNnPlan *plan,
							const void *const *inputs, void *const *outputs);

/*
 * Run the plan and push jvp_k tangent directions through it (forward-mode
 * differentiation).  tangent_in contains jvp_k stacked tangents of the
 * jvp_input shape, laid out [k][input shape].  tangent_out[j] receives
 * [k][output j shape] for float outputs; NULL entries are skipped.  Outputs
 * that do not depend on the input get zero tangents.  Tangents flow through
 * data inputs only: a Conv whose weights depend on the input yields NaN.
 */
extern WdcStatus wdc_nn_run_jvp(const WdcEnv *env, WdcNnPlan *plan,
								const void *const *inputs,
								const float *tangent_in,
								void *const *outputs,
								float *const *tangent_out);

#endif							/* WDC_NN_H */
