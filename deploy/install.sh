#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv in .venv with torch (CPU wheel 2.13.0 first, so nothing pulls a CUDA build)
# and this project; with --test also the Debian packages the tests start for real (GStreamer RTSP server,
# Prometheus, Alertmanager, chromium + chromium-driver for the page's browser tests, Mosquitto for the MQTT
# notification tests). Idempotent: re-running
# skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TEST=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TEST=1 ;;
    *) echo "install.sh: unknown option $arg (valid: --test)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  "${PIP[@]}" torch==2.13.0
fi
if [ "$WITH_TEST" = 1 ]; then
  "${PIP[@]}" -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
else
  "${PIP[@]}" -e . 2>&1 | grep -v "^WARNING: Location" || true
fi
.venv/bin/python -c "import torch, av, cv2, ray, offline, streaming" || { echo "install.sh: python packages failed to install" >&2; exit 1; }
if [ "$WITH_TEST" = 1 ]; then
  PKGS=(python3-gi gir1.2-gst-rtsp-server-1.0 gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
        gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-libav
        gstreamer1.0-tools prometheus prometheus-alertmanager iproute2 util-linux chromium chromium-driver
        mosquitto)
  missing=()
  for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
echo "install.sh: ready (.venv)"
