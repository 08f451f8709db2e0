/*
 * wdc_pg.h
 *	  Declarations shared by the PostgreSQL glue files.
 */
#ifndef WDC_PG_H
#define WDC_PG_H

/*
 * Define every module's GUCs.  Implemented in gucs.c, which calls each
 * module's init function; _PG_init calls it once.
 */
extern void wdc_module_init_gucs(void);

#endif							/* WDC_PG_H */
