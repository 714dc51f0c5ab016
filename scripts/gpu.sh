#!/usr/bin/env bash
# What the session's GPU-machine calls ran, one function each; output under $OUT (the device tool's).
# Wheels the image lacks (jsonschema and its dependencies, polygraphy) travel in .whl/.
#   RUNS=3 bash scripts/gpu.sh drill                      # the gate drill (scripts/gate_drill.py): runs 1-3 of
#                                                         # each variant (unchanged, device-, host-slowed),
#                                                         # interleaved, into $DRILL_DIR (/tmp/drill)
#   START=4 RUNS=3 RESUME=.drill bash scripts/gpu.sh drill  # the next chunk; RESUME: a folder (carried) holding
#                                                         # what earlier chunks returned, for a fresh machine
# After every run the drill folder (runs, calibrations, log) is packed into $OUT/drill.tgz (one file: the
# device tool returns at most 8), so what finished comes back even when the call times out; unpack it
# into the RESUME folder before the next call.
#   bash scripts/gpu.sh readme_tests slow_tests           # the README's test command, then the slow tier,
#                                                         # each timed (steps run in the order given)
#   bash scripts/gpu.sh multigpu                          # issue 18 on a 2+ GPU machine (nvidia-h100-x2):
#                                                         # every figure of a cuda:1 run reads GPU 1
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PERFSUITE_WEIGHTS=random PYTHONUNBUFFERED=1
export PERFSUITE_CACHE_DIR=/tmp/perfsuite-cache
# The device copy's .git may be older than its working tree (runs' commit_info then names a stale HEAD):
# name the code with CODE_COMMIT=$(git rev-parse --short HEAD) in the call, and say if the tree was dirty.
{ date -u; echo "code: ${CODE_COMMIT:-not given (set CODE_COMMIT)}"; nvidia-smi; lscpu | head -20
  python3 -c "import sys, torch; print(sys.version); print(torch.__version__, torch.version.cuda, torch.backends.cudnn.version())"
  python3 -m pip list 2>/dev/null | grep -iE "^(pytest|onnx|nvidia-ml|scipy|numpy|psutil|tqdm)"; } > "$OUT/env.txt" 2>&1

drill() {
    local folder="${DRILL_DIR:-/tmp/drill}" start="${START:-1}" runs="${RUNS:-3}" index
    mkdir -p "$folder/runs"
    if [ -n "${RESUME:-}" ] && [ -d "$RESUME" ]; then  # a fresh machine: earlier chunks' runs and calibrations
        cp -rn "$RESUME"/. "$folder"/
    fi
    SECONDS=0
    for ((index = start; index < start + runs; index++)); do
        if [ "$SECONDS" -ge "${DRILL_S:-480}" ]; then echo "gate drill: stopped before run $index (DRILL_S)"; break; fi
        timeout -s INT "$(( ${DRILL_S:-480} - SECONDS + 30 ))" python3 scripts/gate_drill.py record "$folder" \
            --start "$index" --runs 1 --variants "${VARIANTS:-base,slowed,host-slowed}" -- \
            --benchmark-max-time "${MAX_TIME:-0.3}" -q --durations=20 >> "$OUT/drill-$start.log" 2>&1
        # after every run: the machine may be gone before the next call
        tar czf "$OUT/drill.tgz.part" -C "$folder" . && mv "$OUT/drill.tgz.part" "$OUT/drill.tgz"
    done
    grep "gate drill" "$OUT/drill-$start.log"
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

slow_tests() {  # README: pytest tests -m slow (one process unless -n is given; 4 workers here); about 5 min
    # SLOW_K: a pytest -k expression to run part of the tier (e.g. row_independence) when time is short
    local select=(); [ -n "${SLOW_K:-}" ] && select=(-k "$SLOW_K")
    timed slow.log "${SLOW_S:-330}" python3 -m pytest tests -m slow -n "${SLOW_WORKERS:-4}" -p no:cacheprovider \
        ${select[@]+"${select[@]}"} --durations=30 --junitxml="$OUT/slow.xml"
}

tests() {
    readme_tests
    slow_tests
}

device_tests() {
    # The GPU tests of timing and device time (issue 14), quickly, before a drill.
    SECONDS=0
    timeout -s INT "${DEVICE_TESTS_S:-200}" python3 -m pytest tests/test_device_time.py tests/test_timing.py \
        -m "gpu or slow or not gpu" -p no:cacheprovider -q -rs --durations=10 > "$OUT/device-tests.log" 2>&1
    echo "device tests: exit $? after $SECONDS s" | tee -a "$OUT/device-tests.log"
    tail -12 "$OUT/device-tests.log"
}

default_tier() {
    # One default-tier run, timed (issue 14: <= 60 s on the GPU), with its JSON for docs/results.
    SECONDS=0
    echo "\$ pytest benchmarks --benchmark-json default-tier.json   ($(date -u))" > "$OUT/default-tier.log"
    python3 -m pytest benchmarks -p no:cacheprovider --benchmark-json "$OUT/default-tier.json" \
        >> "$OUT/default-tier.log" 2>&1
    echo "pytest benchmarks: exit $? after $SECONDS s" | tee -a "$OUT/default-tier.log"
}

multigpu() {
    # tests/test_multi_gpu.py's GPU tests: a cuda:0 run records nvidia-smi's UUID and PCI bus id; the default
    # tier on cuda:1 (quiet, then with a matrix-product loop on cuda:0, then as cuda:0 under
    # CUDA_VISIBLE_DEVICES=1) reads every figure from GPU 1; TensorRT, CUDA graphs and ONNX Runtime's GPU
    # providers build and run on cuda:1. On one GPU the two-GPU tests skip, saying so.
    nvidia-smi --query-gpu=index,uuid,pci.bus_id,name --format=csv > "$OUT/multigpu-gpus.csv" 2>&1
    SECONDS=0
    # MULTIGPU_K: a pytest -k expression to run part of them per call (e.g. two_gpus_every) within 10 minutes
    local select=(); [ -n "${MULTIGPU_K:-}" ] && select=(-k "$MULTIGPU_K")
    timeout -s INT "${MULTIGPU_S:-560}" python3 -m pytest tests/test_multi_gpu.py -m gpu ${select[@]+"${select[@]}"} -s -v -rs \
        -p no:cacheprovider --junitxml="$OUT/multigpu.xml" > "$OUT/multigpu.log" 2>&1
    echo "pytest exit $? after $SECONDS s" | tee -a "$OUT/multigpu.log"
    tail -4 "$OUT/multigpu.log"
}

python3 -c "import pytest_benchmark, importlib.metadata as m; print('pytest-benchmark', m.version('pytest-benchmark'))" \
    >> "$OUT/env.txt" 2>&1
for step in "$@"; do "$step"; done
