/*
 * latent_parse.c
 *	  Parser for the latent text form; no PostgreSQL dependency.
 *
 * Grammar: optional spaces, "[", elements separated by ",", "]", an
 * optional "@" with exactly eight hexadecimal digits, optional spaces.
 * Spaces are allowed around each element.  Elements are read with strtof,
 * which accepts what float4in accepts; overflow and underflow to zero are
 * reported as out of range, as float4in does, and NaN and infinities are
 * rejected because latents hold finite values only.
 */
#include "latent/latent_parse.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>

static int
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

LatentParseStatus
latent_parse(const char *lit, float *values, int max_dim, int *dim,
			 uint32_t *fingerprint, int *error_pos, int *error_len)
{
	const char *p = lit;
	int			n = 0;

	*dim = 0;
	*fingerprint = 0;
	*error_pos = 0;
	*error_len = 0;

	while (is_space(*p))
		p++;
	if (*p != '[')
		return LATENT_PARSE_NO_OPEN_BRACKET;
	p++;
	while (is_space(*p))
		p++;
	if (*p == ']')
		return LATENT_PARSE_EMPTY;

	for (;;)
	{
		char	   *end;
		float		v;

		while (is_space(*p))
			p++;
		if (*p == ',' || *p == ']' || *p == '\0')
			return LATENT_PARSE_MISSING_ELEMENT;
		if (n == max_dim)
			return LATENT_PARSE_TOO_MANY;

		errno = 0;
		v = strtof(p, &end);
		if (end == p)
			return LATENT_PARSE_NOT_A_NUMBER;
		*error_pos = (int) (p - lit);
		*error_len = (int) (end - p);
		if (isnan(v))
			return LATENT_PARSE_NAN;
		if (errno == ERANGE && (v == 0.0f || isinf(v)))
			return LATENT_PARSE_OUT_OF_RANGE;
		if (isinf(v))
			return LATENT_PARSE_INFINITE;
		values[n++] = v;

		p = end;
		while (is_space(*p))
			p++;
		if (*p == ',')
		{
			p++;
			continue;
		}
		if (*p == ']')
		{
			p++;
			break;
		}
		if (*p == '\0')
			return LATENT_PARSE_NO_CLOSE_BRACKET;
		return LATENT_PARSE_NO_COMMA;
	}

	if (*p == '@')
	{
		uint32_t	fp = 0;
		int			i;

		p++;
		for (i = 0; i < 8; i++)
		{
			int			h = hex_value(p[i]);

			if (h < 0)
				return LATENT_PARSE_BAD_FINGERPRINT;
			fp = (fp << 4) | (uint32_t) h;
		}
		p += 8;
		if (hex_value(*p) >= 0)
			return LATENT_PARSE_BAD_FINGERPRINT;
		*fingerprint = fp;
	}

	while (is_space(*p))
		p++;
	if (*p != '\0')
		return LATENT_PARSE_TRAILING;
	*dim = n;
	return LATENT_PARSE_OK;
}
