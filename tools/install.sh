#!/usr/bin/env bash
# Installs the mmcnx2 stack into the active Python 3.11 environment. Idempotent: a second run
# only checks what is there (about a minute). Downloads packages, never weights or data.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP="$PY -m pip install --disable-pip-version-check --progress-bar off"
WHEEL_CACHE=${MMCNX2_WHEEL_CACHE:-$HOME/.cache/mmcnx2/wheels}

# Build tools first: mmcv's setup.py and mmengine import pkg_resources (setuptools<81),
# torch needs setuptools>=77.0.3.
$PIP -q "setuptools>=77.0.3,<81" wheel
# torch before mmcv: mmcv's CPU ops compile against the installed torch.
$PIP -q "torch==2.14.1" "torchvision==0.29.1"

# mmcv 2.1.0 with full CPU ops (mmdet/mmseg models need mmcv.ops). PyPI has no wheel for this
# torch, so build one from the sdist once and keep it in a cache; torch 2.14 headers need C++20.
if ! $PY -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
  wheel=$(ls "$WHEEL_CACHE"/mmcv-2.1.0-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    build=$(mktemp -d)
    $PY -m pip download -q --no-deps --no-binary :all: "mmcv==2.1.0" -d "$build"
    tar -xzf "$build"/mmcv-2.1.0.tar.gz -C "$build"
    sed -i 's/-std=c++17/-std=c++20/g' "$build"/mmcv-2.1.0/setup.py
    echo "Building mmcv 2.1.0 with CPU ops (10-30 min on 2 cores, once per machine)..."
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      $PY -m pip wheel -q --no-build-isolation --no-deps "$build"/mmcv-2.1.0 -w "$WHEEL_CACHE"
    rm -rf "$build"
    wheel=$(ls "$WHEEL_CACHE"/mmcv-2.1.0-*.whl | head -n 1)
  fi
  $PIP -q --no-deps "$wheel"
  $PIP -q addict "packaging" pyyaml yapf "opencv-python==4.14.0.94" "numpy"
fi

# The rest of the stack, mmcnx2 itself (editable) and the test references.
$PIP -q -r requirements.txt
$PIP -q --no-deps -e .
# mim (`mim search/download/train mmcnx2`) reads <site-packages>/mmcnx2/.mim, and an editable
# (PEP 660) install puts only an import hook into site-packages: link the checkout's package.
$PY -c "
import os, sysconfig
link = os.path.join(sysconfig.get_paths()['purelib'], 'mmcnx2')
if os.path.islink(link):
    os.remove(link)
if not os.path.exists(link):
    os.symlink(os.path.abspath('mmcnx2'), link)
"
$PY -c "import mmcv.ops, mmpretrain, mmdet, mmseg, mmcnx2; print('mmcnx2', mmcnx2.__version__, 'ready')"
