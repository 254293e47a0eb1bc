#!/usr/bin/env bash
# Everything SliceRT-Farm needs on a fresh Debian 12 machine; idempotent and quick when done.
#   apt: arm-none-eabi-gcc, Docker engine, debootstrap, docker-compose, plugin build deps
#   pip: .venv from requirements.lock (uv when available), slicert_ops editable
#   the patched QEMU (qemu/build_qemu.sh, cached) and the cycle plugin built against it
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(gcc-arm-none-eabi libnewlib-arm-none-eabi docker.io pkg-config libglib2.0-dev
              debootstrap docker-compose dpkg-dev xz-utils libcapstone-dev shellcheck)
APT_PACKAGES+=(chromium)  # headless browser: tests/test_timeline.py (Playwright)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.slicert-lock-sha
want=$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python dependencies from requirements.lock"
  .venv/bin/python -m pip install -q --upgrade "pip>=24" "uv==0.13.9"
  # Compiled bytecode: this machine sets PYTHONDONTWRITEBYTECODE, and airflow/mlflow
  # commands start 2x faster with it.
  .venv/bin/uv pip install --python .venv/bin/python --compile-bytecode -q -r requirements.lock
  .venv/bin/uv pip install --python .venv/bin/python -q --no-deps -e .
  echo "$want" > "$stamp"
fi

bash qemu/build.sh
echo "setup: ok ($(.venv/bin/slicert --help >/dev/null && echo 'slicert ready'))"
