
-- ==========================================================================
-- catalog workflow: ingest trigger, backfill jobs
-- ==========================================================================
--
-- Nothing here is SECURITY DEFINER.  Every function runs with the caller's
-- privileges, so a role that cannot read a table cannot read it through
-- wdc.  wdc.attach and wdc.backfill also check that the caller owns the
-- table (or is a member of the owning role).  Functions that run SQL pin
-- search_path; identifiers reach dynamic SQL only through format('%I') or a
-- regclass's quoted text.

CREATE FUNCTION wdc.embed_trigger() RETURNS trigger
	AS 'MODULE_PATHNAME', 'embed_trigger' LANGUAGE C;
COMMENT ON FUNCTION wdc.embed_trigger() IS
	'BEFORE INSERT OR UPDATE row trigger: encodes the source column into the latent column when the source is new or changed, and optionally stores a flow score; arguments: model, source, target, then flow=NAME, score=COLUMN, score_function=log_density|outlier_pvalue, condition=COLUMN...; on a logical replication subscriber it fires only after ALTER TABLE ... ENABLE ALWAYS TRIGGER';

-- Raise unless the current role owns the table or is a member of its owner.
CREATE FUNCTION wdc.require_table_owner(tbl regclass, action text)
	RETURNS void
	LANGUAGE plpgsql STABLE STRICT
	SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT pg_has_role(current_user,
	                   (SELECT c.relowner FROM pg_class c WHERE c.oid = tbl), 'USAGE') THEN
		RAISE EXCEPTION 'must be owner of table % to %', tbl, action
			USING ERRCODE = 'insufficient_privilege';
	END IF;
END
$$;
COMMENT ON FUNCTION wdc.require_table_owner(regclass, text) IS
	'raises insufficient_privilege unless the current role owns the table or is a member of the owning role';

-- Type of a column of a table, raising when it does not exist.
CREATE FUNCTION wdc.column_type(tbl regclass, col name, role text)
	RETURNS regtype
	LANGUAGE plpgsql STABLE STRICT
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t regtype;
BEGIN
	SELECT a.atttypid::regtype INTO t FROM pg_attribute a
	WHERE a.attrelid = tbl AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
	IF t IS NULL THEN
		RAISE EXCEPTION '% column "%" does not exist in table %', role, col, tbl
			USING ERRCODE = 'undefined_column';
	END IF;
	RETURN t;
END
$$;
COMMENT ON FUNCTION wdc.column_type(regclass, name, text) IS
	'type of a column; raises undefined_column naming its role (source, target...) when missing';

-- Check the source and target columns and the encoder shared by attach
-- and backfill.
CREATE FUNCTION wdc.check_embedding_columns(tbl regclass, source name, target name, model text)
	RETURNS void
	LANGUAGE plpgsql STABLE STRICT
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	st regtype := wdc.column_type(tbl, source, 'source');
	tt regtype := wdc.column_type(tbl, target, 'target');
BEGIN
	IF st NOT IN ('bytea'::regtype, 'real[]'::regtype) THEN
		RAISE EXCEPTION 'source column "%" of table % has type %', source, tbl, st
			USING ERRCODE = 'datatype_mismatch',
			      HINT = 'The source column must be bytea (a FITS file) or real[] (an image).';
	END IF;
	IF tt <> '@extschema@.latent'::regtype THEN
		RAISE EXCEPTION 'target column "%" of table % has type %', target, tbl, tt
			USING ERRCODE = 'datatype_mismatch',
			      HINT = 'The target column must be of type latent.';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM wdc.model m WHERE m.name = model AND m.kind = 'encoder') THEN
		IF EXISTS (SELECT 1 FROM wdc.model m WHERE m.name = model) THEN
			RAISE EXCEPTION 'model "%" is not an encoder', model
				USING ERRCODE = 'wrong_object_type',
				      HINT = 'Its versions have another kind; SELECT * FROM wdc.models lists kinds.';
		END IF;
		RAISE EXCEPTION 'encoder "%" is not loaded', model
			USING ERRCODE = 'undefined_object',
			      HINT = 'SELECT * FROM wdc.models lists the loaded models.';
	END IF;
END
$$;
COMMENT ON FUNCTION wdc.check_embedding_columns(regclass, name, name, text) IS
	'raises unless source is a bytea or real[] column, target a latent column and model a loaded encoder';

CREATE FUNCTION wdc.attach(tbl regclass, source name, target name, model text,
                           options jsonb DEFAULT '{}')
	RETURNS name
	LANGUAGE plpgsql VOLATILE
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	trigger_name name := coalesce(options->>'trigger_name', 'wdc_embed_' || target);
	args text := format('%L, %L, %L', model, source, target);
	known text[] := ARRAY['flow', 'score', 'score_function', 'condition', 'trigger_name'];
	bad text;
	c text;
	meta jsonb;
	flow_cols text[];
	given text[];
	current_kind text;
BEGIN
	IF tbl IS NULL OR source IS NULL OR target IS NULL OR model IS NULL THEN
		RAISE EXCEPTION 'table, source, target and model must not be NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	options := coalesce(options, '{}');
	IF jsonb_typeof(options) <> 'object' THEN
		RAISE EXCEPTION 'options must be a jsonb object, not %', options
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT k INTO bad FROM jsonb_object_keys(options) k WHERE k <> ALL (known) LIMIT 1;
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'unknown wdc.attach option "%"', bad
			USING ERRCODE = 'invalid_parameter_value',
			      HINT = 'Options are flow, score, score_function, condition (array of column names) and trigger_name.';
	END IF;

	PERFORM wdc.require_table_owner(tbl, 'attach an embedding trigger');
	PERFORM wdc.check_embedding_columns(tbl, source, target, model);
	-- the trigger encodes with the current version, so that one must encode
	SELECT m.kind INTO current_kind FROM wdc.models m WHERE m.name = model AND m.current;
	IF current_kind <> 'encoder' THEN
		RAISE EXCEPTION 'the current version of model "%" has kind "%", not "encoder"', model,
			current_kind
			USING ERRCODE = 'wrong_object_type',
			      HINT = 'Pin an encoder version with wdc.set_current.';
	END IF;

	IF (options ? 'flow') <> (options ? 'score') THEN
		RAISE EXCEPTION 'options flow and score go together'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF options ? 'flow' THEN
		PERFORM wdc.column_type(tbl, (options->>'score')::name, 'score');
		IF NOT EXISTS (SELECT 1 FROM wdc.model m WHERE m.name = options->>'flow' AND m.kind = 'flow') THEN
			IF EXISTS (SELECT 1 FROM wdc.model m WHERE m.name = options->>'flow') THEN
				RAISE EXCEPTION 'model "%" is not a flow', options->>'flow'
					USING ERRCODE = 'wrong_object_type',
					      HINT = 'Its versions have another kind; SELECT * FROM wdc.models lists kinds.';
			END IF;
			RAISE EXCEPTION 'flow "%" is not loaded', options->>'flow'
				USING ERRCODE = 'undefined_object',
				      HINT = 'Train one with wdc.train_flow; SELECT * FROM wdc.models lists the loaded models.';
		END IF;
		args := args || format(', %L, %L', 'flow=' || (options->>'flow'),
		                       'score=' || (options->>'score'));
		IF options ? 'score_function' THEN
			args := args || format(', %L', 'score_function=' || (options->>'score_function'));
		END IF;
	END IF;
	IF options ? 'condition' THEN
		IF jsonb_typeof(options->'condition') <> 'array' THEN
			RAISE EXCEPTION 'option condition must be an array of column names'
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		FOR c IN SELECT jsonb_array_elements_text(options->'condition') LOOP
			PERFORM wdc.column_type(tbl, c::name, 'condition');
			args := args || format(', %L', 'condition=' || c);
		END LOOP;
	END IF;

	-- A flow trained by wdc names its condition columns; the trigger passes
	-- the table's columns of the same names, so they must match exactly.
	IF options ? 'flow' THEN
		SELECT m.description->'metadata' INTO meta
		FROM wdc.model m LEFT JOIN wdc.model_current cur ON cur.name = m.name
		WHERE m.name = options->>'flow' AND m.kind = 'flow'
		ORDER BY (m.version = cur.version) DESC NULLS LAST, m.version DESC
		LIMIT 1;
		IF meta ? 'wdc.flow.format' THEN
			flow_cols := ARRAY(SELECT jsonb_array_elements_text(
			                     coalesce((meta->>'wdc.flow.numeric_names')::jsonb, '[]')));
			IF coalesce(meta->>'wdc.flow.class_name', '') <> '' THEN
				flow_cols := flow_cols || (meta->>'wdc.flow.class_name');
			END IF;
			given := ARRAY(SELECT jsonb_array_elements_text(coalesce(options->'condition', '[]')));
			SELECT x INTO bad FROM unnest(given) x WHERE x <> ALL (flow_cols) LIMIT 1;
			IF bad IS NOT NULL THEN
				RAISE EXCEPTION 'flow "%" has no condition column "%"', options->>'flow', bad
					USING ERRCODE = 'invalid_parameter_value',
					      HINT = format('The flow was trained on the condition columns %s; name table columns the same way.', flow_cols);
			END IF;
			SELECT x INTO bad FROM unnest(flow_cols) x WHERE x <> ALL (given) LIMIT 1;
			IF bad IS NOT NULL THEN
				RAISE EXCEPTION 'option condition lacks column "%" of flow "%"', bad, options->>'flow'
					USING ERRCODE = 'invalid_parameter_value',
					      HINT = format('List every condition column of the flow: %s.', flow_cols);
			END IF;
		END IF;
	END IF;

	EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION wdc.embed_trigger(%s)',
	               trigger_name, tbl, args);
	RETURN trigger_name;
END
$$;
COMMENT ON FUNCTION wdc.attach(regclass, name, name, text, jsonb) IS
	'creates the wdc.embed_trigger that fills target (latent) from source (FITS bytea or real[] image) with the model; options: flow and score (column for wdc.log_density or, with score_function, wdc.outlier_pvalue), condition (array of column names), trigger_name (default wdc_embed_<target>); returns the trigger name; table owner only';

CREATE FUNCTION wdc.detach(tbl regclass, target name, trigger_name name DEFAULT NULL)
	RETURNS void
	LANGUAGE plpgsql VOLATILE
	SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM wdc.require_table_owner(tbl, 'detach an embedding trigger');
	EXECUTE format('DROP TRIGGER %I ON %s', coalesce(trigger_name, 'wdc_embed_' || target), tbl);
END
$$;
COMMENT ON FUNCTION wdc.detach(regclass, name, name) IS
	'drops the trigger wdc.attach created for a target column (default name wdc_embed_<target>); table owner only';

-- ==========================================================================
-- backfill jobs
-- ==========================================================================

-- Each role sees and writes only its own job rows (row-level security), so
-- the row keys recorded with errors stay private to the role that ran the
-- job.
CREATE TABLE wdc.jobs (
	job bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	table_name regclass NOT NULL,
	source name NOT NULL,
	target name NOT NULL,
	model text NOT NULL,
	version bigint NOT NULL,
	fingerprint text NOT NULL,		-- 8 hex digits, as latent_fingerprint()
	key_column name NOT NULL,
	key_min text,					-- inclusive bounds, NULL = open
	key_max text,
	last_key text,					-- highest key processed so far
	batch_size integer NOT NULL,
	on_error text NOT NULL CHECK (on_error IN ('stop', 'skip')),
	rows_total bigint NOT NULL,		-- rows to encode when the job started
	rows_done bigint NOT NULL DEFAULT 0,
	rows_failed bigint NOT NULL DEFAULT 0,
	rate real,						-- rows per second since started
	started timestamptz NOT NULL DEFAULT clock_timestamp(),
	updated timestamptz NOT NULL DEFAULT clock_timestamp(),
	state text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'failed')),
	last_error text,
	run_by name NOT NULL DEFAULT current_user
);
COMMENT ON TABLE wdc.jobs IS
	'wdc.backfill jobs: table, columns, model version, key range, progress (rows done of total, rows per second), state and last error; a job left in state running whose updated time stops advancing was interrupted';

CREATE TABLE wdc.job_errors (
	job bigint NOT NULL REFERENCES wdc.jobs ON DELETE CASCADE,
	row_key text NOT NULL,
	message text NOT NULL,
	at timestamptz NOT NULL DEFAULT clock_timestamp(),
	run_by name NOT NULL DEFAULT current_user
);
CREATE INDEX job_errors_job_idx ON wdc.job_errors (job);
COMMENT ON TABLE wdc.job_errors IS
	'rows a wdc.backfill job could not encode: job, primary key value as text, error message';

ALTER TABLE wdc.jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE wdc.job_errors ENABLE ROW LEVEL SECURITY;
CREATE POLICY jobs_own ON wdc.jobs
	USING (run_by = current_user) WITH CHECK (run_by = current_user);
CREATE POLICY job_errors_own ON wdc.job_errors
	USING (run_by = current_user) WITH CHECK (run_by = current_user);
GRANT SELECT, INSERT, UPDATE, DELETE ON wdc.jobs, wdc.job_errors TO PUBLIC;

-- Register a backfill job: check privileges, columns and options, count the
-- rows to do, and return the job id.
CREATE FUNCTION wdc.backfill_start(tbl regclass, source name, target name, model text,
                                   options jsonb)
	RETURNS bigint
	LANGUAGE plpgsql VOLATILE
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	known text[] := ARRAY['batch_size', 'on_error', 'key', 'key_min', 'key_max', 'version'];
	bad text;
	key_column name;
	key_type text;
	v bigint;
	fp text;
	version_kind text;
	batch integer;
	policy text := coalesce(options->>'on_error', 'stop');
	total bigint;
	job bigint;
BEGIN
	IF tbl IS NULL OR source IS NULL OR target IS NULL OR model IS NULL THEN
		RAISE EXCEPTION 'table, source, target and model must not be NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	options := coalesce(options, '{}');
	IF jsonb_typeof(options) <> 'object' THEN
		RAISE EXCEPTION 'options must be a jsonb object, not %', options
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT k INTO bad FROM jsonb_object_keys(options) k WHERE k <> ALL (known) LIMIT 1;
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'unknown wdc.backfill option "%"', bad
			USING ERRCODE = 'invalid_parameter_value',
			      HINT = 'Options are batch_size, on_error, key, key_min, key_max and version.';
	END IF;

	PERFORM wdc.require_table_owner(tbl, 'backfill it');
	PERFORM wdc.check_embedding_columns(tbl, source, target, model);

	-- batch size: 1 to 100000 rows per transaction
	IF options ? 'batch_size' AND coalesce(options->>'batch_size', '') !~ '^\s*[0-9]{1,9}\s*$' THEN
		RAISE EXCEPTION 'invalid batch_size "%"', options->>'batch_size'
			USING ERRCODE = 'invalid_parameter_value',
			      HINT = 'batch_size is a whole number of rows between 1 and 100000.';
	END IF;
	batch := coalesce((options->>'batch_size')::integer, 256);
	IF batch NOT BETWEEN 1 AND 100000 THEN
		RAISE EXCEPTION 'invalid batch_size %', batch
			USING ERRCODE = 'invalid_parameter_value',
			      HINT = 'batch_size is between 1 and 100000 rows.';
	END IF;
	IF policy NOT IN ('stop', 'skip') THEN
		RAISE EXCEPTION 'invalid on_error "%"', policy
			USING ERRCODE = 'invalid_parameter_value',
			      HINT = 'on_error is stop (the default) or skip.';
	END IF;

	-- key: the option, else the single-column primary key
	IF options ? 'key' THEN
		key_column := options->>'key';
		PERFORM wdc.column_type(tbl, key_column, 'key');
	ELSE
		SELECT a.attname INTO key_column
		FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
		WHERE i.indrelid = tbl AND i.indisprimary AND i.indnkeyatts = 1;
		IF key_column IS NULL THEN
			RAISE EXCEPTION 'table % has no single-column primary key', tbl
				USING ERRCODE = 'invalid_parameter_value',
				      HINT = 'Name a unique, ordered column with the option key.';
		END IF;
	END IF;
	SELECT format_type(a.atttypid, a.atttypmod) INTO key_type FROM pg_attribute a
	WHERE a.attrelid = tbl AND a.attname = key_column;

	-- model version: the option, else the current one, fixed for the job
	IF options ? 'version' THEN
		v := (options->>'version')::bigint;
	ELSE
		SELECT m.version INTO v FROM wdc.models m WHERE m.name = model AND m.current;
	END IF;
	SELECT lpad(to_hex(m.fingerprint), 8, '0'), m.kind INTO fp, version_kind FROM wdc.model m
	WHERE m.name = model AND m.version = v;
	IF version_kind IS NULL THEN
		RAISE EXCEPTION 'encoder "%" has no version %', model, v
			USING ERRCODE = 'undefined_object',
			      HINT = 'SELECT * FROM wdc.models lists the loaded models.';
	END IF;
	IF version_kind <> 'encoder' THEN
		RAISE EXCEPTION 'model "%" version % has kind "%", not "encoder"', model, v, version_kind
			USING ERRCODE = 'wrong_object_type',
			      HINT = 'Backfill with an encoder version: pass {"version": N} or pin one with wdc.set_current.';
	END IF;

	-- rows to do: a bad key_min or key_max fails here, in the key's type
	EXECUTE format('SELECT count(*) FROM %s t WHERE t.%I IS NOT NULL'
	               ' AND ($1 IS NULL OR t.%I >= CAST($1 AS %s))'
	               ' AND ($2 IS NULL OR t.%I <= CAST($2 AS %s))'
	               ' AND (t.%I IS NULL OR @extschema@.latent_fingerprint(t.%I) IS DISTINCT FROM $3)',
	               tbl, source, key_column, key_type, key_column, key_type, target, target)
		INTO total USING options->>'key_min', options->>'key_max', fp;

	INSERT INTO wdc.jobs (table_name, source, target, model, version, fingerprint,
	                      key_column, key_min, key_max, batch_size, on_error, rows_total)
	VALUES (tbl, source, target, model, v, fp, key_column, options->>'key_min',
	        options->>'key_max', batch, policy, total)
	RETURNING wdc.jobs.job INTO job;
	RETURN job;
END
$$;
COMMENT ON FUNCTION wdc.backfill_start(regclass, name, name, text, jsonb) IS
	'part of wdc.backfill: checks a request and registers it in wdc.jobs; returns the job id';

-- Encode the next batch of a job.  Returns rows encoded, whether the job
-- has no rows left, and the error that stopped it (NULL if none).
CREATE FUNCTION wdc.backfill_batch(job_id bigint, OUT encoded bigint, OUT finished boolean,
                                   OUT error text)
	LANGUAGE plpgsql VOLATILE STRICT
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	j wdc.jobs;
	key_type text;
	select_batch text;
	batched boolean;
	src_type regtype;
	batch_sql text;
	batch_msg text;
	last text;
	r record;
	failed bigint := 0;
	msg text;
	elapsed float8;
	per_second float8;
BEGIN
	SELECT * INTO j FROM wdc.jobs WHERE wdc.jobs.job = job_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'backfill job % does not exist', job_id
			USING ERRCODE = 'undefined_object';
	END IF;
	-- job rows are the caller's to edit, so the checks run again here
	PERFORM wdc.require_table_owner(j.table_name, 'backfill it');
	PERFORM wdc.check_embedding_columns(j.table_name, j.source, j.target, j.model);
	SELECT format_type(a.atttypid, a.atttypmod) INTO key_type FROM pg_attribute a
	WHERE a.attrelid = j.table_name AND a.attname = j.key_column;
	encoded := 0;
	error := NULL;

	-- The next batch: rows after the last key, in key order, that have an
	-- image and no latent of this version.  FOR UPDATE makes a concurrent
	-- job on an overlapping range wait and then skip the rows this one
	-- encoded (their latents no longer match the condition on recheck).
	select_batch := format(
		'SELECT t.%1$I AS k, t.%2$I AS src FROM %3$s t WHERE t.%2$I IS NOT NULL'
		' AND ($1 IS NULL OR t.%1$I > CAST($1 AS %4$s))'
		' AND ($2 IS NULL OR t.%1$I >= CAST($2 AS %4$s))'
		' AND ($3 IS NULL OR t.%1$I <= CAST($3 AS %4$s))'
		' AND (t.%5$I IS NULL OR @extschema@.latent_fingerprint(t.%5$I) IS DISTINCT FROM $4)'
		' ORDER BY t.%1$I LIMIT $5 FOR UPDATE OF t',
		j.key_column, j.source, j.table_name, key_type, j.target);

	-- 1. the whole batch in one statement, through one wdc.encode_batch call
	-- when it exists for the source type (else wdc.encode per row).  Images
	-- stack into one real[] only when their dimensions agree.  A batch of
	-- several sizes fails with array_subscript_error, so it runs again with
	-- one call per array_dims.  Grouping every batch that way would read
	-- each TOASTed image twice.
	src_type := wdc.column_type(j.table_name, j.source, 'source');
	batched := to_regprocedure(format('wdc.encode_batch(text, bigint, %s[])',
	                                  CASE src_type
	                                  WHEN 'bytea'::regtype THEN 'bytea' ELSE 'real' END)) IS NOT NULL;
	-- %5$s is empty or the GROUP BY clause, both constants of this function
	batch_sql := 'WITH batch AS (%1$s),'
		' enc AS (SELECT array_agg(b.k ORDER BY b.k) AS ks,'
		'          wdc.encode_batch($6, $7, array_agg(b.src ORDER BY b.k)) AS zs FROM batch b%5$s),'
		' upd AS (UPDATE %2$s t SET %3$I = u.z FROM enc, unnest(enc.ks, enc.zs) AS u(k, z)'
		'         WHERE t.%4$I = u.k RETURNING 1)'
		' SELECT (SELECT count(*) FROM upd), (SELECT b.k::text FROM batch b ORDER BY b.k DESC LIMIT 1)';
	BEGIN
		IF batched THEN
			BEGIN
				EXECUTE format(batch_sql, select_batch, j.table_name, j.target, j.key_column, '')
					INTO encoded, last
					USING j.last_key, j.key_min, j.key_max, j.fingerprint, j.batch_size, j.model, j.version;
			EXCEPTION WHEN array_subscript_error THEN
				IF src_type = 'bytea'::regtype THEN
					RAISE;
				END IF;
				EXECUTE format(batch_sql, select_batch, j.table_name, j.target, j.key_column,
				               ' GROUP BY array_dims(b.src)')
					INTO encoded, last
					USING j.last_key, j.key_min, j.key_max, j.fingerprint, j.batch_size, j.model, j.version;
			END;
		ELSE
			EXECUTE format(
				'WITH batch AS (%1$s),'
				' upd AS (UPDATE %2$s t SET %3$I = wdc.encode($6, $7, b.src) FROM batch b'
				'         WHERE t.%4$I = b.k RETURNING 1)'
				' SELECT (SELECT count(*) FROM upd), (SELECT b.k::text FROM batch b ORDER BY b.k DESC LIMIT 1)',
				select_batch, j.table_name, j.target, j.key_column)
				INTO encoded, last
				USING j.last_key, j.key_min, j.key_max, j.fingerprint, j.batch_size, j.model, j.version;
		END IF;
	EXCEPTION WHEN OTHERS THEN
		-- 2. a failing batch is redone one row at a time to find the bad rows
		GET STACKED DIAGNOSTICS batch_msg = MESSAGE_TEXT;
		RAISE NOTICE 'wdc.backfill job %: batch after key % failed (%), encoding its rows one at a time',
			j.job, coalesce(j.last_key, '(start)'), batch_msg
			USING HINT = 'The error of each failing row goes to wdc.job_errors.';
		encoded := 0;
		last := NULL;
		FOR r IN EXECUTE format('SELECT s.k, s.k::text AS key_text FROM (%s) s', select_batch)
			USING j.last_key, j.key_min, j.key_max, j.fingerprint, j.batch_size
		LOOP
			BEGIN
				EXECUTE format('UPDATE %s t SET %I = wdc.encode($1, $2, t.%I) WHERE t.%I = CAST($3 AS %s)',
				               j.table_name, j.target, j.source, j.key_column, key_type)
					USING j.model, j.version, r.key_text;
				encoded := encoded + 1;
			EXCEPTION WHEN OTHERS THEN
				GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
				INSERT INTO wdc.job_errors (job, row_key, message) VALUES (j.job, r.key_text, msg);
				failed := failed + 1;
				IF j.on_error = 'stop' THEN
					error := format('row %s=%s: %s', j.key_column, r.key_text, msg);
				END IF;
			END;
			last := r.key_text;
			EXIT WHEN error IS NOT NULL;
		END LOOP;
	END;

	-- 3. progress
	finished := last IS NULL;
	elapsed := extract(epoch FROM clock_timestamp() - j.started);
	per_second := CASE WHEN elapsed > 0 THEN (j.rows_done + encoded) / elapsed END;
	UPDATE wdc.jobs SET
		last_key = coalesce(last, j.last_key),
		rows_done = j.rows_done + encoded,
		rows_failed = j.rows_failed + failed,
		rate = per_second,
		updated = clock_timestamp(),
		state = CASE WHEN error IS NOT NULL THEN 'failed'
		             WHEN finished THEN 'done' ELSE 'running' END,
		last_error = coalesce(error, msg, j.last_error)
	WHERE wdc.jobs.job = j.job;
	IF NOT finished AND error IS NULL THEN
		RAISE NOTICE 'wdc.backfill job %: % of % rows (% failed), % rows/s, ETA %',
			j.job, j.rows_done + encoded, j.rows_total, j.rows_failed + failed,
			round(coalesce(per_second, 0)::numeric, 1),
			CASE WHEN per_second > 0
			     THEN round(greatest(j.rows_total - j.rows_done - encoded - j.rows_failed - failed, 0)
			                / per_second)::text || ' s'
			     ELSE 'unknown' END;
	END IF;
END
$$;
COMMENT ON FUNCTION wdc.backfill_batch(bigint) IS
	'part of wdc.backfill: encodes the next batch of a job and records progress; one call per transaction';

CREATE FUNCTION wdc.backfill_require_own_transactions(procedure text) RETURNS void
	AS 'MODULE_PATHNAME', 'backfill_require_own_transactions'
	LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION wdc.backfill_require_own_transactions(text) IS
	'part of wdc.backfill: raises an error when called inside a transaction block (BEGIN ... COMMIT) or from a function, where a procedure cannot COMMIT';

CREATE PROCEDURE wdc.backfill(tbl regclass, source name, target name, model text,
                              options jsonb DEFAULT '{}')
	LANGUAGE plpgsql
AS $$
-- A procedure that COMMITs cannot carry a SET clause, so it pins
-- search_path for each of its transactions and calls only qualified names.
DECLARE
	job bigint;
	step record;
BEGIN
	PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
	job := wdc.backfill_start(tbl, source, target, model, options);
	-- a clear error where COMMIT is impossible; it also undoes the job row
	PERFORM wdc.backfill_require_own_transactions('wdc.backfill');
	COMMIT;
	LOOP
		PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
		SELECT * INTO step FROM wdc.backfill_batch(job);
		COMMIT;
		IF step.error IS NOT NULL THEN
			RAISE EXCEPTION 'wdc.backfill job % stopped at %', job, step.error
				USING ERRCODE = 'data_exception',
				      HINT = 'Rows encoded before the error are committed; fix the row and CALL wdc.backfill again, or pass {"on_error": "skip"}.';
		END IF;
		EXIT WHEN step.finished;
	END LOOP;
END
$$;
COMMENT ON PROCEDURE wdc.backfill(regclass, name, name, text, jsonb) IS
	'encodes source into target for rows whose target is NULL or from another model version, in batches of one transaction each (COMMIT per batch: interrupt and CALL again to resume); options: batch_size (default 256), on_error (stop or skip; errors go to wdc.job_errors), key (default the single-column primary key), key_min and key_max (inclusive key range, for concurrent jobs), version (default current); progress in wdc.jobs and NOTICE lines; table owner only';
