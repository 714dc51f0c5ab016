#!/usr/bin/env bash
# GPU call B: install TensorRT-RTX from the two carried parts, then the whole test suite with its
# benchmark JSON (sleep-kernel check), doctor, golden checks, and the RTX benchmark skip reason.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD PERFSUITE_WEIGHTS=random PERFSUITE_CACHE_DIR=/tmp/psc
part0=/tmp/rtx/libs.part00; [ -f "$part0" ] || part0=.whl/libs.part00
whl=/tmp/rtx/tensorrt_rtx_cu13_libs-1.7.1.116-py3-none-manylinux_2_28_x86_64.whl
if [ -f "$part0" ]; then
  cat "$part0" .whl/libs.part01 > "$whl" && echo "$(cat .whl/libs.sha256)  $whl" | sha256sum -c - &&
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$whl" .whl/tensorrt_rtx_cu13_bindings-*.whl &&
  export PYTHONPATH=$PYTHONPATH:/tmp/site && echo "RTX installed"
else echo "part00 missing: machine was not warm; TensorRT-RTX not installed"; fi
python3 -c "import tensorrt_rtx_bindings as t; print('rtx', t.__version__)" 2>&1 | tail -1
python3 -m perfsuite doctor > $OUT/doctor.txt 2>&1; grep -E "tensorrt|cudagraph|compile" $OUT/doctor.txt | head -20
python3 -m pytest tests -rs -p no:cacheprovider --benchmark-json $OUT/tests-gpu.json > $OUT/tests.log 2>&1; echo "tests rc=$?"
tail -40 $OUT/tests.log
{ python3 -m perfsuite golden check --weights random --device cuda; echo "golden rc=$?";
  python3 -m perfsuite golden check --weights random --device cuda --transform eval; echo "golden eval rc=$?";
  python3 -m pytest benchmarks/test_latency.py --backends tensorrt-rtx,tensorrt --precisions fp16 --batch-sizes 1 -q -rs --benchmark-disable -p no:cacheprovider; } > $OUT/golden-rtx.log 2>&1
grep -E "rc=|SKIPPED|passed|failed" $OUT/golden-rtx.log | tail -12
