#!/usr/bin/env bash
# What the session's GPU-machine calls ran, one function each; output under $OUT (the device tool's).
# Wheels the image lacks (jsonschema and its dependencies, polygraphy) travel in .whl/.
#   RUNS=3 bash scripts/gpu.sh drill                      # the gate drill (scripts/gate_drill.py): runs 1-3 of
#                                                         # each variant (unchanged, device-, host-slowed),
#                                                         # interleaved, into $DRILL_DIR (/tmp/drill)
#   START=4 RUNS=3 RESUME=.drill bash scripts/gpu.sh drill  # the next chunk; RESUME: a folder (carried) holding
#                                                         # what earlier chunks returned, for a fresh machine
# After every run's chunk the drill folder (runs, calibrations, log) is copied to $OUT/drill, so what
# finished comes back even when the call times out; copy it into the RESUME folder before the next call.
#   bash scripts/gpu.sh tests                             # the README's test command, timed
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PERFSUITE_WEIGHTS=random PYTHONUNBUFFERED=1
export PERFSUITE_CACHE_DIR=/tmp/perfsuite-cache
{ date -u; nvidia-smi; lscpu | head -20
  python3 -c "import sys, torch; print(sys.version); print(torch.__version__, torch.version.cuda, torch.backends.cudnn.version())"
  python3 -m pip list 2>/dev/null | grep -iE "^(pytest|onnx|nvidia-ml|scipy|numpy|psutil|tqdm)"; } > "$OUT/env.txt" 2>&1

drill() {
    local folder="${DRILL_DIR:-/tmp/drill}" start="${START:-1}" runs="${RUNS:-3}" index
    mkdir -p "$folder/runs" "$OUT/drill"
    if [ -n "${RESUME:-}" ] && [ -d "$RESUME" ]; then  # a fresh machine: earlier chunks' runs and calibrations
        cp -rn "$RESUME"/. "$folder"/
    fi
    SECONDS=0
    for ((index = start; index < start + runs; index++)); do
        if [ "$SECONDS" -ge "${DRILL_S:-480}" ]; then echo "gate drill: stopped before run $index (DRILL_S)"; break; fi
        timeout -s INT "$(( ${DRILL_S:-480} - SECONDS + 30 ))" python3 scripts/gate_drill.py record "$folder" \
            --start "$index" --runs 1 --variants "${VARIANTS:-base,slowed,host-slowed}" -- \
            --benchmark-max-time "${MAX_TIME:-0.3}" -q --durations=20 >> "$OUT/drill-$start.log" 2>&1
        cp -r "$folder"/. "$OUT/drill"/  # after every chunk: the machine may be gone before the next call
    done
    grep "gate drill" "$OUT/drill-$start.log"
    if [ -n "${FINISH:-}" ]; then tar czf "$OUT/drill.tgz" -C "$(dirname "$folder")" "$(basename "$folder")"; fi
}

tests() {
    SECONDS=0
    timeout -s INT "${TESTS_S:-330}" python3 -m pytest tests -q -p no:cacheprovider --durations=25 \
        --junitxml="$OUT/tests.xml" --benchmark-json="$OUT/tests-benchmarks.json" > "$OUT/tests.log" 2>&1
    echo "pytest exit $? after $SECONDS s" | tee -a "$OUT/tests.log"
    tail -3 "$OUT/tests.log"
}

"$1"
