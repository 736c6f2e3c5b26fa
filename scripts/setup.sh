#!/usr/bin/env bash
# Idempotent project set-up: a virtualenv in .venv with the exact libtorch tch 0.26 needs
# (PyPI torch==2.13.0), the Python packages the cross-checks use, and the perceptual metrics' weights.
# A second run installs nothing: a stamp file records the requirement set that was installed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
requirements=scripts/requirements.txt
stamp="$venv/.lrf-setup-stamp"
converter=scripts/perceptual_weights.py
want="$(cat "$requirements" "$converter" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  exit 0
fi
start=$(date +%s)
# pip fails deep in a traceback when the disk fills; say it plainly before downloading ~5 GB.
need_gib=7
free_gib=$(( $(df -Pk . | awk 'NR==2 {print $4}') / 1024 / 1024 ))
if [ ! -x "$venv/bin/python" ] && [ "$free_gib" -lt "$need_gib" ]; then
  echo "setup: only ${free_gib} GiB free on the disk holding $PWD; the virtualenv needs about ${need_gib} GiB" >&2
  echo "       (torch==2.13.0 with its CUDA libraries, plus pip's download buffer). Free some space and rerun." >&2
  exit 1
fi
if [ -x "$venv/bin/python" ]; then
  echo "setup: $requirements changed; installing what is missing into $venv"
else
  echo "setup: creating $venv with $(python3 --version) and installing $requirements (torch alone is ~4.8 GB with its CUDA libraries)"
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
# The perceptual metrics' weights, from the wheels just installed, where lrf_vae looks for them.
"$venv/bin/python" "$converter" "$venv/share/lrf-flow/perceptual"
echo "$want" > "$stamp"
echo "setup: done in $(( $(date +%s) - start )) s"
