/*
 * flow_int.h
 *	  Internals shared by the flow files: PRNG, GELU kernels, the batched
 *	  network evaluator and model allocation.
 */
#ifndef WDC_FLOW_INT_H
#define WDC_FLOW_INT_H

#include "flow/flow.h"

/* Rows per network batch: tangent buffers hold FLOW_TANGENT_ROWS x hidden. */
#define FLOW_TANGENT_ROWS	4096
#define FLOW_MAX_BATCH		256

/* flow_rng.c: xoshiro256** (Blackman and Vigna 2018) seeded by splitmix64. */
typedef struct FlowRng
{
	uint64_t	s[4];
	int			has_spare;
	double		spare;
} FlowRng;

extern void flow_rng_seed(FlowRng *rng, uint64_t seed);
extern uint64_t flow_rng_next(FlowRng *rng);
extern double flow_rng_uniform(FlowRng *rng);	/* [0, 1), 53 bits */
extern double flow_rng_normal(FlowRng *rng);	/* Box-Muller */
extern uint64_t flow_rng_below(FlowRng *rng, uint64_t bound);

/*
 * flow_gelu.c.  For p [n]: h = gelu(p) (h may alias p) and, when deriv is
 * not NULL, deriv = gelu'(p).
 */
extern void flow_gelu(const float *p, float *h, float *deriv, int n);
extern int	flow_gelu_force_level(int level);
extern float flow_gelu_ref(float x);
extern double flow_gelu_exact(double x);
extern double flow_gelu_deriv_exact(double x);

/*
 * flow_net.c: batched evaluation of the velocity MLP for up to
 * FLOW_MAX_BATCH rows.  film [n][2 hidden] contains each row's gamma and beta.
 */
typedef struct FlowNetWork
{
	int			max_rows;
	float	   *input;			/* [max_rows][d + 1] */
	float	   *act;			/* [max_rows][hidden] pre-activation */
	float	   *h;				/* [max_rows][hidden] */
	float	   *slope;			/* [max_rows][hidden] gamma * gelu' */
	float	   *deriv;			/* [max_rows][hidden] */
	float	   *tan_a;			/* [tangent rows][hidden] */
	float	   *tan_b;
	float	   *w_in_t;			/* [d][hidden]: w_in spatial part transposed */
} FlowNetWork;

extern WdcStatus flow_net_work_alloc(const WdcEnv *env, const FlowModel *m,
									 int with_tangents, int rows_wanted,
									 FlowNetWork *w);
extern void flow_net_work_free(const WdcEnv *env, FlowNetWork *w);
extern int	flow_net_batch_rows(const FlowModel *m);
extern void flow_net_forward(const FlowModel *m, FlowNetWork *w, int n,
							 const float *x, double t, const float *film,
							 float *v, double *div);

/* flow_train.c */
extern WdcStatus flow_train_batch_gradient(const WdcEnv *env, const FlowModel *m,
										   int n, const float *x_t, const float *t,
										   const float *target,
										   const float *numeric,
										   const int32_t *cls,
										   const uint8_t *use_null,
										   double *loss, float *grad);

/* flow_model.c */
extern WdcStatus flow_model_alloc(const WdcEnv *env, int d, int hidden,
								  int layers, int n_numeric, int n_classes,
								  int embed_dim, FlowModel **out);
extern void flow_model_encode_cond(const FlowModel *m,
								   const FlowConditions *cond, int row,
								   int force_null, float *c);
extern void flow_model_film(const FlowModel *m, const float *c, float *film);
extern int	flow_model_row_is_null(const FlowModel *m,
								   const FlowConditions *cond, int row);
extern char *flow_strdup(const WdcEnv *env, const char *s);

#endif							/* WDC_FLOW_INT_H */
