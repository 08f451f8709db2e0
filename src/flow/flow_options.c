/*
 * flow_options.c
 *	  Defaults and range checks for flow training and solver options.
 */
#include "flow/flow.h"

#include <math.h>

void
flow_solve_options_default(FlowSolveOptions *opt)
{
	opt->method = FLOW_MIDPOINT;
	opt->steps = 64;
	opt->quadrature = FLOW_QUAD_SIMPSON;
	opt->div_intervals = 32;
	opt->guidance = 1.0;
}

void
flow_train_options_default(FlowTrainOptions *opt)
{
	opt->hidden = 256;
	opt->layers = 3;
	opt->embed_dim = 0;
	opt->learning_rate = 3e-4;
	opt->weight_decay = 0.01;
	opt->beta1 = 0.9;
	opt->beta2 = 0.999;
	opt->adam_eps = 1e-8;
	opt->batch_size = 256;
	opt->max_epochs = 250;
	opt->patience = 100;
	opt->min_delta = 1e-5;
	opt->val_fraction = 0.2;
	opt->p_null = 0.1;
	opt->grad_clip = 1.0;
	opt->train_noise = 0.05;
	opt->init_std = 0.02;
	opt->film_gamma_bias = 1.0;
	opt->calibration_rows = 1000;
	opt->seed = 42;
}

/*
 * Check solver options; need_density demands a guidance of exactly 0 or 1,
 * because for other weights the guided field does not transport N(0, I) to
 * a density with a known meaning.
 */
WdcStatus
flow_solve_options_check(const WdcEnv *env, const FlowSolveOptions *opt,
						 int need_density)
{
	if (opt->method != FLOW_EULER && opt->method != FLOW_MIDPOINT &&
		opt->method != FLOW_RK4)
		return wdc_error(env, WDC_ERR_INVALID, "unknown ODE method %d",
						 (int) opt->method);
	if (opt->steps < 1 || opt->steps > FLOW_MAX_STEPS)
	{
		wdc_error(env, WDC_ERR_INVALID, "steps %d is out of range",
				  opt->steps);
		return wdc_error_detail(env, "steps must be between 1 and %d.",
								FLOW_MAX_STEPS);
	}
	if (opt->quadrature == FLOW_QUAD_SIMPSON && need_density &&
		(opt->div_intervals < 2 || opt->div_intervals % 2 != 0 ||
		 opt->steps % opt->div_intervals != 0))
	{
		wdc_error(env, WDC_ERR_INVALID,
				  "div_intervals %d does not fit steps %d",
				  opt->div_intervals, opt->steps);
		return wdc_error_detail(env, "Simpson quadrature needs an even number of intervals that divides the number of steps.");
	}
	if (opt->quadrature != FLOW_QUAD_STAGE &&
		opt->quadrature != FLOW_QUAD_SIMPSON)
		return wdc_error(env, WDC_ERR_INVALID, "unknown quadrature %d",
						 (int) opt->quadrature);
	if (!isfinite(opt->guidance))
		return wdc_error(env, WDC_ERR_INVALID, "guidance weight must be finite");
	if (need_density && opt->guidance != 0.0 && opt->guidance != 1.0)
	{
		wdc_error(env, WDC_ERR_INVALID,
				  "log density needs guidance weight 0 or 1, not %g",
				  opt->guidance);
		return wdc_error_detail(env, "With 0 the flow scores log p(z), with 1 log p(z | cond); a guided field for other weights transports the base distribution to a density that is not the tilted target, so its log density has no meaning.");
	}
	return WDC_OK;
}

/* Range check; the message names the option and its valid range. */
#define CHECK_RANGE(cond, name, fmt, value, range) \
	do { \
		if (!(cond)) \
		{ \
			wdc_error(env, WDC_ERR_INVALID, "flow option %s=" fmt " is out of range", \
					  name, value); \
			return wdc_error_detail(env, "%s must be %s.", name, range); \
		} \
	} while (0)

WdcStatus
flow_train_options_check(const WdcEnv *env, const FlowTrainOptions *o)
{
	CHECK_RANGE(o->hidden >= 8 && o->hidden <= FLOW_MAX_HIDDEN,
				"hidden", "%d", o->hidden, "between 8 and 4096");
	CHECK_RANGE(o->layers >= 1 && o->layers <= FLOW_MAX_LAYERS,
				"layers", "%d", o->layers, "between 1 and 8");
	CHECK_RANGE(o->embed_dim >= 0 && o->embed_dim <= 256,
				"embed_dim", "%d", o->embed_dim, "between 0 (automatic) and 256");
	CHECK_RANGE(o->learning_rate > 0 && o->learning_rate <= 1,
				"learning_rate", "%g", o->learning_rate, "in (0, 1]");
	CHECK_RANGE(o->weight_decay >= 0 && o->weight_decay < 1,
				"weight_decay", "%g", o->weight_decay, "in [0, 1)");
	CHECK_RANGE(o->beta1 >= 0 && o->beta1 < 1,
				"beta1", "%g", o->beta1, "in [0, 1)");
	CHECK_RANGE(o->beta2 >= 0 && o->beta2 < 1,
				"beta2", "%g", o->beta2, "in [0, 1)");
	CHECK_RANGE(o->adam_eps > 0 && o->adam_eps <= 1,
				"adam_eps", "%g", o->adam_eps, "in (0, 1]");
	CHECK_RANGE(o->batch_size >= 1 && o->batch_size <= 65536,
				"batch_size", "%d", o->batch_size, "between 1 and 65536");
	CHECK_RANGE(o->max_epochs >= 1 && o->max_epochs <= 100000,
				"max_epochs", "%d", o->max_epochs, "between 1 and 100000");
	CHECK_RANGE(o->patience >= 1 && o->patience <= 100000,
				"patience", "%d", o->patience, "between 1 and 100000");
	CHECK_RANGE(o->min_delta >= 0 && isfinite(o->min_delta),
				"min_delta", "%g", o->min_delta, "finite and at least 0");
	CHECK_RANGE(o->val_fraction >= 0 && o->val_fraction <= 0.9,
				"val_fraction", "%g", o->val_fraction, "in [0, 0.9]");
	CHECK_RANGE(o->p_null >= 0 && o->p_null <= 1,
				"p_null", "%g", o->p_null, "in [0, 1]");
	CHECK_RANGE(o->grad_clip > 0 && isfinite(o->grad_clip),
				"grad_clip", "%g", o->grad_clip, "finite and greater than 0");
	CHECK_RANGE(o->train_noise >= 0 && o->train_noise <= 1,
				"train_noise", "%g", o->train_noise, "in [0, 1]");
	CHECK_RANGE(o->init_std > 0 && o->init_std <= 1,
				"init_std", "%g", o->init_std, "in (0, 1]");
	CHECK_RANGE(isfinite(o->film_gamma_bias) && fabs(o->film_gamma_bias) <= 10,
				"film_gamma_bias", "%g", o->film_gamma_bias, "in [-10, 10]");
	CHECK_RANGE(o->calibration_rows >= 0 && o->calibration_rows <= 1000000,
				"calibration_rows", "%d", o->calibration_rows,
				"between 0 and 1000000");
	return WDC_OK;
}
