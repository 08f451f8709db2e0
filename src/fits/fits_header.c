/*
 * fits_header.c
 *	  The selected HDU's header as 80-character cards and as JSON text.
 *
 * Cards come from cfitsio's header-to-string routines; for a tile-compressed
 * image, ffcnvthdr2str rebuilds the uncompressed image's header from the
 * binary table that carries it, so callers see ZBITPIX as BITPIX and so on.
 * The JSON rendering parses each card with cfitsio (keyword name, value
 * string, value type) and writes JSON with values typed as FITS types them.
 */
#include "fits/fits_internal.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define CARD_LEN 80

WdcStatus
wdc_fits_header_cards(const WdcEnv *env, WdcFitsFile *file, char **cards,
					  int *ncards)
{
	char	   *header = NULL;
	int			nkeys = 0;
	int			status = 0;
	size_t		bytes;

	*cards = NULL;
	*ncards = 0;
	if (!file->selected && !file->header_selected)
		return wdc_error(env, WDC_ERR_INTERNAL, "no FITS HDU selected");

	if (file->info.compressed)
		ffcnvthdr2str(file->fptr, 0, NULL, 0, &header, &nkeys, &status);
	else
		ffhdr2str(file->fptr, 0, NULL, 0, &header, &nkeys, &status);
	if (status != 0)
	{
		int			ignored = 0;

		if (header)
			fffree(header, &ignored);
		return wdc_fits_fail(env, WDC_ERR_CORRUPT, status,
							 "could not read the header of HDU %d",
							 file->info.hdu);
	}

	/* nkeys counts the cards before END; copy exactly those. */
	bytes = (size_t) nkeys * CARD_LEN;
	*cards = wdc_alloc(env, bytes + 1);
	if (*cards == NULL)
	{
		fffree(header, &status);
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory reading a FITS header");
	}
	memcpy(*cards, header, bytes);
	(*cards)[bytes] = '\0';
	*ncards = nkeys;
	fffree(header, &status);
	return WDC_OK;
}

/* Growable output text; "failed" latches an allocation failure. */
typedef struct Text
{
	const WdcEnv *env;
	char	   *data;
	size_t		len;
	size_t		cap;
	bool		failed;
} Text;

static void
text_reserve(Text *t, size_t more)
{
	size_t		need;
	char	   *grown;

	if (t->failed)
		return;
	if (!wdc_size_add(t->len, more + 1, &need))
	{
		t->failed = true;
		return;
	}
	if (need <= t->cap)
		return;
	if (need < t->cap * 2)
		need = t->cap * 2;
	grown = wdc_alloc(t->env, need);
	if (grown == NULL)
	{
		t->failed = true;
		return;
	}
	if (t->len > 0)
		memcpy(grown, t->data, t->len);
	wdc_free(t->env, t->data);
	t->data = grown;
	t->cap = need;
}

static void
text_append(Text *t, const char *s, size_t n)
{
	text_reserve(t, n);
	if (t->failed)
		return;
	memcpy(t->data + t->len, s, n);
	t->len += n;
	t->data[t->len] = '\0';
}

static void
text_puts(Text *t, const char *s)
{
	text_append(t, s, strlen(s));
}

/*
 * Append s as a JSON string.  Header bytes outside printable ASCII (which
 * the FITS standard forbids but some writers emit) are escaped as the
 * Latin-1 code point of the byte, so the result is always valid UTF-8.
 */
static void
text_json_string(Text *t, const char *s, size_t n)
{
	text_append(t, "\"", 1);
	for (size_t i = 0; i < n; i++)
	{
		unsigned char c = (unsigned char) s[i];
		char		esc[8];

		if (c == '"' || c == '\\')
		{
			esc[0] = '\\';
			esc[1] = (char) c;
			text_append(t, esc, 2);
		}
		else if (c < 0x20 || c >= 0x7f)
		{
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			text_append(t, esc, 6);
		}
		else
			text_append(t, (const char *) &c, 1);
	}
	text_append(t, "\"", 1);
}

/*
 * Rewrite a FITS numeric value as a JSON number: drop a leading "+" and
 * leading zeros, turn a Fortran "D" exponent into "E", and give a bare "."
 * digits on both sides ("1." -> "1.0", ".5" -> "0.5").  Returns false when
 * the value is not a plain number, so the caller can keep it as a string.
 */
static bool
json_number(const char *in, char *out, size_t outlen)
{
	const char *p = in;
	size_t		o = 0;
	bool		digits = false;

#define PUT(ch) do { if (o + 1 >= outlen) return false; out[o++] = (ch); } while (0)

	if (*p == '+' || *p == '-')
	{
		if (*p == '-')
			PUT('-');
		p++;
	}
	while (*p == '0' && isdigit((unsigned char) p[1]))
		p++;
	if (!isdigit((unsigned char) *p))
		PUT('0');
	while (isdigit((unsigned char) *p))
	{
		PUT(*p++);
		digits = true;
	}
	if (*p == '.')
	{
		p++;
		PUT('.');
		if (!isdigit((unsigned char) *p))
			PUT('0');
		while (isdigit((unsigned char) *p))
		{
			PUT(*p++);
			digits = true;
		}
	}
	if (!digits)
		return false;
	if (*p == 'E' || *p == 'e' || *p == 'D' || *p == 'd')
	{
		p++;
		PUT('E');
		if (*p == '+' || *p == '-')
			PUT(*p++);
		if (!isdigit((unsigned char) *p))
			return false;
		while (isdigit((unsigned char) *p))
			PUT(*p++);
	}
	if (*p != '\0')
		return false;
	out[o] = '\0';
	return true;
#undef PUT
}

/* Length of s without trailing blanks. */
static size_t
trimmed_len(const char *s, size_t n)
{
	while (n > 0 && s[n - 1] == ' ')
		n--;
	return n;
}

/*
 * Unquote a FITS string value ('O''Hara' -> O'Hara) into out, which has room
 * for FLEN_VALUE bytes.  Leading blanks are kept and trailing ones dropped,
 * because the FITS standard makes trailing blanks insignificant.  Returns false when value is not a
 * quoted string.
 */
static bool
unquote(const char *value, char *out)
{
	size_t		o = 0;

	if (value[0] != '\'')
		return false;
	for (const char *p = value + 1; *p; p++)
	{
		if (*p == '\'')
		{
			if (p[1] != '\'')
				break;
			p++;
		}
		if (o + 1 < FLEN_VALUE)
			out[o++] = *p;
	}
	out[trimmed_len(out, o)] = '\0';
	return true;
}

/* True for keywords whose cards carry free text, not a value. */
static bool
is_commentary(const char *name)
{
	return strcmp(name, "COMMENT") == 0 || strcmp(name, "HISTORY") == 0 ||
		name[0] == '\0';
}

/*
 * Append the JSON value of one parsed card; value is cfitsio's value string
 * (quotes included for strings).
 */
static void
append_value(Text *t, const char *value)
{
	char		type = 'C';
	char		number[FLEN_VALUE + 8];
	int			status = 0;

	if (value[0] == '\0')
	{
		text_puts(t, "null");
		return;
	}
	ffdtyp(value, &type, &status);
	ffcmsg();
	if (status != 0)
		type = '?';

	switch (type)
	{
		case 'L':
			text_puts(t, value[0] == 'T' ? "true" : "false");
			return;
		case 'I':
		case 'F':
			if (json_number(value, number, sizeof(number)))
			{
				text_puts(t, number);
				return;
			}
			break;
		case 'C':
			{
				char		str[FLEN_VALUE];

				if (!unquote(value, str))
					break;
				text_json_string(t, str, trimmed_len(str, strlen(str)));
				return;
			}
		default:
			break;
	}
	/* Complex numbers and anything cfitsio cannot type stay text. */
	text_json_string(t, value, strlen(value));
}

/*
 * Join a long string written with the CONTINUE convention: when the string
 * of card i ends in "&", the string values of the CONTINUE cards that follow
 * are appended, each "&" marker removed, until a part ends without one.
 * Returns the joined string (NULL when card i is not continued) and sets
 * *used to the number of CONTINUE cards consumed.
 */
static char *
join_continued(const WdcEnv *env, const char *cards, int ncards, int i,
			   const char *value, int *used)
{
	char		str[FLEN_VALUE];
	size_t		n;
	Text		whole = {.env = env};
	int			status = 0;

	*used = 0;
	if (value[0] != '\'')
		return NULL;
	if (!unquote(value, str))
		return NULL;
	n = strlen(str);
	if (n == 0 || str[n - 1] != '&' ||
		i + 1 >= ncards ||
		strncmp(cards + (size_t) (i + 1) * CARD_LEN, "CONTINUE", 8) != 0)
	{
		ffcmsg();
		return NULL;
	}
	text_append(&whole, str, n - 1);

	for (int j = i + 1; j < ncards; j++)
	{
		const char *card = cards + (size_t) j * CARD_LEN;
		char		one[CARD_LEN + 1];
		char		cval[FLEN_VALUE];
		char		comm[FLEN_COMMENT];
		bool		more;

		if (strncmp(card, "CONTINUE", 8) != 0)
			break;
		/* CONTINUE has no "= "; give it one so ffpsvc finds the value. */
		memcpy(one, card, CARD_LEN);
		one[CARD_LEN] = '\0';
		memcpy(one, "CONTINUX= ", 10);
		status = 0;
		ffpsvc(one, cval, comm, &status);
		if (status != 0 || !unquote(cval, str))
			break;
		(*used)++;
		n = strlen(str);
		more = n > 0 && str[n - 1] == '&';
		text_append(&whole, str, more ? n - 1 : n);
		if (!more)
			break;
	}
	ffcmsg();
	if (whole.failed)
	{
		wdc_free(env, whole.data);
		*used = 0;
		return NULL;
	}
	return whole.data;
}

WdcStatus
wdc_fits_header_json(const WdcEnv *env, WdcFitsFile *file, char **json)
{
	static const char *const commentary[] = {"COMMENT", "HISTORY", ""};
	char	   *cards;
	int			ncards;
	Text		out = {.env = env};
	Text		notes[3] = {{.env = env}, {.env = env}, {.env = env}};
	bool		first = true;
	WdcStatus	rc;

	*json = NULL;
	rc = wdc_fits_header_cards(env, file, &cards, &ncards);
	if (rc != WDC_OK)
		return rc;

	text_puts(&out, "{");
	for (int i = 0; i < ncards; i++)
	{
		const char *card = cards + (size_t) i * CARD_LEN;
		char		one[CARD_LEN + 1];
		char		name[FLEN_KEYWORD];
		char		value[FLEN_VALUE];
		char		comm[FLEN_COMMENT];
		char	   *continued;
		int			namelen = 0;
		int			used = 0;
		int			status = 0;

		memcpy(one, card, CARD_LEN);
		one[CARD_LEN] = '\0';
		ffgknm(one, name, &namelen, &status);
		if (status != 0)
		{
			ffcmsg();
			continue;			/* an unparseable card is skipped, not fatal */
		}
		if (strcmp(name, "END") == 0)
			break;

		/* Commentary cards: free text collected per keyword. */
		if (is_commentary(name) || strcmp(name, "CONTINUE") == 0)
		{
			int			k = name[0] == '\0' ? 2 : (name[0] == 'H' ? 1 : 0);

			if (strcmp(name, "CONTINUE") == 0)
				continue;		/* orphan CONTINUE: its string was joined */
			text_puts(&notes[k], notes[k].len ? "," : "[");
			text_json_string(&notes[k], card + 8, trimmed_len(card + 8, CARD_LEN - 8));
			continue;
		}

		ffpsvc(one, value, comm, &status);
		if (status != 0)
		{
			ffcmsg();
			continue;
		}

		/* HIERARCH keywords are keyed by their name without the prefix. */
		{
			const char *key = name;

			if (strncmp(key, "HIERARCH ", 9) == 0)
				key += 9;
			text_puts(&out, first ? "" : ",");
			first = false;
			text_json_string(&out, key, strlen(key));
			text_puts(&out, ":");
		}

		/* A card with a keyword but no "= " keeps its text as a string. */
		if (strncmp(card + 8, "= ", 2) != 0 && strncmp(card, "HIERARCH", 8) != 0)
		{
			text_json_string(&out, card + 8, trimmed_len(card + 8, CARD_LEN - 8));
			continue;
		}
		continued = join_continued(env, cards, ncards, i, value, &used);
		if (continued)
		{
			text_json_string(&out, continued, strlen(continued));
			wdc_free(env, continued);
			i += used;
			continue;
		}
		append_value(&out, value);
	}

	/* Commentary arrays go last, each under its keyword. */
	for (int k = 0; k < 3; k++)
	{
		if (notes[k].len == 0)
			continue;
		text_puts(&notes[k], "]");
		text_puts(&out, first ? "" : ",");
		first = false;
		text_json_string(&out, commentary[k], strlen(commentary[k]));
		text_puts(&out, ":");
		if (!notes[k].failed)
			text_append(&out, notes[k].data, notes[k].len);
		else
			out.failed = true;
	}
	text_puts(&out, "}");

	for (int k = 0; k < 3; k++)
		wdc_free(env, notes[k].data);
	wdc_free(env, cards);
	if (out.failed)
	{
		wdc_free(env, out.data);
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory rendering a FITS header");
	}
	*json = out.data;
	return WDC_OK;
}
