#!/usr/bin/env bash
# Idempotent: installs (with apt) every Debian package rcnn needs to build, test, run the demo
# and benchmark. Does nothing when everything is already there.
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev python3-torch python3-torchvision python3-numpy python3-pil
  libopencv-dev libeigen3-dev xtensor-dev xtl-dev doctest-dev nlohmann-json3-dev libcli11-dev
  libbenchmark-dev libopenblas0-pthread libxsimd-dev
  opencv-doc
  # What the peers in ../shared/peers (Detectron2 v0.6, pycocotools) import; tests only.
  python3-opencv python3-omegaconf python3-yaml python3-tabulate python3-termcolor
  python3-portalocker python3-cloudpickle python3-tqdm python3-matplotlib
  clang libclang-rt-14-dev libomp-14-dev
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# OpenBLAS (pthread) must provide libblas.so.3: LibTorch on Debian calls the system BLAS for
# every Linear layer and the reference BLAS is ~100x slower.
libdir=/usr/lib/x86_64-linux-gnu
if [ -e "$libdir/openblas-pthread/libblas.so.3" ]; then
  $SUDO update-alternatives --set "libblas.so.3-x86_64-linux-gnu" "$libdir/openblas-pthread/libblas.so.3" >/dev/null 2>&1 || true
  $SUDO update-alternatives --set "liblapack.so.3-x86_64-linux-gnu" "$libdir/openblas-pthread/liblapack.so.3" >/dev/null 2>&1 || true
fi
echo "install-deps: done" >&2
