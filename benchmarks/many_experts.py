"""Routing with hundreds of experts: IR3DE's aggregations against the MiniLM kNN and MoDEM-style baselines on
ir3de-many-experts (UDHR languages + ICD-10-CM chapters + Brown genres; see data/ir3de-many-experts/README.md).

    python benchmarks/many_experts.py                 # writes results/many_experts.{json,md}
    python benchmarks/many_experts.py --ns 6 25       # a quick look

For each N (default 6, 25, 50, 100 and all), the experts are the first N of one seeded permutation (so the sets are
nested). Every router is fitted on the chosen experts' train rows and routes their test rows (and the held-out-source
rows of their languages) cut to the first 16, 64 and 256 SmolLM2 tokens (UDHR articles are short: a 256-token prompt
is the whole article when it has fewer tokens). Sizes are capped so a run fits in about 15 minutes on 2 cores
(MiniLM encoding dominates); the caps are in the output.

- IR3DE (`IR3DERouterModel` on SmolLM2-135M's table, experts added from text, every aggregation of
  `ir3de_hf.aggregation.AGGREGATIONS`), fitted twice: on the baselines' train texts (equal data: the main comparison)
  and on every train row whole (counting is cheap).
- kNN (k=5) and a linear head (MoDEM-style) on frozen all-MiniLM-L6-v2 embeddings (`ir3de_hf.baselines`), on
  ``--baseline-train-rows`` train rows per expert, each cut to its first ``--baseline-train-tokens`` SmolLM2 tokens;
  where `ir3de_hf.baselines` has them, also scikit-learn's logistic regression on the same embeddings and model2vec's
  classifier on MiniLM's distilled static table (the same texts; up to ``--model2vec-max-n`` experts only: its
  training, about 34 s at N=25 here, grows with N times the number of texts).

Times (seconds, this machine): *fit* = fitting the N experts from their texts, tokenisation and (baselines) encoding
included, the encoders' loading not. *add* = adding the N-th expert to a router of the other N-1: IR3DE
``add_expert`` plus the re-solve of the next route; kNN: encoding the new expert's texts plus rebuilding the index;
linear head: encoding the new texts plus retraining the head on all N experts (the same training as its fit, timed
once). Baseline encoding is timed per expert and summed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ir3de_hf import IR3DERouterModel
from ir3de_hf import baselines as baseline_routers
from ir3de_hf.aggregation import AGGREGATIONS
from ir3de_hf.assets import minilm_path, smollm2_path
from ir3de_hf.baselines import ClassifierRouter, KNNRouter, SentenceEncoder
from ir3de_hf.data.many_experts import load_many_experts
from ir3de_hf.data.splits import pick_windows, processing_order
from ir3de_hf.evaluation import RoutingReport, routing_report
from settings import ISSUE_15_DEFAULTS

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[1] / "data" / "ir3de-many-experts" / "data"
LENGTHS = (16, 64, 256)
SETS = ("test", "heldout_source")
# Beside every aggregation with the defaults: issue 15's defaults, and the naive-Bayes term with balanced experts
# (leave-one-source-out turned it off; among hundreds of fine-grained experts it is worth measuring).
OTHER_SETTINGS: dict[str, dict[str, Any]] = {
    "weighted_mean + naive Bayes 0.1, unbalanced (old default)": {"aggregation": "weighted_mean", **ISSUE_15_DEFAULTS},
    "weighted_mean + naive Bayes 0.1": {"aggregation": "weighted_mean", "naive_bayes_weight": 0.1},
    "mean + naive Bayes 0.1": {"aggregation": "mean", "naive_bayes_weight": 0.1},
}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def per_expert(rows: Any, seed: int, name: str, cap: int | None) -> dict[str, list[str]]:
    """Texts per expert, at most ``cap`` each (a seeded choice, in row order)."""
    texts: dict[str, list[str]] = {}
    for text, expert in zip(rows["text"], rows["expert"], strict=True):
        texts.setdefault(expert, []).append(text)
    if cap is None:
        return texts
    return {e: [t[i] for i in pick_windows(seed, f"{name}:{e}", len(t), cap)] for e, t in texts.items()}


def top_confusions(report: RoutingReport, count: int) -> list[dict[str, Any]]:
    pairs = [
        {"true": label, "routed": column, "count": n}
        for label, row in zip(report.labels, report.confusion, strict=True)
        for column, n in zip(report.columns, row, strict=True)
        if column != label and n
    ]
    return sorted(pairs, key=lambda p: (-p["count"], p["true"], p["routed"]))[:count]


def family_errors(report: RoutingReport) -> dict[str, int]:
    """Errors by (true family -> routed family): how many stay among languages, chapters or genres."""
    tally: Counter[str] = Counter()
    for label, row in zip(report.labels, report.confusion, strict=True):
        for column, n in zip(report.columns, row, strict=True):
            if column != label and n:
                tally[f"{label.split('.')[0]} -> {column.split('.')[0]}"] += n
    return dict(tally.most_common())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ns", type=int, nargs="+", default=[6, 25, 50, 100, 0], help="expert counts (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-rows", type=int, default=3, help="test rows per expert (of the split's 6)")
    parser.add_argument("--baseline-train-rows", type=int, default=16, help="train rows per expert, baselines")
    parser.add_argument("--baseline-train-tokens", type=int, default=64, help="SmolLM2 tokens per baseline row")
    parser.add_argument("--minilm-max-length", type=int, default=256)
    parser.add_argument("--skip-logistic", action="store_true", help="leave out the scikit-learn baseline")
    parser.add_argument("--skip-model2vec", action="store_true", help="leave out the model2vec baseline")
    parser.add_argument(
        "--model2vec-max-n", type=int, default=50, help="largest N for model2vec (its training grows fastest)"
    )
    parser.add_argument("--confusions", type=int, default=20)
    parser.add_argument("--data", type=Path, default=DATA, help="built dataset (built there when missing)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    data, info = load_many_experts(args.data)
    names = [e["name"] for e in info["experts"]]
    order = processing_order(args.seed, names)  # nested choice: the first N
    ns = sorted({len(names) if n <= 0 else min(n, len(names)) for n in args.ns})

    load_s, base = timed(lambda: IR3DERouterModel.from_encoder(str(smollm2_path())))
    tokenizer = base.tokenizer
    train_full = per_expert(data["train"], args.seed, "train", None)
    train_cut = per_expert(data["train"], args.seed, "baseline-train", args.baseline_train_rows)
    for expert, texts in train_cut.items():
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        train_cut[expert] = [tokenizer.decode(row[: args.baseline_train_tokens]) for row in ids]
    sets: dict[str, tuple[list[str], list[str]]] = {}
    for key in SETS:
        cap = args.test_rows if key == "test" else None
        chosen = per_expert(data[key], args.seed, key, cap)
        sets[key] = (
            [t for e in names for t in chosen.get(e, [])],
            [e for e in names for _ in chosen.get(e, [])],
        )
    cut_ids: dict[str, dict[int, list[list[int]]]] = {}
    prompts: dict[str, dict[int, list[str]]] = {}
    prompt_tokens: dict[str, dict[str, float]] = {}
    for key, (texts, _) in sets.items():
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        cut_ids[key] = {n: [row[:n] for row in ids] for n in LENGTHS}
        prompts[key] = {n: [tokenizer.decode(row[:n]) for row in ids] for n in LENGTHS}
        prompt_tokens[key] = {str(n): sum(map(len, cut_ids[key][n])) / len(ids) for n in LENGTHS}

    def evaluate(route: Callable[[str, int, list[int]], list[str | None]], chosen: list[str]) -> dict[str, Any]:
        """Reports on the rows of the chosen experts, per set and prompt length."""
        out: dict[str, Any] = {}
        for key, (_, labels) in sets.items():
            keep = [i for i, label in enumerate(labels) if label in set(chosen)]
            if not keep:
                out[key] = None
                continue
            out[key] = {
                str(n): routing_report([labels[i] for i in keep], route(key, n, keep), labels=chosen) for n in LENGTHS
            }
        return out

    results: dict[str, dict[str, Any]] = {}  # router -> str(N) -> entry
    reports_at_all: dict[str, RoutingReport] = {}

    def record(name: str, n: int, fit_s: float, add_s: float, reports: dict[str, Any]) -> None:
        entry: dict[str, Any] = {"fit_s": fit_s, "add_s": add_s}
        for key, per_length in reports.items():
            entry[key] = None if per_length is None else {
                length: {"accuracy": r.accuracy, "normalized_accuracy": r.normalized_accuracy,
                         "prompts": sum(map(sum, r.confusion))}
                for length, r in per_length.items()
            }  # fmt: skip
        results.setdefault(name, {})[str(n)] = entry
        if n == len(names):
            reports_at_all[name] = reports["test"]["64"]
        accuracy = {k: round(v["accuracy"], 4) for k, v in entry["test"].items()}
        print(f"N={n:4d} {name}: test accuracy {accuracy}, fit {fit_s:.2f} s, add {add_s:.3f} s", flush=True)

    # ------------------------------------------------------------------------------------------------ IR3DE
    def ir3de_route(router: IR3DERouterModel) -> Callable[[str, int, list[int]], list[str | None]]:
        def route(key: str, n: int, keep: list[int]) -> list[str | None]:
            ids = cut_ids[key][n]
            return router.route([ids[i] for i in keep], token_details=False).expert_names

        return route

    for variant, train in (("baselines' train texts", train_cut), ("all train rows", train_full)):
        for n in ns:
            chosen = order[:n]

            def fit(chosen: list[str] = chosen, train: dict[str, list[str]] = train) -> IR3DERouterModel:
                router = base.copy()
                for expert in chosen:
                    router.add_expert(expert, texts=train[expert])
                router.route([[1]])  # the solve
                return router

            fit_s, router = timed(fit)
            router.remove_expert(chosen[-1])
            router.route([[1]])
            add_s, _ = timed(lambda r=router, e=chosen[-1], t=train: (r.add_expert(e, texts=t[e]), r.route([[1]])))
            assert router.expert_names == chosen
            default = router.config.aggregation
            for aggregation in AGGREGATIONS:
                router.config.aggregation = aggregation
                record(f"IR3DE {aggregation} ({variant})", n, fit_s, add_s, evaluate(ir3de_route(router), chosen))
            router.config.aggregation = default
            for label, settings in OTHER_SETTINGS.items():  # the same counts, re-solved
                for field, value in settings.items():
                    setattr(router.config, field, value)
                record(f"IR3DE {label} ({variant})", n, fit_s, add_s, evaluate(ir3de_route(router), chosen))
                for field in settings:
                    setattr(router.config, field, getattr(base.config, field))
    default_aggregation = base.config.aggregation

    # ---------------------------------------------------------------------------------------------- baselines
    encoder = SentenceEncoder(minilm_path(), max_length=args.minilm_max_length)
    encode_s: dict[str, float] = {}
    last = order[: ns[-1]]
    for expert in last:  # in the permutation's order: what adding each expert costs
        encode_s[expert], _ = timed(lambda e=expert: encoder.encode(train_cut[e], desc=f"MiniLM {e}"))
    prompt_encode_s, _ = timed(
        lambda: [encoder.encode(prompts[key][n], desc=f"MiniLM {key} {n}") for key in SETS for n in LENGTHS]
    )
    print(f"MiniLM: train texts {sum(encode_s.values()):.1f} s, prompts {prompt_encode_s:.1f} s", flush=True)
    embeddings = {key: {n: encoder.encode(prompts[key][n]) for n in LENGTHS} for key in SETS}

    def embedding_route(router: Any) -> Callable[[str, int, list[int]], list[str | None]]:
        def route(key: str, n: int, keep: list[int]) -> list[str | None]:
            return router.route_embeddings(embeddings[key][n][keep]).expert_names

        return route

    baselines: dict[str, Callable[[list[str]], Any]] = {
        "kNN MiniLM (k=5)": lambda chosen: KNNRouter(encoder, chosen),
        "MoDEM-style MiniLM + linear head": lambda chosen: ClassifierRouter(encoder, chosen),
    }
    logistic = getattr(baseline_routers, "LogisticRegressionRouter", None)  # newer ir3de_hf.baselines only
    if logistic is not None and not args.skip_logistic:
        baselines["MiniLM + logistic regression (scikit-learn)"] = lambda chosen: logistic(encoder, chosen)
    for n in ns:
        chosen = order[:n]
        texts = [t for e in chosen for t in train_cut[e]]
        labels = [e for e in chosen for _ in train_cut[e]]
        encoded = sum(encode_s[e] for e in chosen)
        for name, make in baselines.items():
            train_s, router = timed(lambda m=make, c=chosen, x=texts, y=labels: m(c).fit(x, y))
            record(
                name, n, encoded + train_s, encode_s[chosen[-1]] + train_s, evaluate(embedding_route(router), chosen)
            )

    model2vec = getattr(baseline_routers, "Model2VecRouter", None)  # newer ir3de_hf.baselines only
    if model2vec is not None and not args.skip_model2vec:
        from ir3de_hf.assets import minilm_static_path

        static = minilm_static_path()
        for n in (n for n in ns if n <= args.model2vec_max_n):
            chosen = order[:n]
            texts = [t for e in chosen for t in train_cut[e]]
            labels = [e for e in chosen for _ in train_cut[e]]
            train_s, router = timed(lambda c=chosen, x=texts, y=labels: model2vec(static, c, seed=args.seed).fit(x, y))

            def text_route(key: str, length: int, keep: list[int], r: Any = router) -> list[str | None]:
                return r.route([prompts[key][length][i] for i in keep]).expert_names

            # Adding an expert = fitting again on everything (the same training, timed once).
            record("Model2Vec (MiniLM static) classifier", n, train_s, train_s, evaluate(text_route, chosen))

    # ----------------------------------------------------------------------------------------------- report
    confusions = {
        name: {"top": top_confusions(report, args.confusions), "by_family": family_errors(report)}
        for name, report in reports_at_all.items()
        if name.startswith(f"IR3DE {default_aggregation} (") or not name.startswith("IR3DE")
    }
    summary = {
        "machine": {
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            "load_average_1_5_15_min_at_end": os.getloadavg(),  # other jobs on the machine slow every router
        },
        "dataset": {"fingerprint": info["fingerprint"], "experts": len(names), "rows": info["rows"]},
        "sizes": {
            "ns": ns,
            "test_rows_per_expert": args.test_rows,
            "prompts": {key: len(sets[key][0]) for key in SETS},
            "heldout_languages": len(set(sets["heldout_source"][1])),
            "mean_prompt_tokens": prompt_tokens,
            "baseline_train_rows_per_expert": args.baseline_train_rows,
            "baseline_train_tokens": args.baseline_train_tokens,
            "ir3de_all_train_rows": len(data["train"]),
            "minilm_max_length": args.minilm_max_length,
            "model2vec_max_n": args.model2vec_max_n,
        },
        "expert_order": order,
        "smollm2_load_s": load_s,
        "default_aggregation": default_aggregation,
        "routers": results,
        "confusions_at_all_64_tokens": confusions,
        "run_s": time.perf_counter() - started,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "many_experts.json").write_text(json.dumps(summary, indent=2) + "\n")
    markdown = render_markdown(summary)
    (args.out_dir / "many_experts.md").write_text(markdown)
    print(markdown)


def _cells(entry: dict[str, Any] | None, metric: str) -> str:
    if entry is None:
        return " | ".join("—" for _ in LENGTHS)
    return " | ".join(f"{entry[str(n)][metric]:.1%}" for n in LENGTHS)


def render_markdown(summary: dict[str, Any]) -> str:
    sizes = summary["sizes"]
    tokens = {
        key: ", ".join(f"{value[str(n)]:.0f}" for n in LENGTHS) for key, value in sizes["mean_prompt_tokens"].items()
    }
    average = summary["machine"].get("load_average_1_5_15_min_at_end")
    load = f" (load average {average[1]:.1f} over the last 5 min: the cores were shared)" if average else ""
    lines = [
        "# Many experts: IR3DE against the MiniLM baselines",
        "",
        f"ir3de-many-experts ({summary['dataset']['experts']} experts; build `{summary['dataset']['fingerprint']}`), "
        "`python benchmarks/many_experts.py`, on "
        f"{summary['machine']['platform']} ({summary['machine']['threads']} threads); run time "
        f"{summary['run_s'] / 60:.1f} min{load}. N experts = the first N of one seeded permutation (nested sets).",
        "",
        f"- Test: {sizes['test_rows_per_expert']} rows per expert ({sizes['prompts']['test']} at N=all); "
        f"held-out source: {sizes['prompts']['heldout_source']} chatterbot-corpus rows in "
        f"{sizes['heldout_languages']} languages, scored at "
        "each N on the languages among the N experts. Mean prompt tokens at 16/64/256: "
        f"test {tokens['test']}, held-out {tokens['heldout_source']} (UDHR articles are short).",
        f"- Baselines and IR3DE (baselines' train texts): {sizes['baseline_train_rows_per_expert']} train rows per "
        f"expert, each cut to its first {sizes['baseline_train_tokens']} SmolLM2 tokens (MiniLM max length "
        f"{sizes['minilm_max_length']}). IR3DE (all train rows): every train row whole "
        f"({sizes['ir3de_all_train_rows']:,} rows at N=all).",
        "- Accuracy and mean recall (normalised accuracy) at 16 / 64 / 256 prompt tokens. Fit: the N experts from "
        "text (tokenisation and encoding included, model loading not); add: the N-th expert added to a router of "
        "N-1 (IR3DE: `add_expert` + re-solve; kNN: encode + rebuild the index; linear head: encode + retrain on all "
        f"N; model2vec: fit again). SmolLM2 table load (not counted): {summary['smollm2_load_s']:.1f} s. model2vec "
        f"runs up to N = {sizes.get('model2vec_max_n')} only (its training time grows fastest).",
        "",
    ]
    for n in sizes["ns"]:
        lines += [
            f"## N = {n}",
            "",
            "| router | accuracy 16 | 64 | 256 | mean recall 16 | 64 | 256 | held-out source acc. 16 | 64 | 256 | "
            "held-out prompts | fit s | add s |",
            "|---" * 13 + "|",
        ]
        for name, per_n in summary["routers"].items():
            entry = per_n.get(str(n))
            if entry is None:  # a baseline not run at this N (--model2vec-max-n)
                continue
            heldout = entry["heldout_source"]["16"]["prompts"] if entry["heldout_source"] else 0
            lines.append(
                f"| {name} | {_cells(entry['test'], 'accuracy')} | {_cells(entry['test'], 'normalized_accuracy')} | "
                f"{_cells(entry['heldout_source'], 'accuracy')} | {heldout} | {entry['fit_s']:.2f} | "
                f"{entry['add_s']:.3f} |"
            )
        lines.append("")
    lines += ["## Dominant confusions at N = all, 64-token prompts", ""]
    for name, confusion in summary["confusions_at_all_64_tokens"].items():
        families = ", ".join(f"{pair}: {count}" for pair, count in confusion["by_family"].items())
        pairs = "; ".join(f"{p['true']} → {p['routed']} ({p['count']})" for p in confusion["top"])
        lines += [f"**{name}.** Errors by family: {families or 'none'}.", "", f"Top pairs: {pairs or 'none'}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
