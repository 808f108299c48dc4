#!/usr/bin/env bash
# Installs everything edgeslim needs on a fresh Debian/Ubuntu machine:
#  - Debian packages: the Arm cross-compiler, newlib and QEMU (the emulated Cortex-M boards);
#  - a virtual environment (.venv, or $VENV) with edgeslim and its test dependencies.
# Safe to run again: it installs only what is missing.
# Usage: tools/setup.sh [--editable]   (--editable: a developer install of this checkout)
set -euo pipefail
cd "$(dirname "$0")/.."

# libstdc++-arm-none-eabi-dev (17 MB, C++ headers) and cmake: the TFLite Micro bundle's tests
# compile its C++ for Cortex-M and configure its CMake project. Linking C++ firmware against
# TFLite Micro needs libstdc++-arm-none-eabi-newlib too (1.5 GB), which the tests do not.
APT_PACKAGES=(gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-dev qemu-system-arm make cmake)
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
echo "setup: installing edgeslim into $VENV"
if [ "${1:-}" = "--editable" ]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test]"
else
  "$VENV/bin/pip" install -q --disable-pip-version-check ".[test]"
fi
echo "setup: done ($("$VENV/bin/edgeslim" --version))"
