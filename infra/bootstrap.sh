#!/usr/bin/env bash
# Build .venv if missing: torch + torchvision first (the CUDA build that also runs on CPU;
# the wheels lie on the machine's local indexes), then the pinned lock with uv.
# Idempotent: a complete .venv (marker file) is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
MARKER="$VENV/.uhrforge-complete"
LOCK=requirements/requirements.lock
NODEPS=requirements/requirements-nodeps.txt
if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$(sha256sum "$LOCK" "$NODEPS" pyproject.toml | sha256sum | cut -c1-16)" ]]; then
  exit 0
fi
echo "[bootstrap] building $VENV (torch first, then $LOCK) ..."
start=$(date +%s)
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VENV/bin/python" -c "import torch, torchvision; assert torch.__version__.startswith('2.14.1')" >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "is ignored" || true
fi
"$VENV/bin/python" -m pip install -q uv 2>&1 | grep -v "is ignored" || true
# uv ignores pip's configuration: pass the local indexes and the machine's constraints.
UV_FLAGS=(--python "$VENV/bin/python" --index-strategy unsafe-best-match)
[[ -d /opt/wheels ]] && UV_FLAGS+=(--find-links /opt/wheels)
for idx in /opt/pypi/simple /opt/pypi-more/simple; do
  [[ -d "$idx" ]] && UV_FLAGS+=(--extra-index-url "file://$idx")
done
[[ -f /etc/xdg/pip/constraints.txt ]] && UV_FLAGS+=(-c /etc/xdg/pip/constraints.txt)
"$VENV/bin/uv" pip install -q "${UV_FLAGS[@]}" -r "$LOCK"
"$VENV/bin/uv" pip install -q "${UV_FLAGS[@]}" --no-deps -r "$NODEPS"
"$VENV/bin/uv" pip install -q "${UV_FLAGS[@]}" --no-deps -e .
"$VENV/bin/python" -m pip check >/dev/null 2>&1 || "$VENV/bin/python" -m pip check || true
sha256sum "$LOCK" "$NODEPS" pyproject.toml | sha256sum | cut -c1-16 > "$MARKER"
echo "[bootstrap] done in $(( $(date +%s) - start )) s"
