#!/usr/bin/env bash
# One GPU-machine call: the README's test command on the GPU, timed, its log and JUnit report under $OUT.
# Wheels the image lacks (jsonschema and its dependencies, polygraphy) travel in .whl/.
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PERFSUITE_WEIGHTS=random PYTHONUNBUFFERED=1
export PERFSUITE_CACHE_DIR=/tmp/perfsuite-cache
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import sys, torch; print(sys.version); print(torch.__version__, torch.version.cuda, torch.backends.cudnn.version())"
  python3 -m pip list 2>/dev/null | grep -iE "^(pytest|onnx|nvidia-ml|scipy|jsonschema|polygraphy|tqdm)"; } > "$OUT/env.txt" 2>&1
SECONDS=0
timeout -s INT "${TESTS_S:-330}" python3 -m pytest tests -q -p no:cacheprovider --durations=25 \
    --junitxml="$OUT/tests.xml" --benchmark-json="$OUT/tests-benchmarks.json" > "$OUT/tests.log" 2>&1
echo "pytest exit $? after $SECONDS s" | tee -a "$OUT/tests.log"
tail -3 "$OUT/tests.log"
