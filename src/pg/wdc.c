/*
 * wdc.c
 *	  Module entry point: PG_MODULE_MAGIC, _PG_init and process-wide settings.
 */
#include "postgres.h"

#include <cblas.h>

#include "fmgr.h"
#include "utils/guc.h"

#include "pg/wdc_pg.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/*
 * Load-time setup.  OpenBLAS is pinned to one thread because a backend is a
 * single-threaded process: parallelism comes from PostgreSQL's parallel
 * workers, and BLAS threads would oversubscribe the cores those workers use
 * and keep spinning after each call.
 */
void
_PG_init(void)
{
	openblas_set_num_threads(1);

	wdc_module_init_gucs();

	MarkGUCPrefixReserved("wdc");
}
