#!/usr/bin/env bash
# One GPU-machine call: record the gate drill on the default tier (scripts/gate_drill.py) under $OUT.
# Wheels the image lacks travel in .whl/ (see docs/results/README.md). Usage: bash scripts/gpu_drill.sh
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PERFSUITE_WEIGHTS=random PYTHONUNBUFFERED=1
export PERFSUITE_CACHE_DIR=/tmp/perfsuite-cache
mkdir -p "$OUT/drill"
{ date -u; nvidia-smi; lscpu | head -20; python3 -c "import sys, torch; print(sys.version); print(torch.__version__, torch.version.cuda, torch.backends.cudnn.version())"
  python3 -m pip list 2>/dev/null | grep -iE "^(pytest|onnx|nvidia-ml|scipy|jsonschema|numpy|psutil)"; } > "$OUT/env.txt" 2>&1
timeout -s INT "${DRILL_S:-520}" python3 scripts/gate_drill.py record "$OUT/drill" --runs "${RUNS:-10}" -- \
    --benchmark-max-time "${MAX_TIME:-0.5}" -q > "$OUT/drill.log" 2>&1
grep "gate drill" "$OUT/drill.log"
tar czf "$OUT/drill.tgz" -C "$OUT" drill && rm -rf "$OUT/drill"
