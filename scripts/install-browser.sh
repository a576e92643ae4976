#!/usr/bin/env bash
# Debian's Chromium for the playground's browser tests (tests/integration/test_playground_browser.py,
# driven by Playwright's Python API with executable_path=/usr/bin/chromium: Playwright's own browser
# download is never used). Without root or apt it says so; those tests then skip with that reason.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo ">> installing Debian package chromium (headless browser for the playground tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
  exit 0
fi
echo "!! chromium is missing: the playground's browser tests will skip (as root: apt-get install chromium)" >&2
