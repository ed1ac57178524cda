#!/usr/bin/env bash
# Fetch, here, the Python packages that tools/gpu_check.sh needs on a GPU machine whose image
# lacks them (no network there): CPython 3.12 x86-64 wheels, at the versions pinned in uv.lock,
# into <repo>/.whl (git-ignored through .git/info/exclude; never commit it).
#
#   tools/device_wheels.sh            # diffusers (train_step bench) + speech extras (sgmse bench)
#   tools/device_wheels.sh speech     # only the speech extras
#
# pesq has no wheels on PyPI: its sdist is saved as .whl/pesq-<v>.tar.gz and tools/gpu_check.sh
# builds it there with the image's cython/numpy/setuptools (pip wheel --no-build-isolation).
# Then run on the GPU machine (carry .whl):  GPU_CHECK_BENCH=sgmse tools/gpu_check.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.whl"
WHAT="${1:-all}"
PY="${PYTHON:-python3}"

pinned() {  # the version uv.lock pins for a package name
  "$PY" - "$ROOT/uv.lock" "$1" <<'PY'
import sys, tomllib
lock = tomllib.load(open(sys.argv[1], "rb"))
name = sys.argv[2]
for pkg in lock["package"]:
    if pkg["name"] == name:
        print(pkg["version"])
        break
else:
    raise SystemExit(f"device_wheels: {name} is not in uv.lock")
PY
}

speech=(cffi pycparser espeakng-loader pyroomacoustics pystoi soundfile)
gpu=(diffusers importlib-metadata)
case "$WHAT" in
  all) names=("${speech[@]}" "${gpu[@]}") ;;
  speech) names=("${speech[@]}") ;;
  diffusers) names=("${gpu[@]}") ;;
  *) echo "device_wheels: unknown set '$WHAT' (all, speech, diffusers)" >&2; exit 2 ;;
esac

mkdir -p "$DEST"
grep -qx '/.whl/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.whl/' >> "$ROOT/.git/info/exclude"
specs=()
for n in "${names[@]}"; do specs+=("$n==$(pinned "$n")"); done
platforms=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${p}_x86_64")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$DEST" "${specs[@]}"

if [[ "$WHAT" != diffusers ]]; then
  v="$(pinned pesq)"
  if [[ ! -f "$DEST/pesq-$v.tar.gz" ]]; then
    # the sdist's URL from the simple index (pip download of an sdist would try to build it)
    url="$(curl -fsSL "https://pypi.org/simple/pesq/" | grep -o "https://[^\"#]*/pesq-$v\.tar\.gz" | head -1)"
    [[ -n "$url" ]] || { echo "device_wheels: no pesq-$v sdist on the index" >&2; exit 1; }
    curl -fsSL -o "$DEST/pesq-$v.tar.gz.part" "$url"
    mv "$DEST/pesq-$v.tar.gz.part" "$DEST/pesq-$v.tar.gz"
  fi
fi
ls -l "$DEST"
du -sh "$DEST"
