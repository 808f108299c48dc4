#!/usr/bin/env bash
# Installs everything edgeslim needs on a fresh Debian/Ubuntu machine:
#  - Debian packages: the Arm cross-compiler, newlib and QEMU (the emulated Cortex-M boards);
#  - Node.js/npm, to fetch LiteRT.js (npm @litertjs/core, pinned) into edgeslim's cache,
#    from which every web bundle copies it (no network at build or run time), and
#    Chromium + chromedriver, the real browser the web bundle's tests drive, and
#    espeak-ng, whose spoken words tools/bench_web.py feeds to the page's audio input;
#  - a virtual environment (.venv, or $VENV) with edgeslim and its test dependencies.
# Safe to run again: it installs only what is missing.
# Usage: tools/setup.sh [--editable]   (--editable: a developer install of this checkout)
set -euo pipefail
cd "$(dirname "$0")/.."

# kotlin: the tests compile the Android bundle's protocol server (DutServer.kt) and run it on the JVM.
# nodejs/npm: LiteRT.js for the web bundle; chromium(-driver): its browser tests; espeak-ng: bench_web.py.
# libstdc++-arm-none-eabi-dev (17 MB, C++ headers) and cmake: the TFLite Micro bundle's tests
# compile its C++ for Cortex-M and configure its CMake project. Linking C++ firmware against
# TFLite Micro needs libstdc++-arm-none-eabi-newlib too (1.5 GB), which the tests do not.
APT_PACKAGES=(gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-dev qemu-system-arm make cmake
              kotlin chromium chromium-driver espeak-ng)
# Node.js with npm from Debian, unless the machine has an npm already (some images ship
# Node.js from NodeSource, whose nodejs package bundles npm and conflicts with Debian's npm).
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# debootstrap + qemu-user-static: the arm64 Debian bookworm userland (Raspberry Pi OS's base)
# in which tests/bundle/test_pi_userland.py installs and runs the Pi bundle. Not built here
# (about 6 min, 1.4 GB): `sudo .venv/bin/python tools/pi_userland.py build` builds and caches
# it (tools/pi_userland.py registers qemu-aarch64 with binfmt_misc itself).
APT_PACKAGES+=(debootstrap qemu-user-static)
# clang + libclang-rt-dev: libFuzzer and the sanitizers, for the host fuzzer of the
# firmware's command parser (tools/fuzz.py dut; tests/fuzz)
APT_PACKAGES+=(clang libclang-rt-dev)

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
# LiteRT.js for web bundles (edgeslim/bundle/web.py reads this cache; keep the
# version and the cache path in step with LITERTJS_VERSION there). The tarballs'
# SHA-256 are pinned: a changed package is refused, not shipped.
LITERTJS_VERSION=2.5.3
LITERTJS_SHA256_CORE=a97660833e9e7e1063c95e12016718881240b14f7438728a2f62785e912d30fd
LITERTJS_SHA256_UTILS=ce2a1f8379c067be49e59752e5a7f40db6be09f6e497f0f11e59f17b515366a7
LITERTJS_DIR=${EDGESLIM_LITERTJS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeslim/litertjs-$LITERTJS_VERSION}
if [ ! -f "$LITERTJS_DIR/.complete" ]; then
  echo "setup: fetching LiteRT.js $LITERTJS_VERSION from npm into $LITERTJS_DIR"
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent "@litertjs/core@$LITERTJS_VERSION" "@litertjs/wasm-utils@$LITERTJS_VERSION" >/dev/null)
  echo "$LITERTJS_SHA256_CORE  $work/litertjs-core-$LITERTJS_VERSION.tgz" | sha256sum -c --quiet
  echo "$LITERTJS_SHA256_UTILS  $work/litertjs-wasm-utils-$LITERTJS_VERSION.tgz" | sha256sum -c --quiet
  mkdir -p "$work/core" "$work/wasm-utils"
  tar xzf "$work/litertjs-core-$LITERTJS_VERSION.tgz" -C "$work/core" --strip-components=1
  tar xzf "$work/litertjs-wasm-utils-$LITERTJS_VERSION.tgz" -C "$work/wasm-utils" --strip-components=1
  # Both packages declare Apache-2.0 in package.json and ship no licence text: the
  # bundle carries the licence's text (Debian's copy) next to the files.
  cp /usr/share/common-licenses/Apache-2.0 "$work/LICENSE"
  rm -rf "$LITERTJS_DIR" && mkdir -p "$(dirname "$LITERTJS_DIR")"
  mv "$work" "$LITERTJS_DIR" && chmod -R a+rX "$LITERTJS_DIR" && touch "$LITERTJS_DIR/.complete"
fi

echo "setup: installing edgeslim into $VENV"
if [ "${1:-}" = "--editable" ]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test,fuzz]"
else
  "$VENV/bin/pip" install -q --disable-pip-version-check ".[test,fuzz]"
fi
echo "setup: done ($("$VENV/bin/edgeslim" --version))"
