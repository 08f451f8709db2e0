/*
 * workflow_trigger.c
 *	  wdc.embed_trigger(): a BEFORE INSERT OR UPDATE row trigger that keeps a
 *	  latent column, and optionally a flow score column, in step with an
 *	  image column of the same row.
 *
 * Trigger arguments (wdc.attach writes them):
 *	  1. model name (an encoder in wdc.model; its current version is used)
 *	  2. source column: bytea (a FITS file) or real[] (an image)
 *	  3. target column: latent
 *	  then optional key=value settings, in any order:
 *	  flow=NAME				flow model that scores the latent
 *	  score=COLUMN			column that receives the score
 *	  score_function=F		log_density (default) or outlier_pvalue
 *	  condition=COLUMN		repeatable: columns passed to the flow as its
 *							condition, a jsonb object keyed by column name
 *
 * The trigger modifies NEW and returns it, so the row is written once.  It
 * encodes only when the source column is new (INSERT) or changed (UPDATE).
 * An UPDATE that leaves the source alone but changes the latent or a
 * condition column rescores the latent.  Any other UPDATE costs a few
 * comparisons.  An
 * INSERT that already carries a latent tagged with the model's current
 * fingerprint keeps it, so reloading a dump or a replicated row does not
 * re-encode it.  The model and flow run through prepared SPI plans kept per
 * trigger for the life of the backend.  Errors abort the statement, as any
 * trigger error does, with a message naming the row's primary key and the
 * model.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/detoast.h"
#include "access/genam.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"

#include "latent/latent.h"
#include "pg/model.h"

PG_FUNCTION_INFO_V1(embed_trigger);

/* Maximum number of condition columns per trigger. */
#define EMBED_MAX_CONDITIONS 64

/* Trigger arguments, parsed and resolved to attribute numbers. */
typedef struct EmbedConfig
{
	const char *model;
	const char *flow;			/* NULL when no score is kept */
	const char *score_function; /* "log_density" or "outlier_pvalue" */
	int			source;			/* attribute numbers, 1-based */
	int			target;
	int			score;			/* 0 when none */
	int			ncond;
	int			cond[EMBED_MAX_CONDITIONS];
} EmbedConfig;

/*
 * Prepared plans of one trigger.  The argument types are part of the entry
 * so that an ALTER TABLE changing a column's type makes fresh plans.
 */
typedef struct EmbedPlans
{
	Oid			tgoid;			/* hash key */
	Oid			source_type;
	Oid			target_type;
	Oid			score_type;
	int			ncond;
	Oid			cond_types[EMBED_MAX_CONDITIONS];
	SPIPlanPtr	encode;
	SPIPlanPtr	score;			/* NULL when no score is kept */
} EmbedPlans;

static HTAB *embed_plans = NULL;

/* Attribute number of a named column, raising when it is missing. */
static int
column_number(Relation rel, const char *name, const char *role)
{
	int			attnum = SPI_fnumber(RelationGetDescr(rel), name);

	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("%s column \"%s\" of wdc.embed_trigger does not exist in table \"%s\"",
						role, name, RelationGetRelationName(rel)),
				 errhint("Recreate the trigger with wdc.attach after renaming or dropping columns.")));
	return attnum;
}

/* Parse the trigger's arguments (see the file header). */
static void
parse_config(Trigger *trigger, Relation rel, EmbedConfig *config)
{
	const char *score_column = NULL;

	memset(config, 0, sizeof(*config));
	config->score_function = "log_density";
	if (trigger->tgnargs < 3)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wdc.embed_trigger on table \"%s\" needs at least 3 arguments: model, source column, target column",
						RelationGetRelationName(rel)),
				 errhint("Create the trigger with wdc.attach.")));
	config->model = trigger->tgargs[0];
	config->source = column_number(rel, trigger->tgargs[1], "source");
	config->target = column_number(rel, trigger->tgargs[2], "target");

	for (int i = 3; i < trigger->tgnargs; i++)
	{
		const char *arg = trigger->tgargs[i];
		const char *eq = strchr(arg, '=');
		Size		keylen = eq ? (Size) (eq - arg) : 0;
		const char *value = eq ? eq + 1 : NULL;

		if (eq == NULL || *value == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid wdc.embed_trigger argument \"%s\"", arg),
					 errhint("Settings after the third argument have the form flow=NAME, score=COLUMN, score_function=NAME or condition=COLUMN.")));
		if (keylen == 4 && strncmp(arg, "flow", 4) == 0)
			config->flow = value;
		else if (keylen == 5 && strncmp(arg, "score", 5) == 0)
			score_column = value;
		else if (keylen == 14 && strncmp(arg, "score_function", 14) == 0)
		{
			if (strcmp(value, "log_density") != 0 && strcmp(value, "outlier_pvalue") != 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid score_function \"%s\" in wdc.embed_trigger", value),
						 errhint("Use log_density or outlier_pvalue.")));
			config->score_function = value;
		}
		else if (keylen == 9 && strncmp(arg, "condition", 9) == 0)
		{
			if (config->ncond >= EMBED_MAX_CONDITIONS)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("wdc.embed_trigger accepts at most %d condition columns",
								EMBED_MAX_CONDITIONS)));
			config->cond[config->ncond++] = column_number(rel, value, "condition");
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid wdc.embed_trigger argument \"%s\"", arg),
					 errhint("Known settings are flow, score, score_function and condition.")));
	}

	if ((config->flow == NULL) != (score_column == NULL))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wdc.embed_trigger on table \"%s\" needs both flow and score, or neither",
						RelationGetRelationName(rel))));
	if (score_column != NULL)
		config->score = column_number(rel, score_column, "score");
	if (config->ncond > 0 && config->flow == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wdc.embed_trigger on table \"%s\" has condition columns but no flow",
						RelationGetRelationName(rel))));
}

/* Column type, with domains resolved to their base type. */
static Oid
column_type(TupleDesc desc, int attnum)
{
	return getBaseType(TupleDescAttr(desc, attnum - 1)->atttypid);
}

/* Prepare and keep one plan; the query text contains no user input. */
static SPIPlanPtr
prepare_kept(const char *query, int nargs, Oid *types)
{
	SPIPlanPtr	plan = SPI_prepare(query, nargs, types);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", query,
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

/*
 * Return the prepared plans of a trigger, making them on first use or when
 * a column type changed.  Must run inside SPI_connect.
 */
static EmbedPlans *
get_plans(Trigger *trigger, TupleDesc desc, const EmbedConfig *config)
{
	EmbedPlans *plans;
	bool		found;
	Oid			source_type = column_type(desc, config->source);
	Oid			target_type = column_type(desc, config->target);
	Oid			score_type = config->score ? TupleDescAttr(desc, config->score - 1)->atttypid : InvalidOid;
	bool		fresh;

	if (embed_plans == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(EmbedPlans);
		ctl.hcxt = TopMemoryContext;
		embed_plans = hash_create("wdc.embed_trigger plans", 16, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	plans = hash_search(embed_plans, &trigger->tgoid, HASH_ENTER, &found);
	if (!found)
	{
		plans->encode = NULL;
		plans->score = NULL;
	}

	fresh = found && plans->encode != NULL &&
		plans->source_type == source_type &&
		plans->target_type == target_type &&
		plans->score_type == score_type &&
		plans->ncond == config->ncond &&
		(config->score == 0) == (plans->score == NULL);
	for (int i = 0; fresh && i < config->ncond; i++)
		fresh = plans->cond_types[i] == TupleDescAttr(desc, config->cond[i] - 1)->atttypid;
	if (fresh)
		return plans;

	/* (re)build: drop old plans first so a failure leaves none half-made */
	if (plans->encode)
		SPI_freeplan(plans->encode);
	if (plans->score)
		SPI_freeplan(plans->score);
	plans->encode = NULL;
	plans->score = NULL;

	if (source_type != BYTEAOID && source_type != FLOAT4ARRAYOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("source column \"%s\" of wdc.embed_trigger has type %s",
						NameStr(TupleDescAttr(desc, config->source - 1)->attname),
						format_type_be(source_type)),
				 errhint("The source column must be bytea (a FITS file) or real[] (an image).")));
	if (strcmp(format_type_be(target_type), "latent") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("target column \"%s\" of wdc.embed_trigger has type %s",
						NameStr(TupleDescAttr(desc, config->target - 1)->attname),
						format_type_be(target_type)),
				 errhint("The target column must be of type latent.")));

	{
		Oid			types[2] = {TEXTOID, source_type};

		plans->encode = prepare_kept("SELECT wdc.encode($1, $2)", 2, types);
	}

	if (config->score)
	{
		StringInfoData q;
		Oid			types[2 + 2 * EMBED_MAX_CONDITIONS];

		/*
		 * The condition goes to the flow as jsonb keyed by column name, the
		 * form its training query's column names define.  Names travel as
		 * parameters.  The function name comes from a fixed list and the
		 * type from format_type_be, which quotes it, so no user text reaches
		 * the query.
		 */
		initStringInfo(&q);
		appendStringInfo(&q, "SELECT CAST(wdc.%s($1, $2", config->score_function);
		types[0] = TEXTOID;
		types[1] = target_type;
		if (config->ncond > 0)
		{
			appendStringInfoString(&q, ", pg_catalog.jsonb_build_object(");
			for (int i = 0; i < config->ncond; i++)
			{
				types[2 + 2 * i] = TEXTOID;
				types[3 + 2 * i] = TupleDescAttr(desc, config->cond[i] - 1)->atttypid;
				appendStringInfo(&q, "%s$%d, $%d", i ? ", " : "", 3 + 2 * i, 4 + 2 * i);
			}
			appendStringInfoString(&q, ")");
		}
		appendStringInfo(&q, ") AS %s)", format_type_be(score_type));
		plans->score = prepare_kept(q.data, 2 + 2 * config->ncond, types);
		pfree(q.data);
	}

	plans->source_type = source_type;
	plans->target_type = target_type;
	plans->score_type = score_type;
	plans->ncond = config->ncond;
	for (int i = 0; i < config->ncond; i++)
		plans->cond_types[i] = TupleDescAttr(desc, config->cond[i] - 1)->atttypid;
	return plans;
}

/*
 * Describe a row by its primary key, "(id)=(42)", for error messages.  The
 * values are shown only to a role that may read those columns.
 */
static char *
row_key(Relation rel, HeapTuple tuple)
{
	Oid			pkoid = RelationGetPrimaryKeyIndex(rel);
	TupleDesc	desc = RelationGetDescr(rel);
	StringInfoData names;
	StringInfoData values;
	bool		readable = true;
	Relation	index;

	if (!OidIsValid(pkoid))
		return pstrdup("(table has no primary key)");

	initStringInfo(&names);
	initStringInfo(&values);
	index = index_open(pkoid, AccessShareLock);
	for (int i = 0; i < index->rd_index->indnkeyatts; i++)
	{
		AttrNumber	attnum = index->rd_index->indkey.values[i];
		Form_pg_attribute att = TupleDescAttr(desc, attnum - 1);
		bool		isnull;
		Datum		value;

		/* column ACLs hold only column-level grants: check the table first */
		if (pg_class_aclcheck(RelationGetRelid(rel), GetUserId(), ACL_SELECT) != ACLCHECK_OK &&
			pg_attribute_aclcheck(RelationGetRelid(rel), attnum, GetUserId(),
								  ACL_SELECT) != ACLCHECK_OK)
			readable = false;
		appendStringInfo(&names, "%s%s", i ? ", " : "",
						 quote_identifier(NameStr(att->attname)));
		value = heap_getattr(tuple, attnum, desc, &isnull);
		if (isnull)
			appendStringInfo(&values, "%snull", i ? ", " : "");
		else
		{
			Oid			typoutput;
			bool		varlena;

			getTypeOutputInfo(att->atttypid, &typoutput, &varlena);
			appendStringInfo(&values, "%s%s", i ? ", " : "",
							 OidOutputFunctionCall(typoutput, value));
		}
	}
	index_close(index, AccessShareLock);

	if (!readable)
		return psprintf("(%s)", names.data);
	return psprintf("(%s)=(%s)", names.data, values.data);
}

/*
 * True when two values of a column are the same bytes.  An UPDATE that does
 * not set the column keeps its TOAST pointer, which is compared without
 * fetching the value.
 */
static bool
same_value(Datum a, bool anull, Datum b, bool bnull, Form_pg_attribute att)
{
	if (anull || bnull)
		return anull && bnull;
	if (att->attlen == -1 &&
		VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(a)) &&
		VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(b)))
	{
		struct varatt_external pa;
		struct varatt_external pb;

		VARATT_EXTERNAL_GET_POINTER(pa, DatumGetPointer(a));
		VARATT_EXTERNAL_GET_POINTER(pb, DatumGetPointer(b));
		if (pa.va_valueid == pb.va_valueid && pa.va_toastrelid == pb.va_toastrelid)
			return true;
	}
	return datum_image_eq(a, b, att->attbyval, att->attlen);
}

/*
 * Run a one-row, one-column plan and return its value copied into the
 * caller's context (outside SPI).  An error is raised again with the row
 * and the model in front of its message; SQLSTATE, detail and hint stay.
 * The row key is described before the plan runs because no catalog lookup
 * is safe between catching an error and raising it again.
 */
static Datum
run_plan(SPIPlanPtr plan, Datum *args, bool *isnull, const char *key,
		 Relation rel, const char *what, const char *model)
{
	MemoryContext cxt = CurrentMemoryContext;
	Datum		value = (Datum) 0;

	*isnull = true;
	PG_TRY();
	{
		int			rc = SPI_execute_plan(plan, args, NULL, true, 1);

		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "wdc.embed_trigger query returned %s", SPI_result_code_string(rc));
		value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull);
		if (!*isnull)
		{
			Form_pg_attribute att = TupleDescAttr(SPI_tuptable->tupdesc, 0);

			value = SPI_datumTransfer(value, att->attbyval, att->attlen);
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* the statement aborts anyway, and transaction abort cleans up SPI */
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		edata->message = psprintf("could not %s row %s of table \"%s\" with model \"%s\": %s",
								  what, key, RelationGetRelationName(rel), model,
								  edata->message);
		ReThrowError(edata);
	}
	PG_END_TRY();
	return value;
}

/* wdc.embed_trigger(): see the file header. */
Datum
embed_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *tdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	HeapTuple	newtuple;
	EmbedConfig config;
	bool		is_update;
	bool		encode = false;
	bool		rescore = false;
	bool		src_null;
	Datum		src;
	char	   *key;
	int			cols[2];
	Datum		vals[2];
	bool		nulls[2];
	int			ncols = 0;

	/* 1. check how it is called */
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("wdc.embed_trigger must be called as a trigger")));
	if (!TRIGGER_FIRED_BEFORE(tdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(tdata->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(tdata->tg_event) ||
		  TRIGGER_FIRED_BY_UPDATE(tdata->tg_event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("wdc.embed_trigger must be a BEFORE INSERT OR UPDATE ... FOR EACH ROW trigger")));

	rel = tdata->tg_relation;
	desc = RelationGetDescr(rel);
	is_update = TRIGGER_FIRED_BY_UPDATE(tdata->tg_event);
	newtuple = is_update ? tdata->tg_newtuple : tdata->tg_trigtuple;
	parse_config(tdata->tg_trigger, rel, &config);

	/* 2. decide what to recompute */
	src = heap_getattr(newtuple, config.source, desc, &src_null);
	if (is_update)
	{
		bool		old_null;
		Datum		old = heap_getattr(tdata->tg_trigtuple, config.source, desc, &old_null);

		encode = !same_value(old, old_null, src, src_null,
							 TupleDescAttr(desc, config.source - 1));
		/* a latent written by wdc.backfill or by hand needs a fresh score */
		if (!encode && config.score)
		{
			Datum		a,
						b;
			bool		an,
						bn;

			a = heap_getattr(tdata->tg_trigtuple, config.target, desc, &an);
			b = heap_getattr(newtuple, config.target, desc, &bn);
			rescore = !same_value(a, an, b, bn, TupleDescAttr(desc, config.target - 1));
		}
		for (int i = 0; !encode && !rescore && i < config.ncond; i++)
		{
			Datum		a,
						b;
			bool		an,
						bn;

			a = heap_getattr(tdata->tg_trigtuple, config.cond[i], desc, &an);
			b = heap_getattr(newtuple, config.cond[i], desc, &bn);
			rescore = !same_value(a, an, b, bn, TupleDescAttr(desc, config.cond[i] - 1));
		}
	}
	else
	{
		bool		target_null;
		Datum		target = heap_getattr(newtuple, config.target, desc, &target_null);

		encode = true;
		/* a row that arrives with a latent of the current model keeps it */
		if (!src_null && !target_null)
		{
			Latent	   *z = DatumGetLatentP(target);
			WdcModelEntry *entry = WdcModelLookup(config.model, -1);

			if (z->fingerprint != 0 && z->fingerprint == entry->fingerprint)
			{
				encode = false;
				if (config.score)
				{
					bool		score_null;

					(void) heap_getattr(newtuple, config.score, desc, &score_null);
					rescore = score_null;
				}
			}
		}
	}
	if (!encode && !rescore)
		return PointerGetDatum(newtuple);

	/* 3. encode and score through the prepared plans */
	key = row_key(rel, newtuple);
	SPI_connect();
	{
		EmbedPlans *plans = get_plans(tdata->tg_trigger, desc, &config);
		Datum		z = (Datum) 0;
		bool		z_null = true;

		if (encode)
		{
			if (!src_null)
			{
				Datum		args[2] = {CStringGetTextDatum(config.model), src};

				z = run_plan(plans->encode, args, &z_null, key, rel,
							 "encode", config.model);
			}
			cols[ncols] = config.target;
			vals[ncols] = z;
			nulls[ncols] = z_null;
			ncols++;
		}
		else
			z = heap_getattr(newtuple, config.target, desc, &z_null);

		if (config.score)
		{
			Datum		args[2 + 2 * EMBED_MAX_CONDITIONS];
			bool		cond_null = false;
			Datum		score = (Datum) 0;
			bool		score_null = true;

			args[0] = CStringGetTextDatum(config.flow);
			args[1] = z;
			for (int i = 0; i < config.ncond; i++)
			{
				bool		n;

				args[2 + 2 * i] = CStringGetTextDatum(NameStr(TupleDescAttr(desc, config.cond[i] - 1)->attname));
				args[3 + 2 * i] = heap_getattr(newtuple, config.cond[i], desc, &n);
				cond_null |= n;
			}

			/* an incomplete condition cannot be scored: the score is NULL */
			if (!z_null && !cond_null)
				score = run_plan(plans->score, args, &score_null, key, rel,
								 "score", config.flow);
			cols[ncols] = config.score;
			vals[ncols] = score;
			nulls[ncols] = score_null;
			ncols++;
		}
	}
	SPI_finish();

	/* 4. one modified copy of NEW, returned to the executor */
	return PointerGetDatum(heap_modify_tuple_by_cols(newtuple, desc, ncols,
													 cols, vals, nulls));
}

/*
 * wdc.backfill_require_own_transactions(procedure text): raise a clear error
 * when a procedure that COMMITs per batch is called inside BEGIN ... COMMIT.
 * PostgreSQL would otherwise stop it at its first COMMIT with a bare
 * "invalid transaction termination".  It also rejects calls from a function
 * or query.  Inside a subtransaction (an exception block) the state of the
 * enclosing transaction is not visible, so the block check is skipped
 * there and PostgreSQL's own error applies at the first COMMIT.
 */
PG_FUNCTION_INFO_V1(backfill_require_own_transactions);

Datum
backfill_require_own_transactions(PG_FUNCTION_ARGS)
{
	char	   *procedure = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (!IsSubTransaction() && IsTransactionBlock())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("%s cannot run inside a transaction block", procedure),
				 errdetail("It commits after each batch so that an interrupted job keeps its progress."),
				 errhint("CALL it outside BEGIN ... COMMIT.")));

	/*
	 * The procedure's own SPI connection is atomic when it was called from
	 * a function or a query, where no COMMIT is possible either.
	 */
	if (!SPI_inside_nonatomic_context())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_TERMINATION),
				 errmsg("%s cannot run inside a function", procedure),
				 errdetail("It commits after each batch, which a procedure called from a function or query cannot do."),
				 errhint("CALL it directly, or from a DO block or another procedure that is itself called directly.")));
	PG_RETURN_VOID();
}
