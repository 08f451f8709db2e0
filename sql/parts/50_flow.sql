
-- ==========================================================================
-- flow matching: training, density, residuals
-- ==========================================================================

CREATE FUNCTION wdc.flow_fit(query text, options jsonb DEFAULT '{}',
                             OUT onnx bytea, OUT provenance jsonb)
	AS 'MODULE_PATHNAME', 'flow_fit' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION wdc.flow_fit(text, jsonb) IS
	'trains a flow on a read-only query (latent first, then condition columns) and returns it as ONNX with a provenance record; wdc.train_flow stores the result';

-- No pinned search_path here: the training query is the caller's own SQL
-- and must see the caller's tables as written.  Every name this function
-- uses itself is schema-qualified, and it runs with the caller's rights.
CREATE FUNCTION wdc.train_flow(name text, query text, options jsonb DEFAULT '{}')
	RETURNS bigint
	LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
	fit record;
BEGIN
	IF name IS NULL OR query IS NULL THEN
		RAISE EXCEPTION 'flow name and training query must not be NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- check the right to store the result before spending the training time
	IF NOT pg_catalog.has_table_privilege('wdc.model', 'INSERT') THEN
		RAISE EXCEPTION 'permission denied to store a flow in wdc.model'
			USING ERRCODE = 'insufficient_privilege',
			      HINT = 'Ask the owner of the wdc extension to GRANT INSERT ON wdc.model and USAGE ON SEQUENCE wdc.model_version_seq.';
	END IF;
	SELECT f.onnx, f.provenance INTO fit
	FROM wdc.flow_fit(query, COALESCE(options, '{}'::pg_catalog.jsonb)) f;
	RETURN wdc.load_model(name, fit.onnx,
	                      pg_catalog.jsonb_build_object('kind', 'flow', 'provenance', fit.provenance));
END
$$;
COMMENT ON FUNCTION wdc.train_flow(text, text, jsonb) IS
	'trains a flow-matching density on the query''s latents (column 1) conditioned on its other columns and stores it as a new model version (kind flow); options (defaults): hidden 256 (8-4096), layers 3 (1-8), embed_dim 0 = min(classes,16), learning_rate 3e-4, weight_decay 0.01, beta1 0.9, beta2 0.999, batch_size 256, max_epochs 250, patience 100, min_delta 1e-5, val_fraction 0.2 (0-0.9), p_null 0.1, grad_clip 1, train_noise 0.05 (0-1, in standardised units), init_std 0.02, film_gamma_bias 1, calibration_rows 1000, seed, class_column';

-- log density: natural log, in the latent space of the encoder (the
-- standardisation's log-determinant included).  Options: method (euler,
-- midpoint, rk4; default midpoint), steps (default 64), quadrature (stage,
-- simpson; default simpson), div_intervals (default 32), guidance (0 or 1).
CREATE FUNCTION wdc.log_density(flow text, z latent) RETURNS float8
	AS 'MODULE_PATHNAME', 'flow_log_density_jsonb' LANGUAGE C STABLE PARALLEL SAFE COST 100000;
CREATE FUNCTION wdc.log_density(flow text, z latent, cond jsonb, options jsonb DEFAULT '{}')
	RETURNS float8
	AS 'MODULE_PATHNAME', 'flow_log_density_jsonb' LANGUAGE C STABLE PARALLEL SAFE COST 100000;
CREATE FUNCTION wdc.log_density(flow text, version bigint, z latent, cond jsonb DEFAULT NULL,
                                options jsonb DEFAULT '{}')
	RETURNS float8
	AS 'MODULE_PATHNAME', 'flow_log_density_jsonb' LANGUAGE C IMMUTABLE PARALLEL SAFE COST 100000;
CREATE FUNCTION wdc.log_density(flow text, z latent, cond real[], options jsonb DEFAULT '{}')
	RETURNS float8
	AS 'MODULE_PATHNAME', 'flow_log_density_array' LANGUAGE C STABLE PARALLEL SAFE COST 100000;
COMMENT ON FUNCTION wdc.log_density(text, latent) IS
	'unconditional log density (natural log, latent space) of z under the current version of a flow';
COMMENT ON FUNCTION wdc.log_density(text, latent, jsonb, jsonb) IS
	'log density of z given the condition (jsonb keyed by the training columns; NULL = unconditional) under the current flow';
COMMENT ON FUNCTION wdc.log_density(text, bigint, latent, jsonb, jsonb) IS
	'log density of z under a given flow version (immutable)';
COMMENT ON FUNCTION wdc.log_density(text, latent, real[], jsonb) IS
	'log density of z given the numeric condition columns in training order (flows without a class column)';

CREATE FUNCTION wdc.outlier_pvalue(flow text, z latent) RETURNS float8
	AS 'MODULE_PATHNAME', 'flow_outlier_pvalue' LANGUAGE C STABLE PARALLEL SAFE COST 100000;
CREATE FUNCTION wdc.outlier_pvalue(flow text, z latent, cond jsonb) RETURNS float8
	AS 'MODULE_PATHNAME', 'flow_outlier_pvalue' LANGUAGE C STABLE PARALLEL SAFE COST 100000;
COMMENT ON FUNCTION wdc.outlier_pvalue(text, latent) IS
	'share of the flow''s calibration rows (held-out training rows) with a lower unconditional log density than z; small = outlier';
COMMENT ON FUNCTION wdc.outlier_pvalue(text, latent, jsonb) IS
	'share of calibration rows with a lower conditional log density than z given cond';

CREATE FUNCTION wdc.catalog_surprise(flow text, z latent, cond jsonb) RETURNS float8
	AS 'MODULE_PATHNAME', 'flow_catalog_surprise' LANGUAGE C STABLE PARALLEL SAFE COST 200000;
COMMENT ON FUNCTION wdc.catalog_surprise(text, latent, jsonb) IS
	'log p(z | cond) - log p(z) = log p(cond | z) - log p(cond): positive when the catalogued values fit the object better than they fit a typical one';

CREATE FUNCTION wdc.residual(flow text, z latent, cond jsonb DEFAULT NULL, options jsonb DEFAULT '{}')
	RETURNS latent
	AS 'MODULE_PATHNAME', 'flow_residual_sql' LANGUAGE C STABLE PARALLEL SAFE COST 20000;
CREATE FUNCTION wdc.residual(flow text, version bigint, z latent, cond jsonb, options jsonb DEFAULT '{}')
	RETURNS latent
	AS 'MODULE_PATHNAME', 'flow_residual_sql' LANGUAGE C IMMUTABLE PARALLEL SAFE COST 20000;
COMMENT ON FUNCTION wdc.residual(text, latent, jsonb, jsonb) IS
	'base-space point of z integrated from t = 1 to 0 under the condition: the representation without what the catalog records; carries the flow''s fingerprint';
COMMENT ON FUNCTION wdc.residual(text, bigint, latent, jsonb, jsonb) IS
	'residual of z under a given flow version (immutable)';

CREATE FUNCTION wdc.transfer(flow text, z latent, cond_from jsonb, cond_to jsonb, options jsonb DEFAULT '{}')
	RETURNS latent
	AS 'MODULE_PATHNAME', 'flow_transfer_sql' LANGUAGE C STABLE PARALLEL SAFE COST 40000;
COMMENT ON FUNCTION wdc.transfer(text, latent, jsonb, jsonb, jsonb) IS
	'counterfactual: z mapped to the base space under cond_from and back under cond_to (option guidance, default 1)';

CREATE FUNCTION wdc.sample(flow text, cond jsonb, seed bigint, options jsonb DEFAULT '{}')
	RETURNS latent
	AS 'MODULE_PATHNAME', 'flow_sample_sql' LANGUAGE C STABLE PARALLEL SAFE COST 20000;
COMMENT ON FUNCTION wdc.sample(text, jsonb, bigint, jsonb) IS
	'a latent generated from the flow under cond (NULL = unconditional) from the given seed; same seed, same latent';
