/*
 * latent.h
 *	  The latent vector type: on-disk layout, limits and helpers.
 *
 * On-disk layout (varlena, 4-byte aligned, little-endian as the server is):
 *
 *	 int32	 vl_len_	  varlena header
 *	 uint8	 version	  LATENT_FORMAT_VERSION; readers reject other values
 *	 uint8	 flags		  reserved bits, 0 in version 1
 *	 uint16	 dim		  number of elements, 1 .. LATENT_MAX_DIM
 *	 uint32	 fingerprint  model fingerprint set by wdc.encode; 0 = untagged
 *	 float4	 x[dim]		  finite values only
 *
 * The header is 12 bytes, so x[] is 4-byte aligned.  A later format adds a
 * new version number and keeps reading version 1 as it is, so stored data
 * never needs a rewrite.
 */
#ifndef WDC_LATENT_H
#define WDC_LATENT_H

#include "postgres.h"
#include "fmgr.h"

#define LATENT_FORMAT_VERSION 1
#define LATENT_MAX_DIM 16000

typedef struct Latent
{
	int32		vl_len_;		/* varlena header (do not touch directly) */
	uint8		version;		/* LATENT_FORMAT_VERSION */
	uint8		flags;			/* reserved, 0 */
	uint16		dim;			/* number of elements */
	uint32		fingerprint;	/* model fingerprint, 0 when untagged */
	float4		x[FLEXIBLE_ARRAY_MEMBER];
} Latent;

#define LATENT_SIZE(dim)		(offsetof(Latent, x) + sizeof(float4) * (dim))
#define DatumGetLatentP(d)		((Latent *) PG_DETOAST_DATUM(d))
#define PG_GETARG_LATENT_P(n)	DatumGetLatentP(PG_GETARG_DATUM(n))
#define PG_RETURN_LATENT_P(p)	PG_RETURN_POINTER(p)

/* Allocate a zeroed, untagged latent of dim elements in CurrentMemoryContext. */
extern Latent *InitLatent(int dim);

/* Raise the error for a format version this build cannot read. */
extern void LatentVersionError(const Latent *a) pg_attribute_noreturn();

/*
 * Raise an error unless the value's format version is one this build reads;
 * every function that reads stored latents calls it (through
 * LatentCheckPair or directly).  Inline because distance scans call it twice
 * per row.
 */
static inline void
LatentCheckVersion(const Latent *a)
{
	if (unlikely(a->version != LATENT_FORMAT_VERSION))
		LatentVersionError(a);
}

/*
 * Raise an error unless a and b have the same dimension and compatible
 * fingerprints (equal, or at least one of them 0).  Returns the fingerprint
 * a result of both should carry.
 */
extern uint32 LatentCheckPair(const Latent *a, const Latent *b);

/* Raise an error naming dim when it is outside 1 .. LATENT_MAX_DIM. */
extern void LatentCheckDim(int dim);

/* Raise an error naming typmod and dim when they disagree (typmod -1 = any). */
extern void LatentCheckTypmod(int dim, int32 typmod);

#endif							/* WDC_LATENT_H */
