-- CALL wdc.backfill: batches, stale latents, key ranges, error policy,
-- job bookkeeping, privileges and hostile identifiers.  wdc.backfill
-- commits per batch, so this file runs outside a transaction block;
-- interrupting and concurrent jobs are tested in
-- test/shell/workflow_backfill.sh.  Runs from the repository root.
\set models `pwd`/test/fixtures/models/
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
DROP ROLE IF EXISTS wdc_bf_other;
CREATE ROLE wdc_bf_other;
SELECT plan(34);

SELECT wdc.load_model('tiny_enc', pg_read_binary_file(:'models' || 'tiny_encoder.onnx')) AS v \gset

-- a 16 x 16 test image, different for each seed
CREATE FUNCTION img(seed int) RETURNS real[] LANGUAGE sql IMMUTABLE AS $$
	SELECT ARRAY(SELECT ARRAY(SELECT (sin(seed * 0.37 * r + c) + 0.01 * r * c)::real
	                          FROM generate_series(1, 16) c)
	             FROM generate_series(1, 16) r)
$$;

CREATE TABLE cat (id int PRIMARY KEY, cutout real[], z latent);
INSERT INTO cat SELECT i, img(i) FROM generate_series(1, 50) i;

-- Every committed write of a latent is logged, to count encodings per row.
-- The logging trigger pins its own search_path because wdc.backfill runs
-- its UPDATE, and so the table's triggers, under search_path pg_catalog.
CREATE TABLE writes (id int, z latent);
CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
	INSERT INTO writes VALUES (NEW.id, NEW.z);
	RETURN NULL;
END
$$;
CREATE TRIGGER log_write AFTER UPDATE OF z ON cat FOR EACH ROW EXECUTE FUNCTION log_write();

-- all rows, in batches of 7
CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{"batch_size": 7}');
SELECT is((SELECT count(*) FROM cat WHERE z = wdc.encode('tiny_enc', cutout)), 50::bigint,
	'backfill encodes every row');
SELECT is((SELECT count(*) FROM writes), 50::bigint, 'each row is written once');
SELECT is((SELECT concat_ws(' ', rows_total, rows_done, rows_failed, state, batch_size, key_column, version)
           FROM wdc.jobs ORDER BY job DESC LIMIT 1),
	'50 50 0 done 7 id ' || :v, 'job row records progress and the model version');
SELECT ok((SELECT rate > 0 AND updated >= started AND last_error IS NULL FROM wdc.jobs ORDER BY job DESC LIMIT 1),
	'job row has a rate and timestamps');

-- a second run finds nothing to do
CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc');
SELECT is((SELECT count(*) FROM writes), 50::bigint, 'second run encodes nothing');
SELECT is((SELECT concat_ws(' ', rows_total, rows_done, state) FROM wdc.jobs ORDER BY job DESC LIMIT 1),
	'0 0 done', 'second job is empty');

-- stale latents (another model's fingerprint) and NULL ones are redone
UPDATE cat SET z = '[1,2,3,4]@0badf00d' WHERE id IN (3, 4);
UPDATE cat SET z = NULL WHERE id = 5;
UPDATE cat SET z = '[1,2,3,4]' WHERE id = 6;
TRUNCATE writes;
CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc');
SELECT results_eq($$SELECT id FROM writes ORDER BY id$$, ARRAY[3, 4, 5, 6],
	'stale, untagged and missing latents are encoded');
SELECT is((SELECT count(*) FROM cat WHERE z = wdc.encode('tiny_enc', cutout)), 50::bigint,
	'all latents current again');

-- rows without a source are not counted or touched
INSERT INTO cat VALUES (51, NULL, NULL);
TRUNCATE writes;
CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc');
SELECT is((SELECT count(*) FROM writes), 0::bigint, 'row without a source is skipped');

-- key range, bounds inclusive
UPDATE cat SET z = NULL;
TRUNCATE writes;
CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{"key_min": 10, "key_max": 20, "batch_size": 4}');
SELECT results_eq($$SELECT id FROM cat WHERE z IS NOT NULL ORDER BY id$$,
	$$SELECT generate_series(10, 20)$$, 'key range is inclusive');
SELECT is((SELECT count(*) FROM writes WHERE z IS NOT NULL), 11::bigint, 'range rows written once');
CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{"key_max": "9"}');
CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{"key_min": 21}');
SELECT is((SELECT count(*) FROM cat WHERE z IS NULL AND cutout IS NOT NULL), 0::bigint,
	'ranges below and above complete the table');

-- on_error skip: bad rows go to wdc.job_errors with their key, the rest
-- is encoded
INSERT INTO cat VALUES (60, ARRAY[[1,2],[3,4]]::real[]), (61, img(61)), (62, ARRAY[1,2,3]::real[]);
CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{"on_error": "skip", "batch_size": 2}');
SELECT is((SELECT concat_ws(' ', rows_total, rows_done, rows_failed, state) FROM wdc.jobs ORDER BY job DESC LIMIT 1),
	'3 1 2 done', 'skip records failures and finishes');
SELECT is((SELECT string_agg(row_key, ' ' ORDER BY row_key) FROM wdc.job_errors
           WHERE job = (SELECT max(job) FROM wdc.jobs)),
	'60 62', 'job_errors has the bad keys');
SELECT ok((SELECT bool_and(message LIKE 'image %') FROM wdc.job_errors),
	'job_errors has the encoder message');
SELECT ok((SELECT z IS NOT NULL FROM cat WHERE id = 61), 'good row between bad ones is encoded');
SELECT ok((SELECT last_error LIKE 'image %' FROM wdc.jobs ORDER BY job DESC LIMIT 1), 'last_error is kept');
DELETE FROM cat WHERE id IN (60, 62);

-- invalid requests fail before any work
SELECT throws_ok($$CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{"batch_size": 0}')$$, '22023',
	'invalid batch_size 0', 'batch_size 0');
SELECT throws_ok($$CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{"batch_size": "x"}')$$, '22023',
	'invalid batch_size "x"', 'batch_size not a number');
SELECT lives_ok($$SELECT wdc.backfill_start('cat', 'cutout', 'z', 'tiny_enc', '{"batch_size": 100000}')$$,
	'batch_size 100000');
SELECT throws_ok($$CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{"batch_size": 100001}')$$, '22023',
	'invalid batch_size 100001', 'batch_size 100001');
SELECT throws_ok($$CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{"on_error": "retry"}')$$, '22023',
	'invalid on_error "retry"', 'unknown on_error');
SELECT throws_ok($$CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{"sort": 1}')$$, '22023',
	'unknown wdc.backfill option "sort"', 'unknown option');
SELECT throws_ok($$CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{"key_min": "ten"}')$$, '22P02',
	NULL, 'key_min not of the key type');
SELECT throws_ok($$CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{"version": 999}')$$, '42704',
	'encoder "tiny_enc" has no version 999', 'unknown version');
CREATE TABLE nokey (cutout real[], z latent);
SELECT throws_ok($$CALL wdc.backfill('nokey', 'cutout', 'z', 'tiny_enc')$$, '22023',
	'table public.nokey has no single-column primary key', 'table without a key');

-- privileges: only the owner backfills, and job rows are private
GRANT SELECT, UPDATE ON cat TO wdc_bf_other;
SET ROLE wdc_bf_other;
SELECT throws_ok($$CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc')$$, '42501',
	'must be owner of table public.cat to backfill it', 'non-owner cannot backfill');
SELECT is((SELECT count(*) FROM wdc.jobs), 0::bigint, 'other roles see no job rows');
SELECT is((SELECT count(*) FROM wdc.job_errors), 0::bigint, 'other roles see no job errors');
SELECT throws_ok($$SELECT wdc.backfill_batch(1)$$, '42704', 'backfill job 1 does not exist',
	'other roles cannot run an owner''s job');
INSERT INTO wdc.jobs (table_name, source, target, model, version, fingerprint, key_column,
                      batch_size, on_error, rows_total)
VALUES ('cat', 'cutout', 'z', 'tiny_enc', :v, '00000000', 'id', 10, 'stop', 0);
SELECT throws_ok($$SELECT wdc.backfill_batch((SELECT max(job) FROM wdc.jobs))$$, '42501',
	'must be owner of table public.cat to backfill it', 'a forged job row is checked');
SELECT throws_ok($$INSERT INTO wdc.jobs (table_name, source, target, model, version, fingerprint, key_column,
                      batch_size, on_error, rows_total, run_by)
                   VALUES ('cat', 'cutout', 'z', 'tiny_enc', 1, '0', 'id', 1, 'stop', 0, 'postgres')$$,
	'42501', NULL, 'job rows cannot be written for another role');
RESET ROLE;

-- hostile identifiers
CREATE TABLE "x; DROP TABLE cat; --" ("the ""key""" text PRIMARY KEY, "my cutout" real[], "z'col" latent);
INSERT INTO "x; DROP TABLE cat; --" SELECT 'k' || lpad(i::text, 2, '0'), img(i) FROM generate_series(1, 12) i;
CALL wdc.backfill('"x; DROP TABLE cat; --"', 'my cutout', 'z''col', 'tiny_enc',
                  '{"batch_size": 5, "key_min": "k03", "key_max": "k10"}');
SELECT is((SELECT string_agg("the ""key""", ' ' ORDER BY 1) FROM "x; DROP TABLE cat; --" WHERE "z'col" IS NOT NULL),
	'k03 k04 k05 k06 k07 k08 k09 k10', 'backfill on hostile names with a text key range');
SELECT has_table('cat', 'table cat still exists');

SELECT * FROM finish();
DROP OWNED BY wdc_bf_other;
DROP ROLE wdc_bf_other;
