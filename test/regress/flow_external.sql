-- a flow trained outside wdc: an ONNX velocity graph with inputs (x, t, c)
-- built by tools/make_external_flow.py.  It is the exact flow of
-- N(c, 0.25 I), so log p(z | c) = log N(z; c, 0.25 I) and the residual is
-- (z - c) / 0.5.
\getenv abs_srcdir PG_ABS_SRCDIR
\set gauss_file :abs_srcdir '/fixtures/models/gauss_flow.onnx'
SET client_min_messages = warning;
ALTER SEQUENCE wdc.model_version_seq RESTART;
SELECT wdc.load_model('gauss', pg_read_binary_file(:'gauss_file'), '{"kind": "flow"}') AS v \gset
SELECT kind, output_name FROM wdc.models WHERE name = 'gauss';

-- exact log density: -0.5 |z - c|^2 / s^2 - d log s - (d / 2) log(2 pi)
SELECT round(wdc.log_density('gauss', '[1,-0.5]', '[1, -0.5]'::jsonb)::numeric, 4) AS at_mean,
       round((-ln(2 * pi()) - 2 * ln(0.5))::numeric, 4) AS exact_at_mean;
SELECT abs(wdc.log_density('gauss', z, '[0.2, 0.3]'::jsonb)
           - (-0.5 * ((x - 0.2) ^ 2 + (y - 0.3) ^ 2) / 0.25 - 2 * ln(0.5) - ln(2 * pi()))) < 0.03 AS matches_exact
FROM (VALUES (0.0, 0.0), (1.0, -1.0), (0.5, 0.9), (-0.7, 0.3)) p(x, y),
     LATERAL (SELECT ARRAY[x, y]::float8[]::latent AS z) l
ORDER BY x, y;
SELECT abs(wdc.log_density('gauss', '[0.4,0.1]', ARRAY[0.2, 0.3]::real[])
           - wdc.log_density('gauss', '[0.4,0.1]', '[0.2, 0.3]'::jsonb)) < 1e-9 AS array_equals_jsonb;

-- residual (z - c) / s and a transfer that moves the mean
SELECT wdc.residual('gauss', '[1,0]', '[0, 0]'::jsonb) <-> '[2,0]' < 1e-3 AS residual_exact;
SELECT wdc.transfer('gauss', '[1,0]', '[0, 0]'::jsonb, '[3, 3]'::jsonb) <-> '[4,3]' < 1e-3 AS transfer_exact;
SELECT wdc.sample('gauss', '[5, 5]'::jsonb, 1) <-> '[5,5]' < 3 AS sample_near_mean;

-- what an external flow cannot do, and bad conditions
SELECT wdc.log_density('gauss', '[1,2]');
SELECT wdc.log_density('gauss', '[1,2]', '{"c": 1}'::jsonb);
SELECT wdc.log_density('gauss', '[1,2]', '[1]'::jsonb);
SELECT wdc.log_density('gauss', '[1,2]', '[1, 2]'::jsonb, '{"guidance": 0}');
SELECT wdc.outlier_pvalue('gauss', '[1,2]', '[1, 2]'::jsonb);
SELECT wdc.catalog_surprise('gauss', '[1,2]', '[1, 2]'::jsonb);
SELECT wdc.log_density('gauss', '[1,2,3]', '[1, 2]'::jsonb);

SELECT wdc.drop_model('gauss');
