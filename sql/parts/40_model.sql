
-- ==========================================================================
-- model registry
-- ==========================================================================

-- Versions come from one sequence and are never reused, so a (name,
-- version) pair always means the same bytes.
CREATE SEQUENCE wdc.model_version_seq;

CREATE TABLE wdc.model (
	version bigint PRIMARY KEY DEFAULT nextval('wdc.model_version_seq'),
	name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
	kind text NOT NULL CHECK (kind IN ('encoder', 'decoder', 'flow', 'graph')),
	onnx bytea NOT NULL,
	sha256 bytea NOT NULL,
	fingerprint bigint NOT NULL CHECK (fingerprint BETWEEN 1 AND 4294967295),
	input_name text NOT NULL,
	input_shape jsonb,
	output_name text NOT NULL,
	output_shape jsonb NOT NULL,
	preprocessing jsonb NOT NULL DEFAULT '{}',
	description jsonb NOT NULL,
	provenance jsonb NOT NULL DEFAULT '{}',
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_name_idx ON wdc.model (name, version);
COMMENT ON TABLE wdc.model IS
	'registered ONNX models, one row per immutable version';

-- A pinned current version per name; names without a row here use their
-- newest version.  Dropping the pinned version removes the pin.
CREATE TABLE wdc.model_current (
	name text PRIMARY KEY,
	version bigint NOT NULL REFERENCES wdc.model (version) ON DELETE CASCADE
);
COMMENT ON TABLE wdc.model_current IS
	'versions pinned by wdc.set_current; other names use their newest version';

-- pg_dump keeps user models and pins
SELECT pg_catalog.pg_extension_config_dump('wdc.model', '');
SELECT pg_catalog.pg_extension_config_dump('wdc.model_current', '');
SELECT pg_catalog.pg_extension_config_dump('wdc.model_version_seq', '');

GRANT SELECT ON wdc.model, wdc.model_current TO PUBLIC;

CREATE FUNCTION wdc.model_reject_update() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
	RAISE EXCEPTION 'model versions are immutable: cannot update version % of model "%"',
		OLD.version, OLD.name
		USING ERRCODE = 'object_not_in_prerequisite_state',
		      HINT = 'Load a new version with wdc.load_model instead.';
END
$$;
COMMENT ON FUNCTION wdc.model_reject_update() IS
	'trigger function that keeps rows of wdc.model immutable';

CREATE TRIGGER model_immutable BEFORE UPDATE ON wdc.model
	FOR EACH ROW EXECUTE FUNCTION wdc.model_reject_update();

CREATE FUNCTION wdc.model_cache_invalidate() RETURNS trigger
	AS 'MODULE_PATHNAME' LANGUAGE C;
COMMENT ON FUNCTION wdc.model_cache_invalidate() IS
	'trigger function: makes every backend drop its cached models after a registry change';

CREATE TRIGGER model_cache_invalidate
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON wdc.model
	FOR EACH STATEMENT EXECUTE FUNCTION wdc.model_cache_invalidate();
CREATE TRIGGER model_current_cache_invalidate
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON wdc.model_current
	FOR EACH STATEMENT EXECUTE FUNCTION wdc.model_cache_invalidate();

CREATE FUNCTION wdc.model_describe(onnx bytea, options jsonb DEFAULT '{}')
	RETURNS jsonb
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE COST 1000;
COMMENT ON FUNCTION wdc.model_describe(bytea, jsonb) IS
	'parses and plans ONNX bytes and returns how wdc would use them (kind, input and output shapes, preprocessing); raises for models wdc cannot run';

CREATE FUNCTION wdc.load_model(name text, onnx bytea, options jsonb DEFAULT '{}')
	RETURNS bigint
	LANGUAGE plpgsql VOLATILE STRICT
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	d jsonb := wdc.model_describe(onnx, options);
	d0 jsonb;
	digest bytea := sha256(onnx);
	fp_digest bytea := digest;
	fp bigint;
	v bigint;
BEGIN
	IF length(name) NOT BETWEEN 1 AND 200 THEN
		RAISE EXCEPTION 'invalid model name "%"', name
			USING ERRCODE = 'invalid_parameter_value',
			      HINT = 'A model name has 1 to 200 characters.';
	END IF;
	-- The fingerprint tags latents with what made them.  It is the start of
	-- the file's SHA-256 when the options change nothing that the ONNX
	-- metadata sets.  Options that change the kind, output, input shape or
	-- preprocessing change the latents too, so they are hashed with the
	-- bytes.  Only such options need the file described a second time.
	IF options ?| ARRAY['kind', 'output', 'input_shape', 'preprocessing'] THEN
		BEGIN
			d0 := wdc.model_describe(onnx, '{}');
		EXCEPTION WHEN OTHERS THEN
			d0 := NULL;		-- the file alone is not usable: options are needed
		END;
	ELSE
		d0 := d;
	END IF;
	IF d0 IS NULL OR
	   (d0->'kind', d0->'output_name', d0->'input_shape', d0->'preprocessing') IS DISTINCT FROM
	   (d->'kind', d->'output_name', d->'input_shape', d->'preprocessing') THEN
		fp_digest := sha256(onnx || convert_to(jsonb_build_object(
			'kind', d->'kind', 'output', d->'output_name',
			'input_shape', d->'input_shape', 'preprocessing', d->'preprocessing')::text, 'UTF8'));
	END IF;
	fp := ('x' || encode(substr(fp_digest, 1, 4), 'hex'))::bit(32)::bigint;
	IF fp < 0 THEN
		fp := fp + 4294967296;
	END IF;
	IF fp = 0 THEN
		fp := 1;	-- 0 means "untagged" in a latent
	END IF;
	INSERT INTO wdc.model (name, kind, onnx, sha256, fingerprint, input_name,
	                       input_shape, output_name, output_shape,
	                       preprocessing, description, provenance)
	VALUES (name, d->>'kind', onnx, digest, fp, d->>'input_name',
	        d->'input_shape', d->>'output_name', d->'output_shape',
	        d->'preprocessing', d, coalesce(options->'provenance', '{}'))
	RETURNING version INTO v;
	RETURN v;
END
$$;
COMMENT ON FUNCTION wdc.load_model(text, bytea, jsonb) IS
	'registers ONNX bytes as a new version of a model and returns the version; options: kind, output, input_shape, preprocessing, provenance (override the ONNX metadata wdc.*)';

CREATE FUNCTION wdc.read_model_file(path text) RETURNS bytea
	AS 'MODULE_PATHNAME' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION wdc.read_model_file(text) IS
	'reads a server file for wdc.load_model_file; allowed only to roles with the privileges of pg_read_server_files';

CREATE FUNCTION wdc.load_model_file(name text, path text, options jsonb DEFAULT '{}')
	RETURNS bigint
	LANGUAGE sql VOLATILE STRICT
	SET search_path = pg_catalog, pg_temp
	RETURN wdc.load_model(name, wdc.read_model_file(path), options);
COMMENT ON FUNCTION wdc.load_model_file(text, text, jsonb) IS
	'wdc.load_model from an ONNX file on the server; needs the privileges of pg_read_server_files';

CREATE FUNCTION wdc.export_model(name text, version bigint DEFAULT NULL)
	RETURNS bytea
	LANGUAGE plpgsql STABLE
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	b bytea;
BEGIN
	SELECT m.onnx INTO b FROM wdc.model m
	WHERE m.name = export_model.name
	  AND m.version = coalesce(export_model.version,
	        (SELECT c.version FROM wdc.model_current c WHERE c.name = export_model.name),
	        (SELECT max(m2.version) FROM wdc.model m2 WHERE m2.name = export_model.name));
	IF b IS NULL THEN
		RAISE EXCEPTION 'model "%" has no version %', name, coalesce(version::text, '(current)')
			USING ERRCODE = 'undefined_object',
			      HINT = 'SELECT * FROM wdc.models lists the loaded models.';
	END IF;
	RETURN b;
END
$$;
COMMENT ON FUNCTION wdc.export_model(text, bigint) IS
	'the ONNX bytes of a model version (default: the current one), as loaded or as trained';

CREATE FUNCTION wdc.drop_model(name text, version bigint DEFAULT NULL)
	RETURNS integer
	LANGUAGE plpgsql VOLATILE
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n integer;
BEGIN
	DELETE FROM wdc.model m
	WHERE m.name = drop_model.name
	  AND (drop_model.version IS NULL OR m.version = drop_model.version);
	GET DIAGNOSTICS n = ROW_COUNT;
	IF n = 0 THEN
		RAISE EXCEPTION 'model "%" has no version %', name, coalesce(version::text, '(any)')
			USING ERRCODE = 'undefined_object',
			      HINT = 'SELECT * FROM wdc.models lists the loaded models.';
	END IF;
	RETURN n;
END
$$;
COMMENT ON FUNCTION wdc.drop_model(text, bigint) IS
	'deletes one version of a model, or all versions when version is NULL; returns the number deleted';

CREATE FUNCTION wdc.set_current(name text, version bigint)
	RETURNS void
	LANGUAGE plpgsql VOLATILE STRICT
	SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM wdc.model m WHERE m.name = set_current.name
	               AND m.version = set_current.version) THEN
		RAISE EXCEPTION 'model "%" has no version %', name, version
			USING ERRCODE = 'undefined_object',
			      HINT = 'SELECT * FROM wdc.models lists the loaded models.';
	END IF;
	INSERT INTO wdc.model_current AS c (name, version)
	VALUES (set_current.name, set_current.version)
	ON CONFLICT ON CONSTRAINT model_current_pkey DO UPDATE SET version = EXCLUDED.version;
END
$$;
COMMENT ON FUNCTION wdc.set_current(text, bigint) IS
	'pins the version that calls without a version use; by default the newest version is current';

CREATE VIEW wdc.models AS
SELECT m.name, m.version, m.kind,
       m.version = coalesce(c.version, max(m.version) OVER (PARTITION BY m.name)) AS current,
       lpad(to_hex(m.fingerprint), 8, '0') AS fingerprint,
       m.input_shape, m.output_name, m.output_shape, m.preprocessing,
       octet_length(m.onnx) AS bytes, encode(m.sha256, 'hex') AS sha256,
       m.created_at, m.provenance
FROM wdc.model m LEFT JOIN wdc.model_current c ON c.name = m.name;
COMMENT ON VIEW wdc.models IS
	'loaded model versions with their kind, shapes, fingerprint and which version is current';
GRANT SELECT ON wdc.models TO PUBLIC;

-- ==========================================================================
-- running models
-- ==========================================================================

-- COST: a small convolutional encoder runs in about 0.3 to 1 ms per image,
-- a few thousand times a simple operator.

CREATE FUNCTION wdc.encode(model text, image real[]) RETURNS latent
	AS 'MODULE_PATHNAME', 'wdc_encode_image' LANGUAGE C STABLE STRICT PARALLEL SAFE COST 5000;
CREATE FUNCTION wdc.encode(model text, version bigint, image real[]) RETURNS latent
	AS 'MODULE_PATHNAME', 'wdc_encode_image' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE COST 5000;
CREATE FUNCTION wdc.encode(model text, fits bytea) RETURNS latent
	AS 'MODULE_PATHNAME', 'wdc_encode_fits' LANGUAGE C STABLE STRICT PARALLEL SAFE COST 6000;
CREATE FUNCTION wdc.encode(model text, version bigint, fits bytea) RETURNS latent
	AS 'MODULE_PATHNAME', 'wdc_encode_fits' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE COST 6000;
COMMENT ON FUNCTION wdc.encode(text, real[]) IS
	'latent of an image real[height][width] (or [channels][height][width]) under the current version of an encoder, after its preprocessing; carries the version''s fingerprint';
COMMENT ON FUNCTION wdc.encode(text, bigint, real[]) IS
	'latent of an image under a given encoder version (immutable: versions never change)';
COMMENT ON FUNCTION wdc.encode(text, bytea) IS
	'latent of the first image HDU of a FITS file (bytea) under the current encoder version';
COMMENT ON FUNCTION wdc.encode(text, bigint, bytea) IS
	'latent of the first image HDU of a FITS file (bytea) under a given encoder version';

CREATE FUNCTION wdc.decode(model text, z latent) RETURNS real[]
	AS 'MODULE_PATHNAME', 'wdc_decode' LANGUAGE C STABLE STRICT PARALLEL SAFE COST 5000;
CREATE FUNCTION wdc.decode(model text, version bigint, z latent) RETURNS real[]
	AS 'MODULE_PATHNAME', 'wdc_decode' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE COST 5000;
COMMENT ON FUNCTION wdc.decode(text, latent) IS
	'image real[] decoded from a latent by the current version of a decoder';
COMMENT ON FUNCTION wdc.decode(text, bigint, latent) IS
	'image real[] decoded from a latent by a given decoder version';

CREATE FUNCTION wdc.infer(model text, input real[]) RETURNS real[]
	AS 'MODULE_PATHNAME', 'wdc_infer' LANGUAGE C STABLE STRICT PARALLEL SAFE COST 5000;
CREATE FUNCTION wdc.infer(model text, version bigint, input real[]) RETURNS real[]
	AS 'MODULE_PATHNAME', 'wdc_infer' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE COST 5000;
COMMENT ON FUNCTION wdc.infer(text, real[]) IS
	'raw output of the current version of any non-flow model for one sample, no preprocessing';
COMMENT ON FUNCTION wdc.infer(text, bigint, real[]) IS
	'raw output of a given model version for one sample, no preprocessing';
