#!/usr/bin/env bash
# Test set-up for the tests that need Debian packages: chromium and chromium-driver (the report's and the
# viewer's browser tests) and ffmpeg (videos). Usage: scripts/setup-debian.sh PACKAGE... Idempotent; installs what is missing with apt-get,
# says why where it cannot (no root, no apt-get), and exits 0 either way: `make test` then reports the
# tests that need the package as skipped, never passed.
set -uo pipefail
missing=()
# The program each package provides.
program() { [ "$1" = chromium-driver ] && echo chromedriver || echo "$1"; }
for package in "$@"; do
  command -v "$(program "$package")" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-debian: ${missing[*]} not installed and cannot be here (needs root and apt-get); run: apt-get install ${missing[*]}"
  exit 0
fi
echo "setup-debian: installing Debian's ${missing[*]} for the tests that need them"
export DEBIAN_FRONTEND=noninteractive
log=/tmp/lrf-setup-debian.log
if ! apt-get install -y -q "${missing[@]}" >"$log" 2>&1; then
  apt-get update -q >>"$log" 2>&1
  apt-get install -y -q "${missing[@]}" >>"$log" 2>&1 || echo "setup-debian: apt-get install ${missing[*]} failed (log: $log)"
fi
for package in "${missing[@]}"; do
  command -v "$(program "$package")" >/dev/null 2>&1 && echo "setup-debian: $package installed"
done
exit 0
