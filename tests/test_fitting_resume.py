"""A fit killed with SIGKILL mid-way resumes from its last checkpoint and ends with the uninterrupted counts; a
checkpoint belongs to its data (a changed file is refused, naming it) and a finished one is never resumed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from datasets import IterableDataset
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from ir3de_hf.fitting import count_experts

# A real fit in its own process. Its first expert is a directory of .txt files; its second streams from a generator
# that hangs after ``stall`` texts (a stream that stops delivering), so the test kills it at a known point: after the
# checkpoint at text 36 and after counting, in memory only, the batch of texts 36-39.
SCRIPT = """
import json, sys, time
from datasets import IterableDataset
from safetensors.torch import save_file
from transformers import AutoTokenizer
from ir3de_hf.fitting import count_experts

tokenizer_dir, texts_file, legal_dir, checkpoint_dir, output, stall = sys.argv[1:7]

def stream(texts_file, stall):  # a path, not the list: datasets shards list-valued gen_kwargs
    for index, text in enumerate(json.load(open(texts_file))["mixed"]):
        if index == stall:
            time.sleep(3600)
        yield {"text": text}

sources = {
    "legal": legal_dir,
    "mixed": IterableDataset.from_generator(stream, gen_kwargs={"texts_file": texts_file, "stall": int(stall)}),
}
tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
result = count_experts(sources, tokenizer=tokenizer, vocab_size=len(tokenizer), batch_size=4,
                       checkpoint_dir=checkpoint_dir, checkpoint_every=3, progress=False)
save_file(result.histograms, output)
"""

STATE = "fit-state-00000-of-00001.safetensors"


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def _progress(path: Path) -> list[dict]:
    return json.loads(_metadata(path)["progress"])


def _text_files(directory: Path, texts: list[str]) -> Path:
    directory.mkdir()
    for index, text in enumerate(texts):
        (directory / f"{index:03d}.txt").write_text(text)
    return directory


def test_killed_fit_resumes_without_counting_twice(expert_dir, domain_texts, tmp_path):
    # a copy of the legal texts: the test edits one of them below
    texts = {"legal": list(domain_texts["legal"]), "mixed": domain_texts["code"] + domain_texts["docs"]}
    assert len(texts["mixed"]) > 60
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    (tmp_path / "fit.py").write_text(SCRIPT)
    legal = _text_files(tmp_path / "legal", texts["legal"])
    checkpoints = tmp_path / "checkpoints"
    state = checkpoints / STATE

    def launch(stall: int, output: str) -> subprocess.Popen:
        arguments = [str(expert_dir), str(tmp_path / "texts.json"), str(legal), str(checkpoints)]
        with open(tmp_path / f"{output}.stderr", "w") as stderr:  # the child keeps its own handle
            return subprocess.Popen(
                [sys.executable, str(tmp_path / "fit.py"), *arguments, str(tmp_path / output), str(stall)],
                stderr=stderr,
            )

    first = launch(stall=40, output="never.safetensors")
    deadline = time.monotonic() + 120
    while not (state.is_file() and _progress(state)[1]["texts"] == 36):
        assert first.poll() is None and time.monotonic() < deadline, "the fit ended or stalled before text 36"
        time.sleep(0.05)
    time.sleep(1.0)  # it now counts texts 36-39 in memory, then hangs reading text 40
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL

    legal_progress, mixed = _progress(state)
    assert legal_progress["done"] and legal_progress["texts"] == len(texts["legal"])
    assert not mixed["done"] and mixed["texts"] == 36 and mixed["position"] is not None
    assert not (tmp_path / "never.safetensors").exists()
    assert [path.name for path in checkpoints.iterdir()] == [state.name]  # no temporary file left behind

    # A file of the data changed between the kill and the rerun: refused, naming the expert and the file.
    changed = legal / "003.txt"
    original, status = changed.read_bytes(), changed.stat()
    killed_state = state.read_bytes()
    changed.write_text(texts["legal"][3] + " amended")
    refused = launch(stall=-1, output="refused.safetensors")
    assert refused.wait(timeout=120) == 1
    stderr = (tmp_path / "refused.safetensors.stderr").read_text()
    assert re.search(
        r"ValueError: The checkpoint in .* belongs to a different fit \(the data of expert 'legal'", stderr
    )
    assert "file '003.txt' changed (size" in stderr and f"Delete {checkpoints}" in stderr
    assert state.read_bytes() == killed_state  # the checkpoint is left as it was

    # The same data again (bytes and modification time): the fit resumes and ends with the uninterrupted counts.
    changed.write_bytes(original)
    os.utime(changed, ns=(status.st_atime_ns, status.st_mtime_ns))
    second = launch(stall=-1, output="resumed.safetensors")
    assert second.wait(timeout=120) == 0, (tmp_path / "resumed.safetensors.stderr").read_text()[-3000:]
    resumed = load_file(str(tmp_path / "resumed.safetensors"))

    tokenizer = AutoTokenizer.from_pretrained(expert_dir)
    uninterrupted = count_experts(texts, tokenizer=tokenizer, vocab_size=len(tokenizer), progress=False)
    for name in texts:
        assert torch.equal(resumed[name], uninterrupted.histograms[name]), name
    assert all(entry["done"] for entry in _progress(state))
    assert _progress(state)[1]["texts"] == len(texts["mixed"])
    assert json.loads(_metadata(state)["finished"]) is True

    # After a finished fit, the same directory counts afresh: a change of the data is counted, not refused.
    changed.write_text(texts["legal"][3] + " amended")
    texts["legal"][3] += " amended"
    again = count_experts(
        {"legal": str(legal), "mixed": texts["mixed"]},
        tokenizer=tokenizer,
        vocab_size=len(tokenizer),
        checkpoint_dir=checkpoints,
        progress=False,
    )
    expected = count_experts(texts, tokenizer=tokenizer, vocab_size=len(tokenizer), progress=False)
    for name in texts:
        assert torch.equal(again.histograms[name], expected.histograms[name]), name
    assert not torch.equal(again.histograms["legal"], uninterrupted.histograms["legal"])


# ---------------------------------------------------------------------------------------------- in one process


def _stopping():
    """A stream that fails after its first text, as a fit killed mid-way would stop."""
    yield {"text": "def return value"}
    raise RuntimeError("stopped")


def _interrupted(sources: dict, checkpoints: Path, **options) -> None:
    """Leaves an unfinished checkpoint in ``checkpoints``, with ``sources`` all counted."""
    with pytest.raises(RuntimeError, match="stopped"):
        count_experts(
            {**sources, "stop": IterableDataset.from_generator(_stopping)}, checkpoint_dir=checkpoints, **options
        )
    assert not json.loads(_metadata(checkpoints / STATE)["finished"])


@pytest.fixture
def common(text_router) -> dict:
    return {"tokenizer": text_router.tokenizer, "vocab_size": text_router.config.vocab_size, "progress": False}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda data: (data / "002.txt").write_text("def return"),
            r"file '002\.txt' changed \(size \d+ -> 10 bytes\)",
        ),
        (lambda data: (data / "009.txt").write_text("def"), r"file '009\.txt' added"),
        (lambda data: (data / "000.txt").unlink(), r"file '000\.txt' removed"),
        (lambda data: os.utime(data / "001.txt", ns=(1, 1)), r"file '001\.txt' changed \(modification time\)"),
        (
            lambda data: (data / "004.txt").write_bytes((data / "004.txt").read_bytes().swapcase()),
            r"file '004\.txt' changed \(content\)",
        ),
    ],
    ids=["resized", "added", "removed", "touched", "rewritten"],
)
def test_a_checkpoint_of_changed_files_is_refused_naming_them(domain_texts, common, tmp_path, change, message):
    data = _text_files(tmp_path / "code", domain_texts["code"][:7])
    checkpoints = tmp_path / "checkpoints"
    _interrupted({"code": str(data)}, checkpoints, **common)
    saved = (checkpoints / STATE).read_bytes()

    change(data)
    with pytest.raises(ValueError, match=rf"different fit \(the data of expert 'code' changed: {message}\)\. Delete"):
        count_experts(
            {"code": str(data), "stop": IterableDataset.from_generator(_stopping)},
            checkpoint_dir=checkpoints,
            **common,
        )
    assert (checkpoints / STATE).read_bytes() == saved


def test_a_checkpoint_resumes_on_a_moved_copy_of_the_same_files(domain_texts, common, tmp_path):
    data = _text_files(tmp_path / "code", domain_texts["code"][:7])
    checkpoints = tmp_path / "checkpoints"
    _interrupted({"code": str(data)}, checkpoints, **common)
    moved = data.rename(tmp_path / "moved")  # a rename keeps sizes and modification times

    with pytest.raises(RuntimeError, match="stopped"):  # resumed: "code" is not recounted, "stop" is read again
        count_experts(
            {"code": str(moved), "stop": IterableDataset.from_generator(_stopping)},
            checkpoint_dir=checkpoints,
            **common,
        )
    assert _progress(checkpoints / STATE)[0]["done"]


def test_a_checkpoint_of_other_texts_or_arguments_is_refused(domain_texts, common, tmp_path):
    texts = domain_texts["legal"]
    _interrupted({"legal": texts}, tmp_path, **common)

    def rerun(sources: dict, **options) -> None:
        count_experts(
            {**sources, "stop": IterableDataset.from_generator(_stopping)},
            checkpoint_dir=tmp_path,
            **{**common, **options},
        )

    with pytest.raises(ValueError, match=rf"expert 'legal' changed: the content of its list of {len(texts)} texts"):
        rerun({"legal": [*texts[:-1], texts[-1] + " more"]})
    with pytest.raises(ValueError, match=rf"from list of {len(texts)} texts to list of {len(texts) - 1} texts"):
        rerun({"legal": texts[:-1]})
    with pytest.raises(ValueError, match=r"different fit \(experts: \['legal', 'stop'\] -> \['other', 'stop'\]\)"):
        rerun({"other": texts})
    with pytest.raises(ValueError, match=r"different fit \(batch_size: 1024 -> 8; max_tokens: None -> 100\)"):
        rerun({"legal": texts}, batch_size=8, max_tokens=100)


def test_a_finished_checkpoint_never_blocks_a_fit(domain_texts, common, tmp_path):
    texts = {"code": domain_texts["code"][:10]}
    first = count_experts(texts, checkpoint_dir=tmp_path, **common)
    assert json.loads(_metadata(tmp_path / STATE)["finished"]) is True

    other = {"legal": domain_texts["legal"][:10]}
    second = count_experts(other, checkpoint_dir=tmp_path, batch_size=3, **common)  # other data and arguments
    assert torch.equal(second.histograms["legal"], count_experts(other, **common).histograms["legal"])

    finished = load_file(str(tmp_path / STATE))
    metadata = _metadata(tmp_path / STATE)
    save_file(finished, str(tmp_path / "fit-state-00000-of-00002.safetensors"), metadata=metadata)
    again = count_experts(texts, checkpoint_dir=tmp_path, **common)  # a finished fit of 2 processes is no obstacle
    assert torch.equal(again.histograms["code"], first.histograms["code"])


def test_a_checkpoint_of_another_version_is_refused(common, tmp_path):
    save_file({"counts": torch.zeros(1, 1)}, str(tmp_path / STATE), metadata={"format": "ir3de-fit-state/1"})
    with pytest.raises(
        ValueError, match=r"not a fit checkpoint of this version of ir3de_hf \(format 'ir3de-fit-state/1'.*\); delete"
    ):
        count_experts({"x": ["def"]}, checkpoint_dir=tmp_path, **common)
