-- model registry, wdc.encode, wdc.decode, wdc.infer on tiny models built by
-- tools/make_test_models.py (reference outputs from PyTorch in
-- test/fixtures/models/tiny_reference.json)
\getenv abs_srcdir PG_ABS_SRCDIR
\set models :abs_srcdir '/fixtures/models/'
\set enc_file :models 'tiny_encoder.onnx'
\set dec_file :models 'tiny_decoder.onnx'
\set graph_file :models 'tiny_graph.onnx'
\set ref_file :models 'tiny_reference.json'
SET client_min_messages = warning;
-- version numbers in messages start from 1 (earlier files drop their models)
ALTER SEQUENCE wdc.model_version_seq RESTART;

CREATE TEMP TABLE ref AS SELECT pg_read_file(:'ref_file')::jsonb AS j;
CREATE TEMP TABLE img AS
SELECT array_agg(ARRAY(SELECT (CASE WHEN e = 'null' THEN 'NaN' ELSE e::text END)::real
                       FROM jsonb_array_elements(r) e) ORDER BY n) AS pix
FROM ref, jsonb_array_elements(j->'image') WITH ORDINALITY AS t(r, n);
SELECT array_dims(pix) FROM img;

-- loading: the encoder describes itself through ONNX metadata
SELECT wdc.load_model_file('tiny_enc', :'enc_file') = 1 AS first_version;
SELECT wdc.load_model('tiny_dec', pg_read_binary_file(:'dec_file')) = 2 AS second_version;
SELECT wdc.load_model('tiny_graph', pg_read_binary_file(:'graph_file')) AS graph_version;
SELECT name, version, kind, current, input_shape, output_name, output_shape, preprocessing, bytes
FROM wdc.models ORDER BY version;
SELECT m.fingerprint = substr(encode(sha256(pg_read_binary_file(:'enc_file')), 'hex'), 1, 8) AS fingerprint_from_sha256
FROM wdc.models m WHERE name = 'tiny_enc';
SELECT wdc.export_model('tiny_enc') = pg_read_binary_file(:'enc_file') AS export_identical;

-- encoding matches PyTorch within 1e-4 (preprocessing: median NaN fill, min-max)
SELECT max(abs(a - b)) < 1e-4 AS encode_parity, count(*) AS dims
FROM img, ref, unnest(wdc.encode('tiny_enc', img.pix)::real[],
                      ARRAY(SELECT jsonb_array_elements_text(j->'mean')::real)) u(a, b);
SELECT latent_fingerprint(wdc.encode('tiny_enc', pix)) = (SELECT fingerprint FROM wdc.models WHERE name = 'tiny_enc') AS tagged
FROM img;
SELECT wdc.encode('tiny_enc', 1, pix) = wdc.encode('tiny_enc', pix) AS pinned_equals_current FROM img;

-- choosing the other output with an option
SELECT wdc.load_model('tiny_enc_logvar', pg_read_binary_file(:'enc_file'), '{"output": "logvar"}') AS v \gset
SELECT max(abs(a - b)) < 1e-4 AS logvar_parity
FROM img, ref, unnest(wdc.encode('tiny_enc_logvar', img.pix)::real[],
                      ARRAY(SELECT jsonb_array_elements_text(j->'logvar')::real)) u(a, b);

-- decoding and raw inference
SELECT array_dims(wdc.decode('tiny_dec', '[0.1,0.2,0.3,0.4]'));
SELECT abs((wdc.decode('tiny_dec', wdc.encode('tiny_enc', pix)))[9][9] - (j->>'decoded_center')::real) < 1e-4 AS decode_parity
FROM img, ref;
SELECT max(abs(a - b)) < 1e-5 AS infer_parity
FROM ref, unnest(wdc.infer('tiny_graph', ARRAY(SELECT jsonb_array_elements_text(j->'graph_input')::real)),
                 ARRAY(SELECT jsonb_array_elements_text(j->'graph_output')::real)) u(a, b);

-- versions: newest is current unless pinned
SELECT wdc.load_model('tiny_enc', pg_read_binary_file(:'enc_file')) AS v2 \gset
SELECT version, current FROM wdc.models WHERE name = 'tiny_enc' ORDER BY version;
SELECT wdc.set_current('tiny_enc', 1);
SELECT version, current FROM wdc.models WHERE name = 'tiny_enc' ORDER BY version;
SELECT wdc.drop_model('tiny_enc', 1);
SELECT version, current FROM wdc.models WHERE name = 'tiny_enc' ORDER BY version;

-- the current version is resolved again after each change, also within a
-- transaction and after a savepoint rollback (probe versions differ by output)
SELECT wdc.load_model('probe', pg_read_binary_file(:'enc_file')) AS p1 \gset
SELECT wdc.load_model('probe', pg_read_binary_file(:'enc_file'), '{"output": "logvar"}') AS p2 \gset
SELECT bool_and(wdc.encode('probe', :p1, pix) <> wdc.encode('probe', :p2, pix)) AS versions_differ FROM img;
BEGIN;
SELECT bool_and(wdc.encode('probe', pix) = wdc.encode('probe', :p2, pix)) AS newest FROM img;
SELECT wdc.set_current('probe', :p1);
SELECT bool_and(wdc.encode('probe', pix) = wdc.encode('probe', :p1, pix)) AS pinned FROM img;
SAVEPOINT s;
SELECT wdc.set_current('probe', :p2);
SELECT bool_and(wdc.encode('probe', pix) = wdc.encode('probe', :p2, pix)) AS repinned FROM img;
ROLLBACK TO s;
SELECT bool_and(wdc.encode('probe', pix) = wdc.encode('probe', :p1, pix)) AS savepoint_undone FROM img;
ROLLBACK;
SELECT bool_and(wdc.encode('probe', pix) = wdc.encode('probe', :p2, pix)) AS rollback_undone FROM img;
SELECT wdc.drop_model('probe');
-- the fingerprint is the file's SHA-256 prefix, unless load options change
-- the latents: then it covers the options too
SELECT wdc.load_model('fp', pg_read_binary_file(:'enc_file')) AS f1 \gset
SELECT wdc.load_model('fp', pg_read_binary_file(:'enc_file'), '{"preprocessing": {"nan_fill": "median", "normalize": "zscore"}}') AS f2 \gset
SELECT wdc.load_model('fp', pg_read_binary_file(:'enc_file'), '{"provenance": {"note": "same latents"}}') AS f3 \gset
SELECT version = :f1 AS plain, fingerprint = substr(encode(sha256(pg_read_binary_file(:'enc_file')), 'hex'), 1, 8) AS file_prefix
FROM wdc.models WHERE name = 'fp' AND version IN (:f1, :f3) ORDER BY version;
SELECT count(DISTINCT fingerprint) AS fingerprints FROM wdc.models WHERE name = 'fp';
SELECT latent_fingerprint(wdc.encode('fp', :f1, pix)) <> latent_fingerprint(wdc.encode('fp', :f2, pix)) AS tags_differ FROM img;
SELECT wdc.drop_model('fp');
-- a graph that cannot run as a flow is rejected at load
SELECT wdc.load_model('notaflow', pg_read_binary_file(:'enc_file'), '{"kind": "flow"}');

-- errors
SELECT wdc.encode('no_such_model', pix) FROM img;
SELECT wdc.encode('tiny_enc', 1, pix) FROM img;
SELECT wdc.encode('tiny_enc', 2, pix) FROM img;
SELECT wdc.encode('tiny_enc', 0, pix) FROM img;
SELECT wdc.encode('tiny_dec', pix) FROM img;
SELECT wdc.decode('tiny_enc', '[1,2,3,4]');
SELECT wdc.decode('tiny_dec', '[1,2,3]');
SELECT wdc.encode('tiny_enc', ARRAY[[1,2],[3,4]]::real[]);
SELECT wdc.encode('tiny_enc', ARRAY[1,2,3]::real[]);
SELECT wdc.encode('tiny_enc', ARRAY[[1,NULL],[3,4]]::real[]);
SELECT wdc.encode('tiny_enc', '\x00010203'::bytea);
SELECT wdc.infer('tiny_graph', ARRAY[1,2,3]::real[]);
SELECT wdc.export_model('tiny_enc', 1);
SELECT wdc.drop_model('nothing');
SELECT wdc.set_current('tiny_enc', 1);
-- without a NaN fill, a NaN pixel is an error
SELECT wdc.load_model('tiny_enc_raw', pg_read_binary_file(:'enc_file'), '{"preprocessing": {"normalize": "minmax"}}') AS v \gset
SELECT wdc.encode('tiny_enc_raw', pix) FROM img;
-- bad models and options add no row
SELECT count(*) AS models_before FROM wdc.model;
SELECT wdc.load_model('junk', '\x0102030405'::bytea);
SELECT wdc.load_model('junk', pg_read_binary_file(:'enc_file'), '{"kind": "telescope"}');
SELECT wdc.load_model('junk', pg_read_binary_file(:'enc_file'), '{"colour": "red"}');
SELECT wdc.load_model('junk', pg_read_binary_file(:'enc_file'), '{"output": "sigma"}');
SELECT wdc.load_model('junk', pg_read_binary_file(:'enc_file'), '{"preprocessing": {"stretch": "cubic"}}');
-- a resize to another size than the model's input is rejected at load
SELECT wdc.load_model('junk', pg_read_binary_file(:'enc_file'), '{"preprocessing": {"width": 64, "height": 64}}');
SELECT wdc.load_model('junk', pg_read_binary_file(:'enc_file'), '{"input_shape": [1, 1, 32, 32]}');
SELECT wdc.load_model('', pg_read_binary_file(:'enc_file'));
SELECT wdc.load_model_file('junk', '/nonexistent/model.onnx');
SELECT count(*) AS models_after FROM wdc.model;
-- model rows are immutable
UPDATE wdc.model SET name = 'renamed' WHERE name = 'tiny_dec';
-- reading server files needs pg_read_server_files
CREATE ROLE wdc_model_user;
GRANT INSERT ON wdc.model TO wdc_model_user;
GRANT USAGE ON SEQUENCE wdc.model_version_seq TO wdc_model_user;
GRANT SELECT ON img TO wdc_model_user;
SET ROLE wdc_model_user;
SELECT wdc.load_model_file('x', '/nonexistent/model.onnx');
SELECT wdc.encode('tiny_enc', pix) IS NOT NULL AS user_can_encode FROM img;
RESET ROLE;
DROP OWNED BY wdc_model_user;
DROP ROLE wdc_model_user;

-- without preprocessing, a wrong channel count is named as such
SELECT wdc.load_model('tiny_raw', pg_read_binary_file(:'models' || 'tiny_encoder.onnx'),
                      '{"preprocessing": {}}') IS NOT NULL AS loaded;
SELECT wdc.encode('tiny_raw', array_fill(1::real, ARRAY[2,16,16]));
SELECT wdc.encode_batch('tiny_raw', array_fill(1::real, ARRAY[3,2,16,16]));
SELECT wdc.encode('tiny_raw', array_fill(1::real, ARRAY[2,15,16]));

-- clean up
SELECT wdc.drop_model(name) FROM (SELECT DISTINCT name FROM wdc.model) s ORDER BY 1;
