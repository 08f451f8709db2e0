-- wdc.encode_batch with the reference VAE: every latent equals wdc.encode
-- of the same image, for batches below, at and above the batch-64 plan
\getenv abs_srcdir PG_ABS_SRCDIR
\set fx :abs_srcdir '/fixtures/vae/'
\set enc_file :fx 'encoder.onnx'
\set dec_file :fx 'decoder.onnx'
\set ref_file :fx 'reference.json'
SET client_min_messages = warning;

SELECT wdc.load_model('vae_batch_enc', pg_read_binary_file(:'enc_file'), '{}') AS enc \gset
SELECT wdc.load_model('vae_batch_dec', pg_read_binary_file(:'dec_file'), '{}') AS dec \gset

-- 20 real cutouts repeated 5 times: 100 images, one full group of 64 and a
-- padded group of 36
CREATE TEMP TABLE vb AS
SELECT (rep - 1) * 20 + n AS id, fits, wdc.fits_image(fits) AS img, mean
FROM (SELECT n, pg_read_binary_file(:'fx' || (c->>'file')) AS fits,
             ARRAY(SELECT jsonb_array_elements_text(c->'mean')::real) AS mean
      FROM (SELECT pg_read_file(:'ref_file')::jsonb AS j) r,
           jsonb_array_elements(j->'cutouts') WITH ORDINALITY AS t(c, n)) f,
     generate_series(1, 5) rep;
CREATE TEMP TABLE vb_row AS
SELECT id, wdc.encode('vae_batch_enc', :enc, fits) AS z, mean FROM vb;

-- Compare batch output k (1-based) with the per-row latent of image k for
-- the first n images.  Batched plans add in another order and may run
-- Winograd convolutions, so allow 1e-5.
CREATE FUNCTION pg_temp.vb_check(zs latent[], n int) RETURNS TABLE (images int, same_as_row boolean, parity boolean, tagged boolean)
LANGUAGE sql AS $$
	SELECT count(DISTINCT r.id)::int,
	       max(abs(a - b)) < 1e-5,
	       max(abs(a - m)) < 1e-4,
	       bool_and(latent_fingerprint(zs[r.id]) = latent_fingerprint(r.z))
	FROM vb_row r, unnest(zs[r.id]::real[], r.z::real[], r.mean) u(a, b, m)
	WHERE r.id <= n
$$;

-- FITS bytea[] form, sizes 1, 7, 20 (batch-1 plan), 64 and 100 (batch-64 plan)
SELECT s AS batch, c.*
FROM unnest(ARRAY[1, 7, 20, 64, 100]) s,
     pg_temp.vb_check(wdc.encode_batch('vae_batch_enc', :enc,
                        (SELECT array_agg(fits ORDER BY id) FROM vb WHERE id <= s)), s) c;

-- real[n][32][32] form
SELECT array_dims(array_agg(img ORDER BY id)) FROM vb;
SELECT s AS batch, c.*
FROM unnest(ARRAY[1, 20, 100]) s,
     pg_temp.vb_check(wdc.encode_batch('vae_batch_enc', :enc,
                        (SELECT array_agg(img ORDER BY id) FROM vb WHERE id <= s)), s) c;

-- the current-version form
SELECT wdc.encode_batch('vae_batch_enc', (SELECT array_agg(fits ORDER BY id) FROM vb WHERE id <= 3))
     = wdc.encode_batch('vae_batch_enc', :enc, (SELECT array_agg(fits ORDER BY id) FROM vb WHERE id <= 3))
  AS current_equals_pinned;

-- a NULL file gives a NULL latent in its place
SELECT array_dims(zs), zs[2] IS NULL AS second_null,
       zs[1] = (SELECT z FROM vb_row WHERE id = 1) AS first_kept,
       zs[3] = (SELECT z FROM vb_row WHERE id = 3) AS third_kept
FROM (SELECT wdc.encode_batch('vae_batch_enc', :enc,
                ARRAY[(SELECT fits FROM vb WHERE id = 1), NULL,
                      (SELECT fits FROM vb WHERE id = 3)]) AS zs) t;

-- empty input, empty output
SELECT wdc.encode_batch('vae_batch_enc', :enc, '{}'::bytea[]) AS empty_files,
       wdc.encode_batch('vae_batch_enc', :enc, '{}'::real[]) AS empty_images;

-- images of another size go through the declared resize, as in wdc.encode
SELECT (wdc.encode_batch('vae_batch_enc', :enc,
          ARRAY[wdc.fits_cutout(fits, 16.5, 16.5, 24)]))[1]
     = wdc.encode('vae_batch_enc', :enc, wdc.fits_cutout(fits, 16.5, 16.5, 24)) AS resized_equal
FROM vb WHERE id = 2;

-- labels: the versioned forms are IMMUTABLE, the others STABLE, all
-- PARALLEL SAFE and STRICT
SELECT pg_get_function_identity_arguments(oid) AS args, provolatile, proparallel, proisstrict
FROM pg_proc WHERE proname = 'encode_batch' ORDER BY 1;

-- errors; version numbers depend on the tests run before this file, so
-- messages are shown with them masked
CREATE FUNCTION pg_temp.vb_error(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'no error';
EXCEPTION WHEN others THEN
	RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, 'version [0-9]+', 'version N', 'g');
END
$$;
SELECT pg_temp.vb_error(format('SELECT wdc.encode_batch(%L, %s, ARRAY[(SELECT fits FROM vb WHERE id = 1)])', 'vae_batch_dec', :dec));
SELECT wdc.encode_batch('vae_batch_enc', 0, ARRAY[(SELECT fits FROM vb WHERE id = 1)]);
SELECT wdc.encode_batch('no_such_model', ARRAY[(SELECT fits FROM vb WHERE id = 1)]);
SELECT wdc.encode_batch('vae_batch_enc', :enc, ARRAY[(SELECT fits FROM vb WHERE id = 1), '\x00'::bytea]);
SELECT wdc.encode_batch('vae_batch_enc', :enc, ARRAY[[(SELECT fits FROM vb WHERE id = 1)]]);
SELECT wdc.encode_batch('vae_batch_enc', :enc, (SELECT img FROM vb WHERE id = 1));
SELECT wdc.encode_batch('vae_batch_enc', :enc, ARRAY[[[1, NULL], [3, 4]]]::real[]);
SELECT wdc.encode_batch('vae_batch_enc', :enc, ARRAY[[[[1, 2], [3, 4]], [[1, 2], [3, 4]]]]::real[]);
-- an image with no finite pixel carries nothing to encode, so both paths
-- raise an error that names the image in a batch.  A constant image encodes.
SELECT wdc.encode_batch('vae_batch_enc', :enc, ARRAY[[[1, 2], [3, 4]], [['NaN', 'NaN'], ['NaN', 'NaN']]]::real[]);
SELECT wdc.encode('vae_batch_enc', :enc, ARRAY[['Infinity', 'NaN'], ['NaN', '-Infinity']]::real[]);
SELECT latent_dims(wdc.encode('vae_batch_enc', :enc, array_fill(5::real, ARRAY[32, 32]))) AS constant_dims;

SELECT wdc.drop_model('vae_batch_enc') + wdc.drop_model('vae_batch_dec') AS dropped;
