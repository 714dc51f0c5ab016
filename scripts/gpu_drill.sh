#!/usr/bin/env bash
# GPU-machine calls for the gate drill (scripts/gate_drill.py). The drill folder lives on the device
# machine (DRILL_DIR, default /tmp/drill), so a second call on the still-warm machine can add runs
# (START=8 RUNS=3); FINISH=1 packs it into $OUT/drill.tgz. Wheels the image lacks travel in .whl/.
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PERFSUITE_WEIGHTS=random PYTHONUNBUFFERED=1
export PERFSUITE_CACHE_DIR=/tmp/perfsuite-cache
DRILL_DIR="${DRILL_DIR:-/tmp/drill}"
mkdir -p "$DRILL_DIR"
{ date -u; nvidia-smi; lscpu | head -20; python3 -c "import sys, torch; print(sys.version); print(torch.__version__, torch.version.cuda, torch.backends.cudnn.version())"
  python3 -m pip list 2>/dev/null | grep -iE "^(pytest|onnx|nvidia-ml|scipy|jsonschema|numpy|psutil)"; } > "$OUT/env.txt" 2>&1
timeout -s INT "${DRILL_S:-520}" python3 scripts/gate_drill.py record "$DRILL_DIR" --start "${START:-1}" \
    --runs "${RUNS:-10}" -- --benchmark-max-time "${MAX_TIME:-0.3}" -q --durations=20 > "$OUT/drill-${START:-1}.log" 2>&1
grep "gate drill" "$OUT/drill-${START:-1}.log"
if [ -n "${FINISH:-}" ]; then tar czf "$OUT/drill.tgz" -C "$(dirname "$DRILL_DIR")" "$(basename "$DRILL_DIR")"; fi
