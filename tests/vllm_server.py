"""A real vLLM engine for the tests, started by ``ir3de vllm-command ROUTER --run`` (so the launcher is what is tested)
and stopped with its whole process group. A missing vLLM venv fails the test, saying how to install it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ir3de_hf.serve.vllm_command import vllm_python
from test_serve import free_port

START_TIMEOUT = 300.0  # seconds: about 50 s on an idle 2-core machine, a few minutes when it is shared


class VllmServer:
    """vLLM serving ``router``'s LoRA experts on a free loopback port; ``url`` is its OpenAI base URL."""

    def __init__(self, router: str | Path, log: Path) -> None:
        python = vllm_python()
        if not python.is_file():
            pytest.fail(f"no vLLM venv at {python.parent.parent}: run `make vllm` (or set IR3DE_VLLM_VENV)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log
        command = [sys.executable, "-m", "ir3de_hf", "vllm-command", str(router), "--port", str(self.port), "--run"]
        with log.open("w") as output:
            self.process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, env=_environment()
            )
        started = time.monotonic()
        try:
            self._wait()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started

    def _wait(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"vLLM exited with {self.process.returncode} before serving:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/models", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM did not serve /v1/models within {START_TIMEOUT:.0f} s:\n{self.tail()}")
            time.sleep(1)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Ends vLLM and its workers (their own process group), killing them if they outlive 30 s."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def _environment() -> dict[str, str]:
    """Ours, offline, with this checkout's sources first (the launcher runs from any directory)."""
    source = str(Path(__file__).resolve().parents[1] / "src")
    path = os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
