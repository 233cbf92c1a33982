#!/usr/bin/env bash
# Lint and test, offline. Expects the venv made by the README's test command (.venv with requirements-dev.txt).
# Installs Debian's chromium for the browser test when missing (needs root or sudo; skipped otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium install failed: browser test will skip"
  elif command -v sudo >/dev/null 2>&1; then (sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null) || true
  fi
fi
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${REID_DATA:-}" ] && [ -d ../shared/data/market1501 ]; then export REID_DATA="$PWD/../shared/data/market1501"; fi
.venv/bin/ruff check .
.venv/bin/python -m pytest -q --durations=10 "$@"
