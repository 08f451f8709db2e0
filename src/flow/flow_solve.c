/*
 * flow_solve.c
 *	  Per-row uses of a trained flow: log density, residual, transfer,
 *	  sampling, and raw velocity evaluation.
 *
 * Rows are processed in batches of flow_net_batch_rows() rows.  For each
 * batch the FiLM parameters of the rows' conditions (and of the null
 * condition, when guidance mixes both) are computed once.  The network is
 * then the velocity field handed to flow_integrate().
 *
 * Log density of an original-space latent z (instantaneous change of
 * variables, integrating data at t = 1 to noise at t = 0):
 *	s = (z - mean) / std
 *	log p(z) = log N(x(0); 0, I) + integral_1^0 div u dt - sum log std
 * with x(1) = s.
 */
#include "flow/flow_int.h"

#include <math.h>
#include <string.h>

/* Velocity field of a model for one batch (FlowVelocityFn state). */
typedef struct NetField
{
	const FlowModel *m;
	FlowNetWork work;
	double		guidance;
	float	   *film_cond;		/* [batch][2H] rows' own conditions */
	float	   *film_null;		/* [batch][2H] null condition */
	float	   *v_null;			/* [batch][d] used when mixing */
	double	   *div_null;		/* [batch] */
	float	   *code;			/* [cond_dim] scratch */
} NetField;

static void
net_field_free(const WdcEnv *env, NetField *f)
{
	flow_net_work_free(env, &f->work);
	wdc_free(env, f->film_cond);
	wdc_free(env, f->film_null);
	wdc_free(env, f->v_null);
	wdc_free(env, f->div_null);
	wdc_free(env, f->code);
}

static WdcStatus
net_field_init(const WdcEnv *env, const FlowModel *m, int with_div,
			   double guidance, int rows_wanted, NetField *f)
{
	size_t		film_size;
	size_t		rows;
	WdcStatus	st;
	int			r;

	memset(f, 0, sizeof(*f));
	f->m = m;
	f->guidance = guidance;
	st = flow_net_work_alloc(env, m, with_div, rows_wanted, &f->work);
	if (st != WDC_OK)
		return st;
	rows = (size_t) f->work.max_rows;
	film_size = rows * 2 * (size_t) m->hidden * sizeof(float);
	f->film_cond = wdc_alloc(env, film_size);
	f->film_null = wdc_alloc(env, film_size);
	f->v_null = wdc_alloc(env, rows * (size_t) m->d * sizeof(float));
	f->div_null = wdc_alloc(env, rows * sizeof(double));
	f->code = wdc_alloc(env, (size_t) (m->cond_dim + 1) * sizeof(float));
	if (!f->film_cond || !f->film_null || !f->v_null || !f->div_null ||
		!f->code)
	{
		net_field_free(env, f);
		return wdc_error(env, WDC_ERR_NOMEM,
						 "out of memory for flow evaluation buffers");
	}

	/* the null condition is the same for every row */
	flow_model_encode_cond(m, NULL, 0, 1, f->code);
	flow_model_film(m, f->code, f->film_null);
	for (r = 1; r < f->work.max_rows; r++)
		memcpy(f->film_null + (size_t) r * 2 * m->hidden, f->film_null,
			   2 * (size_t) m->hidden * sizeof(float));
	return WDC_OK;
}

/* FiLM parameters of rows first .. first + n - 1 of cond. */
static void
net_field_set_rows(NetField *f, const FlowConditions *cond, int first, int n)
{
	const FlowModel *m = f->m;
	int			r;

	for (r = 0; r < n; r++)
	{
		float	   *film = f->film_cond + (size_t) r * 2 * m->hidden;

		if (flow_model_row_is_null(m, cond, first + r))
			memcpy(film, f->film_null, 2 * (size_t) m->hidden * sizeof(float));
		else
		{
			flow_model_encode_cond(m, cond, first + r, 0, f->code);
			flow_model_film(m, f->code, film);
		}
	}
}

/* FlowVelocityFn: u = (1 - w) u_null + w u_cond. */
static WdcStatus
net_field_velocity(void *state, int n, double t, const float *x, float *v,
				   double *div)
{
	NetField   *f = state;
	double		w = f->guidance;
	size_t		total = (size_t) n * f->m->d;
	size_t		j;
	int			r;

	if (w == 1.0)
	{
		flow_net_forward(f->m, &f->work, n, x, t, f->film_cond, v, div);
		return WDC_OK;
	}
	if (w == 0.0)
	{
		flow_net_forward(f->m, &f->work, n, x, t, f->film_null, v, div);
		return WDC_OK;
	}
	flow_net_forward(f->m, &f->work, n, x, t, f->film_null, f->v_null,
					 div ? f->div_null : NULL);
	flow_net_forward(f->m, &f->work, n, x, t, f->film_cond, v, div);
	for (j = 0; j < total; j++)
		v[j] = (float) ((1.0 - w) * f->v_null[j] + w * v[j]);
	if (div)
		for (r = 0; r < n; r++)
			div[r] = (1.0 - w) * f->div_null[r] + w * div[r];
	return WDC_OK;
}

/* Reject non-finite latents, naming the first bad row (1-based). */
static WdcStatus
check_rows(const WdcEnv *env, const FlowModel *m, const float *rows, int n)
{
	size_t		total = (size_t) n * m->d;
	size_t		j;

	for (j = 0; j < total; j++)
		if (!isfinite(rows[j]))
			return wdc_error(env, WDC_ERR_DATA,
							 "latent row %zu has a non-finite value in dimension %zu",
							 j / m->d + 1, j % m->d + 1);
	return WDC_OK;
}

static void
standardise(const FlowModel *m, const float *rows, int n, double *x)
{
	int			r;
	int			i;

	for (r = 0; r < n; r++)
		for (i = 0; i < m->d; i++)
			x[(size_t) r * m->d + i] =
				((double) rows[(size_t) r * m->d + i] - m->mean[i]) / m->std[i];
}

static void
destandardise(const FlowModel *m, const double *x, int n, float *out)
{
	int			r;
	int			i;

	for (r = 0; r < n; r++)
		for (i = 0; i < m->d; i++)
			out[(size_t) r * m->d + i] =
				(float) (x[(size_t) r * m->d + i] * m->std[i] + m->mean[i]);
}

/* Conditions of rows offset.. as a view (numeric and index arrays shift). */
static FlowConditions
cond_slice(const FlowModel *m, const FlowConditions *cond, int offset)
{
	FlowConditions c = {0};

	if (cond == NULL)
		return c;
	c.numeric = cond->numeric ? cond->numeric + (size_t) offset * m->n_numeric : NULL;
	c.class_index = cond->class_index ? cond->class_index + offset : NULL;
	c.null_row = cond->null_row ? cond->null_row + offset : NULL;
	return c;
}

WdcStatus
flow_log_density(const WdcEnv *env, const FlowModel *m, const float *rows,
				 const FlowConditions *cond, int n,
				 const FlowSolveOptions *opt, double *out)
{
	NetField	f;
	double	   *x;
	double	   *integral;
	double		log_det = 0.0;
	WdcStatus	st;
	int			first;
	int			i;

	st = flow_solve_options_check(env, opt, 1);
	if (st == WDC_OK)
		st = check_rows(env, m, rows, n);
	if (st != WDC_OK)
		return st;
	for (i = 0; i < m->d; i++)
		log_det += log(m->std[i]);

	st = net_field_init(env, m, 1, opt->guidance, n, &f);
	if (st != WDC_OK)
		return st;
	x = wdc_alloc(env, (size_t) f.work.max_rows * m->d * sizeof(double));
	integral = wdc_alloc(env, (size_t) f.work.max_rows * sizeof(double));
	if (x == NULL || integral == NULL)
		st = wdc_error(env, WDC_ERR_NOMEM, "out of memory for log density");

	for (first = 0; st == WDC_OK && first < n; first += f.work.max_rows)
	{
		int			count = n - first < f.work.max_rows ? n - first : f.work.max_rows;
		FlowConditions slice = cond_slice(m, cond, first);
		int			r;

		net_field_set_rows(&f, cond ? &slice : NULL, 0, count);
		standardise(m, rows + (size_t) first * m->d, count, x);
		st = flow_integrate(env, net_field_velocity, &f, count, m->d, x,
							1.0, 0.0, opt, integral);
		if (st != WDC_OK)
			break;
		for (r = 0; r < count; r++)
		{
			double		sq = 0.0;

			for (i = 0; i < m->d; i++)
				sq += x[(size_t) r * m->d + i] * x[(size_t) r * m->d + i];
			out[first + r] = -0.5 * sq - 0.5 * m->d * log(2.0 * M_PI) +
				integral[r] - log_det;
		}
	}

	wdc_free(env, x);
	wdc_free(env, integral);
	net_field_free(env, &f);
	return st;
}

/*
 * Integrate batches of standardised states.  Phases: 1 -> 0 under cond_a
 * (when from_data), then 0 -> 1 under cond_b (when to_data).  rows are
 * original-space latents (from_data) or ignored (sampling draws base points
 * from seed).  out gets base-space points when !to_data, else
 * original-space latents.
 */
static WdcStatus
run_paths(const WdcEnv *env, const FlowModel *m, const float *rows,
		  const FlowConditions *cond_a, const FlowConditions *cond_b,
		  int from_data, int to_data, uint64_t seed, int n,
		  const FlowSolveOptions *opt, float *out)
{
	NetField	f;
	double	   *x;
	FlowRng		rng;
	WdcStatus	st;
	int			first;

	st = flow_solve_options_check(env, opt, 0);
	if (st == WDC_OK && from_data)
		st = check_rows(env, m, rows, n);
	if (st != WDC_OK)
		return st;
	st = net_field_init(env, m, 0, opt->guidance, n, &f);
	if (st != WDC_OK)
		return st;
	x = wdc_alloc(env, (size_t) f.work.max_rows * m->d * sizeof(double));
	if (x == NULL)
		st = wdc_error(env, WDC_ERR_NOMEM, "out of memory for flow paths");
	flow_rng_seed(&rng, seed);

	for (first = 0; st == WDC_OK && first < n; first += f.work.max_rows)
	{
		int			count = n - first < f.work.max_rows ? n - first : f.work.max_rows;
		size_t		j;

		if (from_data)
		{
			FlowConditions slice = cond_slice(m, cond_a, first);

			standardise(m, rows + (size_t) first * m->d, count, x);
			net_field_set_rows(&f, cond_a ? &slice : NULL, 0, count);
			st = flow_integrate(env, net_field_velocity, &f, count, m->d, x,
								1.0, 0.0, opt, NULL);
		}
		else
			for (j = 0; j < (size_t) count * m->d; j++)
				x[j] = flow_rng_normal(&rng);
		if (st == WDC_OK && to_data)
		{
			FlowConditions slice = cond_slice(m, cond_b, first);

			net_field_set_rows(&f, cond_b ? &slice : NULL, 0, count);
			st = flow_integrate(env, net_field_velocity, &f, count, m->d, x,
								0.0, 1.0, opt, NULL);
		}
		if (st != WDC_OK)
			break;
		if (to_data)
			destandardise(m, x, count, out + (size_t) first * m->d);
		else
			for (j = 0; j < (size_t) count * m->d; j++)
				out[(size_t) first * m->d + j] = (float) x[j];
	}

	wdc_free(env, x);
	net_field_free(env, &f);
	return st;
}

WdcStatus
flow_residual(const WdcEnv *env, const FlowModel *m, const float *rows,
			  const FlowConditions *cond, int n, const FlowSolveOptions *opt,
			  float *out)
{
	return run_paths(env, m, rows, cond, NULL, 1, 0, 0, n, opt, out);
}

WdcStatus
flow_transfer(const WdcEnv *env, const FlowModel *m, const float *rows,
			  const FlowConditions *cond_from, const FlowConditions *cond_to,
			  int n, const FlowSolveOptions *opt, float *out)
{
	return run_paths(env, m, rows, cond_from, cond_to, 1, 1, 0, n, opt, out);
}

WdcStatus
flow_sample(const WdcEnv *env, const FlowModel *m, const FlowConditions *cond,
			int n, uint64_t seed, const FlowSolveOptions *opt, float *out)
{
	return run_paths(env, m, NULL, NULL, cond, 0, 1, seed, n, opt, out);
}

WdcStatus
flow_velocity(const WdcEnv *env, const FlowModel *m, const float *x, double t,
			  const FlowConditions *cond, int n, float *v, double *div)
{
	NetField	f;
	WdcStatus	st;
	int			first;

	st = net_field_init(env, m, div != NULL, 1.0, n, &f);
	if (st != WDC_OK)
		return st;
	for (first = 0; first < n; first += f.work.max_rows)
	{
		int			count = n - first < f.work.max_rows ? n - first : f.work.max_rows;
		FlowConditions slice = cond_slice(m, cond, first);

		net_field_set_rows(&f, cond ? &slice : NULL, 0, count);
		flow_net_forward(m, &f.work, count, x + (size_t) first * m->d, t,
						 f.film_cond, v + (size_t) first * m->d,
						 div ? div + first : NULL);
	}
	net_field_free(env, &f);
	return WDC_OK;
}
