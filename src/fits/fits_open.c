/*
 * fits_open.c
 *	  Opening FITS input from memory or from a server file with cfitsio.
 *
 * Both paths end in a cfitsio handle on a byte stream we have checked first:
 *	1. the leading bytes are either a gzip header or the FITS "SIMPLE  ="
 *	   card; other compressors and other data are rejected here, because
 *	   cfitsio would otherwise decompress them without a size limit;
 *	2. gzip data is inflated here, stopping as soon as the output passes
 *	   limits->max_bytes (a compression bomb costs at most that much);
 *	3. memory goes to cfitsio's memory driver (read-only, never written;
 *	   a short last block is first copied into a zero-padded buffer);
 *	   an uncompressed server file is opened through /proc/self/fd of a
 *	   descriptor we opened on the literal path, so cfitsio sees no name it
 *	   could parse as extended syntax and tries no alternative name.
 * Whether the selected HDU's data is complete is checked in fits_image.c,
 * against total_bytes recorded here.
 */
#include "fits/fits_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* Inflate output grows by this much at least (bytes). */
#define INFLATE_MIN_STEP ((size_t) 1 << 20)

/* Size of a FITS header or data block (bytes). */
#define FITS_BLOCK 2880

/* Bytes read from a server file per read() call. */
#define READ_CHUNK ((size_t) 1 << 20)

WdcStatus
wdc_fits_fail(const WdcEnv *env, WdcStatus code, int cfitsio_status,
			  const char *fmt,...)
{
	char		message[256];
	char		text[FLEN_STATUS];
	char		stack[FLEN_ERRMSG];
	char		detail[512];
	size_t		used;
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	wdc_error(env, code, "%s", message);

	/* cfitsio's words: the status text, then its message stack. */
	ffgerr(cfitsio_status, text);
	used = (size_t) snprintf(detail, sizeof(detail),
							 "cfitsio status %d: %s.", cfitsio_status, text);
	while (ffgmsg(stack) > 0)
	{
		if (used + 2 >= sizeof(detail))
			continue;			/* drain the stack even when detail is full */
		used += (size_t) snprintf(detail + used, sizeof(detail) - used,
								  " %s", stack);
	}
	ffcmsg();
	return wdc_error_detail(env, "%s", detail);
}

/* True when data starts like a FITS primary header. */
static bool
looks_like_fits(const unsigned char *data, size_t len)
{
	return len >= 10 && memcmp(data, "SIMPLE  = ", 10) == 0;
}

static bool
looks_like_gzip(const unsigned char *data, size_t len)
{
	return len >= 2 && data[0] == 0x1f && data[1] == 0x8b;
}

/* Name of a compressor cfitsio recognises but wdc does not inflate, or NULL. */
static const char *
other_compression(const unsigned char *data, size_t len)
{
	if (len >= 2 && data[0] == 0x1f && data[1] == 0x9d)
		return "Unix compress (.Z)";
	if (len >= 2 && data[0] == 0x1f && data[1] == 0xa0)
		return "Unix pack (.z)";
	if (len >= 4 && memcmp(data, "PK\003\004", 4) == 0)
		return "zip";
	if (len >= 3 && memcmp(data, "BZh", 3) == 0)
		return "bzip2";
	return NULL;
}

/* Reject anything that is neither FITS nor gzip, with a reason. */
static WdcStatus
check_leading_bytes(const WdcEnv *env, const unsigned char *data, size_t len)
{
	const char *other;

	if (looks_like_fits(data, len) || looks_like_gzip(data, len))
		return WDC_OK;
	other = other_compression(data, len);
	if (other)
	{
		wdc_error(env, WDC_ERR_UNSUPPORTED,
				  "%s-compressed FITS input is not supported", other);
		return wdc_error_hint(env, "Decompress it, or recompress it with gzip.");
	}
	wdc_error(env, WDC_ERR_CORRUPT, "input is not a FITS file");
	wdc_error_detail(env, "A FITS file starts with the card \"SIMPLE  = \"; "
					 "this input has %zu bytes and starts otherwise.", len);
	return WDC_ERR_CORRUPT;
}

/*
 * Inflate a whole gzip stream (one or more members) into a new buffer of at
 * most max_bytes (0 = no limit).  *out is allocated with the env allocator.
 */
static WdcStatus
inflate_gzip(const WdcEnv *env, const unsigned char *in, size_t in_len,
			 size_t max_bytes, unsigned char **out, size_t *out_len)
{
	z_stream	zs;
	unsigned char *buf = NULL;
	size_t		cap = 0;
	size_t		used = 0;
	int			zrc;

	memset(&zs, 0, sizeof(zs));
	/* 16 + MAX_WBITS: expect a gzip header and trailer, not raw zlib. */
	if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
		return wdc_error(env, WDC_ERR_NOMEM, "could not start gzip decompression");
	zs.next_in = (unsigned char *) in;
	zs.avail_in = 0;

	for (;;)
	{
		/* Feed input in pieces that fit zlib's 32-bit counters. */
		if (zs.avail_in == 0)
		{
			size_t		consumed = (size_t) (zs.next_in - in);
			size_t		left = in_len - consumed;

			zs.avail_in = left > (1u << 30) ? (1u << 30) : (unsigned) left;
		}

		/* Grow the output, refusing to pass the limit. */
		if (used == cap)
		{
			size_t		step = cap < INFLATE_MIN_STEP ? INFLATE_MIN_STEP : cap;
			size_t		newcap;
			unsigned char *grown;

			if (!wdc_size_add(cap, step, &newcap))
				newcap = SIZE_MAX;
			if (max_bytes > 0 && newcap > max_bytes + 1)
				newcap = max_bytes + 1;
			if (newcap <= cap)
			{
				inflateEnd(&zs);
				wdc_free(env, buf);
				wdc_error(env, WDC_ERR_LIMIT,
						  "decompressed FITS data exceeds the limit of %zu bytes",
						  max_bytes);
				return wdc_error_hint(env, "Raise wdc.fits_max_mb, or store "
									  "the file uncompressed or tile-compressed.");
			}
			grown = wdc_alloc(env, newcap);
			if (grown == NULL)
			{
				inflateEnd(&zs);
				wdc_free(env, buf);
				return wdc_error(env, WDC_ERR_NOMEM,
								 "out of memory decompressing gzip FITS data");
			}
			if (used > 0)
				memcpy(grown, buf, used);
			wdc_free(env, buf);
			buf = grown;
			cap = newcap;
		}

		zs.next_out = buf + used;
		zs.avail_out = (cap - used) > (1u << 30) ? (1u << 30) : (unsigned) (cap - used);
		{
			unsigned	before = zs.avail_out;

			zrc = inflate(&zs, Z_NO_FLUSH);
			used += before - zs.avail_out;
		}

		if (zrc == Z_STREAM_END)
		{
			size_t		consumed = (size_t) (zs.next_in - in);

			/* Another gzip member may follow (as "cat a.gz b.gz" makes). */
			if (consumed + 2 <= in_len && looks_like_gzip(in + consumed, 2))
			{
				inflateReset(&zs);
				continue;
			}
			break;
		}
		if (zrc == Z_BUF_ERROR && zs.avail_in == 0 &&
			(size_t) (zs.next_in - in) == in_len)
		{
			inflateEnd(&zs);
			wdc_free(env, buf);
			wdc_error(env, WDC_ERR_CORRUPT, "gzip FITS data is truncated");
			return wdc_error_detail(env, "The gzip stream of %zu bytes ends "
									"before its end marker, after %zu "
									"decompressed bytes.", in_len, used);
		}
		if (zrc != Z_OK && zrc != Z_BUF_ERROR)
		{
			wdc_error(env, WDC_ERR_CORRUPT, "gzip FITS data is corrupt");
			wdc_error_detail(env, "zlib: %s.", zs.msg ? zs.msg : "unknown error");
			inflateEnd(&zs);
			wdc_free(env, buf);
			return WDC_ERR_CORRUPT;
		}
		if (max_bytes > 0 && used > max_bytes)
			continue;			/* the growth step above reports the limit */
		if (wdc_interrupted(env))
		{
			inflateEnd(&zs);
			wdc_free(env, buf);
			return wdc_error(env, WDC_ERR_CANCELED, "FITS decompression canceled");
		}
	}
	inflateEnd(&zs);

	if (max_bytes > 0 && used > max_bytes)
	{
		wdc_free(env, buf);
		wdc_error(env, WDC_ERR_LIMIT,
				  "decompressed FITS data exceeds the limit of %zu bytes",
				  max_bytes);
		return wdc_error_hint(env, "Raise wdc.fits_max_mb, or store the file "
							  "uncompressed or tile-compressed.");
	}
	*out = buf;
	*out_len = used;
	return WDC_OK;
}

/* Allocate the handle with limits copied in. */
static WdcFitsFile *
new_file(const WdcEnv *env, const WdcFitsLimits *limits)
{
	WdcFitsFile *file = wdc_alloc0(env, sizeof(WdcFitsFile));

	if (file && limits)
		file->limits = *limits;
	return file;
}

/*
 * Hand an in-memory FITS stream (already checked and inflated) to cfitsio.
 * On failure the handle is freed, and with it any owned buffer.
 */
static WdcStatus
open_checked_memory(const WdcEnv *env, WdcFitsFile *file, WdcFitsFile **out)
{
	int			status = 0;

	if (!looks_like_fits(file->mem, file->mem_size))
	{
		WdcStatus	rc = check_leading_bytes(env, file->mem, file->mem_size);

		if (rc == WDC_OK)		/* gzip inside gzip */
			rc = wdc_error(env, WDC_ERR_CORRUPT,
						   "gzip data does not contain a FITS file");
		wdc_fits_close(env, file);
		return rc;
	}
	file->total_bytes = file->mem_size;

	/*
	 * cfitsio's memory driver reads whole 2880-byte FITS blocks without
	 * checking the buffer's end, so a stream whose last block is short
	 * (padding omitted, or truncated) is copied into zero-padded blocks.
	 */
	if (file->mem_size % FITS_BLOCK != 0)
	{
		size_t		padded = (file->mem_size / FITS_BLOCK + 1) * FITS_BLOCK;
		unsigned char *copy = wdc_alloc(env, padded);

		if (copy == NULL)
		{
			wdc_fits_close(env, file);
			return wdc_error(env, WDC_ERR_NOMEM, "out of memory opening FITS data");
		}
		memcpy(copy, file->mem, file->mem_size);
		memset(copy + file->mem_size, 0, padded - file->mem_size);
		wdc_free(env, file->owned);
		file->owned = copy;
		file->mem = copy;
		file->mem_size = padded;
	}

	/* The name only labels cfitsio's messages and has no extended syntax. */
	ffomem(&file->fptr, "memory.fits", READONLY, &file->mem, &file->mem_size,
		   0, NULL, &status);
	if (status != 0)
	{
		file->fptr = NULL;
		wdc_fits_fail(env, WDC_ERR_CORRUPT, status, "could not read FITS data");
		wdc_fits_close(env, file);
		return WDC_ERR_CORRUPT;
	}
	*out = file;
	return WDC_OK;
}

WdcStatus
wdc_fits_open_memory(const WdcEnv *env, const void *data, size_t len,
					 const WdcFitsLimits *limits, WdcFitsFile **out)
{
	WdcFitsFile *file;
	WdcStatus	rc;

	*out = NULL;
	rc = check_leading_bytes(env, data, len);
	if (rc != WDC_OK)
		return rc;

	file = new_file(env, limits);
	if (file == NULL)
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory opening FITS data");

	if (looks_like_gzip(data, len))
	{
		unsigned char *plain;
		size_t		plain_len;

		rc = inflate_gzip(env, data, len, file->limits.max_bytes,
						  &plain, &plain_len);
		if (rc != WDC_OK)
		{
			wdc_fits_close(env, file);
			return rc;
		}
		file->owned = plain;
		file->mem = plain;
		file->mem_size = plain_len;
	}
	else
	{
		/* cfitsio opens it READONLY and never writes through this pointer. */
		file->mem = (void *) data;
		file->mem_size = len;
	}
	return open_checked_memory(env, file, out);
}

/* Read exactly len bytes from fd into buf; 0 on success, else errno. */
static int
read_fully(const WdcEnv *env, int fd, unsigned char *buf, size_t len)
{
	size_t		done = 0;

	while (done < len)
	{
		size_t		want = len - done > READ_CHUNK ? READ_CHUNK : len - done;
		ssize_t		got = read(fd, buf + done, want);

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return errno;
		if (got == 0)
			return EIO;			/* the file shrank while we read it */
		done += (size_t) got;
		if (wdc_interrupted(env))
			return ECANCELED;
	}
	return 0;
}

WdcStatus
wdc_fits_open_path(const WdcEnv *env, const char *path,
				   const WdcFitsLimits *limits, WdcFitsFile **out)
{
	WdcFitsFile *file;
	unsigned char head[16];
	struct stat st;
	size_t		size;
	ssize_t		nhead;
	int			fd;
	int			status = 0;
	WdcStatus	rc;

	*out = NULL;

	/* 1. Open the literal path; only regular files (no FIFO can block us). */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
	{
		int			err = errno;

		wdc_error(env, WDC_ERR_IO, "could not open file \"%s\" for reading", path);
		return wdc_error_detail(env, "%s.", strerror(err));
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
	{
		close(fd);
		return wdc_error(env, WDC_ERR_INVALID, "\"%s\" is not a regular file", path);
	}
	size = (size_t) st.st_size;

	/* 2. Look at the leading bytes. */
	nhead = pread(fd, head, sizeof(head), 0);
	if (nhead < 0)
		nhead = 0;
	rc = check_leading_bytes(env, head, (size_t) nhead);
	if (rc != WDC_OK)
	{
		close(fd);
		if (rc == WDC_ERR_CORRUPT)
			wdc_error_detail(env, "File \"%s\" has %zu bytes and does not start "
							 "with the card \"SIMPLE  = \".", path, size);
		return rc;
	}

	file = new_file(env, limits);
	if (file == NULL)
	{
		close(fd);
		return wdc_error(env, WDC_ERR_NOMEM, "out of memory opening FITS file");
	}

	/* 3a. gzip: read the compressed bytes, then inflate within the limit. */
	if (looks_like_gzip(head, (size_t) nhead))
	{
		unsigned char *packed;
		int			err;

		if (file->limits.max_bytes > 0 && size > file->limits.max_bytes)
		{
			close(fd);
			wdc_fits_close(env, file);
			wdc_error(env, WDC_ERR_LIMIT,
					  "file \"%s\" of %zu bytes exceeds the limit of %zu bytes",
					  path, size, limits->max_bytes);
			return wdc_error_hint(env, "Raise wdc.fits_max_mb.");
		}
		packed = wdc_alloc(env, size);
		if (packed == NULL)
		{
			close(fd);
			wdc_fits_close(env, file);
			return wdc_error(env, WDC_ERR_NOMEM, "out of memory reading \"%s\"", path);
		}
		err = read_fully(env, fd, packed, size);
		close(fd);
		if (err != 0)
		{
			wdc_free(env, packed);
			wdc_fits_close(env, file);
			if (err == ECANCELED)
				return wdc_error(env, WDC_ERR_CANCELED, "reading \"%s\" canceled", path);
			wdc_error(env, WDC_ERR_IO, "could not read file \"%s\"", path);
			return wdc_error_detail(env, "%s.", strerror(err));
		}
		rc = inflate_gzip(env, packed, size, file->limits.max_bytes,
						  (unsigned char **) &file->owned, &file->mem_size);
		wdc_free(env, packed);
		if (rc != WDC_OK)
		{
			wdc_fits_close(env, file);
			return rc;
		}
		file->mem = file->owned;
		return open_checked_memory(env, file, out);
	}

	/*
	 * 3b. Uncompressed: cfitsio reads the file we opened through its
	 * /proc/self/fd name, so it cannot reinterpret the user's path.
	 */
	{
		char		procname[64];

		snprintf(procname, sizeof(procname), "/proc/self/fd/%d", fd);
		ffdkopn(&file->fptr, procname, READONLY, &status);
	}
	close(fd);
	if (status != 0)
	{
		file->fptr = NULL;
		wdc_fits_fail(env, WDC_ERR_CORRUPT, status,
					  "could not read FITS file \"%s\"", path);
		wdc_fits_close(env, file);
		return WDC_ERR_CORRUPT;
	}
	file->total_bytes = size;
	*out = file;
	return WDC_OK;
}

void
wdc_fits_close(const WdcEnv *env, WdcFitsFile *file)
{
	int			status = 0;

	if (file == NULL)
		return;
	if (file->fptr)
		ffclos(file->fptr, &status);
	ffcmsg();
	wdc_free(env, file->owned);
	wdc_free(env, file);
}

WdcStatus
wdc_fits_hdu_count(const WdcEnv *env, WdcFitsFile *file, int *count)
{
	int			status = 0;

	ffthdu(file->fptr, count, &status);
	if (status != 0)
		return wdc_fits_fail(env, WDC_ERR_CORRUPT, status,
							 "could not count the HDUs of FITS data");
	return WDC_OK;
}
