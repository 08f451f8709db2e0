/*
 * wdc_core.c
 *	  Default hooks and error recording for the PostgreSQL-free core.
 */
#include "core/wdc_core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *
default_alloc(void *state, size_t size)
{
	(void) state;
	return malloc(size);
}

static void
default_free(void *state, void *ptr)
{
	(void) state;
	free(ptr);
}

void
wdc_env_init_default(WdcEnv *env, WdcError *error)
{
	memset(env, 0, sizeof(*env));
	env->alloc = default_alloc;
	env->free = default_free;
	env->error = error;
	if (error)
		memset(error, 0, sizeof(*error));
}

void *
wdc_alloc(const WdcEnv *env, size_t size)
{
	if (size == 0)
		size = 1;
	if (env && env->alloc)
		return env->alloc(env->state, size);
	return malloc(size);
}

void *
wdc_alloc0(const WdcEnv *env, size_t size)
{
	void	   *p = wdc_alloc(env, size);

	if (p)
		memset(p, 0, size);
	return p;
}

void
wdc_free(const WdcEnv *env, void *ptr)
{
	if (ptr == NULL)
		return;
	if (env && env->free)
		env->free(env->state, ptr);
	else
		free(ptr);
}

int
wdc_interrupted(const WdcEnv *env)
{
	return env && env->interrupted && env->interrupted(env->state);
}

WdcStatus
wdc_error(const WdcEnv *env, WdcStatus status, const char *fmt,...)
{
	va_list		ap;

	if (env == NULL || env->error == NULL)
		return status;
	memset(env->error, 0, sizeof(*env->error));
	env->error->status = status;
	va_start(ap, fmt);
	vsnprintf(env->error->message, sizeof(env->error->message), fmt, ap);
	va_end(ap);
	return status;
}

WdcStatus
wdc_error_detail(const WdcEnv *env, const char *fmt,...)
{
	va_list		ap;

	if (env == NULL || env->error == NULL)
		return WDC_ERR_INTERNAL;
	va_start(ap, fmt);
	vsnprintf(env->error->detail, sizeof(env->error->detail), fmt, ap);
	va_end(ap);
	return env->error->status;
}

WdcStatus
wdc_error_hint(const WdcEnv *env, const char *fmt,...)
{
	va_list		ap;

	if (env == NULL || env->error == NULL)
		return WDC_ERR_INTERNAL;
	va_start(ap, fmt);
	vsnprintf(env->error->hint, sizeof(env->error->hint), fmt, ap);
	va_end(ap);
	return env->error->status;
}
