"""The M2D2 recipe end to end on stand-ins with the authors' layout, through the loopback Hub.

Stand-ins, all written here: reference-style expert checkpoints (``torch.save`` of a wrapper whose ``_model`` is a tiny
random ``LlamaForCausalLM`` in bf16, so every key starts with ``_model.``), a tiny word-level tokenizer shaped like
Llama-3's (BOS/EOS are the table's last rows, reserved special tokens lie beyond it, as 128,256 ids vs the experts'
128,002 rows), and pre-tokenised parquet per domain and split (``input_ids`` and ``label``, the ids shifted by one, EOS
between documents). The expected histograms and perplexities are computed here from those rows and the original
models, not by the recipe's code.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from huggingface_hub import HfApi
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ir3de_hf import IR3DERouterModel
from ir3de_hf.cli import main as cli_main
from ir3de_hf.configuration_ir3de import ExpertSpec
from ir3de_hf.experts import ExpertPool
from ir3de_hf.recipes.m2d2 import main as recipe_main

DOMAINS = ["code", "legal", "docs"]
LENGTH = 24  # tokens per row (the paper: 1,024)
TINY = {
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}
FLAGS = ["--batches", "3", "--batch-size", "2", "--test-batches", "2", "--sequence-length", str(LENGTH)]
PORT = "29547"


class _LlamaWrapper(torch.nn.Module):
    """The authors' models/llama.py LlamaWrapper, reduced to what its state dict holds."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self._model = LlamaForCausalLM(config).to(dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def standins(domain_texts, tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("m2d2-standins")
    splitter = pre_tokenizers.Whitespace()
    words = sorted({w for texts in domain_texts.values() for t in texts for w, _ in splitter.pre_tokenize_str(t)})
    # Llama-3's shape: BOS and EOS are the last rows of the table, reserved special tokens lie beyond it.
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    reserved = [f"<|reserved_special_token_{i}|>" for i in range(4)]
    vocab = {word: i for i, word in enumerate(["[UNK]", *words, *specials, *reserved])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = splitter
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=specials[0], eos_token=specials[1], unk_token="[UNK]"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": reserved})
    tokenizer.save_pretrained(root / "tokenizer")
    table_rows = len(tokenizer) - len(reserved)  # as 128,002 rows for Llama-3's 128,256 ids
    eos = tokenizer.eos_token_id

    experts, originals = root / "experts", {}
    experts.mkdir()
    for seed, domain in enumerate(DOMAINS):
        torch.manual_seed(seed)
        wrapper = _LlamaWrapper(LlamaConfig(**TINY, vocab_size=table_rows))
        state = wrapper.state_dict()
        if domain == "legal":  # a tensor outside LlamaForCausalLM, as strict=False loads in the authors' code tolerate
            state["_model.model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
        torch.save(state, experts / f"llama_115000000_{domain}_seed=42_freeze_attn.pth")
        originals[domain] = wrapper._model

    data, rows = root / "data", {}
    for domain, texts in domain_texts.items():
        stream = [i for text in texts for i in [*tokenizer(text, add_special_tokens=False)["input_ids"], eos]]
        chunks = [stream[i : i + LENGTH + 1] for i in range(0, len(stream) - LENGTH, LENGTH + 1)]
        rows[domain] = {"train": chunks[:7], "test": chunks[7:12]}  # 7 train rows (3 batches of 2 used), 5 test (4)
        for split, part in rows[domain].items():
            folder = data / domain / split
            folder.mkdir(parents=True)
            for index, piece in enumerate((part[:3], part[3:])):  # two files per split: rows are read across files
                table = pa.table({"input_ids": [c[:-1] for c in piece], "label": [c[1:] for c in piece]})
                pq.write_table(table, folder / f"{index:05d}.parquet")
    config = json.dumps({**TINY, "vocab_size": table_rows})  # the --expert-config override of the 115M default
    never = [0, tokenizer.bos_token_id, eos]  # UNK, BOS and EOS (the padding): special ids within the table
    return {
        "root": root,
        "originals": originals,
        "rows": rows,
        "table_rows": table_rows,
        "config": config,
        "never": never,
    }


def _expected_histogram(standins, domain: str) -> torch.Tensor:
    ids = np.array([chunk[:-1] for chunk in standins["rows"][domain]["train"][:6]]).reshape(-1)
    counts = np.bincount(ids, minlength=standins["table_rows"])
    counts[standins["never"]] = 0  # special tokens are never counted
    return torch.from_numpy(counts).to(torch.int64)


@pytest.mark.slow
def test_recipe_converts_counts_evaluates_and_pushes_through_the_hub(hub, standins, tmp_path, capsys):
    api = HfApi()
    api.create_repo("Erosinho/M2D2-Llama-115M-fixed-attn-experts")
    api.upload_folder(repo_id="Erosinho/M2D2-Llama-115M-fixed-attn-experts", folder_path=standins["root"] / "experts")
    api.create_repo("meta-llama/Meta-Llama-3-8B")
    api.upload_folder(repo_id="meta-llama/Meta-Llama-3-8B", folder_path=standins["root"] / "tokenizer")
    api.create_repo("org/m2d2-tokenized", repo_type="dataset")
    api.upload_folder(repo_id="org/m2d2-tokenized", folder_path=standins["root"] / "data", repo_type="dataset")

    arguments = ["--data", "org/m2d2-tokenized", "--output", str(tmp_path / "out"), "--domains", *DOMAINS]
    arguments += ["--expert-config", standins["config"], *FLAGS, "--device", "cpu", "--push-to", "gensyn"]
    assert cli_main(["recipe", "m2d2", *arguments]) == 0
    printed = capsys.readouterr().out
    assert "pushed the router to gensyn/ir3de-m2d2" in printed

    # (a) each expert is a standard LlamaForCausalLM folder on the Hub with the authors' weights, bit for bit.
    for domain in DOMAINS:
        repo = f"gensyn/M2D2-Llama-115M-{domain}"
        files = hub.files(repo)
        assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "README.md"} <= set(
            files
        )
        card = files["README.md"].decode()
        assert f"llama_115000000_{domain}_seed=42_freeze_attn.pth" in card and "weights_only=True" in card
        assert ("rotary_emb.inv_freq" in card) == (domain == "legal")
        expert = AutoModelForCausalLM.from_pretrained(repo)
        assert expert.dtype == torch.bfloat16 and expert.config.vocab_size == standins["table_rows"]
        original = standins["originals"][domain].state_dict()
        for key, tensor in expert.state_dict().items():
            assert torch.equal(tensor, original[key]), key
        generation = json.loads(files["generation_config.json"])
        assert generation["eos_token_id"] == generation["pad_token_id"] == standins["never"][2]

    # (b) the router names the experts by Hub id and commit; its histograms are the first 3 batches of 2 rows.
    router = IR3DERouterModel.from_pretrained("gensyn/ir3de-m2d2")
    assert router.expert_names == DOMAINS
    for spec in router.config.expert_specs:
        assert spec.source == f"gensyn/M2D2-Llama-115M-{spec.name}"
        assert spec.revision == hub.commits(spec.source)[-1]
    assert router.config.encoder == "gensyn/M2D2-Llama-115M-code"
    assert router.config.encoder_revision == hub.commits("gensyn/M2D2-Llama-115M-code")[-1]
    first = AutoModelForCausalLM.from_pretrained("gensyn/M2D2-Llama-115M-code", dtype=torch.float32)
    assert torch.equal(router.embed_tokens.weight, first.get_input_embeddings().weight)
    for index, domain in enumerate(DOMAINS):
        assert torch.equal(router.expert_counts[index], _expected_histogram(standins, domain))
    assert router.config.aggregation == "majority_vote" and router.config.ridge_lambda == 1e-2
    assert not router.config.balance_experts and router.config.naive_bayes_weight == 0.0  # the paper's, explicit

    # (c) accuracy and perplexities, checked against the original models on the first 2 batches of test rows.
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    evaluation = results["evaluation"]
    assert evaluation["rows"] == dict.fromkeys(DOMAINS, 4)
    test_ids = {d: torch.tensor([c[:-1] for c in standins["rows"][d]["test"][:4]]) for d in DOMAINS}
    test_labels = {d: torch.tensor([c[1:] for c in standins["rows"][d]["test"][:4]]) for d in DOMAINS}
    routed = {d: router.route(test_ids[d]).expert_names for d in DOMAINS}
    correct = sum(name == d for d in DOMAINS for name in routed[d])
    assert evaluation["routing"]["accuracy"] == pytest.approx(correct / 12)

    def perplexity(domain: str, experts: list[str]) -> float:
        nll = 0.0
        for row, name in enumerate(experts):
            logits = standins["originals"][name](input_ids=test_ids[domain][row : row + 1]).logits.float()[0]
            nll += float(torch.nn.functional.cross_entropy(logits, test_labels[domain][row], reduction="sum"))
        return math.exp(nll / (4 * LENGTH))

    with torch.inference_mode():
        for domain in DOMAINS:
            oracle = perplexity(domain, [domain] * 4)
            assert evaluation["oracle_perplexity"][domain] == pytest.approx(oracle, rel=1e-4)
            assert evaluation["routed_perplexity"][domain] == pytest.approx(
                perplexity(domain, routed[domain]), rel=1e-4
            )

    card = hub.files("gensyn/ir3de-m2d2")["README.md"].decode()
    assert "## The M2D2 recipe" in card and "ir3de recipe m2d2 --data org/m2d2-tokenized" in card
    assert f"{evaluation['routing']['accuracy']:.1%}" in card
    assert f"{evaluation['normalized_performance']:.1f}" in card
    assert "[gensyn/M2D2-Llama-115M-legal](https://huggingface.co/gensyn/M2D2-Llama-115M-legal)" in card

    # The pushed experts load through our ExpertPool with the router's tokenizer check.
    pool = ExpertPool(tokenizer_fingerprint=router.config.tokenizer_fingerprint)
    pool.register(ExpertSpec("docs", source="gensyn/M2D2-Llama-115M-docs"))
    assert isinstance(pool.get("docs").model, LlamaForCausalLM)


@pytest.mark.slow
def test_two_process_torchrun_recipe_equals_the_one_process_recipe(standins, tmp_path):
    local = standins["root"]
    common = ["--data", str(local / "data"), "--experts-source", str(local / "experts"), "--domains", *DOMAINS]
    common += [
        "--tokenizer",
        str(local / "tokenizer"),
        "--expert-config",
        standins["config"],
        *FLAGS,
        "--device",
        "cpu",
    ]
    assert recipe_main([*common, "--output", str(tmp_path / "one")]) == 0

    environment = {**os.environ, "ACCELERATE_USE_CPU": "1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", PORT, "-m", "ir3de_hf.recipes.m2d2"]
    run = subprocess.run(
        [*launcher, *common, "--output", str(tmp_path / "two")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]

    one = IR3DERouterModel.from_pretrained(tmp_path / "one" / "router")
    two = IR3DERouterModel.from_pretrained(tmp_path / "two" / "router")
    assert two.expert_names == one.expert_names == DOMAINS
    assert torch.equal(two.expert_counts, one.expert_counts)
    for exact_two, exact_one in zip(two.ridge_solution(), one.ridge_solution(), strict=True):
        assert torch.equal(exact_two, exact_one)
    for index, domain in enumerate(DOMAINS):
        assert torch.equal(one.expert_counts[index], _expected_histogram(standins, domain))
    # Local experts are recorded relative to the router folder, never as paths of this machine.
    assert [spec.source for spec in two.config.expert_specs] == [
        str((tmp_path / "two" / "experts" / domain).resolve()) for domain in DOMAINS
    ]
    assert "../experts/code" in (tmp_path / "two" / "router" / "config.json").read_text()

    results = {n: json.loads((tmp_path / n / "results.json").read_text()) for n in ("one", "two")}
    assert results["two"]["processes"] == 2 and results["two"]["train_rows"] == dict.fromkeys(DOMAINS, 6)
    shares = results["two"]["tokens_per_process"]
    assert len(shares) == 2 and all(share > 0 for share in shares)
    assert sum(shares) == sum(results["one"]["tokens_per_process"]) == int(one.expert_counts.sum())
    assert results["two"]["evaluation"] == results["one"]["evaluation"]


def test_bad_inputs_are_one_line_errors(standins, tmp_path, capsys):
    local = standins["root"]
    common = ["--tokenizer", str(local / "tokenizer"), "--expert-config", standins["config"], *FLAGS]
    common += ["--domains", *DOMAINS, "--device", "cpu"]

    broken = tmp_path / "broken"
    broken.mkdir()
    for domain in DOMAINS:  # a plain LlamaForCausalLM state dict: no wrapper prefix
        state = standins["originals"][domain].state_dict()
        torch.save(state, broken / f"llama_115000000_{domain}_seed=42_freeze_attn.pth")
    arguments = ["--data", str(local / "data"), "--experts-source", str(broken), "--output", str(tmp_path / "a")]
    assert recipe_main([*common, *arguments]) == 1
    error = capsys.readouterr().err
    assert "has no key starting with '_model.'" in error and len(error.strip().splitlines()) == 1

    arguments = ["--data", str(tmp_path), "--experts-source", str(local / "experts"), "--output", str(tmp_path / "b")]
    assert recipe_main([*common, *arguments]) == 1
    assert "No parquet files for domain 'code', split 'train'" in capsys.readouterr().err

    wrong = json.dumps({**TINY, "vocab_size": standins["table_rows"], "hidden_size": 32})
    arguments = [
        "--data",
        str(local / "data"),
        "--experts-source",
        str(local / "experts"),
        "--output",
        str(tmp_path / "c"),
    ]
    assert recipe_main([*arguments, *common, "--expert-config", wrong]) == 1
    assert "pass the checkpoint's sizes with --expert-config" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:
        recipe_main(["--data", "x", "--output", str(tmp_path / "d"), "--batches", "0"])
    assert exit_info.value.code == 2


def test_the_recipe_routes_with_the_papers_settings_and_its_card_says_so(expert_dir, tmp_path):
    """The authors' CLM router (gensyn-ai/IR3DE utils/router_utils.py): λ = 1e-2, majority vote over every token,
    one solve with one-hot targets (each domain weighs by its token count), columns normalised, nothing else. The
    library's defaults differ (balanced experts), so the recipe sets each one, and its card lists them."""
    from ir3de_hf.evaluation import routing_report
    from ir3de_hf.recipes.m2d2 import CARD_SETTINGS, _router, build_parser
    from ir3de_hf.recipes.m2d2_card import recipe_section
    from ir3de_hf.recipes.routed_evaluation import RoutedEvaluation

    args = build_parser().parse_args(["--data", "x", "--output", str(tmp_path)])
    config = _router(args, expert_dir, None).config
    paper = {
        "ridge_lambda": 1e-2,
        "aggregation": "majority_vote",
        "normalize_columns": True,
        "balance_experts": False,
        "naive_bayes_weight": 0.0,
    }
    assert {key: getattr(config, key) for key in CARD_SETTINGS} == paper

    perplexities = {"code": 2.0, "legal": 3.0}
    rows = {"code": 1, "legal": 1}
    evaluation = RoutedEvaluation(
        routing_report(["code", "legal"], ["code", "legal"]), perplexities, perplexities, 100.0, rows, rows
    )
    section = recipe_section(
        experts_source="Erosinho/M2D2-Llama-115M-fixed-attn-experts",
        batches=1000,
        batch_size=16,
        sequence_length=1024,
        test_batches=16,
        tokens={"code": 10, "legal": 12},
        rows=rows,
        evaluation=evaluation,
        command="ir3de recipe m2d2 ...",
        settings=paper,
    )
    assert (
        "`ridge_lambda=0.01`, `aggregation='majority_vote'`, `normalize_columns=True`, `balance_experts=False`, "
        "`naive_bayes_weight=0.0`"
    ) in " ".join(section.split())
    assert "docs/m2d2.md" in section
