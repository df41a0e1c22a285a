"""A 2-process CPU fit (gloo, through torchrun and accelerate) equals the 1-process fit: same counts, same W.

Runs `ir3de fit` under ``ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2`` on a fixed port: keep these tests serial.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import torch

from ir3de_hf import IR3DERouterModel
from ir3de_hf.cli import main

PORT = "29531"


def test_two_process_fit_equals_one_process_fit(expert_dir, fit_data, tmp_path):
    experts = [argument for name, path in fit_data.items() for argument in ("--expert", f"{name}={path}")]
    common = ["fit", "--encoder", str(expert_dir), *experts, "--batch-size", "2", "--quiet"]

    assert main([*common, "--output", str(tmp_path / "one")]) == 0

    environment = {**os.environ, "ACCELERATE_USE_CPU": "1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", PORT, "-m", "ir3de_hf"]
    output = [*common, "--output", str(tmp_path / "two"), "--checkpoint-dir", str(tmp_path / "checkpoints")]
    run = subprocess.run([*launcher, *output], env=environment, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]

    one = IR3DERouterModel.from_pretrained(tmp_path / "one")
    two = IR3DERouterModel.from_pretrained(tmp_path / "two")
    assert two.expert_names == one.expert_names == ["code", "legal", "docs"]
    assert two.expert_counts.dtype == torch.int64
    assert torch.equal(two.expert_counts, one.expert_counts)
    for exact_two, exact_one in zip(two.ridge_solution(), one.ridge_solution(), strict=True):
        assert torch.equal(exact_two, exact_one)

    # Both processes counted a part (the 7 code files and the odd row counts split unevenly), nothing twice.
    shares = re.search(r"on 2 processes \(tokens per process: ([\d,]+) / ([\d,]+)\)", run.stdout)
    assert shares is not None, run.stdout
    first, second = (int(share.replace(",", "")) for share in shares.groups())
    assert first > 0 and second > 0 and first != second
    assert first + second == int(one.expert_counts.sum())
    assert run.stdout.count("fitted 3 expert(s)") == 1  # only the main process reports and saves
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == [
        "fit-state-00000-of-00002.safetensors",
        "fit-state-00001-of-00002.safetensors",
    ]
