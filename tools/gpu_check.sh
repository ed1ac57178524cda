#!/usr/bin/env bash
# GPU check for polydiff, in stages that each run under `timeout` (one stage's overrun cannot
# eat the next one's time) and write their log / JSON into $GPU_CHECK_OUT as soon as they end:
#
#   stage        limit (s)                       writes into $GPU_CHECK_OUT
#   wheels       GPU_CHECK_WHEELS_S=60           (installs .whl/* into a scratch site dir;
#                                                GPU_CHECK_WHEEL_DIR, GPU_CHECK_SITE move them)
#   cuda_tests   GPU_CHECK_TESTS_S=75            cuda_tests.log
#   graphs       GPU_CHECK_GRAPHS_S=30           gpu_graphs.json  (MLP: graph replay vs eager)
#   train_step   GPU_CHECK_TRAIN_STEP_S=190      train_step.json, train_step.log
#                (the bench's own --deadline, from its start; `timeout` kills it
#                GPU_CHECK_TRAIN_STEP_GRACE_S=15 s later)
#   sgmse        GPU_CHECK_SGMSE_SMOKE_S=150 + GPU_CHECK_SGMSE_S=540   sgmse_gpu.json, sgmse.log
#   summary      -                               gpu_check_summary.json (rc, seconds per stage)
#
# CUDA tests run with POLYDIFF_REQUIRE_CUDA=1, so a missing GPU FAILS them (not skips).
# Usage (repository root or anywhere): tools/gpu_check.sh [extra pytest args]
# GPU_CHECK_BENCH=train_step,sgmse selects the benchmark stages (default train_step; "" none);
# GPU_CHECK_TRAIN_STEP_ARGS overrides the train_step arguments (default
#   "--configs cifar10 --cache-probe"); GPU_CHECK_SGMSE_SET="steps=3000 ..." overrides the
#   sgmse gpu budget; GPU_CHECK_TESTS=0 skips the CUDA tests (e.g. a session that only runs
#   the sgmse bench: tools/device_wheels.sh here, then with .whl carried there:
#   GPU_CHECK_TESTS=0 GPU_CHECK_BENCH=sgmse GPU_CHECK_OUT=$OUT tools/gpu_check.sh).
# Needs python with torch and pytest; polydiff need not be installed (packages/*/src is put on
# PYTHONPATH). Set PYTHON to choose the interpreter; GPU_CHECK_JSON=path also writes the
# graphs JSON there. Exit status: 0 when every stage that ran exited 0, else 1 (all stages
# run regardless).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ -z "${PYTHON:-}" ]]; then  # the interpreter that has torch (python3 on the GPU image)
  for candidate in python3 python; do
    if "$candidate" -c "import torch" 2> /dev/null; then PYTHON="$candidate"; break; fi
  done
  PYTHON="${PYTHON:-python3}"
fi
echo "gpu_check: $PYTHON is $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])' 2>&1)"
SRC_PATHS="$(printf '%s:' "$ROOT"/packages/*/src "$ROOT"/apps/*/src)"
export PYTHONPATH="${SRC_PATHS%:}${PYTHONPATH:+:$PYTHONPATH}"
export POLYDIFF_REQUIRE_CUDA=1 PYTHONUNBUFFERED=1
BENCH=",${GPU_CHECK_BENCH-train_step},"
OUT="${GPU_CHECK_OUT:-}"
if [[ -n "$OUT" ]]; then mkdir -p "$OUT"; fi
STAGES=()
FAILED=0

out_file() {  # out_file NAME: $GPU_CHECK_OUT/NAME, or /dev/null without GPU_CHECK_OUT
  if [[ -n "$OUT" ]]; then echo "$OUT/$1"; else echo /dev/null; fi
}

write_summary() {
  local f body
  f="$(out_file gpu_check_summary.json)"
  body="$(IFS=,; echo "${STAGES[*]}")"
  printf '{"stages": [%s], "seconds": %d, "failed": %d}\n' "$body" "$SECONDS" "$FAILED" > "$f"
}

# run_stage NAME LIMIT_S LOGFILE CMD...: CMD under `timeout` (TERM at LIMIT_S, KILL 15 s
# later, to its whole process group), its output on the console and appended to LOGFILE;
# the exit status and wall time go to the summary at once. Never fails itself.
run_stage() {
  local name="$1" limit="$2" log="$3" t0=$SECONDS rc
  shift 3
  echo "== [$name] limit ${limit} s (elapsed ${SECONDS} s) =="
  timeout -k 15 "$limit" "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  if (( rc == 124 || rc == 137 )); then
    echo "gpu_check: [$name] hit its ${limit} s limit (rc $rc)" | tee -a "$log"
  fi
  record_stage "$name" "$rc" "$t0" "$limit"
}

record_stage() {  # record_stage NAME RC START_SECONDS LIMIT_S
  (( $2 == 0 )) || FAILED=1
  STAGES+=("{\"stage\": \"$1\", \"rc\": $2, \"seconds\": $((SECONDS - $3)), \"limit_s\": $4}")
  write_summary
  return 0
}

skip_stage() {  # skip_stage NAME REASON
  echo "gpu_check: [$1] skipped: $2" >&2
  STAGES+=("{\"stage\": \"$1\", \"skipped\": \"$2\"}")
  write_summary
}

# Packages the image lacks, carried as wheels in .whl (tools/device_wheels.sh fetches them
# here): installed into a scratch site directory. Source distributions there (pesq: no wheels
# on the index) are built only when a stage needs them, by tools/build_sdist.py, which drops
# their setup_requires (pytest-runner & co: nothing can be fetched there) and builds with the
# image's own cython/numpy/setuptools.
install_wheels() {  # install_wheels SITE LIMIT_S (each command under its own timeout)
  local site="$1" limit="$2" built=/tmp/polydiff-built sdist rc=0
  mkdir -p "$site" "$built"
  if [[ "$BENCH" == *,sgmse,* ]]; then
    for sdist in "$WHEELS"/*.tar.gz; do
      [[ -e "$sdist" ]] || continue
      timeout -k 10 "$limit" "$PYTHON" "$ROOT/tools/build_sdist.py" "$sdist" -o "$built" \
        || { echo "gpu_check: could not build $(basename "$sdist")" >&2; rc=1; }
    done
  fi
  local wheels=()
  mapfile -t wheels < <(compgen -G "$WHEELS/*.whl"; compgen -G "$built/*.whl")
  if (( ${#wheels[@]} )); then
    timeout -k 10 "$limit" "$PYTHON" -m pip install -q --no-index --no-deps --no-compile \
      --no-cache-dir --upgrade --target "$site" "${wheels[@]}" || rc=1
  fi
  return "$rc"
}
WHEELS="${GPU_CHECK_WHEEL_DIR:-$ROOT/.whl}"
if compgen -G "$WHEELS/*" > /dev/null; then
  SITE="${GPU_CHECK_SITE:-/tmp/polydiff-site}"
  echo "== [wheels] $WHEELS/* into $SITE =="
  t_wheels=$SECONDS
  install_wheels "$SITE" "${GPU_CHECK_WHEELS_S:-60}"
  record_stage wheels $? "$t_wheels" "${GPU_CHECK_WHEELS_S:-60}"
  export PYTHONPATH="$PYTHONPATH:$SITE"
fi

# 1. CUDA tests
if [[ "${GPU_CHECK_TESTS:-1}" == 0 ]]; then
  skip_stage cuda_tests "GPU_CHECK_TESTS=0"
else
  per_test=()
  if "$PYTHON" -c "import pytest_timeout" 2> /dev/null; then per_test=(--timeout 60); fi
  run_stage cuda_tests "${GPU_CHECK_TESTS_S:-75}" "$(out_file cuda_tests.log)" \
    "$PYTHON" -m pytest packages/gpu/tests/test_cuda.py \
    "packages/core/tests/test_training_engine.py::test_compiled_training_matches_eager[cuda]" \
    -v -rs --durations=8 -p no:cacheprovider "${per_test[@]}" "$@"
fi

# 2. CUDA graph replay vs eager launches of a small MLP step and a 32-step loop
run_stage graphs "${GPU_CHECK_GRAPHS_S:-30}" /dev/null "$PYTHON" - <<'PY'
"""Time one small-MLP sampling step and a 32-step loop, eager vs CUDA-graph replay."""
import json
import os

import torch

from polydiff.gpu import CudaGraphRunner, device_info, select_device, time_fn

device = select_device()
if device.type != "cuda":
    raise SystemExit(f"benchmark needs CUDA, got {device}")
torch.manual_seed(0)
width, batch, steps = 256, 64, 32
model = torch.nn.Sequential(
    torch.nn.Linear(width, width), torch.nn.SiLU(),
    torch.nn.Linear(width, width), torch.nn.SiLU(),
    torch.nn.Linear(width, width),
).to(device).eval()


def step(x):
    return x - 0.02 * model(x)


def loop(x):
    for _ in range(steps):
        x = step(x)
    return x


x = torch.randn(batch, width, device=device)
result = {"device": device_info(device)["name"], "torch": torch.__version__,
          "mlp": {"width": width, "batch": batch, "layers": 3}}
with torch.no_grad():
    for name, fn, repeats in (("step", step, 300), (f"loop{steps}", loop, 50)):
        runner = CudaGraphRunner(fn, [x])
        assert runner.captured
        diff = (runner(x) - fn(x)).abs().max().item()
        eager = time_fn(lambda fn=fn: fn(x), warmup=10, repeats=repeats, device=device)
        graph = time_fn(lambda r=runner: r(x), warmup=10, repeats=repeats, device=device)
        result[name] = {
            "eager_ms": round(eager["median"] * 1e3, 4),
            "graph_ms": round(graph["median"] * 1e3, 4),
            "speedup": round(eager["median"] / graph["median"], 2),
            "max_abs_diff": diff,
        }
text = json.dumps(result, indent=2)
print(text)
for path in (os.environ.get("GPU_CHECK_JSON"), os.environ.get("GPU_CHECK_OUT")
             and os.path.join(os.environ["GPU_CHECK_OUT"], "gpu_graphs.json")):
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")
PY

# 3. Training-step and sampling throughput against diffusers (tools/bench/train_step.py).
#    diffusers is not on the device image: carry it as wheels (tools/device_wheels.sh);
#    without it the stage is skipped with a message.
if [[ "$BENCH" != *,train_step,* ]]; then
  skip_stage train_step "not in GPU_CHECK_BENCH"
elif ! "$PYTHON" -c "import diffusers" 2> /dev/null; then
  skip_stage train_step "diffusers not importable (carry .whl from tools/device_wheels.sh)"
else
  limit="${GPU_CHECK_TRAIN_STEP_S:-190}"
  read -r -a ts_args <<< "${GPU_CHECK_TRAIN_STEP_ARGS:---configs cifar10 --cache-probe}"
  run_stage train_step "$((limit + ${GPU_CHECK_TRAIN_STEP_GRACE_S:-15}))" "$(out_file train_step.log)" \
    "$PYTHON" tools/bench/train_step.py "${ts_args[@]}" --deadline "$limit" \
    ${OUT:+--out "$OUT/train_step.json"}
fi

# 4. The hook for the other GPU benchmarks, each with its own limit.
#    SGMSE+ vs its predictive baseline, gpu budget. Needs the speech extras (pesq, pystoi,
#    soundfile, espeakng-loader, pyroomacoustics): carried as wheels; skipped without.
if [[ "$BENCH" != *,sgmse,* ]]; then
  skip_stage sgmse "not in GPU_CHECK_BENCH"
elif ! "$PYTHON" -c "import pesq, pystoi, soundfile, espeakng_loader, pyroomacoustics" 2> /dev/null; then
  skip_stage sgmse "speech extras not importable (carry .whl from tools/device_wheels.sh)"
else
  # a short canary of every stage (corpus, both trainings, all samplers, metrics) on the
  # device first: a device bug then costs seconds, not the whole training
  run_stage sgmse_smoke "${GPU_CHECK_SGMSE_SMOKE_S:-150}" "$(out_file sgmse.log)" \
    "$PYTHON" tools/bench/sgmse.py --budget gpu --set steps=5 predictive_steps=5 n_train=8 \
    n_test=2
  # GPU_CHECK_SGMSE_SET: overrides of the budget, e.g. "steps=3000 predictive_steps=3000"
  read -r -a sgmse_set <<< "${GPU_CHECK_SGMSE_SET:-}"
  run_stage sgmse "${GPU_CHECK_SGMSE_S:-540}" "$(out_file sgmse.log)" \
    "$PYTHON" tools/bench/sgmse.py --budget gpu --json \
    ${OUT:+--out "$OUT/sgmse_gpu.json"} ${GPU_CHECK_SGMSE_SET:+--set "${sgmse_set[@]}"}
fi

write_summary
echo "gpu_check: done in ${SECONDS} s; stages: $(IFS=,; echo "${STAGES[*]}")"
exit "$FAILED"
