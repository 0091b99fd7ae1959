#!/usr/bin/env bash
# Debian packages the test suite and the benchmarks need beside Python's:
#   wrk                  the HTTP load generator of benchmarks/bench_service.py
#   fonts-wqy-microhei   a CJK font, so Chinese text in PDF reports renders
#   libharfbuzz-subset0  WeasyPrint's font subsetter (smaller PDFs)
#   chromium             the browser the web console's tests drive (Playwright launches
#                        /usr/bin/chromium; no browser is ever downloaded)
# Installed with apt-get when missing (as root, or with sudo); otherwise named and failed.
set -euo pipefail
packages=(wrk fonts-wqy-microhei libharfbuzz-subset0 chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
  echo "missing Debian packages: ${missing[*]} (install them, then run again)" >&2; exit 1
fi
echo "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
  $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${missing[@]}" >/dev/null; }
