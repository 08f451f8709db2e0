#!/usr/bin/env bash
# latent values survive COPY ... BINARY out and back in, and pg_dump of a
# table with a latent(n) column restored into a fresh database, bit for bit
# (compared through their text form, which is shortest round-trip).
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"; dropdb --if-exists wdc_dump_src; dropdb --if-exists wdc_dump_dst' EXIT

psql_q() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }

createdb wdc_dump_src
psql_q -d wdc_dump_src <<'SQL'
CREATE EXTENSION wdc;
CREATE TABLE cat (id int PRIMARY KEY, z latent(8), zt latent);
SELECT setseed(0.42);
INSERT INTO cat
SELECT i,
       (SELECT array_agg(((random() - 0.5) * 10 ^ (random() * 20 - 10))::real) FROM generate_series(1, 8) j WHERE i > 0),
       ('[' || i || ',0.1,-3.4028235e38,1e-45]@' || lpad(to_hex(i * 7919), 8, '0'))::latent
FROM generate_series(1, 500) i;
SQL

checksum() { psql_q -d "$1" -c "SELECT md5(string_agg(id || ':' || z::text || ':' || zt::text, ',' ORDER BY id)) FROM cat"; }
want=$(checksum wdc_dump_src)

# COPY BINARY out and back into a copy of the table
psql_q -d wdc_dump_src -c "\\copy cat TO '$work/cat.bin' WITH (FORMAT binary)"
psql_q -d wdc_dump_src -c "CREATE TABLE cat2 (LIKE cat)"
psql_q -d wdc_dump_src -c "\\copy cat2 FROM '$work/cat.bin' WITH (FORMAT binary)"
got=$(psql_q -d wdc_dump_src -c "SELECT md5(string_agg(id || ':' || z::text || ':' || zt::text, ',' ORDER BY id)) FROM cat2")
if [ "$got" != "$want" ]; then
	echo "COPY BINARY round trip changed values: $got vs $want"
	exit 1
fi
# binary input enforces the typmod: latent(8) data into a latent(4) column
psql_q -d wdc_dump_src -c "CREATE TABLE cat4 (id int, z latent(4), zt latent)"
if psql_q -d wdc_dump_src -c "\\copy cat4 FROM '$work/cat.bin' WITH (FORMAT binary)" 2>"$work/err"; then
	echo "COPY BINARY into latent(4) accepted 8-dimensional values"
	exit 1
fi
grep -q 'expected 4 dimensions, not 8' "$work/err" || { cat "$work/err"; exit 1; }

# pg_dump and restore into a fresh database
pg_dump -Fc -f "$work/dump" wdc_dump_src
createdb wdc_dump_dst
pg_restore -d wdc_dump_dst --exit-on-error "$work/dump"
got=$(checksum wdc_dump_dst)
if [ "$got" != "$want" ]; then
	echo "pg_dump/pg_restore changed values: $got vs $want"
	exit 1
fi
coltype=$(psql_q -d wdc_dump_dst -c "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'cat'::regclass AND attname = 'z'")
[ "$coltype" = "latent(8)" ] || { echo "restored column type is $coltype"; exit 1; }
echo "latent dump and binary round trips: 500 rows identical"
