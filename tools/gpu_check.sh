#!/usr/bin/env bash
# GPU check for polydiff-gpu: run the CUDA tests so that a missing GPU FAILS them (not skips),
# then a small benchmark printing one JSON object: CUDA-graph replay vs eager launch of a
# small MLP sampling step and of a fixed 32-step sampling loop. Under 5 minutes on one GPU.
#
# Usage (repository root or anywhere): tools/gpu_check.sh [extra pytest args]
# GPU_CHECK_BENCH=train_step,sgmse selects the longer benchmarks (default train_step);
# GPU_CHECK_SGMSE_SET="steps=3000 ..." overrides the sgmse gpu budget;
# GPU_CHECK_TESTS=0 skips the CUDA tests (e.g. a session that only runs the sgmse bench:
#   tools/device_wheels.sh here, then with .whl carried there:
#   GPU_CHECK_TESTS=0 GPU_CHECK_BENCH=sgmse GPU_CHECK_OUT=$OUT tools/gpu_check.sh).
# Needs python with torch and pytest; polydiff need not be installed (packages/*/src is put on
# PYTHONPATH). Set PYTHON to choose the interpreter; GPU_CHECK_JSON=path also writes the JSON.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python}"
SRC_PATHS="$(printf '%s:' "$ROOT"/packages/*/src "$ROOT"/apps/*/src)"
export PYTHONPATH="${SRC_PATHS%:}${PYTHONPATH:+:$PYTHONPATH}"
export POLYDIFF_REQUIRE_CUDA=1

# Packages the image lacks, carried as wheels in .whl (tools/device_wheels.sh fetches them
# here): installed into a scratch site directory; sdists there (pesq) are built first with the
# image's own cython/numpy/setuptools.
if compgen -G "$ROOT/.whl/*" > /dev/null; then
  SITE="${GPU_CHECK_SITE:-/tmp/polydiff-site}"
  mkdir -p "$SITE" /tmp/polydiff-built
  for sdist in "$ROOT"/.whl/*.tar.gz; do
    [[ -e "$sdist" ]] || continue
    "$PYTHON" -m pip wheel -q --no-build-isolation --no-deps --no-index -w /tmp/polydiff-built "$sdist" \
      || echo "gpu_check: could not build $(basename "$sdist")" >&2
  done
  mapfile -t wheels < <(compgen -G "$ROOT/.whl/*.whl"; compgen -G "/tmp/polydiff-built/*.whl")
  if (( ${#wheels[@]} )); then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "${wheels[@]}"
    export PYTHONPATH="$PYTHONPATH:$SITE"
  fi
fi

if [[ "${GPU_CHECK_TESTS:-1}" == 0 ]]; then
  echo "gpu_check: GPU_CHECK_TESTS=0; CUDA tests skipped" >&2
else
echo "== CUDA tests (POLYDIFF_REQUIRE_CUDA=1): polydiff-gpu, compiled training on CUDA =="
"$PYTHON" -m pytest packages/gpu/tests/test_cuda.py \
  "packages/core/tests/test_training_engine.py::test_compiled_training_matches_eager[cuda]" \
  -q -p no:cacheprovider "$@"
fi

echo "== polydiff-gpu benchmark: CUDA graph vs eager =="
"$PYTHON" - <<'PY'
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
if os.environ.get("GPU_CHECK_JSON"):
    with open(os.environ["GPU_CHECK_JSON"], "w") as f:
        f.write(text + "\n")
PY

# Training-step and sampling throughput against diffusers (issue 3), and the sampler benchmark.
#    diffusers is not on the device image: carry it as wheels (see the device tool's README) and
#    put them on PYTHONPATH; without it these are skipped with a message.
# Which benchmarks run: GPU_CHECK_BENCH, a comma-separated list (default: train_step; add
# sgmse for the speech GPU budget, about 10 minutes more).
BENCH=",${GPU_CHECK_BENCH:-train_step},"
if [[ "$BENCH" != *,train_step,* ]]; then
  echo "gpu_check: train_step not in GPU_CHECK_BENCH; skipped" >&2
elif "$PYTHON" -c "import diffusers" 2>/dev/null; then
  "$PYTHON" tools/bench/train_step.py ${GPU_CHECK_OUT:+--out "$GPU_CHECK_OUT/train_step.json"}
else
  echo "gpu_check: diffusers not importable; skipping tools/bench/train_step.py" >&2
fi

# SGMSE+ vs its predictive baseline, gpu budget (issue 4). Needs the speech extras (pesq,
#    pystoi, soundfile, espeakng-loader, pyroomacoustics): carry them as wheels; skipped without.
if [[ "$BENCH" != *,sgmse,* ]]; then
  echo "gpu_check: sgmse not in GPU_CHECK_BENCH; skipped" >&2
elif "$PYTHON" -c "import pesq, pystoi, soundfile, espeakng_loader, pyroomacoustics" 2>/dev/null; then
  # a 30-second canary of every stage (corpus, both trainings, all samplers, metrics) on the
  # device first: a device bug then costs seconds, not the whole training
  echo "== sgmse bench: smoke run on the device ==" >&2
  "$PYTHON" tools/bench/sgmse.py --budget gpu --set steps=5 predictive_steps=5 n_train=8 \
    n_test=2 > /dev/null
  echo "== sgmse bench: gpu budget ==" >&2
  # GPU_CHECK_SGMSE_SET: overrides of the budget, e.g. "steps=3000 predictive_steps=3000"
  read -r -a sgmse_set <<< "${GPU_CHECK_SGMSE_SET:-}"
  "$PYTHON" tools/bench/sgmse.py --budget gpu --json ${GPU_CHECK_OUT:+--out "$GPU_CHECK_OUT/sgmse_gpu.json"} \
    ${GPU_CHECK_SGMSE_SET:+--set "${sgmse_set[@]}"}
else
  echo "gpu_check: speech extras not importable; skipping tools/bench/sgmse.py" >&2
fi
