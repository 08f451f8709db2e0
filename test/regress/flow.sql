-- flow matching from SQL: training, density, p-values, residuals, transfer,
-- sampling and their errors, on a seeded two-class 2-D mixture.  Values
-- are compared through inequalities and rounding that hold across BLAS
-- builds; the exact numerics are tested by the core's C tests.
SET client_min_messages = warning;
-- version numbers in messages start from 1 (earlier files drop their models)
ALTER SEQUENCE wdc.model_version_seq RESTART;
SELECT setseed(0.25);
CREATE TABLE flow_src (id int, z latent(2), cls text, flux float8);
INSERT INTO flow_src
SELECT i,
       ARRAY[(CASE WHEN i % 2 = 0 THEN -2 ELSE 2 END) + 0.3 * sqrt(-2 * ln(random())) * cos(2 * pi() * random()),
             0.3 * sqrt(-2 * ln(random())) * cos(2 * pi() * random())]::real[],
       CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END,
       10 + (i % 5)
FROM generate_series(1, 800) i;

-- training: small network, few epochs, fixed seed
SELECT wdc.train_flow('mix', 'SELECT z, cls, flux FROM flow_src ORDER BY id',
       '{"hidden": 32, "max_epochs": 40, "patience": 40, "seed": 7, "batch_size": 64}') AS v \gset
SELECT name, kind, output_shape, provenance->'rows' AS rows, provenance->'dimensions' AS d,
       provenance->'seed' AS seed, length(provenance->>'data_sha256') AS sha_len,
       provenance->>'query' AS query
FROM wdc.models WHERE name = 'mix';
-- the same query and seed give bit-identical weights
SELECT wdc.train_flow('mix_again', 'SELECT z, cls, flux FROM flow_src ORDER BY id',
       '{"hidden": 32, "max_epochs": 40, "patience": 40, "seed": 7, "batch_size": 64}') AS v2 \gset
-- (the ONNX bytes also record the training time, so compare outputs)
SELECT bool_and(wdc.log_density('mix', z) = wdc.log_density('mix_again', z)) AS deterministic
FROM (VALUES ('[-2,0]'::latent), ('[2,0.5]'), ('[0,3]')) t(z);

-- density: a point at a class centre is far more likely than one between
SELECT wdc.log_density('mix', '[-2,0]') > wdc.log_density('mix', '[0,3]') + 5 AS centre_beats_far;
SELECT wdc.log_density('mix', '[-2,0]', '{"cls": "a", "flux": 12}'::jsonb)
     > wdc.log_density('mix', '[-2,0]', '{"cls": "b", "flux": 12}'::jsonb) AS right_class_more_likely;
SELECT wdc.log_density('mix', '[-2,0]', NULL::jsonb) = wdc.log_density('mix', '[-2,0]') AS null_cond_is_unconditional;
SELECT wdc.log_density('mix', :v, '[-2,0]') = wdc.log_density('mix', '[-2,0]') AS versioned_equals_current;
SELECT abs(wdc.log_density('mix', '[-2,0]', NULL::jsonb, '{"steps": 99, "method": "midpoint", "quadrature": "stage"}')
           - wdc.log_density('mix', '[-2,0]')) < 0.05 AS solvers_agree;
SELECT abs(wdc.log_density('mix', '[-2,0]', NULL::jsonb, '{"method": "rk4", "steps": 32}')
           - wdc.log_density('mix', '[-2,0]')) < 0.05 AS rk4_agrees;

-- p-values against the held-out calibration rows
SELECT wdc.outlier_pvalue('mix', '[0,5]') < 0.01 AS far_point_is_outlier;
SELECT wdc.outlier_pvalue('mix', '[2,0]') > 0.1 AS centre_is_typical;
SELECT wdc.outlier_pvalue('mix', '[2,0]', '{"cls": "a", "flux": 11}')
     < wdc.outlier_pvalue('mix', '[2,0]', '{"cls": "b", "flux": 11}') AS wrong_class_lower_pvalue;

-- catalog surprise: positive for the right class, negative for the wrong one
SELECT wdc.catalog_surprise('mix', '[2,0]', '{"cls": "b", "flux": 11}') > 0 AS right_label_positive,
       wdc.catalog_surprise('mix', '[2,0]', '{"cls": "a", "flux": 11}') < 0 AS wrong_label_negative;

-- residuals remove the class: both class centres map near the base origin
SELECT latent_dims(wdc.residual('mix', '[-2,0]', '{"cls": "a", "flux": 12}')) AS dims,
       latent_fingerprint(wdc.residual('mix', '[-2,0]', '{"cls": "a", "flux": 12}'))
         = (SELECT fingerprint FROM wdc.models WHERE name = 'mix') AS tagged_with_flow;
SELECT latent_norm(wdc.residual('mix', '[-2,0]', '{"cls": "a", "flux": 12}')) < 1.5 AS a_centre_near_origin,
       latent_norm(wdc.residual('mix', '[2,0]', '{"cls": "b", "flux": 12}')) < 1.5 AS b_centre_near_origin;
-- without the condition the two centres stay apart in base space
SELECT wdc.residual('mix', '[-2,0]') <-> wdc.residual('mix', '[2,0]')
     > wdc.residual('mix', '[-2,0]', '{"cls": "a", "flux": 12}') <-> wdc.residual('mix', '[2,0]', '{"cls": "b", "flux": 12}')
     AS condition_removes_class;

-- transfer moves an "a" object to the "b" cluster; sampling is seeded
SELECT (wdc.transfer('mix', '[-2,0.1]', '{"cls": "a", "flux": 12}', '{"cls": "b", "flux": 12}')::real[])[1] > 1 AS moved_to_b;
SELECT wdc.sample('mix', '{"cls": "b", "flux": 12}', 42) = wdc.sample('mix', '{"cls": "b", "flux": 12}', 42) AS same_seed_same_sample,
       wdc.sample('mix', '{"cls": "b", "flux": 12}', 42) <> wdc.sample('mix', '{"cls": "b", "flux": 12}', 43) AS other_seed_other_sample;
SELECT avg((wdc.sample('mix', '{"cls": "b", "flux": 12}', s)::real[])[1]) > 1 AS samples_in_b
FROM generate_series(1, 20) s;

-- an untyped condition literal matches both the jsonb and the real[] form
SELECT wdc.log_density('mix', '[1,2]', '{"cls": "a", "flux": 1}');
-- errors
SELECT wdc.log_density('mix', '[1,2,3]');
SELECT wdc.log_density('mix', '[1,2]', '{"cls": "c", "flux": 1}'::jsonb);
SELECT wdc.log_density('mix', '[1,2]', '{"cls": "a"}'::jsonb);
SELECT wdc.log_density('mix', '[1,2]', '{"cls": "a", "flux": 1, "colour": 3}'::jsonb);
SELECT wdc.log_density('mix', '[1,2]', '{"cls": "a", "flux": "bright"}'::jsonb);
SELECT wdc.log_density('mix', '[1,2]', '{"cls": "a", "flux": "NaN"}'::jsonb);
SELECT wdc.log_density('mix', '[1,2]', '{"cls": "a", "flux": 1}'::jsonb, '{"guidance": 0.5}');
SELECT wdc.log_density('mix', '[1,2]', NULL::jsonb, '{"method": "leapfrog"}');
SELECT wdc.log_density('mix', '[1,2]', NULL::jsonb, '{"steps": 0}');
SELECT wdc.log_density('mix', '[1,2]', NULL::jsonb, '{"tolerance": 1}');
SELECT wdc.log_density('mix', '[1,2]', ARRAY[1]::real[]);
SELECT wdc.log_density('nope', '[1,2]');
SELECT wdc.train_flow('bad', 'SELECT cls FROM flow_src');
SELECT wdc.train_flow('bad', 'SELECT z, cls, cls AS cls2 FROM flow_src');
SELECT wdc.train_flow('bad', 'SELECT z FROM flow_src WHERE false');
SELECT wdc.train_flow('bad', 'SELECT z, flux, flux * 2 AS flux FROM flow_src');
SELECT wdc.train_flow('bad', 'DELETE FROM flow_src');
SELECT wdc.train_flow('bad', 'SELECT z FROM flow_src', '{"hidden": 4}');
SELECT wdc.train_flow('bad', 'SELECT z FROM flow_src', '{"learning_rate": "fast"}');
SELECT wdc.train_flow('bad', 'SELECT z FROM flow_src', '{"epochs": 3}');
SELECT wdc.train_flow('bad', 'SELECT z, now() FROM flow_src');
SELECT wdc.train_flow('bad', 'SELECT z FROM flow_src', '{"class_column": "kind"}');
SET maintenance_work_mem = '1MB';
SELECT wdc.train_flow('bad', 'SELECT z FROM flow_src', '{"hidden": 1024}');
RESET maintenance_work_mem;
SELECT wdc.train_flow('bad', 'SELECT z FROM flow_src; SELECT 1');
CREATE ROLE wdc_flow_user;
GRANT SELECT ON flow_src TO wdc_flow_user;
SET ROLE wdc_flow_user;
SELECT wdc.train_flow('bad', 'SELECT z FROM flow_src');
RESET ROLE;
DROP OWNED BY wdc_flow_user;
DROP ROLE wdc_flow_user;
SELECT count(*) AS no_bad_model FROM wdc.model WHERE name = 'bad';
-- latents far outside the data: the least typical, never NaN
SELECT wdc.log_density('mix', '[3e38,-3e38]') AS far_log_density,
       wdc.outlier_pvalue('mix', '[3e38,-3e38]') AS far_pvalue;
SELECT wdc.catalog_surprise('mix', '[3e38,-3e38]', '{"cls": "a", "flux": 1}');
-- a flow's input must be latents of one model
SELECT wdc.train_flow('bad', 'SELECT ''[1,2]@0000000a''::latent UNION ALL SELECT ''[1,2]@0000000b''::latent');
SELECT wdc.train_flow('tagged', 'SELECT (z::text || ''@0000000a'')::latent FROM flow_src',
       '{"hidden": 16, "max_epochs": 2, "seed": 1}') > 0 AS trained_tagged;
SELECT wdc.log_density('tagged', '[1,2]@0000000b');
SELECT wdc.log_density('tagged', '[1,2]@0000000a') IS NOT NULL AS same_model_ok;
-- flows are not encoders and encoders are not flows
SELECT wdc.infer('mix', ARRAY[1,2]::real[]);

SELECT wdc.drop_model(name) FROM (SELECT DISTINCT name FROM wdc.model WHERE kind = 'flow') s ORDER BY 1;
DROP TABLE flow_src;
