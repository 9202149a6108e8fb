#!/usr/bin/env bash
# Sets up a fresh machine for fitnets_tf: the Debian package with the real Fashion-MNIST (the
# default experiment's offline data, where apt can be used), a virtual environment in .venv,
# the requirements, and the project itself (editable: `import fitnets_tf` and the console
# scripts fitnets-train / fitnets-tune / fitnets-export work from any folder). Safe to run
# again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo -n"; fi
  if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist; }; then
    echo "setup.sh: could not install the Debian package dataset-fashion-mnist;" \
         "the Fashion-MNIST experiment then needs a prepared TFDS directory (--data_dir)." >&2
  fi
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
# CPU-only machines take the much smaller tensorflow-cpu build of the same release; GPU
# machines the CUDA build (pip install "tensorflow[and-cuda]" pulls the CUDA libraries).
if command -v nvidia-smi >/dev/null 2>&1; then tf='tensorflow[and-cuda]==2.21.*'; else tf='tensorflow-cpu==2.21.*'; fi
.venv/bin/pip install -q --upgrade pip >/dev/null
grep -v '^tensorflow==' requirements.txt > .venv/requirements-no-tf.txt
.venv/bin/pip install -q "$tf" -r .venv/requirements-no-tf.txt -r requirements-dev.txt
# --no-deps: the requirements are installed above (with tensorflow-cpu where there is no GPU;
# the project's own `tensorflow` requirement would pull the CUDA build).
.venv/bin/pip install -q --no-deps --no-build-isolation -e .
