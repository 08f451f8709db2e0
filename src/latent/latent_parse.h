/*
 * latent_parse.h
 *	  PostgreSQL-free parser for the latent text form, shared by latent_in
 *	  and the fuzz target.
 */
#ifndef WDC_LATENT_PARSE_H
#define WDC_LATENT_PARSE_H

#include <stdint.h>

typedef enum LatentParseStatus
{
	LATENT_PARSE_OK = 0,
	LATENT_PARSE_NO_OPEN_BRACKET,	/* does not start with "[" */
	LATENT_PARSE_EMPTY,			/* "[]" */
	LATENT_PARSE_MISSING_ELEMENT,	/* "[1,,2]", "[,1]", "[1,]" */
	LATENT_PARSE_NOT_A_NUMBER,	/* "[a]" */
	LATENT_PARSE_OUT_OF_RANGE,	/* overflows float4 or underflows to 0 */
	LATENT_PARSE_NAN,			/* NaN element */
	LATENT_PARSE_INFINITE,		/* infinite element */
	LATENT_PARSE_TOO_MANY,		/* more than max_dim elements */
	LATENT_PARSE_NO_CLOSE_BRACKET,	/* input ends before "]" */
	LATENT_PARSE_NO_COMMA,		/* "[1 2]" */
	LATENT_PARSE_BAD_FINGERPRINT,	/* "@" not followed by 8 hex digits */
	LATENT_PARSE_TRAILING		/* junk after the value */
} LatentParseStatus;

/*
 * Parse a NUL-terminated literal "[x1,...,xn]" or "[x1,...,xn]@hhhhhhhh".
 * Writes at most max_dim floats to values (capacity max_dim), the element
 * count to *dim and the fingerprint (0 when absent) to *fingerprint.  On an
 * element error, *error_pos and *error_len locate the offending element in
 * lit.  Never reads past the terminating NUL.
 */
extern LatentParseStatus latent_parse(const char *lit, float *values, int max_dim,
									  int *dim, uint32_t *fingerprint,
									  int *error_pos, int *error_len);

#endif							/* WDC_LATENT_PARSE_H */
