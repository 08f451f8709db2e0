/*
 * flow_model.c
 *	  Allocation and bookkeeping of FlowModel: parameter layout, condition
 *	  encoding, FiLM precomputation, calibration p-values and the training
 *	  memory estimate.
 */
#include "flow/flow_int.h"

#include <math.h>
#include <string.h>

/* Number of float parameters for a given architecture. */
size_t
flow_param_count(int d, int hidden, int layers, int n_classes, int embed_dim,
				 int cond_dim)
{
	size_t		h = (size_t) hidden;
	size_t		n = 0;

	n += h * (size_t) (d + 1) + h;	/* input layer */
	n += (size_t) (layers - 1) * (h * h + h);	/* hidden layers */
	n += (size_t) d * h + (size_t) d;	/* output layer */
	n += 2 * h * (size_t) cond_dim + 2 * h; /* FiLM */
	n += (size_t) n_classes * (size_t) embed_dim;	/* class embedding */
	n += (size_t) cond_dim;		/* null condition */
	return n;
}

char *
flow_strdup(const WdcEnv *env, const char *s)
{
	size_t		len;
	char	   *copy;

	if (s == NULL)
		return NULL;
	len = strlen(s);
	copy = wdc_alloc(env, len + 1);
	if (copy)
		memcpy(copy, s, len + 1);
	return copy;
}

/*
 * Allocate a zeroed model with its parameter block and the per-dimension
 * arrays; names, labels and calibration are left NULL for the caller.
 */
WdcStatus
flow_model_alloc(const WdcEnv *env, int d, int hidden, int layers,
				 int n_numeric, int n_classes, int embed_dim, FlowModel **out)
{
	FlowModel  *m;
	size_t		h = (size_t) hidden;
	float	   *p;
	int			cond_dim;

	*out = NULL;
	if (d < 1 || d > FLOW_MAX_DIM || hidden < 1 || hidden > FLOW_MAX_HIDDEN ||
		layers < 1 || layers > FLOW_MAX_LAYERS || n_numeric < 0 ||
		n_numeric > FLOW_MAX_NUMERIC || n_classes < 0 ||
		n_classes > FLOW_MAX_CLASSES || embed_dim < 0 || embed_dim > 256 ||
		(n_classes > 0 && embed_dim < 1))
		return wdc_error(env, WDC_ERR_LIMIT,
						 "flow shape d=%d hidden=%d layers=%d numeric=%d classes=%d embedding=%d is out of range",
						 d, hidden, layers, n_numeric, n_classes, embed_dim);
	if (n_classes == 0)
		embed_dim = 0;
	cond_dim = n_numeric + embed_dim;

	m = wdc_alloc0(env, sizeof(FlowModel));
	if (m == NULL)
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory for flow model");
	m->d = d;
	m->hidden = hidden;
	m->layers = layers;
	m->n_numeric = n_numeric;
	m->n_classes = n_classes;
	m->embed_dim = embed_dim;
	m->cond_dim = cond_dim;
	m->n_params = flow_param_count(d, hidden, layers, n_classes, embed_dim,
								   cond_dim);
	m->params = wdc_alloc0(env, m->n_params * sizeof(float));
	m->mean = wdc_alloc0(env, (size_t) d * sizeof(double));
	m->std = wdc_alloc0(env, (size_t) d * sizeof(double));
	if (n_numeric > 0)
	{
		m->cond_mean = wdc_alloc0(env, (size_t) n_numeric * sizeof(double));
		m->cond_std = wdc_alloc0(env, (size_t) n_numeric * sizeof(double));
		m->numeric_names = wdc_alloc0(env, (size_t) n_numeric * sizeof(char *));
	}
	if (n_classes > 0)
		m->class_labels = wdc_alloc0(env, (size_t) n_classes * sizeof(char *));
	if (m->params == NULL || m->mean == NULL || m->std == NULL ||
		(n_numeric > 0 && (m->cond_mean == NULL || m->cond_std == NULL ||
						   m->numeric_names == NULL)) ||
		(n_classes > 0 && m->class_labels == NULL))
	{
		flow_free(env, m);
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory for flow model");
	}

	/* Carve the views in the order flow_param_count() counts them. */
	p = m->params;
	m->w_in = p;
	p += h * (size_t) (d + 1);
	m->b_in = p;
	p += h;
	m->w_hidden = p;
	p += (size_t) (layers - 1) * h * h;
	m->b_hidden = p;
	p += (size_t) (layers - 1) * h;
	m->w_out = p;
	p += (size_t) d * h;
	m->b_out = p;
	p += d;
	m->w_film = cond_dim > 0 ? p : NULL;
	p += 2 * h * (size_t) cond_dim;
	m->b_film = p;
	p += 2 * h;
	m->class_embed = n_classes > 0 ? p : NULL;
	p += (size_t) n_classes * (size_t) embed_dim;
	m->null_cond = cond_dim > 0 ? p : NULL;
	p += cond_dim;

	*out = m;
	return WDC_OK;
}

/* Release a model and everything it owns; NULL is accepted. */
void
flow_free(const WdcEnv *env, FlowModel *m)
{
	int			i;

	if (m == NULL)
		return;
	wdc_free(env, m->params);
	wdc_free(env, m->mean);
	wdc_free(env, m->std);
	wdc_free(env, m->cond_mean);
	wdc_free(env, m->cond_std);
	if (m->numeric_names)
		for (i = 0; i < m->n_numeric; i++)
			wdc_free(env, m->numeric_names[i]);
	wdc_free(env, m->numeric_names);
	wdc_free(env, m->class_name);
	if (m->class_labels)
		for (i = 0; i < m->n_classes; i++)
			wdc_free(env, m->class_labels[i]);
	wdc_free(env, m->class_labels);
	wdc_free(env, m->calibration);
	wdc_free(env, m->calibration_cond);
	wdc_free(env, m);
}

/* Whether row `row` of cond selects the null condition. */
int
flow_model_row_is_null(const FlowModel *m, const FlowConditions *cond, int row)
{
	int			j;

	if (cond == NULL || m->cond_dim == 0)
		return 1;
	if (cond->null_row && cond->null_row[row])
		return 1;
	if (m->n_numeric > 0)
	{
		if (cond->numeric == NULL)
			return 1;
		for (j = 0; j < m->n_numeric; j++)
			if (isnan(cond->numeric[(size_t) row * m->n_numeric + j]))
				return 1;
	}
	if (m->n_classes > 0)
	{
		int32_t		k;

		if (cond->class_index == NULL)
			return 1;
		k = cond->class_index[row];
		if (k < 0 || k >= m->n_classes)
			return 1;
	}
	return 0;
}

/*
 * Encode one row's condition into c [cond_dim]: z-scored numeric values
 * followed by the class embedding, or the null vector.
 */
void
flow_model_encode_cond(const FlowModel *m, const FlowConditions *cond, int row,
					   int force_null, float *c)
{
	int			j;

	if (m->cond_dim == 0)
		return;
	if (force_null || flow_model_row_is_null(m, cond, row))
	{
		memcpy(c, m->null_cond, (size_t) m->cond_dim * sizeof(float));
		return;
	}
	for (j = 0; j < m->n_numeric; j++)
		c[j] = (float) (((double) cond->numeric[(size_t) row * m->n_numeric + j] -
						 m->cond_mean[j]) / m->cond_std[j]);
	if (m->n_classes > 0)
		memcpy(c + m->n_numeric,
			   m->class_embed + (size_t) cond->class_index[row] * m->embed_dim,
			   (size_t) m->embed_dim * sizeof(float));
}

/* FiLM parameters film [2 hidden] = w_film c + b_film for one encoded row. */
void
flow_model_film(const FlowModel *m, const float *c, float *film)
{
	int			i;
	int			j;
	int			m_dim = m->cond_dim;

	for (i = 0; i < 2 * m->hidden; i++)
	{
		float		acc = m->b_film[i];

		for (j = 0; j < m_dim; j++)
			acc += m->w_film[(size_t) i * m_dim + j] * c[j];
		film[i] = acc;
	}
}

/*
 * Fraction of calibration rows whose log density is below log_density
 * (conditional set when `conditional` and the model has one).  NaN when the
 * model has no calibration.
 */
double
flow_pvalue(const FlowModel *m, double log_density, int conditional)
{
	const double *cal = (conditional && m->calibration_cond) ?
		m->calibration_cond : m->calibration;
	int			lo = 0;
	int			hi = m->n_calibration;

	if (cal == NULL || m->n_calibration == 0)
		return NAN;
	/* binary search for the first value >= log_density */
	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (cal[mid] < log_density)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (double) lo / (double) m->n_calibration;
}

/*
 * Estimate of the bytes flow_train() allocates for n_rows rows: the
 * standardised data and encoded conditions, five copies of the parameters
 * (weights, gradient, two AdamW moments, best weights) and the batch
 * activations.  The glue compares it with maintenance_work_mem before
 * reading the rows.
 */
size_t
flow_train_memory(int64_t n_rows, int d, int n_numeric, int n_classes,
				  const FlowTrainOptions *opt)
{
	int			e = n_classes > 0 ? (opt->embed_dim > 0 ? opt->embed_dim :
									 (n_classes < 16 ? n_classes : 16)) : 0;
	int			m = n_numeric + e;
	size_t		params = flow_param_count(d, opt->hidden, opt->layers,
										  n_classes, e, m);
	size_t		rows = (size_t) (n_rows > 0 ? n_rows : 0);
	size_t		b = (size_t) opt->batch_size;
	size_t		h = (size_t) opt->hidden;
	size_t		bytes = 0;

	bytes += rows * (size_t) d * sizeof(float);
	bytes += rows * ((size_t) n_numeric * sizeof(float) + sizeof(int32_t) + 1);
	bytes += rows * (sizeof(int64_t) + sizeof(double));
	bytes += 5 * params * sizeof(float);
	bytes += b * h * (size_t) (4 * opt->layers + 6) * sizeof(float);
	bytes += b * ((size_t) (4 * d + 2 * m + 4)) * sizeof(float);
	bytes += 2 * (size_t) FLOW_TANGENT_ROWS * h * sizeof(float);
	return bytes;
}
