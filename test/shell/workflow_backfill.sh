#!/usr/bin/env bash
# wdc.backfill under interruption and concurrency, against the server named
# by the PG* environment:
#   1. a job cancelled by statement_timeout, then one cancelled from a second
#      session (pg_cancel_backend), then resumed: every row ends encoded
#      exactly once;
#   2. two jobs on disjoint key ranges run at the same time, then two on the
#      same range: every row is encoded exactly once;
#   3. on_error stop: the job stops at the bad row, keeps the batches before
#      it and names the row;
#   4. images of two sizes in one batch are encoded batched, and a failing
#      batch is reported before its rows are redone one at a time.
# A slow BEFORE UPDATE trigger (5 ms per row) stretches jobs to a few
# seconds, so cancellations land mid-job.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
db=wdc_wf_backfill
dropdb --if-exists "$db" 2>/dev/null
createdb "$db"
trap 'dropdb --if-exists "$db" >/dev/null 2>&1 || true' EXIT

q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { # $1 description, $2 expected, $3 actual
	if [ "$2" != "$3" ]; then
		fail "$1: expected '$2', got '$3'"
	fi
	echo "ok - $1"
}

n=300
q <<SQL
SET client_min_messages = warning;
CREATE EXTENSION wdc;
\o /dev/null
SELECT wdc.load_model('tiny_enc', pg_read_binary_file('$root/test/fixtures/models/tiny_encoder.onnx'));
\o
CREATE TABLE cat (id int PRIMARY KEY, cutout real[], z latent);
INSERT INTO cat SELECT i, ARRAY(SELECT ARRAY(SELECT (sin(i * 0.37 * r + c))::real
                                FROM generate_series(1, 16) c) FROM generate_series(1, 16) r)
FROM generate_series(1, $n) i;
-- every committed latent write is logged
CREATE TABLE writes (id int, z latent);
CREATE FUNCTION slow_log() RETURNS trigger LANGUAGE plpgsql SET search_path = public AS \$\$
BEGIN
	IF NEW.z IS DISTINCT FROM OLD.z THEN
		PERFORM pg_sleep(0.005);
		INSERT INTO writes VALUES (NEW.id, NEW.z);
	END IF;
	RETURN NEW;
END
\$\$;
CREATE TRIGGER slow_log BEFORE UPDATE ON cat FOR EACH ROW EXECUTE FUNCTION slow_log();
SQL

# Check that every row is encoded, each written exactly once since the
# last reset.
check_complete() { # $1 label
	expect "$1: rows encoded" "$n" "$(q -c "SELECT count(*) FROM cat WHERE z = wdc.encode('tiny_enc', cutout)")"
	expect "$1: rows written" "$n" "$(q -c "SELECT count(*) FROM writes")"
	expect "$1: no row written twice" "0" "$(q -c "SELECT count(*) FROM (SELECT id FROM writes GROUP BY id HAVING count(*) > 1) d")"
}

# --- 1. interrupt and resume
if q -c "SET statement_timeout = '600ms'" \
	-c "CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{\"batch_size\": 10}')" 2>/tmp/wdc_wf_err.$$; then
	fail "backfill finished within the statement timeout"
fi
grep -q "canceling statement due to statement timeout" /tmp/wdc_wf_err.$$ ||
	fail "unexpected error: $(cat /tmp/wdc_wf_err.$$)"
rm -f /tmp/wdc_wf_err.$$
done1=$(q -c "SELECT count(*) FROM cat WHERE z IS NOT NULL")
[ "$done1" -gt 0 ] && [ "$done1" -lt "$n" ] || fail "timeout left $done1 of $n rows encoded"
echo "ok - statement_timeout stopped the job after $done1 rows"
expect "interrupted job: rows written match rows encoded" "$done1" "$(q -c "SELECT count(*) FROM writes")"
expect "interrupted job: progress committed per batch" "$done1" "$(q -c "SELECT rows_done FROM wdc.jobs ORDER BY job DESC LIMIT 1")"
expect "interrupted job: state stays running" "running" "$(q -c "SELECT state FROM wdc.jobs ORDER BY job DESC LIMIT 1")"

# cancel from a second session once the new job has made progress (the
# interrupted job above still reads "running")
last_job=$(q -c "SELECT max(job) FROM wdc.jobs")
q -c "CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{\"batch_size\": 10}')" 2>/dev/null &
job_pid=$!
for _ in $(seq 1 100); do
	got=$(q -c "SELECT coalesce(max(rows_done), 0) FROM wdc.jobs WHERE job > $last_job AND state = 'running'")
	[ "$got" -ge 20 ] && break
	sleep 0.1
done
expect "cancel: one backend cancelled" "t" "$(q -c "SELECT bool_or(pg_cancel_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'CALL wdc.backfill%' AND pid <> pg_backend_pid()")"
if wait "$job_pid"; then
	fail "cancelled backfill reported success"
fi
done2=$(q -c "SELECT count(*) FROM cat WHERE z IS NOT NULL")
[ "$done2" -gt "$done1" ] && [ "$done2" -lt "$n" ] || fail "cancel left $done2 rows encoded (before: $done1)"
echo "ok - pg_cancel_backend stopped the second job at $done2 rows"

q -c "SET client_min_messages = warning" -c "CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{\"batch_size\": 10}')"
expect "resumed job: counts only the rest" "$((n - done2))" "$(q -c "SELECT rows_total FROM wdc.jobs ORDER BY job DESC LIMIT 1")"
expect "resumed job: state" "done" "$(q -c "SELECT state FROM wdc.jobs ORDER BY job DESC LIMIT 1")"
check_complete "resume"

# --- 2. concurrent jobs
q -c "ALTER TABLE cat DISABLE TRIGGER slow_log" -c "UPDATE cat SET z = NULL" \
	-c "ALTER TABLE cat ENABLE TRIGGER slow_log" -c "TRUNCATE writes"
q -c "SET client_min_messages = warning" \
	-c "CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{\"batch_size\": 10, \"key_max\": 150}')" &
a=$!
q -c "SET client_min_messages = warning" \
	-c "CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{\"batch_size\": 10, \"key_min\": 151}')" &
b=$!
wait "$a" || fail "first range job failed"
wait "$b" || fail "second range job failed"
expect "disjoint ranges: both jobs done" "done done" "$(q -c "SELECT string_agg(state, ' ') FROM (SELECT state FROM wdc.jobs ORDER BY job DESC LIMIT 2) j")"
expect "disjoint ranges: jobs overlapped in time" "t" "$(q -c "SELECT max(started) < min(updated) FROM (SELECT * FROM wdc.jobs ORDER BY job DESC LIMIT 2) j")"
check_complete "disjoint ranges"

q -c "ALTER TABLE cat DISABLE TRIGGER slow_log" -c "UPDATE cat SET z = NULL" \
	-c "ALTER TABLE cat ENABLE TRIGGER slow_log" -c "TRUNCATE writes"
q -c "SET client_min_messages = warning" -c "CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{\"batch_size\": 10}')" &
a=$!
q -c "SET client_min_messages = warning" -c "CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{\"batch_size\": 10}')" &
b=$!
wait "$a" || fail "first overlapping job failed"
wait "$b" || fail "second overlapping job failed"
check_complete "same range"

# --- 3. on_error stop
q -c "ALTER TABLE cat DISABLE TRIGGER slow_log" -c "UPDATE cat SET z = NULL" \
	-c "UPDATE cat SET cutout = ARRAY[[1,2],[3,4]]::real[] WHERE id = 155" \
	-c "ALTER TABLE cat ENABLE TRIGGER slow_log" -c "TRUNCATE writes"
if q -c "SET client_min_messages = warning" \
	-c "CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{\"batch_size\": 10}')" 2>/tmp/wdc_wf_err.$$; then
	fail "backfill with a bad row succeeded"
fi
grep -q "wdc.backfill job [0-9]* stopped at row id=155: image of 2 x 2 pixels" /tmp/wdc_wf_err.$$ ||
	fail "unexpected error: $(cat /tmp/wdc_wf_err.$$)"
rm -f /tmp/wdc_wf_err.$$
echo "ok - on_error stop names the row"
expect "stop: rows before the bad one are kept" "154" "$(q -c "SELECT count(*) FROM cat WHERE z IS NOT NULL")"
expect "stop: job state and error" "failed 155" "$(q -c "SELECT j.state || ' ' || e.row_key FROM wdc.jobs j JOIN wdc.job_errors e USING (job) ORDER BY job DESC LIMIT 1")"
q -c "UPDATE cat SET cutout = ARRAY(SELECT ARRAY(SELECT 0.5::real FROM generate_series(1, 16)) FROM generate_series(1, 16)) WHERE id = 155" \
	-c "SET client_min_messages = warning" -c "CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc', '{\"batch_size\": 10}')"
check_complete "after fixing the bad row"

# Inside BEGIN ... COMMIT the procedure cannot commit its batches, so it must
# raise SQLSTATE 25001 before encoding anything and leave no job.
jobs_before=$(q -c "SELECT count(*) FROM wdc.jobs")
err=$(q -v VERBOSITY=verbose -c "BEGIN" -c "CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc')" 2>&1 >/dev/null || true)
case "$err" in
	*"25001: wdc.backfill cannot run inside a transaction block"*) echo "ok - backfill inside BEGIN is rejected" ;;
	*) fail "backfill inside BEGIN: unexpected error: $err" ;;
esac
expect "backfill inside BEGIN leaves no job" "$jobs_before" "$(q -c "SELECT count(*) FROM wdc.jobs")"

# From a function the procedure cannot commit either: 2D000, and no job.
q -c "CREATE FUNCTION call_backfill() RETURNS void LANGUAGE plpgsql AS \$\$ BEGIN CALL wdc.backfill('cat', 'cutout', 'z', 'tiny_enc'); END \$\$"
err=$(q -v VERBOSITY=verbose -c "SELECT call_backfill()" 2>&1 >/dev/null || true)
case "$err" in
	*"2D000: wdc.backfill cannot run inside a function"*) echo "ok - backfill from a function is rejected" ;;
	*) fail "backfill from a function: unexpected error: $err" ;;
esac
expect "backfill from a function leaves no job" "$jobs_before" "$(q -c "SELECT count(*) FROM wdc.jobs")"

# --- 4. images of several sizes, resized by the model's preprocessing
# The reference encoder resizes every cutout to 32 x 32.  A real[] batch
# stacks only images of one size, so the job makes one wdc.encode_batch call
# per size in a batch.  It must not fall back to one row at a time.
q <<SQL
\o /dev/null
SELECT wdc.load_model('vae_mixed', pg_read_binary_file('$root/models/wdc_vae32_encoder.onnx'), '{}');
\o
CREATE TABLE mixed (id int PRIMARY KEY, cutout real[], z latent);
INSERT INTO mixed
SELECT i, ARRAY(SELECT ARRAY(SELECT (1 + sin(i * 0.37 * r + c))::real
                             FROM generate_series(1, s) c) FROM generate_series(1, s) r)
FROM generate_series(1, 240) i, LATERAL (SELECT CASE WHEN i % 7 = 0 THEN 20 ELSE 32 END) d(s);
SQL
out=$(q -c "CALL wdc.backfill('mixed', 'cutout', 'z', 'vae_mixed', '{\"batch_size\": 100}')" 2>&1)
case "$out" in
	*"one at a time"*) fail "mixed sizes: backfill fell back to single rows: $out" ;;
esac
echo "ok - mixed sizes: every batch encoded batched"
expect "mixed sizes: rows encoded" "240" "$(q -c "SELECT count(*) FROM mixed WHERE z IS NOT NULL")"
expect "mixed sizes: latents match wdc.encode within 1e-5" "t" \
	"$(q -c "SELECT max(abs(a - b)) < 1e-5 FROM mixed, unnest(z::real[], wdc.encode('vae_mixed', cutout)::real[]) u(a, b)")"
# a bad row still sends its batch to single rows, with a notice
q -c "UPDATE mixed SET z = NULL, cutout = CASE WHEN id = 50 THEN ARRAY[1, 2, 3]::real[] ELSE cutout END"
out=$(q -c "CALL wdc.backfill('mixed', 'cutout', 'z', 'vae_mixed', '{\"batch_size\": 100, \"on_error\": \"skip\"}')" 2>&1)
case "$out" in
	*"batch after key (start) failed"*"encoding its rows one at a time"*) echo "ok - a failing batch is reported before single rows" ;;
	*) fail "mixed sizes, bad row: no fallback notice: $out" ;;
esac
expect "mixed sizes, bad row: the others encoded" "239" "$(q -c "SELECT count(*) FROM mixed WHERE z IS NOT NULL")"
