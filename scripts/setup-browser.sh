#!/usr/bin/env bash
# Test set-up for the browser tests: headless Chromium from Debian's packages (apt-get install chromium).
# Idempotent; prints where Chromium is, or why it could not be installed, and exits 0 either way: the
# tests that need it are then reported as skipped by `make test`, never passed.
set -uo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-browser: chromium is not installed and cannot be (needs root and apt-get); run: apt-get install chromium"
  exit 0
fi
echo "setup-browser: installing Debian's chromium for the report's browser test"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q chromium >/tmp/lrf-setup-browser.log 2>&1; then
  apt-get update -q >>/tmp/lrf-setup-browser.log 2>&1
  apt-get install -y -q chromium >>/tmp/lrf-setup-browser.log 2>&1 \
    || echo "setup-browser: apt-get install chromium failed (log: /tmp/lrf-setup-browser.log)"
fi
command -v chromium >/dev/null 2>&1 && echo "setup-browser: $(chromium --version 2>/dev/null)"
exit 0
