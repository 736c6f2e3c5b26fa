#!/usr/bin/env bash
# Idempotent project set-up: a virtualenv in .venv with the exact libtorch tch 0.26 needs
# (PyPI torch==2.13.0) and the Python packages the cross-checks use. A second run installs nothing:
# a stamp file records the requirement set that was installed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
requirements=scripts/requirements.txt
stamp="$venv/.lrf-setup-stamp"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  exit 0
fi
start=$(date +%s)
if [ -x "$venv/bin/python" ]; then
  echo "setup: $requirements changed; installing what is missing into $venv"
else
  echo "setup: creating $venv with $(python3 --version) and installing $requirements (torch alone is ~4.8 GB with its CUDA libraries)"
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
echo "$want" > "$stamp"
echo "setup: done in $(( $(date +%s) - start )) s"
