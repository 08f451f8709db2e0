-- The reference VAE shipped in models/ (wdc_vae32_encoder.onnx and
-- wdc_vae32_decoder.onnx) against PyTorch on 20 real survey cutouts.
-- test/fixtures/vae holds the cutouts as FITS files and PyTorch's outputs
-- (reference.json), both written by tools/train_vae.py --fixtures.
\getenv abs_srcdir PG_ABS_SRCDIR
\set fx :abs_srcdir '/fixtures/vae/'
\set enc_file :fx 'encoder.onnx'
\set dec_file :fx 'decoder.onnx'
\set ref_file :fx 'reference.json'
SET client_min_messages = warning;

-- loading: the ONNX metadata alone describes both models
SELECT wdc.load_model('vae_ref_enc', pg_read_binary_file(:'enc_file'), '{}') AS enc \gset
SELECT wdc.load_model('vae_ref_dec', pg_read_binary_file(:'dec_file'), '{}') AS dec \gset
SELECT name, kind, input_shape, output_name, output_shape, preprocessing
FROM wdc.models WHERE name LIKE 'vae_ref%' ORDER BY name;

CREATE TEMP TABLE vae_fx AS
SELECT n, c->>'frame' AS frame, (c->>'nan_pixels')::int AS nan_pixels,
       pg_read_binary_file(:'fx' || (c->>'file')) AS fits,
       ARRAY(SELECT jsonb_array_elements_text(c->'mean')::real) AS mean,
       ARRAY(SELECT jsonb_array_elements_text(c->'logvar')::real) AS logvar
FROM (SELECT pg_read_file(:'ref_file')::jsonb AS j) r,
     jsonb_array_elements(j->'cutouts') WITH ORDINALITY AS t(c, n);
SELECT count(*) AS cutouts, count(DISTINCT frame) AS frames,
       count(*) FILTER (WHERE nan_pixels > 0) AS with_nan_pixels
FROM vae_fx;
SELECT DISTINCT array_dims(wdc.fits_image(fits)) FROM vae_fx;

-- encoding a FITS bytea matches PyTorch's posterior mean within 1e-4
SELECT count(DISTINCT n) AS cutouts, count(*) AS values,
       max(abs(a - b)) < 1e-4 AS fits_parity
FROM vae_fx, unnest(wdc.encode('vae_ref_enc', :enc, fits)::real[], mean) u(a, b);

-- and so does encoding the same pixels as real[]
SELECT count(DISTINCT n) AS cutouts,
       max(abs(a - b)) < 1e-4 AS array_parity
FROM vae_fx, unnest(wdc.encode('vae_ref_enc', :enc, wdc.fits_image(fits))::real[], mean) u(a, b);

-- the current-version form gives the same latents, tagged with the
-- fingerprint of the version
SELECT bool_and(wdc.encode('vae_ref_enc', fits) = wdc.encode('vae_ref_enc', :enc, fits)) AS current_equals_pinned,
       bool_and(latent_fingerprint(wdc.encode('vae_ref_enc', fits)) =
                (SELECT fingerprint FROM wdc.models WHERE name = 'vae_ref_enc')) AS tagged,
       bool_and(latent_dims(wdc.encode('vae_ref_enc', fits)) = 16) AS sixteen_dims
FROM vae_fx;

-- the log-variance output, chosen by an option, matches too
SELECT wdc.load_model('vae_ref_logvar', pg_read_binary_file(:'enc_file'), '{"output": "logvar"}') AS lv \gset
SELECT max(abs(a - b)) < 1e-4 AS logvar_parity
FROM vae_fx, unnest(wdc.encode('vae_ref_logvar', :lv, fits)::real[], logvar) u(a, b);

-- decoding PyTorch's mean of cutout 1 matches PyTorch's decoded image
CREATE TEMP TABLE vae_decoded AS
SELECT wdc.decode('vae_ref_dec', :dec, mean::latent) AS img FROM vae_fx WHERE n = 1;
SELECT array_dims(img) FROM vae_decoded;
SELECT count(*) AS pixels, max(abs(a - b)) < 1e-4 AS decode_parity
FROM vae_decoded,
     (SELECT array_agg(v::real ORDER BY i, k) AS ref
      FROM (SELECT pg_read_file(:'ref_file')::jsonb AS j) r,
           jsonb_array_elements(j->'decoded') WITH ORDINALITY AS row_(rw, i),
           jsonb_array_elements_text(rw) WITH ORDINALITY AS col(v, k)) ref,
     unnest(img, ref.ref) u(a, b);

-- the decoder's sigmoid keeps pixels in [0, 1], like min-max inputs
SELECT min(a) >= 0 AND max(a) <= 1 AS decoded_in_unit_range FROM vae_decoded, unnest(img) a;

-- a 24 x 24 cutout is resized to 32 x 32 by the declared preprocessing
SELECT array_dims(wdc.fits_cutout(fits, 16.5, 16.5, 24)) AS smaller_cutout,
       latent_dims(wdc.encode('vae_ref_enc', :enc, wdc.fits_cutout(fits, 16.5, 16.5, 24))) AS dims
FROM vae_fx WHERE n = 1;

-- errors; version numbers depend on the tests run before this file, so
-- messages are shown with them masked
CREATE FUNCTION pg_temp.vae_error(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'no error';
EXCEPTION WHEN others THEN
	RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, 'version [0-9]+', 'version N', 'g');
END
$$;
SELECT pg_temp.vae_error(format('SELECT wdc.encode(%L, %s, fits) FROM vae_fx WHERE n = 1', 'vae_ref_dec', :dec));
SELECT pg_temp.vae_error(format('SELECT wdc.decode(%L, %s, mean::latent) FROM vae_fx WHERE n = 1', 'vae_ref_enc', :enc));
SELECT pg_temp.vae_error(format('SELECT wdc.decode(%L, %s, %L)', 'vae_ref_dec', :dec, '[1,2,3]'));
SELECT wdc.encode('vae_ref_enc', :enc, '\x53494d504c45'::bytea);

SELECT wdc.drop_model('vae_ref_enc') + wdc.drop_model('vae_ref_dec') + wdc.drop_model('vae_ref_logvar') AS dropped;
