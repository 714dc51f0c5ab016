#!/usr/bin/env bash
# What the session's GPU-machine calls ran, one function each; output under $OUT (the device tool's).
# Wheels the image lacks (jsonschema and its dependencies, polygraphy) travel in .whl/.
#   RUNS=7 bash scripts/gpu.sh drill                      # the gate drill (scripts/gate_drill.py) into
#   START=8 RUNS=3 FINISH=1 bash scripts/gpu.sh drill     # $DRILL_DIR (/tmp/drill), added to on a warm machine
#   bash scripts/gpu.sh tests                             # the README's test command, timed
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

"$1"
