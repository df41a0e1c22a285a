"""Server processes the serving benchmarks and the live-edit load test start on loopback: `ir3de serve` and a vLLM
engine with a router's LoRA experts (imported from this folder, and by tests/test_live_edits_load.py).

Each server is its own process group, stopped with the whole group (vLLM starts engine-core children).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Process:
    """A server process on loopback, ready once ``ready_path`` answers 200; its output goes to ``log`` (default a
    temporary file), whose end is in the error when it fails to start."""

    def __init__(
        self,
        command: list[str],
        url: str,
        *,
        ready_path: str = "/health",
        env: dict[str, str] | None = None,
        log: Path | None = None,
        start_s: float = 600,
    ) -> None:
        self.url = url
        self.log = log or Path(tempfile.mkstemp(prefix="ir3de-bench-server-", suffix=".log")[1])
        self.process = subprocess.Popen(
            command,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        deadline = time.monotonic() + start_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{command[:4]}... exited with {self.process.returncode}: {self._tail()}")
            try:
                if httpx.get(f"{url}{ready_path}", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{command[:4]}... did not answer {url}{ready_path} within {start_s:.0f} s: {self._tail()}")

    def stop(self) -> None:
        """Stops the whole process group: TERM, then KILL after 30 s."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def _tail(self) -> str:
        return f"{self.log}: {self.log.read_bytes().decode(errors='replace')[-2000:]}"


def ir3de_serve(router: str, port: int, *flags: str, log: Path | None = None) -> Process:
    """``ir3de serve ROUTER --port PORT FLAGS...`` with this interpreter, ready when /health answers."""
    command = [sys.executable, "-m", "ir3de_hf", "serve", router, "--port", str(port), *flags]
    return Process(command, f"http://127.0.0.1:{port}", log=log)


def start_vllm(router: Any, port: int, log: Path) -> Process:
    """A vLLM engine for ``router`` (see `vllm_command`), ready when GET /v1/models answers (about a minute)."""
    from ir3de_hf.serve.vllm_command import vllm_command, vllm_python

    if not vllm_python().is_file():
        raise FileNotFoundError(f"no vLLM venv at {vllm_python().parent.parent}: run `make vllm`, or pass --vllm-url.")
    command = vllm_command(router, port=port)  # the line `ir3de vllm-command` prints
    print(command.shell(), file=sys.stderr, flush=True)
    return Process(
        command.argv, f"http://127.0.0.1:{port}", ready_path="/v1/models", env=command.env, log=log, start_s=900
    )
