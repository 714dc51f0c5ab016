#!/usr/bin/env bash
# GPU run 1 (foundation): tests + benchmarks; everything under $OUT.
set -uo pipefail
cd "$(dirname "$0")/snap"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 PERFSUITE_WEIGHTS=random
{ nvidia-smi; python3 -c "import torch,pytest_benchmark,onnxruntime;print(torch.__version__,pytest_benchmark.__version__,onnxruntime.__version__)"; } > $OUT/env.txt 2>&1
python3 -m perfsuite doctor > $OUT/doctor.txt 2>&1
python3 -m pytest tests -rs -q -p no:cacheprovider 2>&1 | tee $OUT/tests.log | tail -25
python3 -m pytest benchmarks -p no:cacheprovider -rs --benchmark-json $OUT/bench-gpu.json --benchmark-columns=median,iqr,ops,rounds > $OUT/bench-gpu.log 2>&1; echo "bench gpu rc=$?"
python3 -m pytest benchmarks -p no:cacheprovider -rs --device cpu --precisions fp32,fp16 --benchmark-json $OUT/bench-cpu.json > $OUT/bench-cpu.log 2>&1; echo "bench cpu rc=$?"
tail -5 $OUT/bench-gpu.log; grep -E "SKIPPED|passed|failed" $OUT/bench-gpu.log | tail -8
