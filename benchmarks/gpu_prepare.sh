#!/usr/bin/env bash
# Run HERE, on a machine where pip reaches a package index, before `gpu_check.sh` is run on a GPU
# machine that has torch, NumPy, SciPy, pandas, PyYAML, matplotlib, tqdm, TensorBoard, threadpoolctl
# and pytest but not rlplast's RL dependencies and no network (the lent GPU machines):
#   bash benchmarks/gpu_prepare.sh [PYTHON_VERSION]     # default 3.12, the GPU image's Python
# It downloads pure-Python wheels of gymnasium, its Farama-Notifications and stable-baselines3 into
# .whl/ (git-ignored), which the GPU call carries along; gpu_check.sh installs them when they are
# missing there.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.12}
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
    -d .whl "gymnasium==1.4.0" "farama-notifications==0.0.6" "stable-baselines3==2.9.2"
ls -l .whl
