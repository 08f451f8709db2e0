-- latent operators and functions

-- distances
SELECT '[1,2]'::latent <-> '[4,6]', l2_distance('[1,2]', '[4,6]');
SELECT l2_squared_distance('[1,2]', '[4,6]');
SELECT '[1,0]'::latent <=> '[0,1]', cosine_distance('[1,0]', '[-1,0]'), cosine_distance('[1,1]', '[2,2]');
SELECT '[1,2]'::latent <#> '[3,4]', inner_product('[1,2]', '[3,4]'), negative_inner_product('[1,2]', '[3,4]');
SELECT '[1,2]'::latent <+> '[3,5]', l1_distance('[1,-2]', '[-3,5]');
SELECT cosine_distance('[0,0]', '[1,2]');
SELECT '[1,2]'::latent <-> '[1,2]';

-- large finite inputs stay finite: the accumulators are double precision
SELECT '[3e38,-3e38]'::latent <-> '[-3e38,3e38]';
SELECT '[3e38,3e38]'::latent <#> '[3e38,3e38]';
SELECT '[3e38,-3e38]'::latent <+> '[-3e38,3e38]';
SELECT '[3e38,3e38]'::latent <=> '[3e38,3e38]';
SELECT latent_norm('[3e38,3e38,3e38]');

-- dimension mismatch names both dimensions
SELECT '[1,2]'::latent <-> '[1,2,3]';
SELECT '[1,2]'::latent <=> '[1,2,3]';
SELECT '[1,2]'::latent + '[1,2,3]';

-- fingerprints: equal or untagged mix; different ones are rejected
SELECT '[1,2]@0000000a'::latent <-> '[1,3]@0000000a';
SELECT '[1,2]@0000000a'::latent <-> '[1,3]';
SELECT '[1,2]@0000000a'::latent <-> '[1,3]@0000000b';
SELECT '[1,2]@0000000a'::latent <=> '[1,3]@0000000b';
SELECT '[1,2]@0000000a'::latent <#> '[1,3]@0000000b';
SELECT '[1,2]@0000000a'::latent <+> '[1,3]@0000000b';
SELECT '[1,2]@0000000a'::latent + '[1,3]@0000000b';
SELECT latent_untag('[1,2]@0000000a') <-> '[1,3]@0000000b';
SELECT latent_fingerprint('[1,2]@0000000a'), latent_fingerprint('[1,2]') IS NULL AS untagged;

-- single-value functions
SELECT latent_dims('[1,2,3]'), latent_norm('[3,4]'), l2_normalize('[3,4]');
SELECT l2_normalize('[0,0]'), l2_normalize('[3,4]@000000ff');

-- elementwise arithmetic keeps the fingerprint
SELECT '[1,2]'::latent + '[3,4]', '[1,2]'::latent - '[3,4]', '[1,2]'::latent * '[3,4]';
SELECT '[1,2]@0000000a'::latent + '[3,4]';
SELECT '[3e38]'::latent + '[3e38]';
SELECT '[-3e38]'::latent - '[3e38]';
SELECT '[1e20]'::latent * '[1e20]';

-- comparison: total order for btree, DISTINCT, GROUP BY and UNIQUE
SELECT '[1,2]'::latent < '[1,3]', '[1,2]'::latent < '[1,2,0]', '[2]'::latent > '[1,9]';
SELECT '[1,2]'::latent = '[1,2]', '[1,2]'::latent = '[1,2]@00000001', '[-0]'::latent = '[0]';
SELECT '[1,2]'::latent <> '[1,2]', '[1,2]'::latent <= '[1,2]', '[1,2]'::latent >= '[1,2]';
SELECT latent_cmp('[1,2]', '[1,2]@00000001'), latent_cmp('[2]', '[1]'), latent_cmp('[1]', '[1]');
SELECT latent_hash('[-0,1]') = latent_hash('[0,1]') AS signed_zero_hash;

CREATE TABLE latent_order_t (id int, z latent);
INSERT INTO latent_order_t VALUES
  (1, '[3,1]'), (2, '[1,2]'), (3, '[1,2]'), (4, '[1,2]@00000001'), (5, '[0,9]'), (6, '[1]');
SELECT id, z FROM latent_order_t ORDER BY z, id;
SELECT DISTINCT z FROM latent_order_t ORDER BY z;
SET enable_sort = off;
SELECT z, count(*) FROM latent_order_t GROUP BY z ORDER BY z;
RESET enable_sort;
SET enable_hashagg = off;
SELECT z, count(*) FROM latent_order_t GROUP BY z ORDER BY z;
RESET enable_hashagg;
CREATE UNIQUE INDEX ON latent_order_t (z);
DELETE FROM latent_order_t WHERE id = 3;
CREATE UNIQUE INDEX latent_order_u ON latent_order_t (z);
INSERT INTO latent_order_t VALUES (7, '[1,2]');
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM latent_order_t WHERE z = '[0,9]';
SELECT id FROM latent_order_t WHERE z = '[0,9]';
RESET enable_seqscan;

-- exact nearest neighbours by sequential scan
INSERT INTO latent_order_t VALUES (8, '[1.1,2]'), (9, '[5,5]');
SELECT id, round((z <-> '[1,2.1]')::numeric, 6) AS d
FROM latent_order_t WHERE latent_dims(z) = 2 ORDER BY z <-> '[1,2.1]', id LIMIT 3;
DROP TABLE latent_order_t;
