/*
 * latent_parse_fuzz.c
 *	  libFuzzer target for the latent text parser.
 *
 * Besides memory errors (AddressSanitizer, UndefinedBehaviorSanitizer), it
 * checks two properties on every accepted input: all elements are finite,
 * and printing the values with 9 significant digits then parsing again gives
 * the same bits and fingerprint.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "latent/latent_parse.h"

#define MAX_DIM 16000

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static float values[MAX_DIM];
	static float again[MAX_DIM];
	char	   *lit;
	char	   *text;
	int			dim;
	int			dim2;
	int			pos;
	int			len;
	uint32_t	fp;
	uint32_t	fp2;
	size_t		off = 0;

	lit = malloc(size + 1);
	memcpy(lit, data, size);
	lit[size] = '\0';

	if (latent_parse(lit, values, MAX_DIM, &dim, &fp, &pos, &len) != LATENT_PARSE_OK)
	{
		free(lit);
		return 0;
	}
	if (dim < 1 || dim > MAX_DIM)
		abort();

	/* print and parse again: "%.9g" is exact for float4 */
	text = malloc((size_t) dim * 20 + 16);
	text[off++] = '[';
	for (int i = 0; i < dim; i++)
	{
		if (!isfinite(values[i]))
			abort();
		off += sprintf(text + off, i ? ",%.9g" : "%.9g", values[i]);
	}
	off += sprintf(text + off, "]@%08x", fp);
	if (latent_parse(text, again, MAX_DIM, &dim2, &fp2, &pos, &len) != LATENT_PARSE_OK ||
		dim2 != dim || fp2 != fp || memcmp(values, again, sizeof(float) * dim) != 0)
		abort();

	free(text);
	free(lit);
	return 0;
}
