"""Import of IR3DE-AXL statistics files (``src/extract_ir3de_stats.py`` of gensyn-ai/IR3DE-AXL) into a router.

The files are made by `axl_statistics` below, an independent generator that does what the AXL extractor does
(EOS-padded batches, per-token float32 features ``[E[t], 1]``, ``A = Σ x xᵀ`` and ``b = Σ x`` summed batch by batch,
saved as lists), never by our exporter.
"""

from __future__ import annotations

import fractions
import hashlib
import json
import random

import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file

from ir3de_hf import IR3DERouterModel
from ir3de_hf.reference_import import import_reference_router, load_reference_statistics

LAMBDA = 1e-2


def axl_statistics(embedding: torch.Tensor, batches: list[list[list[int]]], eos_id: int) -> tuple[list, list]:
    """Per batch: pad with EOS to the longest row (the attention mask is not used), embed in float32, append the
    bias feature and add ``XᵀX`` and ``ΣX`` into float32 accumulators, exactly as the AXL extractor does."""
    width = embedding.shape[1] + 1
    a, b = torch.zeros(width, width, dtype=torch.float32), torch.zeros(width, dtype=torch.float32)
    for batch in batches:
        length = max(len(row) for row in batch)
        ids = torch.tensor([row + [eos_id] * (length - len(row)) for row in batch])
        x = embedding.float()[ids].reshape(-1, width - 1)
        x = torch.cat((x, torch.ones(x.shape[0], 1, dtype=torch.float32)), dim=1)
        a += x.T @ x
        b += x.sum(dim=0)
    return a, b


def save_axl(path, entries: list[tuple[str, str, torch.Tensor, torch.Tensor]], embedder: str) -> None:
    """One AXL file: ``entries`` are (tag, dataset, A, b), saved as the extractor saves them (lists)."""
    torch.save(
        {
            "A": [a for _, _, a, _ in entries],
            "b": [b for _, _, _, b in entries],
            "domain_tags": [tag for tag, _, _, _ in entries],
            "datasets_names": [dataset for _, dataset, _, _ in entries],
            "tokenizer": embedder,
            "embedder": embedder,
        },
        path,
    )


def batches_of(tokenizer, texts: list[str], batch_size: int = 4) -> list[list[list[int]]]:
    rows = [row for row in tokenizer(texts, add_special_tokens=False)["input_ids"] if row]
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]


@pytest.fixture
def axl_dir(tmp_path, _tiny_llama, word_tokenizer, domain_texts, expert_dir):
    """Three AXL files as AXL would publish them: ``coding`` counted on two datasets (two files), ``legal`` and
    ``docs`` in a third file with two entries."""
    embedding = _tiny_llama.get_input_embeddings().weight.detach()
    eos = word_tokenizer.pad_token_id  # the extractor pads with EOS: pad = eos

    def stats(texts):
        return axl_statistics(embedding, batches_of(word_tokenizer, texts), eos)

    code = domain_texts["code"]
    half = len(code) // 2
    save_axl(tmp_path / "tiny_code_a.pth", [("coding", "stdlib/a", *stats(code[:half]))], str(expert_dir))
    save_axl(tmp_path / "tiny_code_b.pth", [("coding", "stdlib/b", *stats(code[half:]))], str(expert_dir))
    entries = [("legal", "licenses", *stats(domain_texts["legal"])), ("docs", "docs", *stats(domain_texts["docs"]))]
    save_axl(tmp_path / "tiny_legal_docs.pth", entries, str(expert_dir))
    return tmp_path


def peer_head(paths) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """What an AXL peer computes from the files (A summed over every entry, b summed per tag in first-seen order),
    solved exactly in float64 and column-normalised."""
    a_total, b_per_tag = None, {}
    for path in paths:
        content = torch.load(path, weights_only=True)
        for tag, a, b in zip(content["domain_tags"], content["A"], content["b"], strict=True):
            a_total = a.double() if a_total is None else a_total + a.double()
            b_per_tag[tag] = b_per_tag[tag] + b.double() if tag in b_per_tag else b.double()
    b_matrix = torch.stack(list(b_per_tag.values()), dim=1)
    solution = torch.linalg.solve(a_total + LAMBDA * torch.eye(a_total.shape[0], dtype=torch.float64), b_matrix)
    weight, bias = solution[:-1], solution[-1]
    norm = weight.norm(dim=0)
    return list(b_per_tag), weight / norm, bias / norm


def windows(tokenizer, domain_texts, count: int, length: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    rows = [row for texts in domain_texts.values() for row in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    rows = [row for row in rows if len(row) > length]
    picked = []
    for _ in range(count):
        row = rng.choice(rows)
        start = rng.randrange(len(row) - length)
        picked.append(row[start : start + length])
    return picked


def test_axl_files_import_as_the_exact_float64_solve_with_identical_decisions(
    axl_dir, expert_dir, word_tokenizer, domain_texts
):
    paths = sorted(axl_dir.glob("*.pth"))
    router = import_reference_router(paths, encoder=expert_dir, aggregation="majority_vote")

    tags, weight, bias = peer_head(paths)
    assert router.expert_names == tags == ["coding", "legal", "docs"]
    assert [spec.statistics for spec in router.config.expert_specs] == ["moments"] * 3
    assert all(spec.includes_padding for spec in router.config.expert_specs)
    assert router.config.expert_specs[0].description == "IR3DE-AXL statistics of stdlib/a, stdlib/b"
    got_weight, got_bias = router.ridge_solution(normalize=True)
    torch.testing.assert_close(got_weight, weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_bias, bias, rtol=0, atol=1e-6)

    prompts = windows(word_tokenizer, domain_texts, 1000, 16)
    embedding = router.embed_tokens.weight.double()
    votes = (embedding[torch.tensor(prompts)] @ weight + bias).argmax(dim=-1)  # the peer's per-token argmax
    expected = [int(torch.bincount(row, minlength=3).argmax()) for row in votes]  # mode; ties: lowest index
    assert router.route(prompts).expert_ids.tolist() == expected
    assert len(set(expected)) == 3


def test_sources_are_files_globs_directories_or_a_hub_repository(axl_dir, expert_dir, hub, monkeypatch):
    import huggingface_hub.constants as hub_constants

    first = import_reference_router(axl_dir, encoder=expert_dir)
    assert first.expert_names == ["coding", "legal", "docs"]
    by_glob = import_reference_router(str(axl_dir / "tiny_code_*.pth"), encoder=expert_dir)
    assert by_glob.expert_names == ["coding"]
    assert torch.equal(by_glob.store.moments("coding")[0], first.store.moments("coding")[0])
    assert import_reference_router(axl_dir, encoder=expert_dir, include="*legal*").expert_names == ["legal", "docs"]

    HfApi().create_repo("paper/ir3de-stats")
    HfApi().upload_folder(repo_id="paper/ir3de-stats", folder_path=axl_dir, allow_patterns=["*.pth"])
    from_hub = import_reference_router("paper/ir3de-stats", encoder=expert_dir)
    torch.testing.assert_close(from_hub.ridge_solution(), first.ridge_solution(), rtol=0, atol=0)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # the HF cache alone now
    offline = import_reference_router("paper/ir3de-stats", encoder=expert_dir)
    assert offline.expert_names == ["coding", "legal", "docs"]
    with pytest.raises(ValueError, match="not in the HF cache"):
        import_reference_router("paper/never-downloaded")


def test_single_tensors_and_column_b_are_unwrapped(tmp_path, axl_dir, expert_dir):
    content = torch.load(axl_dir / "tiny_code_a.pth", weights_only=True)
    content["A"], content["b"] = content["A"][0], content["b"][0][:, None]  # a tensor, not a list; b as (d+1, 1)
    torch.save(content, tmp_path / "unwrapped.pth")
    unwrapped = import_reference_router(tmp_path / "unwrapped.pth", encoder=expert_dir)
    listed = import_reference_router(axl_dir / "tiny_code_a.pth", encoder=expert_dir)
    assert torch.equal(unwrapped.store.moments("coding")[1], listed.store.moments("coding")[1])


def test_imported_experts_keep_includes_padding_through_save_load_and_cards(
    axl_dir, expert_dir, domain_texts, tmp_path
):
    router = import_reference_router(axl_dir, encoder=expert_dir)
    router.add_expert("extra", texts=domain_texts["code"][:5])
    router.save_pretrained(tmp_path / "saved")

    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert [entry.get("includes_padding") for entry in config["experts"]] == [True, True, True, None]
    card = (tmp_path / "saved" / "README.md").read_text()
    assert card.count("(moments, padding counted)") == 3 and "Experts marked *padding counted*" in card
    tensors = load_file(tmp_path / "saved" / "model.safetensors")
    assert tensors["imported_moments_a"].shape == (3, 33, 33) and tensors["imported_moments_a"].dtype == torch.float64

    loaded = IR3DERouterModel.from_pretrained(tmp_path / "saved")
    assert [spec.includes_padding for spec in loaded.config.expert_specs] == [True, True, True, None]
    prompts = [text for texts in domain_texts.values() for text in texts[:6]]
    assert torch.equal(loaded.route(prompts).logits, router.route(prompts).logits)

    statistics = loaded.expert_statistics("legal")
    statistics.save(tmp_path / "legal-stats")
    assert json.loads((tmp_path / "legal-stats" / "statistics.json").read_text())["includes_padding"] is True
    assert "| padding counted | yes" in (tmp_path / "legal-stats" / "README.md").read_text()
    loaded.remove_expert("legal")
    loaded.add_expert_from_hub(tmp_path / "legal-stats")
    assert loaded.config.expert_specs[-1].includes_padding is True

    loaded.update_expert("coding", texts=domain_texts["code"])  # moments -> histogram: nothing padded any more
    assert loaded.config.experts[0] == {"name": "coding", "description": "IR3DE-AXL statistics of stdlib/a, stdlib/b"}


def test_pickled_objects_are_never_loaded(tmp_path):
    torch.save(
        {"A": [torch.eye(3)], "b": [torch.ones(3)], "domain_tags": ["x"], "path": fractions.Fraction(1, 3)},
        tmp_path / "evil.pth",
    )
    with pytest.raises(ValueError, match="never unpickled"):
        load_reference_statistics(tmp_path / "evil.pth")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"A": [torch.eye(3)], "b": [torch.ones(3)]}, r"lack \['domain_tags'\]"),
        ({"A": [torch.eye(4)], "b": [torch.ones(3)], "domain_tags": ["x"]}, r"A \(4, 4\) and b \(3,\)"),
        ({"A": [torch.eye(3)], "b": [torch.ones(3)] * 2, "domain_tags": ["x"]}, "one entry per domain tag"),
        ({"A": [torch.eye(3)], "b": [torch.ones(3)], "domain_tags": "x"}, "domain_tags must be a list of strings"),
        ({"A": [torch.eye(3)], "b": [torch.zeros(3)], "domain_tags": ["x"]}, "no token"),
        ({"A": [torch.eye(3)], "b": [torch.ones(3)], "domain_tags": ["x"], "embedder": 3}, "embedder must be"),
        ([torch.eye(3)], "must hold a dict"),
    ],
)
def test_malformed_files_are_clear_errors(tmp_path, content, message):
    torch.save(content, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=message):
        load_reference_statistics(tmp_path / "bad.pth")


def test_missing_sources_and_mixed_embedders_are_refused(tmp_path, axl_dir):
    with pytest.raises(ValueError, match="no such file or directory"):
        load_reference_statistics(tmp_path / "nothing.pth")
    with pytest.raises(ValueError, match="no file matches"):
        load_reference_statistics(tmp_path / "empty-dir-glob-*.pth")
    content = torch.load(axl_dir / "tiny_code_a.pth", weights_only=True)
    content["embedder"] = "meta-llama/Meta-Llama-3-8B"
    torch.save(content, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="statistics of different embedders cannot be merged"):
        load_reference_statistics([axl_dir / "tiny_code_b.pth", tmp_path / "other.pth"])


def test_an_encoder_other_than_the_files_embedder_is_refused(axl_dir, expert_dir, expert_dirs, tmp_path):
    with pytest.raises(ValueError, match="not 'org/other-model'"):
        import_reference_router(axl_dir, encoder=expert_dirs["twin"], encoder_id="org/other-model")
    with pytest.raises(ValueError, match=r"counted with the tokenizer .*, not 'org/other-tokenizer'"):
        import_reference_router(axl_dir, encoder=expert_dir, tokenizer="org/other-tokenizer")
    content = torch.load(axl_dir / "tiny_code_a.pth", weights_only=True)
    content["A"], content["b"] = [content["A"][0][1:, 1:]], [content["b"][0][1:]]  # d = 31 instead of 32
    torch.save(content, tmp_path / "narrow.pth")
    with pytest.raises(ValueError, match=r"moments of width 32 \(d\+1\) but the encoder's embeddings have d = 32"):
        import_reference_router(tmp_path / "narrow.pth", encoder=expert_dir)


# ------------------------------------------------------------------------------------------------ issue 23


def _digest(directory) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.glob("*.pth"))}


@pytest.mark.parametrize(
    ("dtypes", "message"),
    [
        ((torch.bfloat16, torch.bfloat16), r"has A in bfloat16, .*float32.*half-precision moments have lost"),
        ((torch.float16, torch.float32), r"has A in float16, .*half-precision"),
        ((torch.float32, torch.bfloat16), r"has b in bfloat16"),
        ((torch.int64, torch.int64), r"has A in int64, .*not summed float features"),
        ((torch.float32, torch.int32), r"has b in int32"),
    ],
    ids=["bf16", "fp16 A", "bf16 b", "int64", "int32 b"],
)
def test_axl_files_in_other_dtypes_than_float32_are_refused(axl_dir, expert_dir, tmp_path, dtypes, message):
    """The extractor saves float32 accumulators; a file cast to half precision (or to integers) would give another
    head, so it is refused, naming the tag and what to do. The files are written here with torch.save."""
    content = torch.load(axl_dir / "tiny_code_a.pth", weights_only=True)
    content["A"], content["b"] = [content["A"][0].to(dtypes[0])], [content["b"][0].to(dtypes[1])]
    folder = tmp_path / "cast"
    folder.mkdir()
    torch.save(content, folder / "cast.pth")
    before = _digest(folder)
    with pytest.raises(ValueError, match=message) as raised:
        import_reference_router(folder, encoder=expert_dir)
    assert "tag 'coding'" in str(raised.value) and "Extract the statistics again in float32" in str(raised.value)
    assert _digest(folder) == before


def test_float64_axl_files_are_read_exactly(axl_dir, expert_dir, tmp_path):
    content = torch.load(axl_dir / "tiny_code_a.pth", weights_only=True)
    content["A"], content["b"] = [content["A"][0].double()], [content["b"][0].double()]
    torch.save(content, tmp_path / "double.pth")
    double = import_reference_router(tmp_path / "double.pth", encoder=expert_dir)
    single = import_reference_router(axl_dir / "tiny_code_a.pth", encoder=expert_dir)
    assert all(
        torch.equal(x, y) for x, y in zip(double.store.moments("coding"), single.store.moments("coding"), strict=True)
    )


def test_import_sets_naive_bayes_weight_to_zero_with_a_warning(axl_dir, expert_dir, domain_texts):
    """Imported experts hold moments only, so the naive-Bayes term adds nothing: the config says 0 (what routing
    does), and a warning says why and how to get the term back."""
    with pytest.warns(UserWarning, match=r"naive_bayes_weight=0\.1 is set to 0: .*moments .*update_expert"):
        imported = import_reference_router(axl_dir, encoder=expert_dir, naive_bayes_weight=0.1)
    assert imported.config.naive_bayes_weight == 0.0
    plain = import_reference_router(axl_dir, encoder=expert_dir)
    prompts = [text for texts in domain_texts.values() for text in texts[:4]]
    assert torch.equal(imported.route(prompts).logits, plain.route(prompts).logits)
    plain.config.naive_bayes_weight = 0.1  # the term has no counts to use: routing is the same, as the config says
    assert torch.equal(plain.route(prompts).logits, imported.route(prompts).logits)
    with pytest.raises(ValueError, match=r"naive_bayes_weight"):  # an invalid value is still the config's error
        import_reference_router(axl_dir, encoder=expert_dir, naive_bayes_weight=-1)


def test_exporting_a_router_with_the_naive_bayes_term_warns(expert_dir, domain_texts, tmp_path):
    from ir3de_hf.reference_import import export_reference

    router = IR3DERouterModel.from_encoder(expert_dir, naive_bayes_weight=0.1)
    for name in ("code", "legal"):
        router.add_expert(name, texts=domain_texts[name][:10])
    with pytest.warns(UserWarning, match=r"naive_bayes_weight=0\.1, but an AXL file holds moments only"):
        export_reference(router, tmp_path / "nb.pth")
    assert torch.load(tmp_path / "nb.pth", weights_only=True)["domain_tags"] == ["code", "legal"]


def _naming(axl_dir, tmp_path, embedder: str, tokenizer: str | None = None):
    """The code file of `axl_dir` with another ``embedder`` (and ``tokenizer``, by default the same), as a file of
    its own folder."""
    content = torch.load(axl_dir / "tiny_code_a.pth", weights_only=True)
    content["embedder"], content["tokenizer"] = embedder, tokenizer or embedder
    folder = tmp_path / "named"
    folder.mkdir(exist_ok=True)
    torch.save(content, folder / "code.pth")
    return folder


def _snapshot_of(expert_dir, root, repo: str):
    """A copy of `expert_dir` laid out as an HF-cache snapshot of ``repo``."""
    import shutil

    folder = root / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123abcd"
    shutil.copytree(expert_dir, folder)
    return folder


IDENTITY_CASES = [
    (
        "a file naming a local path, no encoder=",
        lambda d, t, e, x: ((d,), {}),
        r"names its embedder by the local path .* never chooses which local folder is read\. Pass encoder=",
    ),
    (
        "another model's folder, no encoder_id",
        lambda d, t, e, x: ((d,), {"encoder": x["twin"]}),
        r"The encoder '.*twin' is not a copy of '.*tiny-expert0'.*differs from the folder",
    ),
    (
        "another model's folder confirmed by encoder_id",
        lambda d, t, e, x: ((d,), {"encoder": x["twin"], "encoder_id": str(e)}),
        r"is not a copy of .*its embedding table [0-9a-f]{12}… \(\d+, 32\) differs",
    ),
    (
        "a folder that names nothing, embedder not here",
        lambda d, t, e, x: ((_naming(d, t, "org/tiny-llama"),), {"encoder": x["twin"]}),
        r"Cannot tell whether the encoder .*twin' is a copy of 'org/tiny-llama'.*encoder_id='org/tiny-llama'",
    ),
    (
        "an HF-cache snapshot of another repository",
        lambda d, t, e, x: (
            (_naming(d, t, "org/tiny-llama"),),
            {"encoder": _snapshot_of(e, t, "org/other-llama"), "encoder_id": "org/tiny-llama"},
        ),
        r"summed over the embeddings of 'org/tiny-llama', not 'org/other-llama' \(.* is a snapshot of it in the HF",
    ),
    (
        "a loaded model named after another repository",
        lambda d, t, e, x: ((_naming(d, t, "org/tiny-llama"),), {"encoder": _named_model(e, "org/other-llama")}),
        r"not 'org/other-llama' \(the model's config\.name_or_path\)",
    ),
    (
        "a file naming its tokenizer by a local path",
        lambda d, t, e, x: ((_naming(d, t, str(e), tokenizer=str(t / "elsewhere")),), {"encoder": e}),
        r"names its tokenizer by the local path '.*elsewhere'.*Pass tokenizer= yourself",
    ),
    (
        "a Hub-id encoder other than the files'",
        lambda d, t, e, x: ((_naming(d, t, "org/tiny-llama"),), {"encoder": "org/other-llama"}),
        r"summed over the embeddings of 'org/tiny-llama', not 'org/other-llama'",
    ),
]


def _named_model(expert_dir, name: str):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(expert_dir)
    model.config.name_or_path = name
    return model


@pytest.mark.parametrize(("case", "arguments", "message"), IDENTITY_CASES, ids=[case[0] for case in IDENTITY_CASES])
def test_an_encoder_that_is_not_the_files_embedder_is_refused(
    axl_dir, expert_dir, expert_dirs, tmp_path, case, arguments, message
):
    sources, keywords = arguments(axl_dir, tmp_path, expert_dir, expert_dirs)
    before = {str(folder): _digest(folder) for folder in (axl_dir, *sources)}
    with pytest.raises(ValueError, match=message):
        import_reference_router(*sources, **keywords)
    assert {str(folder): _digest(folder) for folder in (axl_dir, *sources)} == before


def test_a_copy_of_the_embedder_is_accepted_by_its_table_or_by_encoder_id(axl_dir, expert_dir, expert_dirs, tmp_path):
    import shutil

    copy = shutil.copytree(expert_dir, tmp_path / "copy")  # another folder with the very same table
    by_table = import_reference_router(axl_dir, encoder=copy)
    assert by_table.config.encoder == str(expert_dir)  # the files' embedder is recorded, not this copy's path
    same = import_reference_router(axl_dir, encoder=expert_dir)
    assert torch.equal(by_table.ridge_solution()[0], same.ridge_solution()[0])

    named = _naming(axl_dir, tmp_path, "org/tiny-llama")
    confirmed = import_reference_router(named, encoder=copy, encoder_id="org/tiny-llama")
    assert confirmed.config.encoder == "org/tiny-llama"
    snapshot = _snapshot_of(expert_dir, tmp_path / "cache", "org/tiny-llama")
    assert import_reference_router(named, encoder=snapshot).config.encoder == "org/tiny-llama"


def test_a_hub_embedder_in_the_hf_cache_is_compared_table_to_table(axl_dir, expert_dir, expert_dirs, hub, tmp_path):
    """With the files' embedder in the HF cache, a local folder must have its exact table, encoder_id or not; nothing
    is downloaded for the comparison."""
    from huggingface_hub import snapshot_download

    HfApi().create_repo("org/tiny-llama")
    HfApi().upload_folder(repo_id="org/tiny-llama", folder_path=expert_dir)
    snapshot_download("org/tiny-llama")
    named = _naming(axl_dir, tmp_path, "org/tiny-llama")
    with pytest.raises(ValueError, match=r"twin' is not a copy of 'org/tiny-llama'.*'org/tiny-llama' in the HF cache"):
        import_reference_router(named, encoder=expert_dirs["twin"], encoder_id="org/tiny-llama")
    router = import_reference_router(named, encoder=expert_dir)  # no encoder_id: the cached table says it is
    assert router.config.encoder == "org/tiny-llama"


def test_a_folder_in_the_working_directory_named_like_the_embedder_is_not_read(
    axl_dir, expert_dir, tmp_path, monkeypatch
):
    """``org/tiny-llama`` in the files must not pick ``./org/tiny-llama`` here: without encoder= it is refused; with
    encoder= naming that folder, the user chose it."""
    import shutil

    named = _naming(axl_dir, tmp_path, "org/tiny-llama")
    shutil.copytree(expert_dir, tmp_path / "org" / "tiny-llama")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"names its embedder by the local path 'org/tiny-llama'"):
        import_reference_router(named)
    assert import_reference_router(named, encoder="org/tiny-llama").config.encoder == "org/tiny-llama"
