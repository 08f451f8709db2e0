#!/usr/bin/env bash
# Build the training set of the reference VAE (models/README.md) from the
# real frames that scripts/fetch-data --all downloads into data/real/.
#
#   tools/make_cutouts.sh [OUTDIR]       default OUTDIR: data/vae
#
# Steps:
#   1. build tools/make_cutouts.c against wdc's core (src/core, src/fits);
#   2. for each frame below, write the chosen HDU and plane as a plain 2-D
#      image and run source-extractor on it to find sources (positions only:
#      the pixels themselves are read again by wdc);
#   3. keep at most CAP sources per frame, brightest first (FLUX_AUTO), and
#      drop those flagged saturated or truncated (FLAGS >= 4);
#   4. cut SIZE x SIZE windows around them and preprocess them with wdc's
#      core (make_cutouts), so the training inputs are the arrays wdc.encode
#      computes in the database.
# OUTDIR receives raw.f32, input.f32, index.tsv (see tools/make_cutouts.c),
# positions.tsv and preprocessing.json, the options the model declares.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-data/vae}
size=32
py=/usr/bin/python3

# Preprocessing, identical for every survey: fill NaN with the median, clip
# to the 0.5th and 99.5th percentiles of the cutout, scale to [0, 1].  Clip
# and min-max are unit-free, so counts, Jy/beam and calibrated fluxes of the
# mixed frames all land on the same scale.  width and height make
# wdc.encode accept cutouts of any size (resized by area averaging); on
# SIZE x SIZE cutouts that step changes nothing.
preprocessing=(nan_fill=median width=$size height=$size resize=area
	clip_low=0.5 clip_high=99.5 normalize=minmax)

# name, hdu, plane, detection threshold (sigma), cap
frames=(
	"hst_acs_47tuc.fits 1 0 5 2500"
	"hst_wfpc2_omegacen.fits 0 1 5 600"
	"hst_wfpc2_omegacen.fits 0 2 5 600"
	"hst_wfpc2_omegacen.fits 0 3 5 600"
	"hst_wfpc2_omegacen.fits 0 4 5 600"
	"vlt_isaac.fits 0 0 5 2500"
	"saao_uint16.fits 0 0 5 800"
	"m51_ccd.fits 0 0 5 600"
	"kpno_m51.fits 0 0 5 400"
	"wfpc2_m51.fits.gz 0 0 5 400"
	"dss_test1.fits 0 0 3 300"
	"dss_test2.fits 0 0 3 300"
	"dss_crab.fits 0 0 3 300"
	"dss_table.fits.gz 0 0 3 200"
	"cfht_megaprime.fits 0 0 3 200"
	"ukidss_zpn.fits 1 0 3 600"
	"spitzer_sip.fits 0 0 3 200"
	"magpis_sin.fits 0 0 3 300"
	"first_sin.fits 0 0 3 50"
	"xmm_mos1.fits 0 0 3 400"
	"fermi_car.fits.gz 1 0 3 300"
)

for f in "${frames[@]}"; do
	set -- $f
	if [ ! -f "data/real/$1" ]; then
		echo "make_cutouts.sh: data/real/$1 is missing; run scripts/fetch-data --all" >&2
		exit 1
	fi
done

mkdir -p "$out" build/tools
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. the cutout program, compiled with the core's sources
gcc -O2 -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Isrc -o build/tools/make_cutouts \
	tools/make_cutouts.c src/core/*.c src/fits/*.c \
	-lcfitsio -lwcs -lpng16 -lz -lm

# 2-3. source positions
printf 'X_IMAGE\nY_IMAGE\nFLAGS\nFLUX_AUTO\n' > "$work/sex.param"
: > "$out/positions.tsv"
i=0
for f in "${frames[@]}"; do
	set -- $f
	name=$1 hdu=$2 plane=$3 thresh=$4 cap=$5
	i=$((i + 1))
	det="$work/det$i.fits"
	"$py" - "data/real/$name" "$hdu" "$plane" "$det" <<-'EOF'
		import sys
		import numpy as np
		from astropy.io import fits
		path, hdu, plane, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
		data = fits.getdata(path, hdu).astype(np.float32)
		data = data.reshape(-1, data.shape[-2], data.shape[-1])[max(plane, 1) - 1]
		fits.writeto(out, np.nan_to_num(data, nan=float(np.nanmedian(data))), overwrite=True)
	EOF
	(cd "$work" && source-extractor "det$i.fits" -CATALOG_NAME "cat$i.txt" \
		-CATALOG_TYPE ASCII -PARAMETERS_NAME sex.param -FILTER N \
		-DETECT_THRESH "$thresh" -ANALYSIS_THRESH "$thresh" -DETECT_MINAREA 5 \
		-CHECKIMAGE_TYPE NONE -VERBOSE_TYPE QUIET) 2>/dev/null
	sort -g -r -k4 "$work/cat$i.txt" | awk -v cap="$cap" -v p="data/real/$name" \
		-v hdu="$hdu" -v plane="$plane" -v OFS='\t' \
		'$3 < 4 && n < cap { print p, hdu, plane, $1, $2; n++ }' >> "$out/positions.tsv"
	echo "make_cutouts.sh: $name hdu $hdu plane $plane: $(wc -l < "$work/cat$i.txt") sources"
done

# 4. cutouts through wdc's core
build/tools/make_cutouts "$size" "$out" "${preprocessing[@]}" < "$out/positions.tsv"
"$py" - "$out/preprocessing.json" "$size" "${preprocessing[@]}" <<-'EOF'
	import json
	import sys
	opts = {}
	for kv in sys.argv[3:]:
	    k, v = kv.split("=", 1)
	    try:
	        opts[k] = float(v) if "." in v else int(v)
	    except ValueError:
	        opts[k] = v
	json.dump({"size": int(sys.argv[2]), "preprocessing": opts}, open(sys.argv[1], "w"), indent=1)
EOF
echo "make_cutouts.sh: wrote $out"
