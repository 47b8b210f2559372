#!/usr/bin/env bash
# trainrun on a GPU, in one command: every CUDA path tested, the loop's fidelity on CUDA, the
# benchmark on the GPU; a JSON and a short text report. Under 8 minutes on an H100/H200.
#
#     bash scripts/device_check.sh [OUT_DIR]      # OUT_DIR: default $OUT, else ./device-check
#
# Phases (each with its share of an 7.5-minute budget, so the whole ends in time even when one
# hangs; what a phase measured before its limit is kept):
#   1. trainrun importable: if this python3 lacks it (or Hydra), install the wheels of .whl/
#      (scripts/device_wheels.sh fills it where pip has an index) and this working tree, editable,
#      with pip --no-index: the device machine has no network.
#   2. pytest -m cuda over the test files that hold cuda-marked tests (tests/e2e/test_cuda.py,
#      tests/e2e/test_fidelity_devices.py, ...), 4 workers sharing the GPU, with
#      CUBLAS_WORKSPACE_CONFIG=:4096:8 (deterministic cuBLAS, needed by the fidelity and resume
#      tests) -> pytest.xml, pytest.log
#   3. scripts/benchmark.py --device cuda: tiny, digits, resnet, wide; trainrun, the best hand
#      loop and the tutorial loop, with the levers reduce-overhead, fused, bf16, tf32 and
#      channels_last+bf16 -> benchmark.json, benchmark.log
#   4. scripts/device_report.py -> device_check.json, device_check.txt (also printed)
# Without CUDA (here, CI): phase 2 collects the cuda tests and skips them, phase 3 is left out,
# and the report says "no CUDA"; it takes well under a minute.
#
# Assumes: bash, coreutils' timeout, and a python3 (or $PYTHON) that imports torch: on the device
# machines of this workplace, the image's /opt/torch/.venv (torch 2.11 + CUDA 13, pytest,
# pytest-xdist, pytest-timeout, numpy, scikit-learn, rich, tqdm, PyYAML; no Hydra, no network).
# Files written: env.txt, pytest.xml, pytest.log, benchmark.json, benchmark.log,
# device_check.json, device_check.txt (7 files, one folder: what the device tool brings back).
# Exit status: 0 when every test that ran passed (and, with CUDA, the benchmark ran); 1 otherwise.
set -uo pipefail

started=$(date +%s)
budget=450                                   # seconds for the whole check
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${OUT:-$repo/device-check}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$repo"
export CUBLAS_WORKSPACE_CONFIG=:4096:8 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-python3}
env_log="$out/env.txt"
left() { echo $((budget - ($(date +%s) - started))); }
say() { echo "device_check [$(($(date +%s) - started)) s]: $*" | tee -a "$env_log"; }

: >"$env_log"
say "repository $repo, output $out, python $(command -v "$PY")"
command -v nvidia-smi >/dev/null && nvidia-smi >>"$env_log" 2>&1

# 1. trainrun from this working tree, and its dependencies -----------------------------------
ours() { "$PY" - "$repo" <<'EOF' >>"$env_log" 2>&1
import sys, pathlib
import hydra, omegaconf, trainrun
from trainrun.cli import main  # noqa: F401 (the console scripts' module)
here = pathlib.Path(trainrun.__file__).resolve()
if not here.is_relative_to(pathlib.Path(sys.argv[1]) / "src"):
    sys.exit(f"trainrun is imported from {here}, not from this working tree")
if not (pathlib.Path(sys.executable).parent / "train").exists():
    sys.exit("no train command next to " + sys.executable)
EOF
}
if ! ours; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        say "trainrun or Hydra is missing and .whl/ holds no wheels: run scripts/device_wheels.sh where pip reaches an index, and carry .whl"
    else
        flags=(install -q --no-index --no-deps --no-cache-dir --no-build-isolation)
        pip_in() { "$PY" -m pip --python "$1" "${flags[@]}" "${@:2}"; }  # pip >= 22.3
        target=$("$PY" -c 'import sys; print(sys.executable)')
        if ! { "$PY" -m pip "${flags[@]}" .whl/*.whl && "$PY" -m pip "${flags[@]}" -e .; } >>"$env_log" 2>&1; then
            # This python's environment cannot be written: a venv that sees its packages.
            venv=/tmp/trainrun-device-venv
            say "installing into $target failed; trying a venv at $venv over its packages"
            "$PY" -m venv --without-pip "$venv" >>"$env_log" 2>&1
            base=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
            site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
            echo "import site; site.addsitedir('$base')" >"$site/zz_device_base.pth"
            { pip_in "$venv/bin/python" .whl/*.whl && pip_in "$venv/bin/python" -e .; } >>"$env_log" 2>&1
            PY="$venv/bin/python"
        fi
    fi
fi
installed=0
if ours; then
    installed=1
    say "trainrun importable from this tree ($("$PY" -c 'import torch; print("torch", torch.__version__)' 2>&1))"
else
    say "trainrun cannot be imported from this tree (see above); the tests will fail to start"
fi

# 2. pytest -m cuda ----------------------------------------------------------------------------
cuda=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>>"$env_log" || echo 0)
mapfile -t files < <(grep -l -E "mark\.cuda\b" tests/test_*.py tests/*/test_*.py 2>/dev/null)
workers=()
[ "$cuda" = 1 ] && workers=(-n 4)
limit=$(( $(left) - 170 ))                   # the benchmark and the report keep ~3 minutes
[ "$cuda" = 1 ] || limit=$(( $(left) - 10 ))
[ "$limit" -ge 60 ] || limit=60
say "pytest -m cuda over ${files[*]} (cuda=$cuda, ${limit} s)"
# -v: each result is in pytest.log as it comes (the XML is written only at the end); a test that
# hangs is stopped after 240 s, not at the phase's limit.
timeout -k 10 "$limit" "$PY" -m pytest -m cuda "${workers[@]}" -p no:cacheprovider -v -o timeout=240 \
    -o junit_family=xunit1 --junitxml="$out/pytest.xml" "${files[@]}" >"$out/pytest.log" 2>&1
pytest_exit=$?
tail -n 3 "$out/pytest.log" | sed 's/^/  /'

# 3. the benchmark on the GPU -------------------------------------------------------------------
bench_exit=""
if [ "$cuda" = 1 ]; then
    limit=$(( $(left) - 20 ))
    [ "$limit" -ge 60 ] || limit=60
    say "scripts/benchmark.py --device cuda (${limit} s)"
    timeout -k 10 "$limit" "$PY" scripts/benchmark.py --device cuda --rounds 2 --stat min --no-lightning \
        --workloads tiny digits resnet wide \
        --levers reduce-overhead fused bf16 tf32 channels_last+bf16 \
        --json "$out/benchmark.json" >"$out/benchmark.log" 2>&1
    bench_exit=$?
fi

# 4. the report --------------------------------------------------------------------------------
"$PY" scripts/device_report.py "$out" --started "$started" --installed "$installed" --pytest-exit "$pytest_exit" \
    ${bench_exit:+--bench-exit "$bench_exit"}
