#!/usr/bin/env bash
# Fetch, here, the Python packages that tools/gpu_check.sh needs on a GPU machine whose image
# lacks them (no network there): CPython 3.12 x86-64 wheels, at the versions pinned in uv.lock,
# into <repo>/.whl (git-ignored by .gitignore; never commit it). Everything comes
# through pip's own configuration (its configured index, find-links, certificates): this
# script names no index. Every file is checked against the sha256 that uv.lock records.
#
#   tools/device_wheels.sh            # diffusers (train_step bench) + speech extras (sgmse bench)
#   tools/device_wheels.sh diffusers  # only what the train_step bench needs
#   tools/device_wheels.sh speech     # only the speech extras
#
# pesq has no wheels on the index: its sdist is saved as .whl/pesq-<v>.tar.gz, and
# tools/gpu_check.sh builds it there with tools/build_sdist.py (setup_requires dropped, the
# image's own cython/numpy/setuptools, nothing fetched).
# Then run on the GPU machine (carry .whl):  GPU_CHECK_BENCH=sgmse tools/gpu_check.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.whl"
WHAT="${1:-all}"
PY="${PYTHON:-python3}"

lock() {  # lock version NAME | lock hashes NAME: uv.lock's version / sha256s (sdist, wheels)
  "$PY" - "$ROOT/uv.lock" "$1" "$2" <<'PY'
import sys, tomllib
lock = tomllib.load(open(sys.argv[1], "rb"))
what, name = sys.argv[2], sys.argv[3]
for pkg in lock["package"]:
    if pkg["name"] == name:
        if what == "version":
            print(pkg["version"])
        else:
            files = ([pkg["sdist"]] if "sdist" in pkg else []) + pkg.get("wheels", [])
            print("\n".join(f["hash"].removeprefix("sha256:") for f in files if "hash" in f))
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
specs=()
for n in "${names[@]}"; do specs+=("$n==$(lock version "$n")"); done
platforms=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${p}_x86_64")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$DEST" "${specs[@]}"

if [[ "$WHAT" != diffusers ]]; then
  names+=(pesq)
  v="$(lock version pesq)"
  if [[ ! -f "$DEST/pesq-$v.tar.gz" ]]; then
    # the sdist only (pip prepares its metadata here, in an isolated build environment)
    "$PY" -m pip download -q --no-deps --no-binary pesq -d "$DEST" "pesq==$v"
  fi
fi

# every file of a pinned package must carry one of the sha256s uv.lock records for it
status=0
for n in "${names[@]}"; do
  v="$(lock version "$n")"
  mapfile -t want < <(lock hashes "$n")
  stem="$(echo "$n" | tr '-' '_')"
  shopt -s nullglob nocaseglob
  files=("$DEST/$stem-$v"[-.]*)
  [[ "$stem" == "$n" ]] || files+=("$DEST/$n-$v"[-.]*)
  shopt -u nullglob nocaseglob
  if (( ${#files[@]} == 0 )); then
    echo "device_wheels: no file for $n==$v in $DEST" >&2; status=1; continue
  fi
  for f in "${files[@]}"; do
    got="$(sha256sum "$f" | cut -d' ' -f1)"
    if ! printf '%s\n' "${want[@]}" | grep -qx "$got"; then
      echo "device_wheels: $(basename "$f"): sha256 $got is not in uv.lock" >&2; status=1
    fi
  done
done
ls -l "$DEST"
du -sh "$DEST"
exit "$status"
