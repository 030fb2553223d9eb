#!/usr/bin/env bash
# Runs every libFuzzer target of a fuzz build (fuzz/CMakeLists.txt) for SECONDS each.
#   scripts/fuzz.sh BUILD_DIR [SECONDS] [TARGET...]
# Corpora grow in BUILD_DIR/corpus/<target> (kept between runs); seeds come from the
# repository (fixture model.json files, fixture JPEGs, OpenCV's sample PNGs). A crash leaves
# its input in BUILD_DIR/artifacts/ and fails the run. Longer runs:
# docs/how-to/sanitizers-and-fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:?usage: scripts/fuzz.sh BUILD_DIR [SECONDS] [TARGET...]}
seconds=${2:-30}
shift $(( $# >= 2 ? 2 : 1 ))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(model-json stages image-probe)

seeds=$build/seeds
rm -rf "$seeds"
mkdir -p "$seeds/model-json" "$seeds/image-probe" "$seeds/stages" "$build/artifacts"
for f in tests/data/detectron2/*/model.json; do
  cp "$f" "$seeds/model-json/$(basename "$(dirname "$f")").json"
done
for f in tests/data/detectron2/*/cases/*/image.jpg; do
  cp "$f" "$seeds/image-probe/$(basename "$(dirname "$f")").jpg"
done
for f in /usr/share/doc/opencv-doc/examples/data/{box,chessboard,gradient}.png; do
  if [ -f "$f" ]; then cp "$f" "$seeds/image-probe/"; fi
done

status=0
for t in "${targets[@]}"; do
  exe=$build/bin/rcnn-fuzz-$t
  [ -x "$exe" ] || { echo "fuzz: $exe not built" >&2; exit 1; }
  corpus=$build/corpus/$t
  mkdir -p "$corpus"
  extra=()
  if [ -f "fuzz/$t.dict" ]; then extra+=("-dict=fuzz/$t.dict"); fi
  # Inputs up to 8 KiB: the fixture model.json files are ~3 KiB, the seed images larger
  # (they are then cut, which exercises the truncation checks).
  echo "fuzz: $t for ${seconds}s" >&2
  if ! "$exe" "$corpus" "$seeds/$t" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" \
      "${extra[@]}" > "$build/$t.log" 2>&1; then
    tail -n 60 "$build/$t.log" >&2
    echo "fuzz: $t FAILED (input in $build/artifacts/)" >&2
    status=1
  else
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$build/$t.log" | tr '\n' ' ' >&2
    echo "($(grep -oE 'cov: [0-9]+' "$build/$t.log" | tail -n1))" >&2
  fi
done
exit $status
