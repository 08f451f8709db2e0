#!/usr/bin/env bash
# The main job end to end on the small real frames.  Runs scripts/demo
# --small against the server named by the PG* environment, in a database
# of its own, and checks its tables, report and HTML page.  Then runs every
# SQL block of docs/TOUR.md on the demo's tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
db=wdc_demo_small
out=$(mktemp -d)
dropdb --if-exists "$db" 2>/dev/null
createdb "$db"
trap 'dropdb --if-exists "$db" >/dev/null 2>&1 || true; rm -rf "$out"' EXIT
export PGDATABASE=$db

fail() { echo "FAIL: $*" >&2; exit 1; }
q() { psql -X -q -At -v ON_ERROR_STOP=1 -c "$1"; }

start=$SECONDS
scripts/demo --small --no-build --out "$out/html" >"$out/report.txt" 2>&1 ||
	{ cat "$out/report.txt"; fail "scripts/demo --small failed"; }
echo "ok - scripts/demo --small finished in $((SECONDS - start)) s"

# every frame contributed sources and every source is encoded
frames=$(q "SELECT count(*) FROM wdc_demo.frames")
[ "$frames" -eq 5 ] || fail "expected 5 frames, got $frames"
rows=$(q "SELECT count(*) FROM wdc_demo.sources")
[ "$rows" -ge 100 ] || fail "only $rows sources"
missing=$(q "SELECT count(*) FROM wdc_demo.sources WHERE z IS NULL")
[ "$missing" -eq 0 ] || fail "$missing sources without a latent"
echo "ok - $rows sources from $frames frames, all encoded"
q "SELECT bool_and(latent_fingerprint(z) = (SELECT fingerprint FROM wdc.models WHERE name = 'wdc_demo_vae' AND current))
   FROM wdc_demo.sources" | grep -qx t || fail "latents do not carry the encoder's fingerprint"
echo "ok - latents carry the encoder's fingerprint"

# cutouts are FITS files of the model's input size
size=$(q "SELECT DISTINCT array_length(wdc.fits_image(cutout), 1) || 'x' || array_length(wdc.fits_image(cutout), 2)
          FROM wdc_demo.sources")
[ "$size" = 32x32 ] || [ "$size" = 16x16 ] || fail "cutout sizes: $size"
echo "ok - cutouts are $size FITS images"

# scores, when the flow functions are installed
if [ "$(q "SELECT to_regproc('wdc.train_flow') IS NOT NULL")" = t ]; then
	unscored=$(q "SELECT count(*) FROM wdc_demo.sources WHERE log_density IS NULL OR pvalue IS NULL OR r IS NULL")
	[ "$unscored" -eq 0 ] || fail "$unscored sources without scores"
	grep -q "20 strongest outliers" "$out/report.txt" || fail "report has no outlier table"
	grep -q "neighbours in residual space" "$out/report.txt" || fail "report has no residual neighbours"
	echo "ok - every source scored; report lists outliers and residual neighbours"
	q "SELECT bool_and(pvalue BETWEEN 0 AND 1) FROM wdc_demo.sources" | grep -qx t || fail "p-value out of [0, 1]"
	echo "ok - p-values within [0, 1]"
fi
grep -q "neighbours in latent space" "$out/report.txt" || fail "report has no latent neighbours"
grep -q "timings per stage" "$out/report.txt" || fail "report has no timings"
echo "ok - report has timings and latent neighbours"

# the HTML page inlines decodable PNG cutouts
[ -s "$out/html/index.html" ] || fail "no HTML page"
n=0
while read -r b64; do
	head -c 8 < <(printf '%s' "$b64" | base64 -d 2>/dev/null) | od -An -tx1 | tr -d ' \n' |
		grep -qx 89504e470d0a1a0a || fail "an inlined image is not a PNG"
	n=$((n + 1))
done < <(grep -o 'data:image/png;base64,[^"]*' "$out/html/index.html" | cut -d, -f2)
[ "$n" -ge 9 ] || fail "HTML page has $n images"
echo "ok - HTML page has $n PNG cutouts"

# the tour runs as written
if [ "$(q "SELECT to_regproc('wdc.train_flow') IS NOT NULL")" = t ]; then
	awk '/^```sql$/ { f = 1; next } /^```$/ { f = 0 } f' docs/TOUR.md >"$out/tour.sql"
	psql -X -q -v ON_ERROR_STOP=1 -c 'SET client_min_messages = warning' -f "$out/tour.sql" >"$out/tour.out" 2>&1 ||
		{ cat "$out/tour.out"; fail "a statement of docs/TOUR.md failed"; }
	echo "ok - docs/TOUR.md runs ($(grep -c '^' "$out/tour.sql") lines of SQL)"
fi
