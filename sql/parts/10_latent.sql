
-- ==========================================================================
-- latent type
-- ==========================================================================

CREATE TYPE latent;

CREATE FUNCTION latent_in(cstring, oid, integer) RETURNS latent
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION latent_out(latent) RETURNS cstring
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION latent_typmod_in(cstring[]) RETURNS integer
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION latent_typmod_out(integer) RETURNS cstring
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION latent_recv(internal, oid, integer) RETURNS latent
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION latent_send(latent) RETURNS bytea
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE latent (
	INPUT = latent_in,
	OUTPUT = latent_out,
	TYPMOD_IN = latent_typmod_in,
	TYPMOD_OUT = latent_typmod_out,
	RECEIVE = latent_recv,
	SEND = latent_send,
	ALIGNMENT = int4,
	STORAGE = extended
);

COMMENT ON FUNCTION latent_in(cstring, oid, integer) IS 'text input of latent';
COMMENT ON FUNCTION latent_out(latent) IS 'text output of latent (shortest round-trip decimals)';
COMMENT ON FUNCTION latent_typmod_in(cstring[]) IS 'parses the dimension of latent(n)';
COMMENT ON FUNCTION latent_typmod_out(integer) IS 'prints the dimension of latent(n)';
COMMENT ON FUNCTION latent_recv(internal, oid, integer) IS 'binary input of latent';
COMMENT ON FUNCTION latent_send(latent) IS 'binary output of latent';

COMMENT ON TYPE latent IS
	'float4 vector of 1 to 16000 finite elements with an optional model fingerprint; text form [1,2.5,-3] or [1,2.5,-3]@1a2b3c4d';

-- ==========================================================================
-- functions
-- ==========================================================================

CREATE FUNCTION l2_distance(latent, latent) RETURNS float8
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION l2_distance(latent, latent) IS
	'Euclidean distance, accumulated in double precision';

CREATE FUNCTION l2_squared_distance(latent, latent) RETURNS float8
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION l2_squared_distance(latent, latent) IS
	'squared Euclidean distance, accumulated in double precision';

CREATE FUNCTION inner_product(latent, latent) RETURNS float8
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION inner_product(latent, latent) IS
	'inner (dot) product, accumulated in double precision';

CREATE FUNCTION negative_inner_product(latent, latent) RETURNS float8
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION negative_inner_product(latent, latent) IS
	'negated inner product, so that smaller means more similar (operator <#>)';

CREATE FUNCTION cosine_distance(latent, latent) RETURNS float8
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION cosine_distance(latent, latent) IS
	'1 - cosine similarity, in [0, 2]; NaN when either latent is the zero vector';

CREATE FUNCTION l1_distance(latent, latent) RETURNS float8
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION l1_distance(latent, latent) IS
	'taxicab (L1) distance, accumulated in double precision';

CREATE FUNCTION latent_dims(latent) RETURNS integer
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION latent_dims(latent) IS 'number of elements';

CREATE FUNCTION latent_norm(latent) RETURNS float8
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION latent_norm(latent) IS 'Euclidean norm';

CREATE FUNCTION l2_normalize(latent) RETURNS latent
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION l2_normalize(latent) IS
	'latent scaled to unit Euclidean norm (the zero vector is returned unchanged); keeps the fingerprint';

CREATE FUNCTION latent_untag(latent) RETURNS latent
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION latent_untag(latent) IS
	'the same elements without a model fingerprint';

CREATE FUNCTION latent_fingerprint(latent) RETURNS text
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION latent_fingerprint(latent) IS
	'model fingerprint as 8 hexadecimal digits, NULL when untagged';

CREATE FUNCTION latent_add(latent, latent) RETURNS latent
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION latent_add(latent, latent) IS
	'elementwise sum; raises an error if an element overflows float4';

CREATE FUNCTION latent_sub(latent, latent) RETURNS latent
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION latent_sub(latent, latent) IS
	'elementwise difference; raises an error if an element overflows float4';

CREATE FUNCTION latent_mul(latent, latent) RETURNS latent
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION latent_mul(latent, latent) IS
	'elementwise product; raises an error if an element overflows float4';

-- ==========================================================================
-- casts
-- ==========================================================================

CREATE FUNCTION latent(latent, integer, boolean) RETURNS latent
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION latent(latent, integer, boolean) IS
	'checks a latent against the dimension of latent(n); never truncates';

CREATE FUNCTION array_to_latent(real[], integer, boolean) RETURNS latent
	AS 'MODULE_PATHNAME', 'array_to_latent' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION array_to_latent(double precision[], integer, boolean) RETURNS latent
	AS 'MODULE_PATHNAME', 'array_to_latent' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION array_to_latent(integer[], integer, boolean) RETURNS latent
	AS 'MODULE_PATHNAME', 'array_to_latent' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION array_to_latent(numeric[], integer, boolean) RETURNS latent
	AS 'MODULE_PATHNAME', 'array_to_latent' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION array_to_latent(real[], integer, boolean) IS
	'cast real[] to latent: one-dimensional, non-empty, no NULL, finite elements';
COMMENT ON FUNCTION array_to_latent(double precision[], integer, boolean) IS
	'cast double precision[] to latent: one-dimensional, non-empty, no NULL, finite in float4';
COMMENT ON FUNCTION array_to_latent(integer[], integer, boolean) IS
	'cast integer[] to latent: one-dimensional, non-empty, no NULL';
COMMENT ON FUNCTION array_to_latent(numeric[], integer, boolean) IS
	'cast numeric[] to latent: one-dimensional, non-empty, no NULL, finite in float4';

CREATE FUNCTION latent_to_float4(latent, integer, boolean) RETURNS real[]
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION latent_to_float4(latent, integer, boolean) IS
	'cast latent to real[] (the fingerprint is dropped)';

CREATE FUNCTION latent_to_float8(latent, integer, boolean) RETURNS double precision[]
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION latent_to_float8(latent, integer, boolean) IS
	'cast latent to double precision[] (the fingerprint is dropped)';

CREATE CAST (latent AS latent)
	WITH FUNCTION latent(latent, integer, boolean) AS IMPLICIT;
CREATE CAST (real[] AS latent)
	WITH FUNCTION array_to_latent(real[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (double precision[] AS latent)
	WITH FUNCTION array_to_latent(double precision[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (integer[] AS latent)
	WITH FUNCTION array_to_latent(integer[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (numeric[] AS latent)
	WITH FUNCTION array_to_latent(numeric[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (latent AS real[])
	WITH FUNCTION latent_to_float4(latent, integer, boolean) AS ASSIGNMENT;
CREATE CAST (latent AS double precision[])
	WITH FUNCTION latent_to_float8(latent, integer, boolean) AS ASSIGNMENT;

-- ==========================================================================
-- operators
-- ==========================================================================

CREATE OPERATOR <-> (
	LEFTARG = latent, RIGHTARG = latent, PROCEDURE = l2_distance,
	COMMUTATOR = '<->'
);
COMMENT ON OPERATOR <->(latent, latent) IS 'Euclidean (L2) distance';

CREATE OPERATOR <=> (
	LEFTARG = latent, RIGHTARG = latent, PROCEDURE = cosine_distance,
	COMMUTATOR = '<=>'
);
COMMENT ON OPERATOR <=>(latent, latent) IS 'cosine distance';

CREATE OPERATOR <#> (
	LEFTARG = latent, RIGHTARG = latent, PROCEDURE = negative_inner_product,
	COMMUTATOR = '<#>'
);
COMMENT ON OPERATOR <#>(latent, latent) IS 'negative inner product';

CREATE OPERATOR <+> (
	LEFTARG = latent, RIGHTARG = latent, PROCEDURE = l1_distance,
	COMMUTATOR = '<+>'
);
COMMENT ON OPERATOR <+>(latent, latent) IS 'taxicab (L1) distance';

CREATE OPERATOR + (
	LEFTARG = latent, RIGHTARG = latent, PROCEDURE = latent_add,
	COMMUTATOR = +
);
COMMENT ON OPERATOR +(latent, latent) IS 'elementwise sum';

CREATE OPERATOR - (
	LEFTARG = latent, RIGHTARG = latent, PROCEDURE = latent_sub
);
COMMENT ON OPERATOR -(latent, latent) IS 'elementwise difference';

CREATE OPERATOR * (
	LEFTARG = latent, RIGHTARG = latent, PROCEDURE = latent_mul,
	COMMUTATOR = *
);
COMMENT ON OPERATOR *(latent, latent) IS 'elementwise product';

-- comparison: a total order (elements, then dimension, then fingerprint)
-- for btree indexes, ORDER BY z, DISTINCT, GROUP BY and UNIQUE

CREATE FUNCTION latent_lt(latent, latent) RETURNS bool
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION latent_le(latent, latent) RETURNS bool
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION latent_eq(latent, latent) RETURNS bool
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION latent_ne(latent, latent) RETURNS bool
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION latent_ge(latent, latent) RETURNS bool
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION latent_gt(latent, latent) RETURNS bool
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION latent_cmp(latent, latent) RETURNS integer
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION latent_hash(latent) RETURNS integer
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION latent_lt(latent, latent) IS 'implementation of < (btree order)';
COMMENT ON FUNCTION latent_le(latent, latent) IS 'implementation of <= (btree order)';
COMMENT ON FUNCTION latent_eq(latent, latent) IS 'implementation of = (same elements, dimension and fingerprint; -0 equals 0)';
COMMENT ON FUNCTION latent_ne(latent, latent) IS 'implementation of <>';
COMMENT ON FUNCTION latent_ge(latent, latent) IS 'implementation of >= (btree order)';
COMMENT ON FUNCTION latent_gt(latent, latent) IS 'implementation of > (btree order)';
COMMENT ON FUNCTION latent_cmp(latent, latent) IS 'btree comparison: -1, 0 or 1';
COMMENT ON FUNCTION latent_hash(latent) IS 'hash consistent with =';

CREATE OPERATOR < (
	LEFTARG = latent, RIGHTARG = latent, PROCEDURE = latent_lt,
	COMMUTATOR = >, NEGATOR = >=,
	RESTRICT = scalarltsel, JOIN = scalarltjoinsel
);
CREATE OPERATOR <= (
	LEFTARG = latent, RIGHTARG = latent, PROCEDURE = latent_le,
	COMMUTATOR = >=, NEGATOR = >,
	RESTRICT = scalarlesel, JOIN = scalarlejoinsel
);
CREATE OPERATOR = (
	LEFTARG = latent, RIGHTARG = latent, PROCEDURE = latent_eq,
	COMMUTATOR = =, NEGATOR = <>,
	RESTRICT = eqsel, JOIN = eqjoinsel, HASHES, MERGES
);
CREATE OPERATOR <> (
	LEFTARG = latent, RIGHTARG = latent, PROCEDURE = latent_ne,
	COMMUTATOR = <>, NEGATOR = =,
	RESTRICT = neqsel, JOIN = neqjoinsel
);
CREATE OPERATOR >= (
	LEFTARG = latent, RIGHTARG = latent, PROCEDURE = latent_ge,
	COMMUTATOR = <=, NEGATOR = <,
	RESTRICT = scalargesel, JOIN = scalargejoinsel
);
CREATE OPERATOR > (
	LEFTARG = latent, RIGHTARG = latent, PROCEDURE = latent_gt,
	COMMUTATOR = <, NEGATOR = <=,
	RESTRICT = scalargtsel, JOIN = scalargtjoinsel
);

CREATE OPERATOR CLASS latent_ops
	DEFAULT FOR TYPE latent USING btree AS
	OPERATOR 1 <,
	OPERATOR 2 <=,
	OPERATOR 3 =,
	OPERATOR 4 >=,
	OPERATOR 5 >,
	FUNCTION 1 latent_cmp(latent, latent);

CREATE OPERATOR CLASS latent_hash_ops
	DEFAULT FOR TYPE latent USING hash AS
	OPERATOR 1 =,
	FUNCTION 1 latent_hash(latent);

-- ==========================================================================
-- aggregates
-- ==========================================================================

-- The transition state is float8[] {count, fingerprint, sums...}; being a
-- plain array type, it needs no serialisation for parallel aggregation.
CREATE FUNCTION latent_accum(double precision[], latent) RETURNS double precision[]
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION latent_combine(double precision[], double precision[]) RETURNS double precision[]
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION latent_avg(double precision[]) RETURNS latent
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION latent_sum(double precision[]) RETURNS latent
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION latent_accum(double precision[], latent) IS 'transition function of avg(latent) and sum(latent)';
COMMENT ON FUNCTION latent_combine(double precision[], double precision[]) IS 'combine function of avg(latent) and sum(latent)';
COMMENT ON FUNCTION latent_avg(double precision[]) IS 'final function of avg(latent)';
COMMENT ON FUNCTION latent_sum(double precision[]) IS 'final function of sum(latent)';

CREATE AGGREGATE avg(latent) (
	SFUNC = latent_accum,
	STYPE = double precision[],
	FINALFUNC = latent_avg,
	COMBINEFUNC = latent_combine,
	INITCOND = '{0,0}',
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE avg(latent) IS 'elementwise mean, summed in double precision';

CREATE AGGREGATE sum(latent) (
	SFUNC = latent_accum,
	STYPE = double precision[],
	FINALFUNC = latent_sum,
	COMBINEFUNC = latent_combine,
	INITCOND = '{0,0}',
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sum(latent) IS 'elementwise sum, accumulated in double precision';
