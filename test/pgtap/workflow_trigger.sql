-- wdc.embed_trigger and wdc.attach: which statements encode, atomic
-- errors naming the row, quoting of hostile identifiers, and the optional
-- flow score.  Runs from the repository root (scripts/test-sql).
\set models `pwd`/test/fixtures/models/
\set ON_ERROR_STOP 1
BEGIN;
SELECT plan(50);

SELECT wdc.load_model('tiny_enc', pg_read_binary_file(:'models' || 'tiny_encoder.onnx')) AS v \gset
SELECT wdc.load_model('tiny_dec', pg_read_binary_file(:'models' || 'tiny_decoder.onnx')) AS vdec \gset

-- a 16 x 16 test image, different for each seed
CREATE FUNCTION pg_temp.img(seed int) RETURNS real[] LANGUAGE sql IMMUTABLE AS $$
	SELECT ARRAY(SELECT ARRAY(SELECT (sin(seed * 0.37 * r + c) + 0.01 * r * c)::real
	                          FROM generate_series(1, 16) c)
	             FROM generate_series(1, 16) r)
$$;

CREATE TABLE obs (id int PRIMARY KEY, cutout real[], z latent, note text);
SELECT is(wdc.attach('obs', 'cutout', 'z', 'tiny_enc'), 'wdc_embed_z'::name, 'attach returns the trigger name');
SELECT is((SELECT tgtype::int & 31 FROM pg_trigger WHERE tgname = 'wdc_embed_z'),
	1 | 2 | 4 | 16, 'trigger is BEFORE INSERT OR UPDATE FOR EACH ROW');

-- INSERT encodes
INSERT INTO obs (id, cutout) SELECT i, pg_temp.img(i) FROM generate_series(1, 5) i;
SELECT is((SELECT count(*) FROM obs WHERE z = wdc.encode('tiny_enc', cutout)), 5::bigint,
	'insert fills every latent with wdc.encode of the cutout');
SELECT is((SELECT latent_fingerprint(z) FROM obs WHERE id = 1),
	(SELECT fingerprint FROM wdc.models WHERE name = 'tiny_enc'), 'latent carries the model fingerprint');

-- UPDATE of other columns, or of the source to the same value, keeps the
-- latent: a hand-written marker survives both
UPDATE obs SET z = '[9,9,9,9]' WHERE id = 1;
SELECT is((SELECT z FROM obs WHERE id = 1), '[9,9,9,9]'::latent, 'update of the latent alone is kept');
UPDATE obs SET note = 'seen';
SELECT is((SELECT z FROM obs WHERE id = 1), '[9,9,9,9]'::latent, 'update of another column does not encode');
UPDATE obs SET cutout = pg_temp.img(1) WHERE id = 1;
SELECT is((SELECT z FROM obs WHERE id = 1), '[9,9,9,9]'::latent, 'update of the source to the same image does not encode');

-- UPDATE of the source encodes
UPDATE obs SET cutout = pg_temp.img(42) WHERE id = 1;
SELECT is((SELECT z FROM obs WHERE id = 1), wdc.encode('tiny_enc', pg_temp.img(42)), 'update of the source encodes');

-- NULL source clears the latent
UPDATE obs SET cutout = NULL WHERE id = 2;
SELECT ok((SELECT z IS NULL FROM obs WHERE id = 2), 'source set to NULL clears the latent');
INSERT INTO obs VALUES (6, NULL, '[1,2,3,4]');
SELECT ok((SELECT z IS NULL FROM obs WHERE id = 6), 'insert without a source stores no latent');

-- INSERT of a row that already has a latent of the current version keeps
-- it (restores and replicated rows are not encoded again)
INSERT INTO obs VALUES (7, pg_temp.img(7), wdc.encode('tiny_enc', pg_temp.img(8)));
SELECT is((SELECT z FROM obs WHERE id = 7), wdc.encode('tiny_enc', pg_temp.img(8)),
	'insert with a latent of the current version keeps it');
INSERT INTO obs VALUES (8, pg_temp.img(8), '[5,5,5,5]');
SELECT is((SELECT z FROM obs WHERE id = 8), wdc.encode('tiny_enc', pg_temp.img(8)),
	'insert with an untagged latent encodes');

-- errors abort the whole statement and name the row and the model
SELECT throws_like($$INSERT INTO obs (id, cutout) VALUES (10, pg_temp.img(10)), (11, ARRAY[[1,2],[3,4]]::real[])$$,
	'could not encode row (id)=(11) of table "obs" with model "tiny_enc": %',
	'insert error names the key and the model');
SELECT is((SELECT count(*) FROM obs WHERE id >= 10), 0::bigint, 'failed insert adds no row');
SELECT throws_ok($$UPDATE obs SET cutout = CASE WHEN id = 4 THEN ARRAY[[1,2],[3,4]]::real[] ELSE pg_temp.img(id + 100) END WHERE id IN (3, 4, 5)$$,
	'22000', NULL, 'update error keeps the encoder SQLSTATE');
SELECT is((SELECT count(*) FROM obs WHERE id IN (3, 5) AND z = wdc.encode('tiny_enc', pg_temp.img(id))), 2::bigint,
	'failed update changes no row');

-- a composite primary key is named in full
CREATE TABLE obs2 (field text, n int, cutout real[], z latent, PRIMARY KEY (field, n));
SELECT wdc.attach('obs2', 'cutout', 'z', 'tiny_enc');
SELECT throws_like($$INSERT INTO obs2 VALUES ('north', 3, ARRAY[1,2,3]::real[])$$,
	'could not encode row (field, n)=(north, 3) of table "obs2"%', 'composite key is named');
CREATE TABLE obs3 (cutout real[], z latent);
SELECT wdc.attach('obs3', 'cutout', 'z', 'tiny_enc');
SELECT throws_like($$INSERT INTO obs3 VALUES (ARRAY[1,2,3]::real[])$$,
	'could not encode row (table has no primary key) of table "obs3"%', 'table without a key says so');

-- wdc.attach checks its arguments
SELECT throws_ok($$SELECT wdc.attach('obs', 'nothing', 'z', 'tiny_enc')$$, '42703',
	'source column "nothing" does not exist in table public.obs', 'missing source column');
SELECT throws_ok($$SELECT wdc.attach('obs', 'note', 'z', 'tiny_enc')$$, '42804',
	'source column "note" of table public.obs has type text', 'source of the wrong type');
SELECT throws_ok($$SELECT wdc.attach('obs', 'cutout', 'note', 'tiny_enc')$$, '42804',
	'target column "note" of table public.obs has type text', 'target of the wrong type');
SELECT throws_ok($$SELECT wdc.attach('obs', 'cutout', 'z', 'no_model')$$, '42704',
	'encoder "no_model" is not loaded', 'unknown model');
SELECT throws_ok($$SELECT wdc.attach('obs', 'cutout', 'z', 'tiny_dec')$$, '42809',
	'model "tiny_dec" is not an encoder', 'decoder given as the encoder');
-- a newer decoder under an encoder's name: attach and backfill name the kind
SELECT wdc.load_model('mixed', pg_read_binary_file(:'models' || 'tiny_encoder.onnx')) AS vmix \gset
SELECT wdc.load_model('mixed', pg_read_binary_file(:'models' || 'tiny_decoder.onnx')) AS vmix2 \gset
SELECT throws_ok($$SELECT wdc.attach('obs', 'cutout', 'z', 'mixed')$$, '42809',
	format('the current version of model "mixed" has kind "decoder", not "encoder"'),
	'current decoder version is rejected by attach');
SELECT throws_ok($$SELECT wdc.backfill_start('obs', 'cutout', 'z', 'mixed', '{}')$$, '42809',
	format('model "mixed" version %s has kind "decoder", not "encoder"', :vmix2),
	'current decoder version is rejected by backfill');
SELECT wdc.drop_model('mixed') AS dropped_mixed \gset
SELECT throws_ok($$SELECT wdc.attach('obs', 'cutout', 'z', 'tiny_enc', '{"colour": 1}')$$, '22023',
	'unknown wdc.attach option "colour"', 'unknown option');
SELECT throws_ok($$SELECT wdc.attach('obs', 'cutout', 'z', 'tiny_enc', '{"flow": "f"}')$$, '22023',
	'options flow and score go together', 'flow without score');
SELECT throws_ok($$SELECT wdc.attach('obs', 'cutout', 'z', 'tiny_enc', '{"trigger_name": "t2", "flow": "f", "score": "s", "condition": ["nope"]}')$$, '42703',
	'score column "s" does not exist in table public.obs', 'missing score column');
SELECT throws_ok($$SELECT wdc.attach('obs', 'cutout', 'z', 'tiny_enc', '{"trigger_name": "t2", "flow": "nope", "score": "note"}')$$, '42704',
	'flow "nope" is not loaded', 'unknown flow');
SELECT throws_ok($$SELECT wdc.attach('obs', 'cutout', 'z', 'tiny_enc', '{"trigger_name": "t2", "flow": "tiny_enc", "score": "note"}')$$, '42809',
	'model "tiny_enc" is not a flow', 'encoder given as the flow');
SELECT throws_ok($$SELECT wdc.attach('obs', 'cutout', 'z', 'tiny_enc')$$, '42710', NULL,
	'attaching twice under one name fails');

-- trigger arguments written by hand are checked when the trigger fires
CREATE TABLE obs4 (id int PRIMARY KEY, cutout real[], z latent);
CREATE TRIGGER bad BEFORE INSERT ON obs4 FOR EACH ROW EXECUTE FUNCTION wdc.embed_trigger('tiny_enc', 'cutout');
SELECT throws_like($$INSERT INTO obs4 VALUES (1, pg_temp.img(1))$$, '%needs at least 3 arguments%', 'too few arguments');
DROP TRIGGER bad ON obs4;
CREATE TRIGGER bad BEFORE INSERT ON obs4 FOR EACH ROW EXECUTE FUNCTION wdc.embed_trigger('tiny_enc', 'cutout', 'z', 'colour=red');
SELECT throws_like($$INSERT INTO obs4 VALUES (1, pg_temp.img(1))$$, 'invalid wdc.embed_trigger argument "colour=red"', 'unknown setting');
DROP TRIGGER bad ON obs4;
CREATE TRIGGER bad AFTER INSERT ON obs4 FOR EACH ROW EXECUTE FUNCTION wdc.embed_trigger('tiny_enc', 'cutout', 'z');
SELECT throws_like($$INSERT INTO obs4 VALUES (1, pg_temp.img(1))$$, '%must be a BEFORE INSERT OR UPDATE%', 'AFTER trigger is rejected');
DROP TRIGGER bad ON obs4;

-- hostile identifiers are quoted everywhere
CREATE TABLE "x; DROP TABLE obs; --" ("my ""cutout""" real[], "z col" latent, "key" int PRIMARY KEY);
SELECT is(wdc.attach('"x; DROP TABLE obs; --"', 'my "cutout"', 'z col', 'tiny_enc',
                     '{"trigger_name": "t\"; DROP TABLE obs; --"}'),
	't"; DROP TABLE obs; --'::name, 'attach on a hostile table name');
INSERT INTO "x; DROP TABLE obs; --" VALUES (pg_temp.img(3), NULL, 1);
SELECT is((SELECT "z col" FROM "x; DROP TABLE obs; --"), wdc.encode('tiny_enc', pg_temp.img(3)),
	'trigger on hostile column names encodes');
SELECT has_table('obs', 'table obs still exists');
SELECT lives_ok($$SELECT wdc.detach('"x; DROP TABLE obs; --"', 'z col', 't"; DROP TABLE obs; --')$$, 'detach hostile names');
SELECT is((SELECT count(*) FROM pg_trigger WHERE tgrelid = '"x; DROP TABLE obs; --"'::regclass), 0::bigint, 'trigger is gone');

-- only the table owner attaches
CREATE ROLE wdc_wf_other;
GRANT SELECT, INSERT, UPDATE, TRIGGER ON obs4 TO wdc_wf_other;
SET ROLE wdc_wf_other;
SELECT throws_ok($$SELECT wdc.attach('obs4', 'cutout', 'z', 'tiny_enc')$$, '42501',
	'must be owner of table public.obs4 to attach an embedding trigger', 'non-owner cannot attach');
SELECT throws_ok($$SELECT wdc.detach('obs', 'z')$$, '42501',
	'must be owner of table public.obs to detach an embedding trigger', 'non-owner cannot detach');
RESET ROLE;
-- a role that may insert but not read sees the key's column names only
SELECT wdc.attach('obs4', 'cutout', 'z', 'tiny_enc');
CREATE ROLE wdc_wf_writer;
GRANT INSERT ON obs4 TO wdc_wf_writer;
SET ROLE wdc_wf_writer;
SELECT throws_ok($$INSERT INTO obs4 VALUES (77, ARRAY[1,2,3]::real[])$$, '22000',
	'could not encode row (id) of table "obs4" with model "tiny_enc": image must be a 2-D array [height][width] or a 3-D array [channels][height][width], not 1-D',
	'key values are hidden from a role that cannot read them');
RESET ROLE;

-- flow score: stored on insert, refreshed when a condition column changes
CREATE TABLE scored (id int PRIMARY KEY, cutout real[], z latent, flux real, score float8);
INSERT INTO scored (id, cutout, flux) SELECT i, pg_temp.img(i), i FROM generate_series(1, 60) i;
UPDATE scored SET z = wdc.encode('tiny_enc', cutout);
CREATE FUNCTION pg_temp.flow_checks() RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN
	RETURN NEXT ok(wdc.train_flow('wf_flow', 'SELECT z, flux FROM scored',
	                              '{"max_epochs": 2, "hidden": 16, "layers": 1, "seed": 1, "calibration_rows": 20}') > 0,
	               'flow trained');
	RETURN NEXT throws_ok($q$SELECT wdc.attach('scored', 'cutout', 'z', 'tiny_enc',
	                          '{"flow": "wf_flow", "score": "score", "condition": ["id"]}')$q$,
	                      '22023', 'flow "wf_flow" has no condition column "id"',
	                      'attach rejects a column the flow lacks');
	RETURN NEXT throws_ok($q$SELECT wdc.attach('scored', 'cutout', 'z', 'tiny_enc',
	                          '{"flow": "wf_flow", "score": "score"}')$q$,
	                      '22023', 'option condition lacks column "flux" of flow "wf_flow"',
	                      'attach needs every flow condition');
	RETURN NEXT is(wdc.attach('scored', 'cutout', 'z', 'tiny_enc',
	                          '{"flow": "wf_flow", "score": "score", "condition": ["flux"]}'),
	               'wdc_embed_z'::name, 'attach with a flow');
	RETURN NEXT lives_ok($q$INSERT INTO scored (id, cutout, flux) VALUES (100, pg_temp.img(100), 3)$q$,
	                     'insert with a score');
	RETURN NEXT ok((SELECT abs(score - wdc.log_density('wf_flow', z, '{"flux": 3}'::jsonb)) < 1e-9
	                FROM scored WHERE id = 100),
	               'score equals wdc.log_density under the condition');
	RETURN NEXT lives_ok($q$UPDATE scored SET flux = 30 WHERE id = 100$q$, 'update of a condition');
	RETURN NEXT ok((SELECT abs(score - wdc.log_density('wf_flow', z, '{"flux": 30}'::jsonb)) < 1e-9
	                FROM scored WHERE id = 100),
	               'condition change rescores');
END
$$;
SET client_min_messages = warning;
SELECT * FROM pg_temp.flow_checks();

SELECT * FROM finish();
ROLLBACK;
