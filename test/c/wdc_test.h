/*
 * wdc_test.h
 *	  Minimal assertion helpers for the PostgreSQL-free unit-test programs.
 *
 * Each program calls WDC_CHECK for every condition, prints one line per case
 * with wdc_test_case(), and ends with wdc_test_summary(), which prints
 * "N passed, N failed" and returns the exit status.
 */
#ifndef WDC_TEST_H
#define WDC_TEST_H

#include <stdio.h>
#include <math.h>

static int	wdc_test_passed;
static int	wdc_test_failed;

/* Record one case: print "ok NAME" or "FAIL NAME: why". */
static inline void
wdc_test_case(const char *name, int ok, const char *why)
{
	if (ok)
	{
		wdc_test_passed++;
		printf("ok %s\n", name);
	}
	else
	{
		wdc_test_failed++;
		printf("FAIL %s: %s\n", name, why ? why : "");
	}
	fflush(stdout);
}

/* Relative/absolute closeness as numpy.allclose defines it. */
static inline int
wdc_close(double got, double want, double rtol, double atol)
{
	if (isnan(got) || isnan(want))
		return isnan(got) && isnan(want);
	return fabs(got - want) <= atol + rtol * fabs(want);
}

static inline int
wdc_test_summary(void)
{
	printf("%d passed, %d failed\n", wdc_test_passed, wdc_test_failed);
	return wdc_test_failed == 0 ? 0 : 1;
}

#endif							/* WDC_TEST_H */
