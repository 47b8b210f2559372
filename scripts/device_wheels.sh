#!/usr/bin/env bash
# Fill .whl/ with what scripts/device_check.sh needs on a GPU machine that has no network.
#
#     bash scripts/device_wheels.sh          # here, once, where pip reaches an index
#
# The device machines of this workplace run an image whose python3 holds torch (CUDA), pytest,
# pytest-xdist, pytest-timeout, numpy, scikit-learn, rich, tqdm, PyYAML, packaging, pathspec,
# pluggy, safetensors and onnx, but not Hydra. These pure-Python wheels complete it: trainrun's
# own dependencies (hydra-core, omegaconf, and antlr4-python3-runtime, which PyPI has only as a
# source archive, so it is built into a wheel here) and the build backend that installs trainrun
# from the working tree, editable (hatchling, with trove-classifiers, tomlkit and editables). .whl/ is ignored by git;
# the device tool carries it (carry: [".whl"]). About 0.6 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
rm -f .whl/*.whl
PIP=(python3 -m pip)
"${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py --abi none \
    --platform any -d .whl "hydra-core==1.3.8" "omegaconf==2.3.1" "hatchling==1.33.0" trove-classifiers tomlkit \
    editables
"${PIP[@]}" wheel -q --no-deps -w .whl "antlr4-python3-runtime==4.9.3"
ls -1 .whl
