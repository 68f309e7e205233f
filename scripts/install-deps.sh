#!/usr/bin/env bash
# Installs the Debian packages moemlora needs (idempotent; as root, or through sudo).
#   scripts/install-deps.sh               everything CI uses (clang, qemu, arm64 SLEEF, valgrind, Open MPI, ...)
#   scripts/install-deps.sh --build-only  just what building the library and programs needs
set -euo pipefail
build_only=0
[ "${1:-}" = "--build-only" ] && build_only=1
pkgs=(cmake pkg-config gcc g++ libsleef-dev)
if [ $build_only -eq 0 ]; then
  pkgs+=(clang libclang-rt-14-dev libbenchmark-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross
         qemu-user valgrind binutils libopenmpi-dev openmpi-bin)
fi
# "name" or, where several architectures are installed, "name:arch"
installed() { dpkg -s "$1" >/dev/null 2>&1 || dpkg -s "$1:$(dpkg --print-architecture)" >/dev/null 2>&1; }
missing=()
for p in "${pkgs[@]}"; do
  installed "$p" || missing+=("$p")
done
arm_sleef=1
[ $build_only -eq 1 ] || dpkg -s libsleef-dev:arm64 >/dev/null 2>&1 || arm_sleef=0
if [ ${#missing[@]} -eq 0 ] && [ $arm_sleef -eq 1 ]; then
  echo "all build dependencies present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}"
fi
if [ $arm_sleef -eq 0 ]; then
  # SLEEF for arm64, so the NEON kernels link and run under qemu-aarch64
  $SUDO dpkg --add-architecture arm64
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq libsleef-dev:arm64
fi
echo "dependencies installed"
