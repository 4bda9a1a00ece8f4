#!/usr/bin/env bash
# Set up edgesent for development in ./.venv (or in the virtualenv that is already active).
#
# torch comes first and pinned: on these machines `pip install torch==2.13.0` takes the local CPU
# wheel, while a bare `torch` requirement with no torch installed pulls the newest CUDA build (GBs).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${VIRTUAL_ENV:-}" ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    VENV_DIR=.venv
else
    VENV_DIR="$VIRTUAL_ENV"
fi
PY="$VENV_DIR/bin/python"

# One stamp per virtualenv; -I keeps the repository (the working directory) off sys.path, so `import edgesent`
# proves an install, and the console script must be there for the Makefile's $(BIN)/edgesent.
stamp="$VENV_DIR/.edgesent-setup"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ -x "$VENV_DIR/bin/edgesent" ] \
    && "$PY" -I -c "import edgesent, torch" 2>/dev/null; then
    exit 0
fi
"$PY" -m pip install --quiet --upgrade pip
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install --quiet "torch==${EDGESENT_TORCH_VERSION:-2.13.0}"
"$PY" -m pip install --quiet -e ".[train,bench,dev,serve,search,ray,spark,openvino]"
touch "$stamp"
echo "edgesent set up with $("$PY" -c 'import sys; print(sys.executable)')"
