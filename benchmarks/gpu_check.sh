#!/usr/bin/env bash
# The GPU checks of the metric and performance issues, as one script for any CUDA machine:
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# 1. the metric tests and the NC regularizer's closed-form NC1 tests, whose CUDA cases run only
#    with a GPU (metrics: values to 1e-5 against float64 NumPy; regularizer: against autograd);
# 2. the metric suite on CUDA at N = 50 000, D = 512 (target on an H100-class card: < 20 ms);
# 3. a PlasticDQN training run on CUDA against the same run on CPU;
# 4. the population engine: its tests (the CUDA one runs the update under CUDA's sync debug mode),
#    then populations of 16, 64 and 256 members on CUDA against one PlasticDQN on a CPU core
#    (aggregate env steps/s; CartPole, and MinAtar where the minatar package is installed).
# Record the printed card name with the numbers in benchmarks/RESULTS.md.
# On the lent GPU machines (torch present, no network): run benchmarks/gpu_prepare.sh here first and
# carry .whl along, e.g. run(command="bash benchmarks/gpu_check.sh $OUT", carry=[".whl"]).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-results}
mkdir -p "$out"
PY=${PYTHON:-python3}
# A GPU machine without rlplast's RL dependencies: install the wheels gpu_prepare.sh put in .whl/
# under /tmp (no network needed) and import rlplast from this source tree.
if ! "$PY" -c "import gymnasium, stable_baselines3" 2>/dev/null; then
    [ -d .whl ] || { echo "gymnasium/stable-baselines3 missing: run benchmarks/gpu_prepare.sh first"; exit 1; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/rlplast-deps .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/rlplast-deps${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -c "import rlplast.agents" 2>/dev/null || export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('card:', torch.cuda.get_device_name(0), '| torch', torch.__version__)" | tee "$out/card.txt" || exit 1
"$PY" -m pytest tests/metrics tests/interventions/test_nc1_fused.py -q -p no:cacheprovider 2>&1 | tee "$out/metrics_tests.txt"
"$PY" benchmarks/metrics_bench.py --device cuda --n 50000 --d 512 --c 2 6 18 2>&1 | tee "$out/metrics_bench_cuda.txt"
"$PY" benchmarks/train_bench.py --steps 20000 --variants plastic plastic-cuda 2>&1 | tee "$out/train_cuda_vs_cpu.txt"
"$PY" -m pytest tests/population -q -p no:cacheprovider 2>&1 | tee "$out/population_tests.txt"
"$PY" benchmarks/population_bench.py --suites cartpole --sizes 16 64 256 --device cuda --steps 5000 --chunk 1000 2>&1 | tee "$out/population_cuda_cartpole.txt"
if "$PY" -c "import minatar" 2>/dev/null; then
    "$PY" benchmarks/population_bench.py --suites minatar --minatar-sizes 16 64 256 --device cuda --minatar-steps 8000 --chunk 1000 2>&1 | tee "$out/population_cuda_minatar.txt"
fi
