/*
 * model.h
 *	  The model registry's per-backend cache of parsed and planned ONNX
 *	  models, and the helpers that wdc.encode, wdc.decode and wdc.infer use.
 */
#ifndef WDC_PG_MODEL_H
#define WDC_PG_MODEL_H

#include "postgres.h"

#include "fits/preprocess.h"
#include "flow/flow.h"
#include "flow/flow_external.h"
#include "nn/nn.h"

#define WDC_MODEL_KIND_LEN 16

/* Rows per run of a model's batch plan (WdcModelRun). */
#define WDC_MODEL_BATCH 64

/*
 * One model version, parsed and planned for batch 1.  Entries live in their
 * own memory context under CacheMemoryContext and stay valid until the next
 * WdcModelLookup call that finds the cache invalidated, so a caller must not
 * keep an entry across calls.
 */
typedef struct WdcModelEntry
{
	int64		version;		/* hash key: versions are unique across names */
	char	   *name;
	char		kind[WDC_MODEL_KIND_LEN];	/* encoder, decoder, flow, graph */
	uint32		fingerprint;	/* stored in every latent wdc.encode returns */
	WdcNnModel *model;			/* NULL for flows trained by wdc */
	FlowModel  *flow;			/* kind flow trained by wdc, else NULL */
	FlowExternal *external;		/* kind flow from another trainer: the
								 * graph (in model) run on the runtime */
	uint32		latent_fingerprint; /* flow: fingerprint of its training
									 * latents (0 when they had none) */
	WdcNnPlan  *plan;			/* batch 1 */
	WdcNnPlan  *batch_plan;		/* batch_size rows, made on first use */
	int64		batch_size;
	int			input_index;	/* graph input fed with the image or latent */
	int			output_index;	/* graph output returned */
	int			input_rank;		/* per-sample shape = input_dims[1..rank-1] */
	int64		input_dims[WDC_NN_MAX_RANK];
	bool		has_preprocess;
	WdcPreprocess preprocess;
	MemoryContext context;
	Size		bytes;			/* ONNX bytes plus arena, for wdc.model_cache_mb */
	uint64		last_used;
	WdcEnv		env;			/* allocates in context */
	WdcError	error;
} WdcModelEntry;

/* wdc.model_cache_mb: bound on the cache, in MB. */
extern int	wdc_model_cache_mb;

extern void wdc_model_init(void);

/*
 * Find a model version, loading and planning it on a cache miss.  version
 * < 0 resolves the current version of name (pinned by wdc.set_current, else
 * the newest).  Raises an error naming the model when it does not exist.
 */
extern WdcModelEntry *WdcModelLookup(const char *name, int64 version);

/* Raise unless the entry has the given kind; action names the caller in the hint. */
extern void WdcModelRequireKind(const WdcModelEntry *entry, const char *kind,
								const char *action);

/*
 * Prepare one image of width x height x channels for the entry's encoder
 * input: run the declared preprocessing (single-channel images only), then
 * check that the result fits the input shape and has no NaN or infinite
 * pixel.  item is the image's 1-based position in a batch, or 0 for a single
 * image, and errors name it.  The result may share pixels with image.
 */
extern WdcImage WdcModelPrepareImage(const WdcModelEntry *entry, const WdcImage *image,
									 Size channels, int item);

/* The entry's per-sample input shape as text, such as "1x64x64". */
extern char *WdcModelShapeText(const WdcModelEntry *entry);

/* Elements of one sample of the entry's input (product of dims 1..rank-1). */
extern Size WdcModelSampleSize(const WdcModelEntry *entry);

/*
 * Run the entry on n samples stored back to back in input (n *
 * WdcModelSampleSize floats); the chosen output for each sample is written
 * to output (n * *out_per_sample floats, allocated in the caller's context).
 */
extern float *WdcModelRun(WdcModelEntry *entry, const float *input, int n,
						  Size *out_per_sample);

#endif							/* WDC_PG_MODEL_H */
