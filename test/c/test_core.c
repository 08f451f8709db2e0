/*
 * test_core.c
 *	  Unit tests for the core hooks: error recording and checked sizes.
 */
#include "core/wdc_core.h"
#include "wdc_test.h"

#include <string.h>

static int	interrupt_calls;

static int
always_interrupted(void *state)
{
	(void) state;
	interrupt_calls++;
	return 1;
}

int
main(void)
{
	WdcEnv		env;
	WdcError	err;
	size_t		out = 0;
	WdcStatus	st;

	wdc_env_init_default(&env, &err);

	st = wdc_error(&env, WDC_ERR_DATA, "value %d is invalid", 7);
	wdc_test_case("error returns its status", st == WDC_ERR_DATA, NULL);
	wdc_test_case("error formats the message",
				  strcmp(err.message, "value 7 is invalid") == 0, err.message);
	wdc_error_hint(&env, "Use %s.", "8");
	wdc_test_case("error hint is stored", strcmp(err.hint, "Use 8.") == 0, err.hint);

	wdc_test_case("size_mul detects overflow",
				  !wdc_size_mul((size_t) 1 << 40, (size_t) 1 << 40, &out), NULL);
	wdc_test_case("size_mul multiplies",
				  wdc_size_mul(6, 7, &out) && out == 42, NULL);

	wdc_test_case("default env is not interrupted", !wdc_interrupted(&env), NULL);
	env.interrupted = always_interrupted;
	wdc_test_case("interrupt hook is called",
				  wdc_interrupted(&env) && interrupt_calls == 1, NULL);

	return wdc_test_summary();
}
