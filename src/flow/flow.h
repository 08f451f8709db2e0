/*
 * flow.h
 *	  Conditional flow matching on latent vectors: training, log density,
 *	  residuals, counterfactual transfer and sampling (PostgreSQL-free core).
 *
 * Model.  A velocity field v(x, t, c) on standardised latents x (d numbers),
 * time t in [0, 1] and an encoded condition c (m numbers).  It is an MLP with
 * input [x, t], `layers` hidden Linear layers of width `hidden`, exact (erf)
 * GELU, and FiLM conditioning: [gamma; beta] = Wf c + bf is computed once per
 * row and applied as p = gamma * a + beta to every hidden pre-activation a.
 * The output layer maps hidden -> d.  The path is the conditional-OT path
 * x_t = (1 - t) x0 + t x1 with noise x0 ~ N(0, I) at t = 0 and the data x1 at
 * t = 1 (Lipman et al., "Flow Matching for Generative Modeling", 2023).
 *
 * Conditions.  The encoded condition is the z-scored numeric columns followed
 * by a learned class embedding (width embed_dim).  A learned null vector of
 * length m replaces the whole condition for unconditional use.  Training
 * swaps it in with probability p_null (classifier-free guidance, Ho and
 * Salimans 2022).  Guidance weight w gives u = (1 - w) u_null + w u_cond.
 *
 * Spaces.  Callers pass latents in the original space.  The model stores a
 * per-dimension mean and standard deviation; every entry point standardises
 * on the way in.  Log densities are natural logs in the original space, so
 * they include -sum(log std).  Residuals are base-space points (N(0, I) under
 * the model); transfer and sample return original-space latents.
 *
 * Memory.  Every allocation goes through the WdcEnv; a FlowModel and all its
 * arrays belong to the caller after a successful return and are released with
 * flow_free().  On failure nothing is left allocated.
 */
#ifndef WDC_FLOW_H
#define WDC_FLOW_H

#include "core/wdc_core.h"

#include <stdint.h>

/* Size limits checked by training and by the ONNX reader. */
#define FLOW_MAX_DIM		4096	/* latent dimension d */
#define FLOW_MAX_HIDDEN		4096	/* hidden width */
#define FLOW_MAX_LAYERS		8		/* hidden layers */
#define FLOW_MAX_NUMERIC	1024	/* numeric condition columns */
#define FLOW_MAX_CLASSES	100000	/* labels of the class column */
#define FLOW_MAX_STEPS		100000	/* ODE steps */

/* Fixed-grid ODE solvers. */
typedef enum FlowMethod
{
	FLOW_EULER = 0,
	FLOW_MIDPOINT,				/* explicit midpoint, 2 velocity calls a step */
	FLOW_RK4					/* classic Runge-Kutta, 4 calls a step */
} FlowMethod;

/*
 * Quadrature of the divergence integral along the trajectory.
 *
 * FLOW_QUAD_STAGE evaluates the divergence where the solver's own update
 * weights it: at the step start for Euler, at the midpoint stage for
 * midpoint, at all four stages for RK4.  FLOW_QUAD_SIMPSON integrates the
 * state with the solver as usual but evaluates the divergence only at
 * div_intervals + 1 equally spaced grid points and combines them with
 * composite Simpson weights.  The divergence is the expensive part (about
 * 4 hidden^2 d FLOPs against 4 hidden^2 for a plain velocity call), so this
 * trades many forward passes for few divergence passes.  Simpson is the
 * default; flow_ode.c lists its accuracy against the stage rule.
 */
typedef enum FlowQuadrature
{
	FLOW_QUAD_STAGE = 0,
	FLOW_QUAD_SIMPSON
} FlowQuadrature;

/*
 * Inference options.  flow_solve_options_default() fills the defaults.
 *	method			default FLOW_MIDPOINT
 *	steps			uniform steps over [0, 1], 1..FLOW_MAX_STEPS; default 64
 *	quadrature		default FLOW_QUAD_SIMPSON
 *	div_intervals	Simpson intervals, even, dividing steps; default 32
 *	guidance		w; residual, transfer and sample accept any finite value,
 *					log density only 0 (unconditional) or 1 (conditional).
 *					Default 1.
 */
typedef struct FlowSolveOptions
{
	FlowMethod	method;
	int			steps;
	FlowQuadrature quadrature;
	int			div_intervals;
	double		guidance;
} FlowSolveOptions;

/*
 * Training options.  flow_train_options_default() fills the defaults; the
 * ranges are checked by flow_train().
 *	hidden			width, 8..FLOW_MAX_HIDDEN; default 256
 *	layers			hidden layers, 1..FLOW_MAX_LAYERS; default 3
 *	embed_dim		class embedding width, 1..256, or 0 for min(n_classes, 16)
 *	learning_rate	AdamW step size, (0, 1]; default 3e-4
 *	weight_decay	AdamW decoupled decay, [0, 1); default 0.01
 *	beta1, beta2	AdamW moment decay, [0, 1); defaults 0.9 and 0.999
 *	adam_eps		default 1e-8
 *	batch_size		1..65536; default 256
 *	max_epochs		1..100000; default 250
 *	patience		epochs without validation improvement before stopping,
 *					1..100000; default 100
 *	min_delta		improvement that resets patience, >= 0; default 1e-5
 *	val_fraction	share of rows held out for validation and calibration,
 *					[0, 0.9]; default 0.2.  With 0 there is no early stopping
 *					and no calibration.
 *	p_null			probability of training a row with the null condition,
 *					[0, 1]; default 0.1
 *	grad_clip		maximum global gradient L2 norm, > 0; default 1.0
 *	train_noise		standard deviation of Gaussian noise added to each
 *					standardised training latent, [0, 1]; default 0.05.  It
 *					puts a floor under the variance of every direction, so a
 *					collapsed latent dimension cannot become a near-delta
 *					density with huge log densities and stiff trajectories;
 *					it widens the learned density by that much.
 *	init_std		truncated-normal (at 2 std) weight initialisation; 0.02
 *	film_gamma_bias	initial value of the gamma half of bf; default 1.0 so the
 *					network starts as a plain MLP (0 starts with gamma near 0)
 *	calibration_rows	validation rows scored for calibration, 0..1e6;
 *					default 1000
 *	seed			PRNG seed for initialisation, splits, batches and noise
 */
typedef struct FlowTrainOptions
{
	int			hidden;
	int			layers;
	int			embed_dim;
	double		learning_rate;
	double		weight_decay;
	double		beta1;
	double		beta2;
	double		adam_eps;
	int			batch_size;
	int			max_epochs;
	int			patience;
	double		min_delta;
	double		val_fraction;
	double		p_null;
	double		grad_clip;
	double		train_noise;
	double		init_std;
	double		film_gamma_bias;
	int			calibration_rows;
	uint64_t	seed;
} FlowTrainOptions;

/*
 * Conditions for a batch of n rows, all arrays row-major and owned by the
 * caller.  A NULL FlowConditions pointer means "null condition for every
 * row".  A row takes the null condition when null_row[i] is nonzero, when
 * any of its numeric values is NaN, or when class_index[i] < 0.
 *	numeric			[n][n_numeric] raw values in the units of training, or
 *					NULL when the model has no numeric columns
 *	class_index		[n] index into FlowModel.class_labels, or NULL when the
 *					model has no class column
 *	null_row		[n] or NULL
 */
typedef struct FlowConditions
{
	const float *numeric;
	const int32_t *class_index;
	const uint8_t *null_row;
} FlowConditions;

/* Training summary kept with the model. */
typedef struct FlowTrainInfo
{
	int64_t		train_rows;
	int64_t		val_rows;
	int			epochs;			/* epochs run */
	int			best_epoch;		/* 1-based epoch whose weights were kept */
	double		train_loss;		/* mean training MSE of the last epoch */
	double		val_loss;		/* validation MSE of the kept weights */
	double		seconds;
	FlowTrainOptions options;
} FlowTrainInfo;

/*
 * A trained flow.  Parameters live in one float block `params` (n_params
 * floats); the named pointers are views into it.  Shapes (H = hidden,
 * m = cond_dim, e = embed_dim):
 *	w_in [H][d + 1] (last column: time), b_in [H]
 *	w_hidden [layers - 1][H][H], b_hidden [layers - 1][H]
 *	w_out [d][H], b_out [d]
 *	w_film [2H][m] (rows 0..H-1: gamma, H..2H-1: beta; NULL when m = 0),
 *	b_film [2H]
 *	class_embed [n_classes][e] (NULL without class column)
 *	null_cond [m] (NULL when m = 0)
 * Condition bookkeeping for the glue: numeric_names [n_numeric] and
 * class_name name the training query's columns; class_labels [n_classes]
 * contains the labels as text in training order.  calibration holds the sorted
 * log densities (original space) of validation rows: unconditional first
 * (n_calibration values), then, for conditional models, conditional
 * (n_calibration values, NULL otherwise).
 */
typedef struct FlowModel
{
	int			d;
	int			hidden;
	int			layers;
	int			n_numeric;
	int			n_classes;
	int			embed_dim;
	int			cond_dim;

	float	   *params;
	size_t		n_params;
	float	   *w_in;
	float	   *b_in;
	float	   *w_hidden;
	float	   *b_hidden;
	float	   *w_out;
	float	   *b_out;
	float	   *w_film;
	float	   *b_film;
	float	   *class_embed;
	float	   *null_cond;

	double	   *mean;			/* [d] standardisation */
	double	   *std;			/* [d], all > 0 */
	double	   *cond_mean;		/* [n_numeric] */
	double	   *cond_std;		/* [n_numeric], all > 0 */

	char	  **numeric_names;	/* [n_numeric] or NULL */
	char	   *class_name;		/* NULL without class column */
	char	  **class_labels;	/* [n_classes] */

	int			n_calibration;
	double	   *calibration;	/* sorted unconditional log densities */
	double	   *calibration_cond;	/* sorted conditional ones, or NULL */

	FlowTrainInfo info;
} FlowModel;

/* Per-epoch training progress, handed to FlowProgressFn. */
typedef struct FlowProgress
{
	int			epoch;			/* 1-based */
	int			max_epochs;
	double		train_loss;		/* mean MSE over the epoch's batches */
	double		val_loss;		/* NaN without validation rows */
	double		best_val_loss;
	double		rows_per_second;	/* training rows processed */
	double		eta_seconds;	/* to max_epochs at the current rate */
} FlowProgress;

typedef void (*FlowProgressFn) (void *state, const FlowProgress *progress);

/*
 * Velocity callback for the solvers: fill v [n][d] with the velocity at
 * (x [n][d], t) and, when div is not NULL, div [n] with its divergence in x.
 * flow_integrate() uses it, so an analytic field can stand in for a network.
 */
typedef WdcStatus (*FlowVelocityFn) (void *state, int n, double t,
									 const float *x, float *v, double *div);

/* flow_options.c */
extern void flow_solve_options_default(FlowSolveOptions *opt);
extern void flow_train_options_default(FlowTrainOptions *opt);
extern WdcStatus flow_solve_options_check(const WdcEnv *env,
										  const FlowSolveOptions *opt,
										  int need_density);
extern WdcStatus flow_train_options_check(const WdcEnv *env,
										  const FlowTrainOptions *opt);

/* flow_model.c */
extern void flow_free(const WdcEnv *env, FlowModel *model);
extern size_t flow_param_count(int d, int hidden, int layers, int n_classes,
							   int embed_dim, int cond_dim);
extern size_t flow_train_memory(int64_t n_rows, int d, int n_numeric,
								int n_classes, const FlowTrainOptions *opt);
extern double flow_pvalue(const FlowModel *model, double log_density,
						  int conditional);

/*
 * flow_train.c
 *
 * Train a new flow on n rows of data [n][d] (original space) with optional
 * conditions (NULL: unconditional model).  Condition layout: n_numeric
 * columns named numeric_names, an optional class column class_name whose
 * n_classes labels are class_labels (class_index in cond refers to them).
 * Names and labels are copied.  progress may be NULL.  On success *out is a
 * new model the caller frees with flow_free().
 */
extern WdcStatus flow_train(const WdcEnv *env, const float *data, int64_t n,
							int d, const FlowConditions *cond, int n_numeric,
							const char *const *numeric_names,
							const char *class_name, int n_classes,
							const char *const *class_labels,
							const FlowTrainOptions *opt,
							FlowProgressFn progress, void *progress_state,
							FlowModel **out);

/*
 * flow_solve.c: per-row entry points.  rows [n][d] are original-space
 * latents; cond as described for FlowConditions (NULL = null condition).
 *
 * flow_log_density: out [n] natural log densities log p(z | c) (guidance 1)
 * or log p(z) (guidance 0) in the original space.
 * flow_residual: out [n][d] base-space point reached by integrating from
 * t = 1 to t = 0 under the guided field.
 * flow_transfer: out [n][d] original-space latent after integrating to the
 * base space under cond_from and back to t = 1 under cond_to.
 * flow_sample: out [n][d] original-space latents from base points drawn
 * with the given seed (row i uses the i-th draw of that seed's stream).
 * flow_velocity: out [n][d] velocity in standardised space at x [n][d]
 * (standardised) and time t, and div [n] (may be NULL); a check and parity
 * hook.
 */
extern WdcStatus flow_log_density(const WdcEnv *env, const FlowModel *model,
								  const float *rows, const FlowConditions *cond,
								  int n, const FlowSolveOptions *opt,
								  double *out);
extern WdcStatus flow_residual(const WdcEnv *env, const FlowModel *model,
							   const float *rows, const FlowConditions *cond,
							   int n, const FlowSolveOptions *opt, float *out);
extern WdcStatus flow_transfer(const WdcEnv *env, const FlowModel *model,
							   const float *rows,
							   const FlowConditions *cond_from,
							   const FlowConditions *cond_to,
							   int n, const FlowSolveOptions *opt, float *out);
extern WdcStatus flow_sample(const WdcEnv *env, const FlowModel *model,
							 const FlowConditions *cond, int n, uint64_t seed,
							 const FlowSolveOptions *opt, float *out);
extern WdcStatus flow_velocity(const WdcEnv *env, const FlowModel *model,
							   const float *x, double t,
							   const FlowConditions *cond, int n,
							   float *v, double *div);

/*
 * flow_ode.c: integrate x [n][d] in place from t0 to t1 (either direction)
 * with the options' method and steps.  When div_integral [n] is not NULL it
 * receives the signed integral of div from t0 to t1 by the options'
 * quadrature, accumulated in double.  Only method, steps, quadrature and
 * div_intervals are read.
 */
extern WdcStatus flow_integrate(const WdcEnv *env, FlowVelocityFn fn,
								void *state, int n, int d, double *x,
								double t0, double t1,
								const FlowSolveOptions *opt,
								double *div_integral);

/*
 * flow_onnx.c: serialise a model as an ONNX ModelProto (inputs x [N][d],
 * t [N][1] and, when cond_dim > 0, c [N][cond_dim] holding the encoded
 * condition; output v [N][d]) with everything else in metadata_props.
 * *bytes is allocated through env and owned by the caller.  flow_from_onnx
 * reads such a graph back; other graphs are rejected as unsupported.
 */
extern WdcStatus flow_to_onnx(const WdcEnv *env, const FlowModel *model,
							  uint8_t **bytes, size_t *len);
extern WdcStatus flow_from_onnx(const WdcEnv *env, const uint8_t *bytes,
								size_t len, FlowModel **out);

#endif							/* WDC_FLOW_H */
