#!/usr/bin/env bash
# What the session's GPU-machine calls ran, one function each; output under $OUT (the device tool's).
# Wheels the image lacks (jsonschema and its dependencies, polygraphy) travel in .whl/.
#   RUNS=7 bash scripts/gpu.sh drill                      # the gate drill (scripts/gate_drill.py) into
#   START=8 RUNS=3 FINISH=1 bash scripts/gpu.sh drill     # $DRILL_DIR (/tmp/drill), added to on a warm machine
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
    local folder="${DRILL_DIR:-/tmp/drill}"
    mkdir -p "$folder"
    timeout -s INT "${DRILL_S:-520}" python3 scripts/gate_drill.py record "$folder" --start "${START:-1}" \
        --runs "${RUNS:-10}" -- --benchmark-max-time "${MAX_TIME:-0.3}" -q --durations=20 \
        > "$OUT/drill-${START:-1}.log" 2>&1
    grep "gate drill" "$OUT/drill-${START:-1}.log"
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
