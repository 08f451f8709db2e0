-- latent text input and output, typmod, casts

-- good literals
SELECT '[1,2.5,-3]'::latent;
SELECT '[1,2.5,-3]@1a2b3c4d'::latent;
SELECT '[1,2.5,-3]@1A2B3C4D'::latent;
SELECT '[1,2]@00000000'::latent;
SELECT '  [ 1 , 2 ]  '::latent;
SELECT '[-0,0,1e-45,3.4028235e38,-3.4028235e38]'::latent;
SELECT '[0.1,0.2,0.3,1.17549435e-38,16777217]'::latent;
SELECT '[1e10,1.5e-7,123456789]'::latent;
SELECT '[1,2,3]'::latent(3);

-- text out then in is bit-identical, for awkward floats too
SELECT v::text::latent::text = v::text AS roundtrip
FROM (VALUES ('[0.1,0.7,1.1754944e-38,3.4028235e38,1e-45,0.33333334]'::latent),
             ('[123456.79,-9.876543e-12]@deadbeef'::latent)) t(v);
SELECT bool_and(v::text::latent = v) AS random_roundtrip
FROM (SELECT array_agg(((random() - 0.5) * 10 ^ (random() * 60 - 30))::real)::latent AS v
      FROM generate_series(1, 2000) i GROUP BY i % 20) s;

-- syntax errors
SELECT '[1,,2]'::latent;
SELECT '[1 2]'::latent;
SELECT '1,2'::latent;
SELECT '[1,2'::latent;
SELECT '[1,2]x'::latent;
SELECT '[1,2]]'::latent;
SELECT '[,1]'::latent;
SELECT '[1,]'::latent;
SELECT '[a]'::latent;
SELECT ''::latent;
SELECT '[1]@123'::latent;
SELECT '[1]@123456789'::latent;
SELECT '[1]@1234567g'::latent;
SELECT '[1]@'::latent;

-- semantic errors
SELECT '[]'::latent;
SELECT '[ ]'::latent;
SELECT '[NaN]'::latent;
SELECT '[1,nan]'::latent;
SELECT '[Infinity]'::latent;
SELECT '[-inf]'::latent;
SELECT '[1e39]'::latent;
SELECT '[-1e39]'::latent;
SELECT '[1e-50]'::latent;

-- typmod: limits and one past them
SELECT '[1]'::latent(1);
SELECT array_fill(1, ARRAY[16000])::latent(16000) IS NOT NULL AS ok_16000;
SELECT '[1]'::latent(0);
SELECT '[1]'::latent(16001);
SELECT '[1]'::latent(1, 2);
SELECT '[1,2]'::latent(3);
SELECT latent_dims(array_fill(1, ARRAY[16000])::latent);
SELECT array_fill(1, ARRAY[16001])::latent;
SELECT ('[' || repeat('1,', 16000) || '1]')::latent;
CREATE TABLE latent_typmod_t (z latent(3));
INSERT INTO latent_typmod_t VALUES ('[1,2,3]');
INSERT INTO latent_typmod_t VALUES ('[1,2]');
INSERT INTO latent_typmod_t VALUES (ARRAY[4,5,6]);
INSERT INTO latent_typmod_t VALUES (ARRAY[4.5,5,6]::float8[]);
SELECT z FROM latent_typmod_t ORDER BY z;
\d latent_typmod_t
DROP TABLE latent_typmod_t;

-- casts from arrays
SELECT ARRAY[1,2,3]::latent;
SELECT ARRAY[1.5,2.25]::real[]::latent;
SELECT ARRAY[1.5,2.25]::float8[]::latent;
SELECT ARRAY[1.5,2.25]::numeric[]::latent;
SELECT ARRAY[0.1]::float8[]::latent;
SELECT '{}'::real[]::latent;
SELECT ARRAY[1,NULL,3]::latent;
SELECT ARRAY[[1,2],[3,4]]::latent;
SELECT ARRAY['NaN']::real[]::latent;
SELECT ARRAY['Infinity']::float8[]::latent;
SELECT ARRAY[1e39]::float8[]::latent;
SELECT ARRAY['NaN']::numeric[]::latent;
SELECT ARRAY[1e400]::numeric[]::latent;
SELECT ARRAY[1,2]::latent(3);

-- casts to arrays drop the fingerprint
SELECT '[1,2.5]@0000abcd'::latent::real[];
SELECT '[1,2.5]'::latent::float8[];
SELECT '[0.1]'::latent::float8[];
