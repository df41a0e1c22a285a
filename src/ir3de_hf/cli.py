# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The ``ir3de`` command: fit a router, add or remove experts, route prompts, run the demo.

Each subcommand is a `Command` in `COMMANDS`: a name, help texts with examples, a function that declares its
arguments and a function that runs it and returns the exit code. To add one, write the two functions and append a
`Command`. Exit codes: 0 success, 1 an error with a one-line message on stderr (missing file, bad data, unknown
expert), 2 a usage error (reported by argparse), 130 interrupted.

The module imports only the standard library: each command imports what it needs when it runs, and `main` builds
only the arguments of the command being run (those of ``fit`` import torch), so ``ir3de --help`` starts at once.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["COMMANDS", "Command", "main"]

EXPECTED_ERRORS = (ValueError, OSError)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    epilog: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def expert_spec(value: str) -> tuple[str, str]:
    """``NAME=PATH`` -> ``(NAME, PATH)``; argparse reports a malformed spec as a usage error (exit 2)."""
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    return name, path


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value!r}")
    return int(value)


def _overwrite_argument(parser: argparse.ArgumentParser, where: str) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace {where} even when it holds something other than an IR3DE router (a model checkpoint, a "
        "dataset...): its files are deleted. Without it such a directory is refused and left as it is",
    )


def _check_output(directory: str | Path, overwrite: bool) -> None:
    """Refuses a foreign ``--output`` before any work: a fit may count for hours before it saves."""
    from .hub._router_files import check_save_target

    check_save_target(directory, overwrite)


# ---------------------------------------------------------------------------------------------------- fit


def _counting_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expert",
        dest="experts",
        metavar="NAME=PATH",
        type=expert_spec,
        action="append",
        required=True,
        help="an expert and its text: a directory of .txt files, a .parquet/.jsonl file (or glob) with a text "
        "column, or a dataset id; repeat for each expert",
    )
    parser.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    parser.add_argument("--split", default="train", help="split of a dataset id (default: train)")
    parser.add_argument("--max-tokens", type=_positive_int, help="token budget per expert (default: all the text)")
    parser.add_argument("--batch-size", type=_positive_int, default=1024, help="texts tokenized at once (1024)")
    parser.add_argument("--num-proc", type=_positive_int, help="tokenizer worker processes per fitting process")
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="save partial counts here and resume from them if present (a killed fit continues where it stopped)",
    )
    parser.add_argument("--checkpoint-every", type=_positive_int, default=100, help="batches between checkpoints")
    parser.add_argument(
        "--source",
        dest="sources",
        metavar="NAME=MODEL",
        type=expert_spec,
        action="append",
        default=[],
        help="where expert NAME's model lives (Hub id or local path), for generation; repeatable",
    )
    parser.add_argument("--base-model", help="base model of the experts given with --source that are PEFT adapters")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _fit_arguments(parser: argparse.ArgumentParser) -> None:
    from .aggregation import AGGREGATIONS
    from .configuration_ir3de import IR3DEConfig

    parser.add_argument("--encoder", required=True, help="causal LM (Hub id or local path) whose embeddings to use")
    parser.add_argument("--output", required=True, type=Path, help="directory to save the fitted router in")
    _overwrite_argument(parser, "OUTPUT")
    _counting_arguments(parser)
    parser.add_argument("--ridge-lambda", type=float, help="ridge penalty λ (default 1e-2)")
    parser.add_argument(
        "--aggregation",
        choices=AGGREGATIONS,
        help=f"how token scores become one decision (default: {IR3DEConfig.aggregation})",
    )
    parser.add_argument("--top-k", type=_positive_int, help="tokens that vote with entropy_top_k (default 10)")


def _fit(args: argparse.Namespace) -> int:
    from .distributed import broadcast_from_main, process_state
    from .fitting import count_experts
    from .modeling_ir3de import IR3DERouterModel

    _check_output(args.output, args.overwrite)  # in every process, so that all of them stop
    state = process_state()
    settings = {
        key: value
        for key, value in (
            ("ridge_lambda", args.ridge_lambda),
            ("aggregation", args.aggregation),
            ("top_k", args.top_k),
        )
        if value is not None
    }
    sources = _sources(args)
    router = None
    if state.is_main_process:  # only the main process needs the embedding table: it solves and saves
        router = _load_encoder(IR3DERouterModel.from_encoder, args.encoder, settings)
        tokenizer = router.tokenizer
    else:
        from transformers import AutoTokenizer

        tokenizer = _load_encoder(AutoTokenizer.from_pretrained, args.encoder, {})
    vocab_size, ignored = broadcast_from_main(
        (router.config.vocab_size, router.config.never_counted_ids) if router is not None else None
    )
    result = count_experts(
        sources, tokenizer=tokenizer, vocab_size=vocab_size, ignored_token_ids=ignored, **_options(args)
    )
    if router is not None:
        fields = _expert_fields(args)
        for name, histogram in result.histograms.items():
            router.add_expert(name, histogram=histogram, **fields.get(name, {}))
        router.save_pretrained(args.output, overwrite=args.overwrite)
        _summary(result, f"fitted {len(sources)} expert(s); saved the router to {args.output}")
    state.wait_for_everyone()
    return 0


# ---------------------------------------------------------------------------------------------------- experts


def _add_expert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("router", help="a saved router (directory or Hub id)")
    _counting_arguments(parser)
    parser.add_argument("--replace", action="store_true", help="refit experts the router already has")
    parser.add_argument("--output", type=Path, help="save here instead of over ROUTER")
    _overwrite_argument(parser, "OUTPUT")


def _add_expert(args: argparse.Namespace) -> int:
    from .distributed import process_state
    from .fitting import fit_experts

    output = args.output or Path(args.router)
    _check_output(output, args.overwrite)
    router = _load_router(args.router)
    sources = _sources(args)
    fields = _expert_fields(args)
    result = fit_experts(router, sources, replace=args.replace, expert_fields=fields, **_options(args))
    state = process_state()
    if state.is_main_process:
        router.save_pretrained(output, overwrite=args.overwrite)
        _summary(
            result, f"added {', '.join(sources)}; the router has {router.num_experts} expert(s); saved to {output}"
        )
    state.wait_for_everyone()
    return 0


def _remove_expert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("router", help="a saved router (directory or Hub id)")
    parser.add_argument(
        "names",
        nargs="+",
        metavar="NAME",
        help="experts to remove; removing every expert is allowed (the router keeps its encoder and tokenizer, "
        "refuses to route until `ir3de add-expert` gives it one)",
    )
    parser.add_argument("--output", type=Path, help="save here instead of over ROUTER")
    _overwrite_argument(parser, "OUTPUT")


def _remove_expert(args: argparse.Namespace) -> int:
    repeated = sorted({name for name in args.names if args.names.count(name) > 1})
    if repeated:
        raise ValueError(f"expert name(s) {', '.join(map(repr, repeated))} given more than once; nothing was removed")
    output = args.output or Path(args.router)
    _check_output(output, args.overwrite)
    router = _load_router(args.router)
    for name in args.names:
        router.remove_expert(name)
    router.save_pretrained(output, overwrite=args.overwrite)
    print(
        f"removed {', '.join(args.names)}; experts left: {', '.join(router.expert_names) or 'none'}; saved to {output}"
    )
    return 0


# ---------------------------------------------------------------------------------------------------- route


def _route_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("router", help="a saved router (directory or Hub id)")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="prompts to route (default: all of stdin as one)")
    parser.add_argument(
        "--file", dest="files", type=Path, action="append", default=[], help="a prompt read from a file"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list: per prompt the expert (null without evidence), the margin (best minus second-best "
        "score; null when it is not a finite number, as with a single expert), no_evidence, every expert's score "
        "and the text",
    )


def _route(args: argparse.Namespace) -> int:
    prompts = list(args.texts) + [_read_prompt(path) for path in args.files]
    if not prompts:
        prompts = [sys.stdin.read()]
    router = _load_router(args.router)
    output = router.route(prompts)
    results = []
    for row, prompt in enumerate(prompts):
        scores = dict(zip(router.expert_names, output.logits[row].tolist(), strict=True))
        results.append(
            {
                "expert": output.expert_names[row],
                "margin": float(output.margins[row]),
                "no_evidence": bool(output.no_evidence[row]),
                "scores": scores,
                "text": prompt,
            }
        )
    if args.json:
        print(json.dumps([_json_ready(result) for result in results], ensure_ascii=False, indent=2, allow_nan=False))
        return 0
    for result in results:
        ranked = sorted(result["scores"].items(), key=lambda item: -item[1])
        details = "  ".join(f"{name}={score:.3f}" for name, score in ranked)
        expert = result["expert"] or "(no evidence)"
        print(f"{expert}\tmargin={result['margin']:.3f}\t{details}")
    return 0


def _read_prompt(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from error


def _json_ready(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with every non-finite number as None: JSON has no Infinity or NaN (strict parsers reject them)."""
    scores = {name: _finite(score) for name, score in result["scores"].items()}
    return {**result, "margin": _finite(result["margin"]), "scores": scores}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------------- demo


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cli", action="store_true", help="answer one test prompt per domain in the terminal instead of the Space app"
    )
    parser.add_argument("--max-new-tokens", type=_positive_int, default=32, help="tokens per answer (--cli)")
    parser.add_argument("--rebuild", action="store_true", help="refit the cached demo router")


def _demo(args: argparse.Namespace) -> int:
    from .demo import load_demo_router, sample_prompts

    if not args.cli:
        return _space_app(rebuild=args.rebuild)
    router = load_demo_router(rebuild=args.rebuild)
    prompts = sample_prompts(router.tokenizer)
    results = router.generate(list(prompts.values()), max_new_tokens=args.max_new_tokens, do_sample=False)
    for domain, result in zip(prompts, results, strict=True):
        print(f"[{domain}] -> {result.expert} (margin {result.margin:.2f})\n  prompt: {result.prompt[:160]!r}")
        print(f"  answer: {result.text[:240]!r}")
    return 0


def _space_app(rebuild: bool) -> int:
    """Runs the Space app (``space_app/app.py`` of a checkout, or its copy in the installed wheel) in this
    interpreter until it is stopped."""
    import subprocess

    from ._resources import resource_path
    from .demo import load_demo_router

    app = resource_path("space_app/app.py")
    if rebuild:
        load_demo_router(rebuild=True)
    return subprocess.call([sys.executable, str(app)])


# ---------------------------------------------------------------------------------------------------- eval


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("router", help="a saved router (directory or Hub id) whose expert names are the domains")
    parser.add_argument(
        "--data",
        help="a .parquet/.jsonl file with text and domain columns (default: the ir3de-multidomain test split)",
    )
    parser.add_argument("--tokens", type=_positive_int, nargs="+", default=[16, 64, 256], help="prompt lengths")
    parser.add_argument("--output", type=Path, help="write report.json and confusion matrix PNGs here")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")


def _labelled_texts(data: str | None, split: str, purpose: str) -> tuple[list[str], list[str]]:
    """Texts and domains of a .parquet/.jsonl file, or of the ir3de-multidomain ``split`` without ``data``."""
    if data:
        from datasets import load_dataset

        kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(Path(data).suffix)
        if kind is None:
            raise ValueError(f"{data}: expected a .parquet or .jsonl file with text and domain columns")
        rows = load_dataset(kind, data_files=data, split="train")
        if "domain" not in rows.column_names or "text" not in rows.column_names:
            raise ValueError(f"{data} has no 'domain' column to {purpose} against")
        return list(rows["text"]), list(rows["domain"])
    from .data import load_benchmark

    rows = load_benchmark()[split]
    return list(rows["text"]), list(rows["domain"])


def _eval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_routing, plot_confusion_matrix

    texts, domains = _labelled_texts(args.data, "test", "evaluate")
    reports = evaluate_routing(_load_router(args.router), texts, domains, args.tokens)
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        payload = {str(n): report.to_dict() for n, report in reports.items()}
        (args.output / "report.json").write_text(json.dumps(payload, indent=2) + "\n")
        for n, report in reports.items():
            plot_confusion_matrix(report, args.output / f"confusion_{n}.png", title=f"{n}-token prompts")
    if args.json:
        print(json.dumps({str(n): report.to_dict() for n, report in reports.items()}, indent=2))
        return 0
    for n, report in reports.items():
        accuracy, normalized = report.accuracy, report.normalized_accuracy
        print(f"{n}-token prompts: accuracy {accuracy:.1%}, normalised accuracy {normalized:.1%}")
    print(reports[max(reports)].confusion_markdown())
    return 0


# ---------------------------------------------------------------------------------------------------- calibrate


def _share(value: str, *, one: bool) -> float:
    try:
        share = float(value)
    except ValueError:
        share = math.nan
    if not (0 < share <= 1 if one else 0 < share < 1):
        raise argparse.ArgumentTypeError(f"expected a number in (0, {'1]' if one else '1)'}, got {value!r}")
    return share


def _calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("router", help="a saved router (directory or Hub id) whose expert names are the labels")
    parser.add_argument(
        "--data",
        help="held-out .parquet/.jsonl file with text and domain columns (default: the ir3de-multidomain validation "
        "rows of the router's experts); never the data you evaluate on",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--target-accuracy",
        type=lambda value: _share(value, one=True),
        help="accuracy the routed prompts must reach, e.g. 0.99",
    )
    target.add_argument(
        "--max-fallback-rate",
        type=lambda value: _share(value, one=False),
        help="largest share of prompts sent to the fallback, e.g. 0.05",
    )
    parser.add_argument(
        "--tokens", type=_positive_int, nargs="+", default=[16, 64, 256], help="prompt lengths to calibrate for"
    )
    parser.add_argument(
        "--output", type=Path, help="save the calibrated router here (default: back into ROUTER, a directory)"
    )


def _calibrate(args: argparse.Namespace) -> int:
    from .model_card import CALIBRATION_IMAGE, CardInfo

    output = args.output
    if output is None:
        if not Path(args.router).is_dir():
            raise ValueError(f"{args.router!r} is not a local directory: give --output DIR for the calibrated router")
        output = Path(args.router)
    texts, domains = _labelled_texts(args.data, "validation", "calibrate")
    router = _load_router(args.router)
    if not args.data:  # the benchmark's validation rows of the router's experts
        rows = [(text, domain) for text, domain in zip(texts, domains, strict=True) if domain in router.expert_names]
        if not rows:
            raise ValueError(f"No expert of {args.router!r} is a domain of ir3de-multidomain: give --data")
        texts, domains = [text for text, _ in rows], [domain for _, domain in rows]
    report = router.calibrate(
        texts,
        domains,
        target_accuracy=args.target_accuracy,
        max_fallback_rate=args.max_fallback_rate,
        prompt_tokens=args.tokens,
    )
    router.save_pretrained(output, card=CardInfo(calibration=report))
    (output / "calibration.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    print(report.markdown())
    print(f"saved the calibrated router to {output} (reliability diagram: {output / CALIBRATION_IMAGE})")
    return 0


# ---------------------------------------------------------------------------------------------------- push / pull


def _push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("router", help="a saved router directory")
    parser.add_argument("repo_id", help="the Hub repository, e.g. me/my-router (created if missing)")
    parser.add_argument("--revision", help="an existing branch to push to (default: main)")
    parser.add_argument("--message", help="commit message")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument(
        "--encoder-by-reference",
        action="store_true",
        help="leave the embedding table out; it is rebuilt from the encoder repository at load time",
    )


def _push(args: argparse.Namespace) -> int:
    from huggingface_hub.utils import validate_repo_id

    from .hub import push_router

    validate_repo_id(args.repo_id)  # before loading the router, which may take a while
    commit = push_router(
        _load_router(args.router),
        args.repo_id,
        revision=args.revision,
        commit_message=args.message,
        private=args.private or None,
        encoder_by_reference=args.encoder_by_reference,
    )
    print(f"pushed {args.router} to {args.repo_id} at {commit.oid}")
    return 0


def _pull_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo_id", help="the Hub repository of a router")
    parser.add_argument("--revision", help="branch, tag or commit (default: main)")
    parser.add_argument("--local-dir", type=Path, help="copy the files here (default: the HF cache)")
    _overwrite_argument(parser, "LOCAL_DIR")


def _pull(args: argparse.Namespace) -> int:
    from .hub import pull_router
    from .hub._router_files import check_save_target

    if args.local_dir is None or not check_save_target(args.local_dir, args.overwrite):
        print(pull_router(args.repo_id, args.local_dir, revision=args.revision))
        return 0
    from .hub._atomic import atomic_directory

    with atomic_directory(args.local_dir, keep_others=False) as staging:  # --overwrite: the router replaces it whole
        pull_router(args.repo_id, staging, revision=args.revision)
    print(args.local_dir)
    return 0


# ---------------------------------------------------------------------------------------------------- IR3DE-AXL


def _import_reference_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="FILES_OR_REPO",
        help="IR3DE-AXL .pth statistics: files, globs, directories or a Hub repository of them",
    )
    parser.add_argument("--output", type=Path, required=True, help="where to save the router")
    parser.add_argument(
        "--encoder", help="the embedder the statistics were summed over (default: the files' embedder Hub id)"
    )
    parser.add_argument("--encoder-id", help="the Hub id to record when --encoder is a local copy")
    parser.add_argument("--include", default="*.pth", help="file pattern in directories and repositories")
    parser.add_argument("--revision", help="revision of a Hub repository of statistics")
    _overwrite_argument(parser, "OUTPUT")


def _import_reference(args: argparse.Namespace) -> int:
    from .reference_import import import_reference_router

    _check_output(args.output, args.overwrite)
    router = import_reference_router(
        args.sources, encoder=args.encoder, encoder_id=args.encoder_id, include=args.include, revision=args.revision
    )
    router.save_pretrained(args.output, overwrite=args.overwrite)
    padded = [spec.name for spec in router.config.expert_specs if spec.includes_padding]
    print(
        f"imported {router.num_experts} expert(s) ({', '.join(router.expert_names)}) over {router.config.encoder}; "
        f"padding counted in: {', '.join(padded) or 'none'}; saved to {args.output}"
    )
    return 0


def _export_reference_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("router", help="a saved router (directory or Hub id)")
    parser.add_argument("--output", type=Path, required=True, help="the .pth file to write")
    parser.add_argument("--expert", action="append", metavar="NAME", help="export only these experts (repeatable)")


def _export_reference(args: argparse.Namespace) -> int:
    from .reference_import import export_reference

    router = _load_router(args.router)
    path = export_reference(router, args.output, args.expert)
    print(f"wrote {len(args.expert or router.expert_names)} expert(s) as IR3DE-AXL statistics to {path}")
    return 0


# ---------------------------------------------------------------------------------------------------- space


def _space_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="space_action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="write a self-contained Space folder for a router")
    build.add_argument("out", type=Path, help="the folder to write (missing or empty)")
    build.add_argument("--router", help="a saved router (directory or Hub id); default: the demo router and experts")
    source = build.add_mutually_exclusive_group()
    source.add_argument("--package", metavar="URL", help="install ir3de_hf from this pip URL (git+https://...)")
    source.add_argument("--wheel", type=Path, help="vendor this ir3de_hf wheel (default: build one from the checkout)")
    build.add_argument(
        "--dataset", dest="datasets", action="append", default=[], help="a Hub dataset id the Space uses (its card)"
    )
    build.set_defaults(space_run=_space_build)
    push = actions.add_parser("push", help="upload a built Space folder to a Gradio Space on the Hub")
    push.add_argument("folder", type=Path, help="a folder written by `ir3de space build`")
    push.add_argument("repo_id", help="the Space, e.g. me/ir3de-router (created if missing)")
    push.add_argument("--private", action="store_true", help="create the Space as private")
    push.add_argument("--message", help="commit message")
    push.set_defaults(space_run=_space_push)


def _space(args: argparse.Namespace) -> int:
    return int(args.space_run(args))


def _space_build(args: argparse.Namespace) -> int:
    from .space_build import build_space

    if args.router is None:
        from .demo import load_demo_router

        router = load_demo_router()
    else:
        router = _load_router(args.router)
    out = build_space(args.out, router, package=args.package, wheel=args.wheel, datasets=args.datasets)
    print(f"wrote the Space to {out}; try it with `cd {out} && pip install -r requirements.txt && python app.py`")
    return 0


def _space_push(args: argparse.Namespace) -> int:
    from huggingface_hub.utils import validate_repo_id

    from .space_build import push_space

    validate_repo_id(args.repo_id)
    commit = push_space(args.folder, args.repo_id, private=args.private or None, message=args.message)
    print(f"pushed {args.folder} to the Space {args.repo_id} at {commit.oid}")
    return 0


# ---------------------------------------------------------------------------------------------------- serve


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    from .serve.command import configure

    configure(parser)


def _serve(args: argparse.Namespace) -> int:
    from .serve.command import serve

    if args.router == "demo":
        from .demo import load_demo_router

        return serve(load_demo_router(), args)
    return serve(_load_router(args.router), args)


# ---------------------------------------------------------------------------------------------------- recipe


def _recipe_arguments(parser: argparse.ArgumentParser) -> None:
    from .recipes import RECIPES

    parser.add_argument("recipe", choices=RECIPES, help="which of the paper's routers to build")
    parser.add_argument("recipe_args", nargs=argparse.REMAINDER, help="the recipe's own options (see its --help)")


def _recipe(args: argparse.Namespace) -> int:
    from .recipes.m2d2 import main as m2d2

    return m2d2(args.recipe_args, prog=f"ir3de recipe {args.recipe}")


# ---------------------------------------------------------------------------------------------------- helpers


def _sources(args: argparse.Namespace) -> dict[str, str]:
    from .configuration_ir3de import ExpertSpec

    sources: dict[str, str] = {}
    for name, path in args.experts:
        ExpertSpec(name)  # a bad name fails now, not after hours of counting
        if name in sources:
            raise ValueError(f"expert {name!r} is given twice")
        sources[name] = path
    unknown = sorted({name for name, _ in args.sources} - set(sources))
    if unknown:
        raise ValueError(f"--source names expert(s) {unknown} that no --expert gives")
    return sources


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "text_column": args.text_column,
        "split": args.split,
        "batch_size": args.batch_size,
        "max_tokens": args.max_tokens,
        "num_proc": args.num_proc,
        "checkpoint_dir": args.checkpoint_dir,
        "checkpoint_every": args.checkpoint_every,
        "progress": not args.quiet,
    }


def _expert_fields(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Registry fields per expert from ``--source NAME=MODEL`` and ``--base-model``."""
    return {name: {"source": model, "base_model": args.base_model} for name, model in args.sources}


def _load_router(name_or_path: str) -> Any:
    from .hub import local_path_or_hub_id
    from .modeling_ir3de import IR3DERouterModel

    path = local_path_or_hub_id(name_or_path)
    if isinstance(path, Path):
        if not path.exists():
            raise FileNotFoundError(f"{name_or_path!r} is not a saved router (no such directory)")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{name_or_path!r} is not a saved router (no config.json there)")
        return IR3DERouterModel.from_pretrained(path)
    try:
        return IR3DERouterModel.from_pretrained(name_or_path)
    except OSError as error:
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a router directory nor a loadable Hub repository ({error})"
        ) from error


def _load_encoder(load: Callable[..., Any], encoder: str, settings: dict[str, Any]) -> Any:
    """``load(encoder, **settings)``, with errors that name the encoder (transformers' often do not)."""
    try:
        return load(encoder, **settings)
    except OSError as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise OSError(f"--encoder {encoder!r} cannot be loaded: {reason}") from error


def _summary(result: Any, what: str) -> None:
    tokens = ", ".join(
        f"{name}: {count:,} tokens / {result.texts[name]:,} texts" for name, count in result.tokens.items()
    )
    shares = " / ".join(f"{count:,}" for count in result.tokens_per_process)
    processes = (
        f" on {result.num_processes} processes (tokens per process: {shares})" if result.num_processes > 1 else ""
    )
    print(f"{what} ({tokens}){processes}, {result.tokens_per_second:,.0f} tokens/s")


# ---------------------------------------------------------------------------------------------------- table

COMMANDS: list[Command] = [
    Command(
        "fit",
        "fit a new router on each expert's text",
        """examples:
  ir3de fit --encoder HuggingFaceTB/SmolLM2-135M-Instruct --expert code=data/code/ --expert legal=legal.parquet \\
      --output my-router
  ir3de fit --encoder ./smollm2 --expert bio=corpus/bio-*.jsonl --max-tokens 100000000 --checkpoint-dir ckpt \\
      --output my-router                        # run it again after a crash: it resumes from ckpt
  ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 8 -m ir3de_hf fit ...   # 8 processes, exact same result
  accelerate launch --multi_gpu --num_processes 8 -m ir3de_hf fit ...""",
        _fit_arguments,
        _fit,
    ),
    Command(
        "add-expert",
        "count new experts' text and add them to a saved router",
        """examples:
  ir3de add-expert my-router --expert fiction=books/ --source fiction=my-org/smollm2-fiction-lora \\
      --base-model HuggingFaceTB/SmolLM2-135M-Instruct
  ir3de add-expert my-router --expert code=more-code.parquet --replace --output my-router-v2""",
        _add_expert_arguments,
        _add_expert,
    ),
    Command(
        "remove-expert",
        "remove experts from a saved router (the others keep their statistics)",
        """examples:
  ir3de remove-expert my-router legal
  ir3de remove-expert my-router legal fiction --output smaller-router""",
        _remove_expert_arguments,
        _remove_expert,
    ),
    Command(
        "route",
        "print the expert each prompt goes to, with every expert's score",
        """examples:
  ir3de route my-router "def main():\\n    return 0" "The Licensee shall not sublicense the Software."
  ir3de route my-router --file prompt.txt --json
  cat prompt.txt | ir3de route my-router""",
        _route_arguments,
        _route,
    ),
    Command(
        "eval",
        "routing accuracy and confusion matrices of a router on labelled prompts cut to several lengths",
        """examples:
  ir3de eval my-router                                  # the ir3de-multidomain test split, 16/64/256 tokens
  ir3de eval my-router --data held_out.jsonl --tokens 32 --output eval/ --json""",
        _eval_arguments,
        _eval,
    ),
    Command(
        "calibrate",
        "fit calibrated probabilities and the fallback threshold (min_confidence) on labelled held-out prompts",
        """examples:
  ir3de calibrate my-router --target-accuracy 0.99       # the ir3de-multidomain validation split, saved in place
  ir3de calibrate me/my-router --data held_out.jsonl --max-fallback-rate 0.05 --tokens 32 --output calibrated""",
        _calibrate_arguments,
        _calibrate,
    ),
    Command(
        "push",
        "upload a saved router (config, weights, tokenizer, model card) to the Hub",
        """examples:
  ir3de push my-router me/ir3de-smollm2
  ir3de push my-router me/ir3de-smollm2 --encoder-by-reference --message 'add the fiction expert'""",
        _push_arguments,
        _push,
    ),
    Command(
        "pull",
        "download a router from the Hub and print where it is",
        """examples:
  ir3de pull me/ir3de-smollm2
  ir3de pull me/ir3de-smollm2 --revision 0123abcd --local-dir ./router""",
        _pull_arguments,
        _pull,
    ),
    Command(
        "import-reference",
        "build a router from IR3DE-AXL statistics files (the paper's published A and b)",
        """examples:
  ir3de import-reference Erosinho/IR3DE-stats --include '*_mergebench.pth' --output mergebench-router
  ir3de import-reference stats/*.pth --encoder ./Meta-Llama-3-8B --encoder-id meta-llama/Meta-Llama-3-8B \\
      --output my-router""",
        _import_reference_arguments,
        _import_reference,
    ),
    Command(
        "export-reference",
        "write a router's experts as an IR3DE-AXL statistics file that AXL peers load",
        """examples:
  ir3de export-reference my-router --output my-router_stats.pth
  ir3de export-reference me/ir3de-smollm2 --expert code --expert legal --output code_legal.pth""",
        _export_reference_arguments,
        _export_reference,
    ),
    Command(
        "demo",
        "launch the Gradio Space on the demo router (or, with --cli, answer one test prompt per domain)",
        """examples:
  ir3de demo                                   # the Space app on http://127.0.0.1:7860
  IR3DE_ROUTER=org/my-router ir3de demo        # the Space app on another router
  ir3de demo --cli --max-new-tokens 64 --rebuild""",
        _demo_arguments,
        _demo,
    ),
    Command(
        "space",
        "build a self-contained Hugging Face Space folder for a router, or push one to the Hub",
        """examples:
  ir3de space build my-space                            # the demo router, ir3de_hf vendored as a wheel
  ir3de space build my-space --router me/my-router --package git+https://github.com/ORG/ir3de_hf
  cd my-space && pip install -r requirements.txt && python app.py    # try it locally
  ir3de space push my-space me/ir3de-router""",
        _space_arguments,
        _space,
    ),
    Command(
        "serve",
        "an OpenAI-compatible server that routes each request to an expert (in-process, or on vLLM servers)",
        """examples:
  ir3de serve demo                              # http://127.0.0.1:8000/v1, model "ir3de" routes
  ir3de serve my-router --port 9000 --api-key secret --fallback-expert general
  ir3de serve demo --expert-url code=http://127.0.0.1:8001/v1 --expert-url legal=http://127.0.0.1:8001/v1 ...""",
        _serve_arguments,
        _serve,
    ),
    Command(
        "recipe",
        "build one of the paper's routers from the authors' artifacts (m2d2: convert, count, evaluate, push)",
        """examples:
  ir3de recipe m2d2 --data dataset/ --output m2d2 --push-to gensyn
  ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 4 -m ir3de_hf.recipes.m2d2 --data dataset/ --output m2d2
  ir3de recipe m2d2 --help""",
        _recipe_arguments,
        _recipe,
    ),
]


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``ir3de`` parser: every subcommand with its help line, and the arguments of ``commands``.

    Args:
        commands: the subcommands whose arguments to declare (default: all). `main` declares only the one being
            run, because declaring some imports torch (``fit`` lists the aggregations), which ``ir3de --help`` and
            the other commands do not need.
    """
    parser = argparse.ArgumentParser(
        prog="ir3de",
        description="IR3DE linear router: fit it on each expert's text, manage experts, route prompts.",
        epilog="Run 'ir3de COMMAND --help' for the options and examples of a command.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        subparser = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            epilog=command.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if commands is None or command.name in commands:
            command.configure(subparser)
        subparser.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ir3de`` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # The top-level parser has no option but --help, so its first positional argument is the command.
    parser = build_parser(commands=[argument for argument in argv if not argument.startswith("-")][:1])
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "texts", None) is not None and not any(item.startswith("-") for item in extra):
        args.texts += extra  # prompts given after options: ``ir3de route DIR --json "text"``
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.run(args))
    except EXPECTED_ERRORS as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"ir3de {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ir3de {args.command}: interrupted", file=sys.stderr)
        return 130
