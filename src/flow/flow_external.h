/*
 * flow_external.h
 *	  Flows trained outside wdc: any ONNX graph with inputs x [N][d] (latent),
 *	  t [N][1] (time) and optionally c [N][m] (condition), and one output
 *	  v [N][d] (velocity), run on the ONNX runtime.
 *
 * Such a flow is used as exported: latents, conditions and densities are in
 * the graph's own space (no standardisation, no condition encoding, no
 * learned null condition, no calibration).  The path convention is wdc's:
 * noise at t = 0, data at t = 1.  The divergence for log densities is exact,
 * from d forward-mode tangents through the graph.
 */
#ifndef WDC_FLOW_EXTERNAL_H
#define WDC_FLOW_EXTERNAL_H

#include "core/wdc_core.h"
#include "flow/flow.h"
#include "nn/nn.h"

typedef struct FlowExternal FlowExternal;

/*
 * Check the graph's inputs (found by the names x, t and c, else by
 * position) and plan it for one row with d tangent directions.  The model
 * must outlive the returned object.
 */
extern WdcStatus flow_external_open(const WdcEnv *env, const WdcNnModel *model,
									FlowExternal **out);
extern void flow_external_free(const WdcEnv *env, FlowExternal *ext);

/* Latent dimension d and condition width m (0 without a condition input). */
extern int	flow_external_dim(const FlowExternal *ext);
extern int	flow_external_cond_dim(const FlowExternal *ext);

/*
 * One row each.  cond holds m values, or is NULL when m = 0.  Options as
 * for the native flow; guidance must be 1 because an external graph has no
 * null condition.
 *	log_density: natural log density of z (d values) at t = 1
 *	residual: x(0) reached from z at t = 1 (d values into out)
 *	transfer: residual under cond_from, then back to t = 1 under cond_to
 *	sample: x(1) reached from a standard normal draw of the seed
 */
extern WdcStatus flow_external_log_density(const WdcEnv *env, FlowExternal *ext,
										   const float *z, const float *cond,
										   const FlowSolveOptions *opt,
										   double *out);
extern WdcStatus flow_external_residual(const WdcEnv *env, FlowExternal *ext,
										const float *z, const float *cond,
										const FlowSolveOptions *opt, float *out);
extern WdcStatus flow_external_transfer(const WdcEnv *env, FlowExternal *ext,
										const float *z, const float *cond_from,
										const float *cond_to,
										const FlowSolveOptions *opt, float *out);
extern WdcStatus flow_external_sample(const WdcEnv *env, FlowExternal *ext,
									  const float *cond, uint64_t seed,
									  const FlowSolveOptions *opt, float *out);

#endif							/* WDC_FLOW_EXTERNAL_H */
