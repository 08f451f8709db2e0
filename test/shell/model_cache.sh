#!/usr/bin/env bash
# A backend's model cache follows registry changes made by other sessions:
# a new current version is used at once, and a dropped version is an error
# even though the backend had it cached.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
enc="$root/test/fixtures/models/tiny_encoder.onnx"
db=wdc_model_cache
createdb "$db"
trap 'exec 3>&- 4<&- 2>/dev/null; dropdb --if-exists "$db"' EXIT

psql_q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }
psql_q -c "CREATE EXTENSION wdc"
psql_q -v f="$enc" <<'SQL'
SELECT wdc.load_model('m', pg_read_binary_file(:'f')) AS v1 \gset
CREATE TABLE img AS SELECT array_fill(0.5::real, ARRAY[16, 16]) AS pix;
UPDATE img SET pix[3][4] = 2;
SQL

# session A stays open; it reads one answer line per statement
coproc SESSION { psql -X -q -At -d "$db" 2>&1; }
exec 3>&"${SESSION[1]}" 4<&"${SESSION[0]}"
ask() {
	printf '%s\n' "$1" >&3
	IFS= read -r -t 60 line <&4
	printf '%s\n' "$line"
}

first=$(ask "SELECT wdc.encode('m', pix)::text FROM img;")
[ -n "$first" ] || { echo "session A returned nothing"; exit 1; }

# session B: a new version that returns the other output becomes current
psql_q -v f="$enc" >/dev/null <<'SQL'
SELECT wdc.load_model('m', pg_read_binary_file(:'f'), '{"output": "logvar"}');
SQL
second=$(ask "SELECT wdc.encode('m', pix)::text FROM img;")
want=$(psql_q -c "SELECT wdc.encode('m', pix)::text FROM img")
if [ "$second" = "$first" ] || [ "$second" != "$want" ]; then
	echo "session A did not pick up the new current version: $first / $second / $want"
	exit 1
fi

# session B drops version 1; session A had it cached
psql_q -c "SELECT wdc.drop_model('m', 1)" >/dev/null
third=$(ask "SELECT wdc.encode('m', 1, pix)::text FROM img;")
case "$third" in
	*'model "m" has no version 1'*) ;;
	*) echo "session A still used dropped version 1: $third"; exit 1 ;;
esac
printf '\\q\n' >&3
echo "model cache: new version used at once, dropped version rejected"
