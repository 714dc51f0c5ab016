#!/usr/bin/env bash
# What the session's GPU-machine calls ran, one function each; output under $OUT (the device tool's).
# Wheels the image lacks (jsonschema and its dependencies, polygraphy) travel in .whl/.
#   RUNS=7 bash scripts/gpu.sh drill                      # the gate drill (scripts/gate_drill.py) into
#   START=8 RUNS=3 FINISH=1 bash scripts/gpu.sh drill     # $DRILL_DIR (/tmp/drill), added to on a warm machine
#   bash scripts/gpu.sh tests                             # the README's test command, then the slow tier,
#                                                         # each timed (readme_tests, slow_tests: one each)
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

# timed LOG LIMIT_S COMMAND...: the command, when it started, its output, exit status and wall time in $OUT/LOG
timed() {
    local log="$OUT/$1" limit="$2" status
    shift 2
    { echo "command: $*"; echo "started: $(date -u '+%F %T UTC')"; } > "$log"
    SECONDS=0
    timeout -s INT "$limit" "$@" >> "$log" 2>&1
    status=$?
    echo "exit $status after $SECONDS s (limit $limit s): $*" | tee -a "$log"
    grep -E "^(=+ )?[0-9]+ (passed|failed)|(passed|failed|error).* in [0-9.]+s" "$log" | tail -2
}

readme_tests() {  # README: pytest tests (xdist workers, one per core: tests/conftest.py); must be <= 300 s
    timed tests.log "${TESTS_S:-330}" python3 -m pytest tests -p no:cacheprovider --durations=30 \
        --junitxml="$OUT/tests.xml"
}

slow_tests() {  # README: pytest tests -m slow (one process unless -n is given; 4 workers here)
    timed slow.log "${SLOW_S:-240}" python3 -m pytest tests -m slow -n "${SLOW_WORKERS:-4}" -p no:cacheprovider \
        --durations=30 --junitxml="$OUT/slow.xml"
}

tests() {
    readme_tests
    slow_tests
}

"$1"
