"""A fit killed with SIGKILL mid-way resumes from its last checkpoint and ends with the uninterrupted counts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoTokenizer

from ir3de_hf.fitting import count_experts

# A real fit in its own process. Its second expert streams from a generator that hangs after ``stall`` texts (a stream
# that stops delivering), so the test kills it at a known point: after the checkpoint at text 36 and after counting,
# in memory only, the batch of texts 36-39.
SCRIPT = """
import json, sys, time
from datasets import IterableDataset
from safetensors.torch import save_file
from transformers import AutoTokenizer
from ir3de_hf.fitting import count_experts

tokenizer_dir, texts_file, checkpoint_dir, output, stall = sys.argv[1:6]
texts = json.load(open(texts_file))

def stream(texts_file, stall):  # a path, not the list: datasets shards list-valued gen_kwargs
    for index, text in enumerate(json.load(open(texts_file))["mixed"]):
        if index == stall:
            time.sleep(3600)
        yield {"text": text}

sources = {
    "legal": texts["legal"],
    "mixed": IterableDataset.from_generator(stream, gen_kwargs={"texts_file": texts_file, "stall": int(stall)}),
}
tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
result = count_experts(sources, tokenizer=tokenizer, vocab_size=len(tokenizer), batch_size=4,
                       checkpoint_dir=checkpoint_dir, checkpoint_every=3, progress=False)
save_file(result.histograms, output)
"""


def _progress(path: Path) -> list[dict]:
    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()["progress"])


def test_killed_fit_resumes_without_counting_twice(expert_dir, domain_texts, tmp_path):
    texts = {"legal": domain_texts["legal"], "mixed": domain_texts["code"] + domain_texts["docs"]}
    assert len(texts["mixed"]) > 60
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    (tmp_path / "fit.py").write_text(SCRIPT)
    checkpoints = tmp_path / "checkpoints"
    state = checkpoints / "fit-state-00000-of-00001.safetensors"

    def launch(stall: int, output: str) -> subprocess.Popen:
        arguments = [str(expert_dir), str(tmp_path / "texts.json"), str(checkpoints), str(tmp_path / output)]
        return subprocess.Popen([sys.executable, str(tmp_path / "fit.py"), *arguments, str(stall)])

    first = launch(stall=40, output="never.safetensors")
    deadline = time.monotonic() + 120
    while not (state.is_file() and _progress(state)[1]["texts"] == 36):
        assert first.poll() is None and time.monotonic() < deadline, "the fit ended or stalled before text 36"
        time.sleep(0.05)
    time.sleep(1.0)  # it now counts texts 36-39 in memory, then hangs reading text 40
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL

    legal, mixed = _progress(state)
    assert legal["done"] and legal["texts"] == len(texts["legal"])
    assert not mixed["done"] and mixed["texts"] == 36 and mixed["position"] is not None
    assert not (tmp_path / "never.safetensors").exists()
    assert [path.name for path in checkpoints.iterdir()] == [state.name]  # no temporary file left behind

    second = launch(stall=-1, output="resumed.safetensors")
    assert second.wait(timeout=120) == 0
    resumed = load_file(str(tmp_path / "resumed.safetensors"))

    tokenizer = AutoTokenizer.from_pretrained(expert_dir)
    uninterrupted = count_experts(texts, tokenizer=tokenizer, vocab_size=len(tokenizer), progress=False)
    for name in texts:
        assert torch.equal(resumed[name], uninterrupted.histograms[name]), name
    assert all(entry["done"] for entry in _progress(state))
    assert _progress(state)[1]["texts"] == len(texts["mixed"])
