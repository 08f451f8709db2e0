
-- ---------------------------------------------------------------------------
-- wdc_hnsw: approximate nearest-neighbour index for latent
-- ---------------------------------------------------------------------------

-- access method

CREATE FUNCTION wdc_hnsw_handler(internal) RETURNS index_am_handler
	AS 'MODULE_PATHNAME' LANGUAGE C;
COMMENT ON FUNCTION wdc_hnsw_handler(internal) IS
	'index access method handler of wdc_hnsw';

CREATE ACCESS METHOD wdc_hnsw TYPE INDEX HANDLER wdc_hnsw_handler;
COMMENT ON ACCESS METHOD wdc_hnsw IS
	'HNSW graph index for nearest-neighbour search over latent; options m (2..100, default 16) and ef_construction (4..1000, default 64)';

-- operator classes: one per distance, ORDER BY only

CREATE OPERATOR CLASS latent_l2_ops
	FOR TYPE latent USING wdc_hnsw AS
	OPERATOR 1 <-> (latent, latent) FOR ORDER BY float_ops,
	FUNCTION 1 l2_distance(latent, latent);
COMMENT ON OPERATOR CLASS latent_l2_ops USING wdc_hnsw IS
	'wdc_hnsw index for ORDER BY latent <-> latent (Euclidean distance)';

CREATE OPERATOR CLASS latent_cosine_ops
	FOR TYPE latent USING wdc_hnsw AS
	OPERATOR 1 <=> (latent, latent) FOR ORDER BY float_ops,
	FUNCTION 1 cosine_distance(latent, latent);
COMMENT ON OPERATOR CLASS latent_cosine_ops USING wdc_hnsw IS
	'wdc_hnsw index for ORDER BY latent <=> latent (cosine distance); zero vectors are not indexed';

CREATE OPERATOR CLASS latent_ip_ops
	FOR TYPE latent USING wdc_hnsw AS
	OPERATOR 1 <#> (latent, latent) FOR ORDER BY float_ops,
	FUNCTION 1 negative_inner_product(latent, latent);
COMMENT ON OPERATOR CLASS latent_ip_ops USING wdc_hnsw IS
	'wdc_hnsw index for ORDER BY latent <#> latent (negative inner product)';

CREATE OPERATOR CLASS latent_l1_ops
	FOR TYPE latent USING wdc_hnsw AS
	OPERATOR 1 <+> (latent, latent) FOR ORDER BY float_ops,
	FUNCTION 1 l1_distance(latent, latent);
COMMENT ON OPERATOR CLASS latent_l1_ops USING wdc_hnsw IS
	'wdc_hnsw index for ORDER BY latent <+> latent (taxicab distance)';

-- verification

CREATE FUNCTION wdc.hnsw_verify(index regclass,
	OUT blkno bigint, OUT offnum integer, OUT problem text)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'hnsw_verify' LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION wdc.hnsw_verify(regclass) IS
	'checks the structure of a wdc_hnsw index: one row per problem (block, offset, message), none when healthy';
REVOKE ALL ON FUNCTION wdc.hnsw_verify(regclass) FROM PUBLIC;
