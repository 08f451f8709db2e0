/*
 * flow_external.c
 *	  Log density, residual and sampling for velocity graphs trained outside
 *	  wdc, through the ONNX runtime and the shared ODE integrator.
 *
 * The velocity callback runs the graph for one row at (x, t, c).  For the
 * divergence it pushes the d unit vectors e_1..e_d through the graph as
 * tangents of x in one JVP call (d extra GEMM columns) and sums the diagonal
 * of the resulting Jacobian: div v = sum_i dv_i/dx_i.
 */
#include "flow/flow_external.h"
#include "flow/flow_int.h"

#include <math.h>
#include <string.h>

struct FlowExternal
{
	const WdcNnModel *model;
	WdcNnPlan  *plan;
	int			d;
	int			m;
	int			x_in;
	int			t_in;
	int			c_in;			/* -1 without a condition input */
	int			n_inputs;
	int			n_outputs;
	int			v_out;
	/* per-call state */
	const WdcEnv *env;			/* of the running call, for error records */
	float		tvalue;
	const float *cond;
	float	  **outputs;		/* one buffer per graph output */
	float	   *tangent_in;		/* [d][d] identity */
	float	   *tangent_out;	/* [d][d] */
	const void **inputs;
};

/* Index of the input named name, else the one at position pos, else -1. */
static int
find_input(const WdcNnModel *model, const char *name, int pos)
{
	int			i = wdc_nn_find_input(model, name);

	if (i >= 0)
		return i;
	return pos < wdc_nn_input_count(model) ? pos : -1;
}

void
flow_external_free(const WdcEnv *env, FlowExternal *ext)
{
	if (ext == NULL)
		return;
	wdc_nn_plan_free(env, ext->plan);
	if (ext->outputs)
		for (int j = 0; j < ext->n_outputs; j++)
			wdc_free(env, ext->outputs[j]);
	wdc_free(env, ext->outputs);
	wdc_free(env, ext->tangent_in);
	wdc_free(env, ext->tangent_out);
	wdc_free(env, ext->inputs);
	wdc_free(env, ext);
}

WdcStatus
flow_external_open(const WdcEnv *env, const WdcNnModel *model, FlowExternal **out)
{
	FlowExternal *ext;
	const WdcNnTensorInfo *xi;
	const WdcNnTensorInfo *vi;
	WdcNnPlanOptions popt;
	WdcStatus	st;

	*out = NULL;
	if (wdc_nn_input_count(model) < 2 || wdc_nn_input_count(model) > 3)
		return wdc_error(env, WDC_ERR_UNSUPPORTED,
						 "a flow graph needs inputs x and t and an optional c, not %d inputs",
						 wdc_nn_input_count(model));
	if (wdc_nn_output_count(model) < 1)
		return wdc_error(env, WDC_ERR_UNSUPPORTED, "a flow graph needs an output");

	ext = wdc_alloc0(env, sizeof(*ext));
	if (ext == NULL)
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory opening a flow graph");
	ext->model = model;
	ext->x_in = find_input(model, "x", 0);
	ext->t_in = find_input(model, "t", 1);
	ext->c_in = wdc_nn_input_count(model) == 3 ? find_input(model, "c", 2) : -1;
	ext->n_inputs = wdc_nn_input_count(model);
	ext->n_outputs = wdc_nn_output_count(model);
	ext->v_out = wdc_nn_find_output(model, "v") >= 0 ? wdc_nn_find_output(model, "v") : 0;
	if (ext->x_in == ext->t_in || (ext->c_in >= 0 && (ext->c_in == ext->x_in || ext->c_in == ext->t_in)))
	{
		flow_external_free(env, ext);
		return wdc_error(env, WDC_ERR_UNSUPPORTED,
						 "cannot tell the flow graph's inputs x, t and c apart");
	}

	xi = wdc_nn_input(model, ext->x_in);
	if (xi->rank != 2 || xi->dims[1] < 1 || xi->dims[1] > FLOW_MAX_DIM)
	{
		flow_external_free(env, ext);
		return wdc_error(env, WDC_ERR_UNSUPPORTED,
						 "flow graph input \"%s\" must have shape [N, d] with a known d",
						 xi->name);
	}
	ext->d = (int) xi->dims[1];
	if (ext->c_in >= 0)
	{
		const WdcNnTensorInfo *ci = wdc_nn_input(model, ext->c_in);

		if (ci->rank != 2 || ci->dims[1] < 1 || ci->dims[1] > FLOW_MAX_NUMERIC)
		{
			flow_external_free(env, ext);
			return wdc_error(env, WDC_ERR_UNSUPPORTED,
							 "flow graph input \"%s\" must have shape [N, m] with a known m",
							 ci->name);
		}
		ext->m = (int) ci->dims[1];
	}

	/* one row, d tangents of x */
	memset(&popt, 0, sizeof(popt));
	popt.batch = 1;
	popt.jvp_input = ext->x_in;
	popt.jvp_k = ext->d;
	st = wdc_nn_plan_create_ex(env, model, &popt, &ext->plan);
	if (st != WDC_OK)
	{
		flow_external_free(env, ext);
		return st;
	}
	vi = wdc_nn_plan_output(ext->plan, ext->v_out);
	if (wdc_nn_numel(vi) != (size_t) ext->d)
	{
		flow_external_free(env, ext);
		return wdc_error(env, WDC_ERR_UNSUPPORTED,
						 "flow graph output \"%s\" has %zu values per row, expected d = %d",
						 vi->name, wdc_nn_numel(vi), ext->d);
	}

	ext->outputs = wdc_alloc0(env, sizeof(float *) * ext->n_outputs);
	ext->inputs = wdc_alloc0(env, sizeof(void *) * ext->n_inputs);
	ext->tangent_in = wdc_alloc0(env, sizeof(float) * ext->d * ext->d);
	ext->tangent_out = wdc_alloc0(env, sizeof(float) * ext->d * ext->d);
	if (!ext->outputs || !ext->inputs || !ext->tangent_in || !ext->tangent_out)
	{
		flow_external_free(env, ext);
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory opening a flow graph");
	}
	for (int j = 0; j < ext->n_outputs; j++)
	{
		ext->outputs[j] = wdc_alloc(env, sizeof(float) *
									wdc_nn_numel(wdc_nn_plan_output(ext->plan, j)));
		if (ext->outputs[j] == NULL)
		{
			flow_external_free(env, ext);
			return wdc_error(env, WDC_ERR_NOMEM, "out of memory opening a flow graph");
		}
	}
	for (int i = 0; i < ext->d; i++)
		ext->tangent_in[i * ext->d + i] = 1.0f;
	*out = ext;
	return WDC_OK;
}

int
flow_external_dim(const FlowExternal *ext)
{
	return ext->d;
}

int
flow_external_cond_dim(const FlowExternal *ext)
{
	return ext->m;
}

/* FlowVelocityFn for one row. */
static WdcStatus
external_velocity(void *state, int n, double t, const float *x, float *v, double *div)
{
	FlowExternal *ext = state;
	const WdcEnv *env = ext->env;
	WdcStatus	st;

	(void) n;
	ext->tvalue = (float) t;
	ext->inputs[ext->x_in] = x;
	ext->inputs[ext->t_in] = &ext->tvalue;
	if (ext->c_in >= 0)
		ext->inputs[ext->c_in] = ext->cond;

	if (div)
	{
		float	   *tangent_out[8] = {0};

		/* only the velocity output's tangents are needed */
		if (ext->n_outputs > 8)
			return wdc_error(env, WDC_ERR_UNSUPPORTED,
							 "a flow graph may have at most 8 outputs");
		tangent_out[ext->v_out] = ext->tangent_out;
		st = wdc_nn_run_jvp(env, ext->plan, ext->inputs, ext->tangent_in,
							(void *const *) ext->outputs, tangent_out);
		if (st == WDC_OK)
		{
			double		sum = 0.0;

			for (int i = 0; i < ext->d; i++)
				sum += ext->tangent_out[i * ext->d + i];
			div[0] = sum;
		}
	}
	else
		st = wdc_nn_run(env, ext->plan, ext->inputs, (void *const *) ext->outputs);
	if (st == WDC_OK)
		memcpy(v, ext->outputs[ext->v_out], sizeof(float) * ext->d);
	return st;
}

static WdcStatus
check_options(const WdcEnv *env, const FlowExternal *ext, const float *cond,
			  const FlowSolveOptions *opt)
{
	if (opt->guidance != 1.0)
		return wdc_error(env, WDC_ERR_INVALID,
						 "a flow graph trained outside wdc has no null condition, so guidance must be 1, not %g",
						 opt->guidance);
	if (ext->m > 0 && cond == NULL)
		return wdc_error(env, WDC_ERR_INVALID,
						 "this flow graph needs a condition of %d values", ext->m);
	return WDC_OK;
}

WdcStatus
flow_external_log_density(const WdcEnv *env, FlowExternal *ext, const float *z,
						  const float *cond, const FlowSolveOptions *opt,
						  double *out)
{
	double	   *x;
	double		div_integral = 0.0;
	double		sq = 0.0;
	WdcStatus	st = check_options(env, ext, cond, opt);

	if (st != WDC_OK)
		return st;
	x = wdc_alloc(env, sizeof(double) * ext->d);
	if (x == NULL)
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory for a flow solve");
	for (int i = 0; i < ext->d; i++)
		x[i] = z[i];
	ext->cond = cond;
	ext->env = env;

	/*
	 * Instantaneous change of variables along the path from the data (t = 1)
	 * to the base (t = 0): log p1(z) = log N(x(0)) - integral_0^1 div dt, and
	 * the integrator returns the signed integral from 1 to 0, its negative.
	 */
	st = flow_integrate(env, external_velocity, ext, 1, ext->d, x, 1.0, 0.0, opt,
						&div_integral);
	if (st == WDC_OK)
	{
		for (int i = 0; i < ext->d; i++)
			sq += x[i] * x[i];
		*out = -0.5 * sq - 0.5 * ext->d * log(2.0 * M_PI) + div_integral;
	}
	wdc_free(env, x);
	return st;
}

/* Integrate one row from t0 to t1 without the divergence. */
static WdcStatus
transport(const WdcEnv *env, FlowExternal *ext, const float *start,
		  const float *cond, const FlowSolveOptions *opt, double t0, double t1,
		  float *out)
{
	double	   *x;
	WdcStatus	st = check_options(env, ext, cond, opt);

	if (st != WDC_OK)
		return st;
	x = wdc_alloc(env, sizeof(double) * ext->d);
	if (x == NULL)
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory for a flow solve");
	for (int i = 0; i < ext->d; i++)
		x[i] = start[i];
	ext->cond = cond;
	ext->env = env;
	st = flow_integrate(env, external_velocity, ext, 1, ext->d, x, t0, t1, opt, NULL);
	if (st == WDC_OK)
		for (int i = 0; i < ext->d; i++)
			out[i] = (float) x[i];
	wdc_free(env, x);
	return st;
}

WdcStatus
flow_external_residual(const WdcEnv *env, FlowExternal *ext, const float *z,
					   const float *cond, const FlowSolveOptions *opt, float *out)
{
	return transport(env, ext, z, cond, opt, 1.0, 0.0, out);
}

WdcStatus
flow_external_transfer(const WdcEnv *env, FlowExternal *ext, const float *z,
					   const float *cond_from, const float *cond_to,
					   const FlowSolveOptions *opt, float *out)
{
	float	   *base = wdc_alloc(env, sizeof(float) * ext->d);
	WdcStatus	st;

	if (base == NULL)
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory for a flow solve");
	st = transport(env, ext, z, cond_from, opt, 1.0, 0.0, base);
	if (st == WDC_OK)
		st = transport(env, ext, base, cond_to, opt, 0.0, 1.0, out);
	wdc_free(env, base);
	return st;
}

WdcStatus
flow_external_sample(const WdcEnv *env, FlowExternal *ext, const float *cond,
					 uint64_t seed, const FlowSolveOptions *opt, float *out)
{
	FlowRng		rng;
	float	   *x0 = wdc_alloc(env, sizeof(float) * ext->d);
	WdcStatus	st;

	if (x0 == NULL)
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory for a flow solve");
	flow_rng_seed(&rng, seed);
	for (int i = 0; i < ext->d; i++)
		x0[i] = (float) flow_rng_normal(&rng);
	st = transport(env, ext, x0, cond, opt, 0.0, 1.0, out);
	wdc_free(env, x0);
	return st;
}
