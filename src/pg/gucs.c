/*
 * gucs.c
 *	  Calls each module's GUC definitions from _PG_init.
 *
 * Modules declare "void wdc_<module>_init(void)" in their own header; add a
 * call here when a module gains settings.
 */
#include "postgres.h"

#include "hnsw/hnsw.h"
#include "pg/fits_sql.h"
#include "pg/model.h"
#include "pg/wdc_pg.h"

void
wdc_module_init_gucs(void)
{
	wdc_fits_init_gucs();
	wdc_hnsw_init();
	wdc_model_init();
}
