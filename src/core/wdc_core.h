/*
 * wdc_core.h
 *	  Allocation, interrupt and error hooks shared by the PostgreSQL-free
 *	  numerical core (src/core, src/nn, src/flow, src/fits).
 *
 * The core never includes postgres.h.  A caller (the PostgreSQL glue, a unit
 * test, a benchmark) fills a WdcEnv with an allocator, an interrupt check and
 * an error record.  Core functions return a WdcStatus; on failure they first
 * release what they allocated, then return, and the caller raises the error
 * (ereport in the glue) from the message stored in the WdcError.
 */
#ifndef WDC_CORE_H
#define WDC_CORE_H

#include <stddef.h>
#include <stdint.h>

/* Status codes; the glue maps each one to a SQLSTATE. */
typedef enum WdcStatus
{
	WDC_OK = 0,
	WDC_ERR_INVALID,			/* bad argument or option: INVALID_PARAMETER_VALUE */
	WDC_ERR_DATA,				/* bad data value (NaN, shape mismatch): DATA_EXCEPTION */
	WDC_ERR_CORRUPT,			/* malformed file or model bytes: DATA_CORRUPTED */
	WDC_ERR_UNSUPPORTED,		/* valid input we do not handle: FEATURE_NOT_SUPPORTED */
	WDC_ERR_LIMIT,				/* hard size limit exceeded: PROGRAM_LIMIT_EXCEEDED */
	WDC_ERR_NOMEM,				/* allocation failed: OUT_OF_MEMORY */
	WDC_ERR_IO,					/* file could not be read: IO_ERROR */
	WDC_ERR_CANCELED,			/* interrupt hook returned nonzero: QUERY_CANCELED */
	WDC_ERR_INTERNAL			/* a state that should not happen: INTERNAL_ERROR */
} WdcStatus;

/* Error record filled by wdc_error(); message and detail are NUL-terminated. */
typedef struct WdcError
{
	WdcStatus	status;
	char		message[256];	/* primary message, lowercase, no final period */
	char		detail[512];	/* full sentences or empty */
	char		hint[256];		/* full sentences or empty */
} WdcError;

/*
 * Environment handed to every core entry point.
 *
 * alloc returns NULL on failure (never longjmps); free accepts NULL.
 * interrupted returns nonzero when the caller wants the work stopped; the core
 * calls it from every loop that may run longer than about 10 ms, then cleans
 * up and returns WDC_ERR_CANCELED.  Any hook may be NULL: malloc/free and
 * "never interrupted" are used then.
 */
typedef struct WdcEnv
{
	void	   *(*alloc) (void *state, size_t size);
	void		(*free) (void *state, void *ptr);
	int			(*interrupted) (void *state);
	void	   *state;
	WdcError   *error;			/* may be NULL: errors are then only returned */
} WdcEnv;

/* An environment that uses malloc/free and is never interrupted. */
extern void wdc_env_init_default(WdcEnv *env, WdcError *error);

extern void *wdc_alloc(const WdcEnv *env, size_t size);
extern void *wdc_alloc0(const WdcEnv *env, size_t size);
extern void wdc_free(const WdcEnv *env, void *ptr);
extern int	wdc_interrupted(const WdcEnv *env);

/*
 * Record an error (printf-style primary message) and return its status, so
 * that callers can write "return wdc_error(env, WDC_ERR_DATA, ...)".
 */
extern WdcStatus wdc_error(const WdcEnv *env, WdcStatus status,
						   const char *fmt,...)
			__attribute__((format(printf, 3, 4)));
/* Set the detail or hint of the error recorded last; return its status. */
extern WdcStatus wdc_error_detail(const WdcEnv *env, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));
extern WdcStatus wdc_error_hint(const WdcEnv *env, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));

/* Overflow-checked size arithmetic: return 0 and leave *out unset on overflow. */
static inline int
wdc_size_mul(size_t a, size_t b, size_t *out)
{
	return !__builtin_mul_overflow(a, b, out);
}

static inline int
wdc_size_add(size_t a, size_t b, size_t *out)
{
	return !__builtin_add_overflow(a, b, out);
}

#endif							/* WDC_CORE_H */
