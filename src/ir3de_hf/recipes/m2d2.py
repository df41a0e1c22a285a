# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The paper's M2D2 router (CLM setting): ``ir3de recipe m2d2 ...`` or ``python -m ir3de_hf.recipes.m2d2 ...``.

1. converts the authors' five expert checkpoints (``llama_115000000_<domain>_seed=42_freeze_attn.pth`` in
   ``Erosinho/M2D2-Llama-115M-fixed-attn-experts``) into standard ``LlamaForCausalLM`` folders;
2. counts the pre-tokenised train split of each domain with the paper's budget (1,000 batches of 16 x 1,024 tokens),
   on one process or many (``torchrun``: rows are sharded, int64 histograms summed, the result is identical); the
   router's encoder is the first expert's ``embed_tokens``;
3. solves with the paper's settings (`PAPER_SETTINGS`: λ, majority vote, column normalisation, experts weighed by
   token count, no naive-Bayes term), evaluates routing accuracy and routed perplexity on the test split, writes the
   router with a card holding the settings, the numbers, the experts and the command;
4. with ``--push-to ORG``, pushes the experts (``ORG/M2D2-Llama-115M-<domain>``) and the router (``ORG/ir3de-m2d2``),
   the router naming the experts by Hub id and commit.

Unlike the authors' code, special tokens (EOS padding included) are neither counted nor vote; docs/m2d2.md lists every
difference from the authors' pipeline.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .reference_experts import ConvertedCheckpoint
    from .routed_evaluation import RoutedEvaluation

__all__ = ["DOMAINS", "build_parser", "main"]

DOMAINS = ("cs_l1", "math_l1", "physics_l1", "History_and_events", "Philosophy_and_thinking")
EXPERTS_REPO = "Erosinho/M2D2-Llama-115M-fixed-attn-experts"
CHECKPOINT_PATTERN = "llama_115000000_{domain}_seed=42_freeze_attn.pth"
TOKENIZER = "meta-llama/Meta-Llama-3-8B"
EXPERT_CONFIG = {  # the authors' LlamaWrapper(hidden_size=768, num_attention_heads=12, num_hidden_layers=12)
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "vocab_size": 128002,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}


# The authors' CLM router (gensyn-ai/IR3DE, utils/router_utils.py generate_router, strategy majority_voting): one
# (A + λI) W = B solve with one-hot targets, so each domain weighs by its token count, column-normalised, no other
# term. Set explicitly: the library's own defaults (balanced experts) are not the paper's. λ and the aggregation come
# from --ridge-lambda and --aggregation, whose defaults are the paper's.
PAPER_SETTINGS = {"normalize_columns": True, "balance_experts": False, "naive_bayes_weight": 0.0}
CARD_SETTINGS = ("ridge_lambda", "aggregation", "normalize_columns", "balance_experts", "naive_bayes_weight")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The recipe's arguments; ``ir3de recipe m2d2`` and ``python -m ir3de_hf.recipes.m2d2`` share them."""
    from ..aggregation import AGGREGATIONS
    from ..cli.arguments import positive_int

    parser = argparse.ArgumentParser(
        prog=prog or "python -m ir3de_hf.recipes.m2d2",
        description="Build the paper's M2D2 router: convert the experts, count the data, evaluate, save, push.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data",
        required=True,
        help="M2D2 pre-tokenised parquet: a folder or a Hub dataset id "
        "holding <domain>/{train,test}/*.parquet with an input_ids column",
    )
    parser.add_argument("--output", type=Path, required=True, help="writes experts/<domain>/, router/, results.json")
    parser.add_argument("--experts-source", default=EXPERTS_REPO, help="folder or Hub id of the reference .pth files")
    parser.add_argument("--experts-revision", help="revision of --experts-source on the Hub")
    parser.add_argument("--data-revision", help="revision of --data on the Hub")
    parser.add_argument("--checkpoint-pattern", default=CHECKPOINT_PATTERN, help="file name of one expert")
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), help="the experts, in routing order")
    parser.add_argument("--tokenizer", default=TOKENIZER, help="the experts' tokenizer (Hub id or folder)")
    parser.add_argument("--expert-config", help="JSON (inline or a file) overriding the experts' LlamaConfig fields")
    parser.add_argument("--batches", type=positive_int, default=1000, help="train batches counted per domain")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="rows per batch")
    parser.add_argument("--sequence-length", type=positive_int, default=1024, help="tokens kept per row")
    parser.add_argument("--test-batches", type=positive_int, default=16, help="test batches evaluated per domain")
    parser.add_argument("--eval-batch-size", type=positive_int, default=4, help="rows per expert forward pass")
    parser.add_argument("--ridge-lambda", type=float, default=1e-2, help="ridge penalty (the paper's 1e-2)")
    parser.add_argument(
        "--aggregation",
        default="majority_vote",
        choices=AGGREGATIONS,
        help="how tokens decide (majority_vote is the paper's CLM choice)",
    )
    parser.add_argument("--top-k", type=positive_int, default=10, help="tokens kept by entropy_top_k")
    parser.add_argument("--device", help="where the experts run for evaluation (default: cuda if available)")
    parser.add_argument("--push-to", metavar="ORG", help="push the experts and ORG/ROUTER_NAME to the Hub")
    parser.add_argument("--router-name", default="ir3de-m2d2", help="repository name of the router")
    parser.add_argument(
        "--expert-prefix", default="M2D2-Llama-115M-", help="repository name of an expert, before its domain"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-router folder at OUTPUT/router")
    return parser


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Runs the recipe; returns the exit code (1 with a one-line message for bad input or a failed download)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    from ..cli.errors import EXPECTED_ERRORS, report_error
    from ..distributed import end_processes

    try:
        run(args, command=f"{parser.prog} {shlex.join(_portable(argv))}")
    except EXPECTED_ERRORS as error:
        end_processes(wait=False)
        return report_error(parser.prog, error)
    end_processes(wait=True)  # the others wait while the main process evaluates and saves
    return 0


def _portable(argv: list[str]) -> list[str]:
    """The command as the card shows it: absolute paths of this machine become their last part (``./name``), so a
    pushed card names no local directory."""
    return [f"./{Path(item).name}" if Path(item).is_absolute() else item for item in argv]


def run(args: argparse.Namespace, command: str) -> dict[str, Any] | None:
    """The whole recipe (see the module docstring); returns the results on the main process, None on the others."""
    import torch

    from ..cli.errors import EXPECTED_ERRORS
    from ..distributed import broadcast_from_main, process_state
    from .hub_sources import local_folder, push_folders
    from .token_parquet import Budget, count_train_splits, split_files

    _check_settings(args)
    state = process_state()
    folders = {domain: args.output / "experts" / domain for domain in args.domains}
    repos = {domain: f"{args.push_to}/{args.expert_prefix}{domain}" for domain in args.domains} if args.push_to else {}
    with state.main_process_first():  # a Hub dataset is downloaded once, then found in the cache
        data = local_folder(args.data, args.data_revision, "dataset", [f"{d}/*/*.parquet" for d in args.domains])
    for domain in args.domains:  # a missing split is reported before hours of conversion and counting
        for split in ("train", "test"):
            split_files(data, domain, split)
    watch = _Stopwatch()
    converted, router, failure = [], None, None
    payload: tuple[int, list[int]] | str | None = None
    if state.is_main_process:
        try:
            converted = _convert(args, folders, repos)
            router = _router(args, folders[args.domains[0]], repos.get(args.domains[0]))
            payload = (router.config.vocab_size, router.config.never_counted_ids)
            watch.lap("convert")
        except EXPECTED_ERRORS as error:
            failure, payload = error, str(error)
    # The others wait for the vocabulary; a failure is sent instead, so that every process stops with its message.
    shared = broadcast_from_main(payload)
    if failure is not None:
        raise failure
    if isinstance(shared, str):
        raise ValueError(f"the main process stopped: {shared}")
    vocab_size, ignored = shared
    budget = Budget(args.batches, args.batch_size, args.sequence_length)
    histograms, rows, shares = count_train_splits(data, args.domains, budget, vocab_size, ignored)
    watch.lap("count")
    if router is None:
        return None  # the main process evaluates alone: no collective call follows (main() then waits for it)
    sources: dict[str, tuple[str, str | None]] = {d: (str(folders[d]), None) for d in args.domains}
    if repos:
        messages = [f"{e.source_file} as LlamaForCausalLM (ir3de recipe m2d2)" for e in converted]
        commits = push_folders({e.name: e.directory for e in converted}, repos, messages)
        sources = {name: (repos[name], commit) for name, commit in commits.items()}
    watch.lap("push_experts")
    for expert in converted:
        source, revision = sources[expert.name]
        description = f"M2D2 {expert.name} expert, converted from {expert.source_file}"
        router.add_expert(
            expert.name, histogram=histograms[expert.name], source=source, revision=revision, description=description
        )
    if repos:  # the encoder is the first expert's table: name its repository at the pushed commit
        router.config.encoder_revision = sources[args.domains[0]][1]
    router.ridge_solution()  # solves now, so that the evaluation's time is its own
    watch.lap("solve")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    evaluation = _evaluate(args, router, data, folders, device)
    watch.lap("evaluate")
    tokens = {domain: int(histograms[domain].sum()) for domain in args.domains}
    results = {
        "command": command,
        "processes": state.num_processes,
        "tokens": tokens,
        "train_rows": rows,
        "tokens_per_process": shares,
        "experts": {
            e.name: {"source_file": e.source_file, "sha256": e.sha256, "repo": repos.get(e.name)} for e in converted
        },
        "evaluation": evaluation.to_dict(),
        "seconds": watch.seconds,
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
    }
    _publish(args, router, evaluation, results, watch)
    return results


def _publish(
    args: argparse.Namespace, router: Any, evaluation: RoutedEvaluation, results: dict[str, Any], watch: _Stopwatch
) -> None:
    """Saves the router with its card and ``results.json``; with ``--push-to``, pushes the router too."""
    router_repo = f"{args.push_to}/{args.router_name}" if args.push_to else None
    settings = {key: getattr(router.config, key) for key in CARD_SETTINGS}
    card = _card(args, results["command"], evaluation, results, settings, router_repo)
    router.save_pretrained(args.output / "router", card=card, copy_experts=False, overwrite=args.overwrite)
    watch.lap("save")
    _write_results(args.output, results)
    print(
        f"routing accuracy {evaluation.routing.accuracy:.1%}, normalised performance "
        f"{evaluation.normalized_performance:.1f}; saved the router to {args.output / 'router'}"
    )
    if router_repo is not None:
        commit = router.push_to_hub(router_repo, card=card, commit_message="IR3DE M2D2 router (ir3de recipe m2d2)")
        results["router_commit"] = commit.oid
        _write_results(args.output, results)
        print(f"pushed the router to {router_repo} at {commit.oid}")


def _write_results(output: Path, results: dict[str, Any]) -> None:
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")


class _Stopwatch:
    """Seconds spent per stage of the recipe, for results.json and the README's estimates."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._last, 3)
        self._last = now


def _check_settings(args: argparse.Namespace) -> None:
    """Refuses bad settings before any download or conversion."""
    from ..configuration_ir3de import ExpertSpec
    from ..hub._router_files import check_save_target

    if len(set(args.domains)) != len(args.domains):
        raise ValueError(f"--domains names a domain twice: {args.domains}")
    for domain in args.domains:
        ExpertSpec(domain)
    check_save_target(args.output / "router", args.overwrite)


def _convert(args: argparse.Namespace, folders: dict[str, Path], repos: dict[str, str]) -> list[ConvertedCheckpoint]:
    from transformers import AutoTokenizer

    from .hub_sources import local_folder
    from .reference_experts import convert_reference_expert

    names = {domain: args.checkpoint_pattern.format(domain=domain) for domain in args.domains}
    root = local_folder(args.experts_source, args.experts_revision, None, list(names.values()))
    missing = [name for name in names.values() if not (root / name).is_file()]
    if missing:
        found = ", ".join(sorted(path.name for path in root.glob("*.pth"))) or "no .pth file"
        raise ValueError(f"{args.experts_source} has no {missing[0]} (found: {found}).")
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    config = _expert_config(args.expert_config, tokenizer)
    converted = []
    for domain in args.domains:
        converted.append(
            convert_reference_expert(
                domain,
                root / names[domain],
                folders[domain],
                config,
                tokenizer,
                source=args.experts_source,
                repo_id=repos.get(domain),
            )
        )
        print(f"converted {names[domain]} -> {folders[domain]}")
    return converted


def _expert_config(override: str | None, tokenizer: Any) -> Any:
    """The authors' expert architecture, with ``override`` (JSON text or a JSON file) on top; token ids from the
    tokenizer, EOS as padding."""
    from transformers import LlamaConfig

    fields: dict[str, Any] = dict(EXPERT_CONFIG)
    if override:
        text = Path(override).read_text() if Path(override).is_file() else override
        try:
            extra = json.loads(text)
        except ValueError as error:
            raise ValueError(f"--expert-config is neither a JSON object nor a JSON file ({error}).") from error
        if not isinstance(extra, dict):
            raise ValueError("--expert-config must be a JSON object of LlamaConfig fields.")
        fields.update(extra)
    eos = tokenizer.eos_token_id
    return LlamaConfig(**fields, bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=eos)


def _router(args: argparse.Namespace, encoder: Path, encoder_id: str | None) -> Any:
    from ..modeling_ir3de import IR3DERouterModel

    return IR3DERouterModel.from_encoder(
        encoder,
        encoder_id=encoder_id,
        ridge_lambda=args.ridge_lambda,
        aggregation=args.aggregation,
        top_k=args.top_k,
        **PAPER_SETTINGS,
    )


def _evaluate(
    args: argparse.Namespace, router: Any, data: Path, folders: dict[str, Path], device: str
) -> RoutedEvaluation:
    """Routing and perplexities on the test split, experts loaded from the converted folders."""
    from ..configuration_ir3de import ExpertSpec
    from ..experts import ExpertPool
    from .routed_evaluation import evaluate_routed
    from .token_parquet import Budget, load_split, split_files

    budget = Budget(args.test_batches, args.batch_size, args.sequence_length)
    test = {domain: load_split(split_files(data, domain, "test"), budget) for domain in args.domains}
    pool = ExpertPool(device_map=device, tokenizer_fingerprint=router.config.tokenizer_fingerprint)
    for domain, folder in folders.items():
        pool.register(ExpertSpec(domain, source=str(folder)))
    return evaluate_routed(router, pool, test, batch_size=args.eval_batch_size)


def _card(
    args: argparse.Namespace,
    command: str,
    evaluation: RoutedEvaluation,
    results: dict[str, Any],
    settings: dict[str, Any],
    repo_id: str | None,
) -> Any:
    from ..hub._locations import hub_id
    from ..model_card import CardInfo
    from .m2d2_card import recipe_section

    section = recipe_section(
        experts_source=args.experts_source,
        batches=args.batches,
        batch_size=args.batch_size,
        sequence_length=args.sequence_length,
        test_batches=args.test_batches,
        tokens=results["tokens"],
        rows=results["train_rows"],
        evaluation=evaluation,
        command=command,
        settings=settings,
    )
    dataset = hub_id(args.data)
    return CardInfo(
        repo_id=repo_id,
        evaluation=evaluation.routing,
        evaluation_dataset=dataset or "M2D2 (pre-tokenised)",
        datasets=[dataset] if dataset else None,
        evaluation_split="test",
        tags=["m2d2", "llama"],
        sections=section,
    )


if __name__ == "__main__":
    sys.exit(main())
