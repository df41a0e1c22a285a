"""Leave-one-source-out: IR3DE's settings, featurizers and calibration on sources the router never saw, beside the
baselines users would pick. Every routing default of `IR3DEConfig` is chosen from this table.

    python benchmarks/generalisation.py                       # writes results/generalisation.{json,md}
    python benchmarks/generalisation.py --encoders smollm2 --baselines none --max-test 50   # a quick look

Protocol (`ir3de_hf.data.protocol`): every window of ir3de-multidomain (train/validation/test splits, out-of-source
halves, additional sources) belongs to one source; each fold holds one source out, fits on (a seeded choice of at
most --max-train windows of) every other source and tests on (at most --max-test windows of) the held-out one, cut to
its first 16, 64 and 256 SmolLM2 tokens (the same text for every router). Scores are means over held-out sources
with their standard error; a setting replaces the old default only when its mean over lengths beats the old
default's by more than the standard error of the paired difference. "nested" re-runs the whole choice without each
source and scores the pick on it: what the selection itself is worth on a source it never saw.

IR3DE variants are one count per source and featurizer: a fold's experts are sums of per-source histograms, every
variant is a re-solve or a different aggregation of the same statistics. Calibration follows the protocol too: the
temperature and `min_confidence` for each held-out source are fitted on the held-out predictions of the OTHER folds,
so the threshold is judged on a source it was not fitted on; the final fit uses every fold and is measured on the
unknown-domain prompts (how many go to the fallback).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ir3de_hf import IR3DERouterModel
from ir3de_hf.aggregation import AGGREGATIONS, probabilities
from ir3de_hf.assets import gemma3_embedding_path, minilm_path, minilm_static_path, smollm2_path
from ir3de_hf.baselines import (
    ClassifierRouter,
    KNNRouter,
    LogisticRegressionRouter,
    Model2VecRouter,
    SentenceEncoder,
)
from ir3de_hf.calibration import expected_calibration_error, fit_calibration
from ir3de_hf.data import DOMAINS
from ir3de_hf.data.out_of_source import load_unknown
from ir3de_hf.data.protocol import HeldOutSource, leave_one_source_out, source_pool
from settings import ISSUE_15_DEFAULTS

RESULTS = Path(__file__).parent / "results"
LENGTHS = (16, 64, 256)
TARGET_ACCURACY = 0.99
INDEX_TOKENS = 128  # training text per window for the sentence-embedding baselines, as in quality.py
# The defaults of issue 15 (chosen on the fixed out-of-source validation half) and, before it, the ridge head alone.
OLD_DEFAULT: dict[str, Any] = {
    "aggregation": "weighted_mean",
    "ridge_lambda": 1e-2,
    "normalize_columns": True,
    "naive_bayes_alpha": 1.0,
    **ISSUE_15_DEFAULTS,
}
RIDGE_ONLY: dict[str, Any] = {**OLD_DEFAULT, "naive_bayes_weight": 0.0}


def variants() -> list[dict[str, Any]]:
    """The settings tried (fields of `IR3DEConfig`), those that change the solve outermost (few solves per fold)."""
    return [
        {
            "aggregation": aggregation,
            "ridge_lambda": ridge_lambda,
            "normalize_columns": normalize,
            "naive_bayes_weight": weight,
            "naive_bayes_alpha": 1.0,
            "balance_experts": balance,
        }
        for balance in (False, True)
        for ridge_lambda in (1e-2, 1.0, 100.0)
        for normalize in (True, False)
        for weight in (0.0, 0.03, 0.1, 0.3)
        for aggregation in AGGREGATIONS
    ]


def encoders() -> dict[str, Callable[[], IR3DERouterModel]]:
    """The featurizers compared: an empty router over each table, with its own tokenizer."""
    return {
        "smollm2": lambda: IR3DERouterModel.from_encoder(str(smollm2_path())),
        "gemma3-270m": lambda: IR3DERouterModel.from_encoder(str(gemma3_embedding_path())),
        "minilm-model2vec": lambda: IR3DERouterModel.from_encoder(str(minilm_static_path())),
    }


# ----------------------------------------------------------------------------------------------------------- data


@dataclass
class Bench:
    """The pool, its folds, and every held-out source's prompts at each length (text, cut by SmolLM2 tokens)."""

    texts: list[str]
    index_texts: list[str]  # the first INDEX_TOKENS SmolLM2 tokens of each window: the baselines' training text
    domains: list[str]
    source_key: list[str]
    folds: list[HeldOutSource]
    prompts: dict[str, dict[int, list[str]]]

    def sources_of(self, domain: str) -> list[str]:
        return [fold.source for fold in self.folds if fold.domain == domain]

    def source_rows(self) -> dict[str, tuple[int, ...]]:
        """Each source's training rows (the same in every fold where it is not held out)."""
        rows: dict[str, set[int]] = {fold.source: set() for fold in self.folds}
        for fold in self.folds:
            for other in rows.keys() - {fold.source}:
                rows[other].update(i for i in fold.train if self.source_key[i] == other)
        return {source: tuple(sorted(indices)) for source, indices in rows.items()}


def load_bench(max_train: int, max_test: int) -> Bench:
    pool = source_pool()
    keys = list(pool["protocol_source"])
    folds = leave_one_source_out(
        list(pool["domain"]), keys, list(pool["doc_id"]), max_train_per_source=max_train, max_test_per_source=max_test
    )
    tokenizer = IR3DERouterModel.from_encoder(str(smollm2_path())).tokenizer
    texts = list(pool["text"])
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    prompts = {fold.source: {n: [tokenizer.decode(ids[i][:n]) for i in fold.test] for n in LENGTHS} for fold in folds}
    index_texts = [tokenizer.decode(row[:INDEX_TOKENS]) for row in ids]
    return Bench(texts, index_texts, list(pool["domain"]), keys, folds, prompts)


# ---------------------------------------------------------------------------------------------------------- IR3DE


@dataclass
class Predictions:
    """One variant's routing of every held-out source's prompts: per source and length, the output tensors."""

    outputs: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]  # logits, expert_ids, no_evidence

    def accuracy(self, source: str, n: int, domain: str) -> float:
        _, expert_ids, no_evidence = self.outputs[source][n]
        return float(((expert_ids == DOMAINS.index(domain)) & ~no_evidence).float().mean())


def evaluate_ir3de(
    make_router: Callable[[], IR3DERouterModel], bench: Bench, tried: list[dict[str, Any]], desc: str
) -> tuple[list[dict[str, dict[str, float]]], dict[str, Predictions], dict[str, float]]:
    """Accuracy of every variant per held-out source and length, the predictions of the two reference settings and
    the chosen ones (for calibration), and timings."""
    base = make_router()
    start = time.perf_counter()
    counts = source_histograms(base, bench)
    count_s = time.perf_counter() - start
    accuracy: list[dict[str, dict[str, float]]] = [{} for _ in tried]
    kept: dict[str, Predictions] = {}
    fit_times = []
    for fold in bench.folds:
        start = time.perf_counter()
        router = fold_router(base, bench, counts, fold.source)
        router.route([[0]])  # the solve
        fit_times.append(time.perf_counter() - start)
        ids = {
            n: base.tokenizer(bench.prompts[fold.source][n], add_special_tokens=False)["input_ids"] for n in LENGTHS
        }
        for index, settings in enumerate(tried):
            apply_settings(router, settings)
            outputs = {}
            for n in LENGTHS:
                out = router.route(ids[n], token_details=False)
                outputs[n] = (out.logits, out.expert_ids, out.no_evidence)
            predictions = Predictions({fold.source: outputs})
            accuracy[index][fold.source] = {str(n): predictions.accuracy(fold.source, n, fold.domain) for n in LENGTHS}
            key = settings_key(settings)
            kept.setdefault(key, Predictions({})).outputs[fold.source] = outputs
        print(f"{desc}: held out {fold.source} ({len(fold.test)} prompts)", flush=True)
    timings = {"count_sources_s": count_s, "fold_fit_s": statistics.mean(fit_times)}
    return accuracy, kept, timings


def source_histograms(base: IR3DERouterModel, bench: Bench) -> dict[str, torch.Tensor]:
    """One token histogram per source over its training rows, counted by the router's own rules."""
    scratch = base.copy()
    rows = bench.source_rows()
    for source, indices in rows.items():
        scratch.add_expert(source, texts=[bench.texts[i] for i in indices])
    return {source: scratch.store.histogram(source) for source in rows}


def fold_router(
    base: IR3DERouterModel, bench: Bench, counts: dict[str, torch.Tensor], held_out: str
) -> IR3DERouterModel:
    router = base.copy()
    for domain in DOMAINS:
        kept = [counts[source] for source in bench.sources_of(domain) if source != held_out]
        router.add_expert(domain, histogram=torch.stack(kept).sum(dim=0))
    return router


def apply_settings(router: IR3DERouterModel, settings: dict[str, Any]) -> None:
    for field, value in settings.items():
        setattr(router.config, field, value)


def settings_key(settings: dict[str, Any]) -> str:
    parts = [settings["aggregation"], f"λ={settings['ridge_lambda']:g}"]
    if not settings["normalize_columns"]:
        parts.append("raw columns")
    if settings["balance_experts"]:
        parts.append("balanced")
    parts.append(f"NB {settings['naive_bayes_weight']:g}" if settings["naive_bayes_weight"] else "ridge only")
    return ", ".join(parts)


# ------------------------------------------------------------------------------------------------------ baselines


def baselines(names: Sequence[str]) -> dict[str, Callable[[SentenceEncoder], Any]]:
    """Sentence-embedding routers users would pick, fitted on each fold's training windows (first INDEX_TOKENS)."""
    known: dict[str, Callable[[SentenceEncoder], Any]] = {
        "kNN MiniLM (k=5)": lambda encoder: KNNRouter(encoder, DOMAINS),
        "MoDEM-style MiniLM + linear head": lambda encoder: ClassifierRouter(encoder, DOMAINS),
        "logistic regression on MiniLM": lambda encoder: LogisticRegressionRouter(encoder, DOMAINS),
        "model2vec classifier (MiniLM distilled)": lambda _: Model2VecRouter(minilm_static_path(), DOMAINS),
    }
    return {name: make for name, make in known.items() if "all" in names or name in names}


def evaluate_baseline(
    make: Callable[[SentenceEncoder], Any], encoder: SentenceEncoder, bench: Bench, name: str
) -> tuple[dict[str, dict[str, float]], float]:
    accuracy: dict[str, dict[str, float]] = {}
    fit_times = []
    for fold in bench.folds:
        start = time.perf_counter()
        router = make(encoder).fit([bench.index_texts[i] for i in fold.train], [bench.domains[i] for i in fold.train])
        fit_times.append(time.perf_counter() - start)
        accuracy[fold.source] = {}
        for n in LENGTHS:
            chosen = router.route(bench.prompts[fold.source][n]).expert_names
            accuracy[fold.source][str(n)] = sum(c == fold.domain for c in chosen) / len(chosen)
        print(f"{name}: held out {fold.source}", flush=True)
    return accuracy, statistics.mean(fit_times)


# ---------------------------------------------------------------------------------------------------- statistics


def summary_of(per_source: dict[str, dict[str, float]], reference: dict[str, dict[str, float]] | None = None) -> dict:
    """Mean over held-out sources per length, the standard error, the worst source, and the paired difference to a
    reference (mean over lengths) with its standard error."""
    sources = sorted(per_source)
    out: dict[str, Any] = {}
    for n in map(str, LENGTHS):
        values = [per_source[s][n] for s in sources]
        out[n] = {"mean": statistics.mean(values), "se": standard_error(values), "min": min(values)}
    overall = [statistics.mean(per_source[s].values()) for s in sources]
    out["overall"] = {"mean": statistics.mean(overall), "se": standard_error(overall)}
    if reference is not None:
        diffs = [statistics.mean(per_source[s].values()) - statistics.mean(reference[s].values()) for s in sources]
        out["vs_old_default"] = {"mean": statistics.mean(diffs), "se": standard_error(diffs)}
    return out


def standard_error(values: Sequence[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")


def choose(accuracy: list[dict[str, dict[str, float]]], tried: list[dict[str, Any]]) -> dict[str, Any]:
    """The default: the best mean over held-out sources, if it beats the old default beyond the paired spread."""
    old = accuracy[tried.index(OLD_DEFAULT)]
    scores = [summary_of(a, old) for a in accuracy]
    best = max(range(len(tried)), key=lambda i: scores[i]["overall"]["mean"])
    gain = scores[best]["vs_old_default"]
    chosen = best if gain["mean"] > gain["se"] else tried.index(OLD_DEFAULT)
    return {"best": tried[best], "chosen": tried[chosen], "gain": gain, "nested": nested(accuracy)}


def nested(accuracy: list[dict[str, dict[str, float]]]) -> dict[str, float]:
    """For each source, the variant best on the others, scored on it: the selection judged out of its own sample."""
    sources = sorted(accuracy[0])
    picked: dict[str, dict[str, float]] = {}
    for source in sources:
        others = [s for s in sources if s != source]
        best = max(accuracy, key=lambda a: statistics.mean(statistics.mean(a[s].values()) for s in others))
        picked[source] = best[source]
    return {n: statistics.mean(picked[s][n] for s in sources) for n in map(str, LENGTHS)}


# --------------------------------------------------------------------------------------------------- calibration


def calibration_by_source(predictions: Predictions, bench: Bench, aggregation: str) -> dict[str, Any]:
    """Temperature and threshold for each held-out source fitted on the other folds' predictions, judged on it."""
    domain_of = {fold.source: fold.domain for fold in bench.folds}
    per_source = {}
    for source in sorted(predictions.outputs):
        others = {s: o for s, o in predictions.outputs.items() if s != source}
        report = fit_pooled(others, domain_of, aggregation)
        per_source[source] = {n: judged(predictions.outputs[source][n], domain_of[source], report) for n in LENGTHS}
    final = fit_pooled(predictions.outputs, domain_of, aggregation)
    return {"per_source": per_source, "final": final.to_dict(), "final_report": final}


def fit_pooled(outputs: dict[str, dict[int, tuple]], domain_of: dict[str, str], aggregation: str) -> Any:
    logits, expert_ids, no_evidence, targets = [], [], [], []
    for source, per_length in outputs.items():
        for n in LENGTHS:
            out = per_length[n]
            logits.append(out[0])
            expert_ids.append(out[1])
            no_evidence.append(out[2])
            targets.append(torch.full_like(out[1], DOMAINS.index(domain_of[source])))
    return fit_calibration(
        torch.cat(logits),
        torch.cat(expert_ids),
        torch.cat(no_evidence),
        torch.cat(targets),
        aggregation=aggregation,
        target_accuracy=TARGET_ACCURACY,
        prompt_tokens=list(LENGTHS),
    )


def judged(output: tuple[torch.Tensor, torch.Tensor, torch.Tensor], domain: str, report: Any) -> dict[str, float]:
    logits, expert_ids, no_evidence = output
    confidence = probabilities(logits.float(), report.temperature, no_evidence).max(dim=1).values
    right = (expert_ids == DOMAINS.index(domain)) & ~no_evidence
    routed = ~no_evidence & (confidence >= report.min_confidence)
    return {
        "coverage": float(routed.float().mean()),
        "routed_accuracy": float(right[routed].float().mean()) if bool(routed.any()) else float("nan"),
        "accuracy": float(right.float().mean()),
        "ece": expected_calibration_error(confidence, right),
    }


def unknown_fallback(make_router: Callable[[], IR3DERouterModel], bench: Bench, settings: dict, report: Any) -> dict:
    """The router fitted on every source with the chosen settings and the protocol's calibration: how many
    unknown-domain prompts it sends to the fallback, per length and per kind."""
    router = make_router()
    for domain in DOMAINS:
        rows = [i for source in bench.sources_of(domain) for i in bench.source_rows()[source]]
        router.add_expert(domain, texts=[bench.texts[i] for i in rows])
    apply_settings(router, settings)
    report.apply(router.config)
    unknown = load_unknown()
    ids = router.tokenizer(list(unknown["text"]), add_special_tokens=False)["input_ids"]
    kinds = list(unknown["kind"])
    rates: dict[str, Any] = {}
    for n in LENGTHS:
        confident = router.route([row[:n] for row in ids], token_details=False).confident
        assert confident is not None
        fallback = (~confident).tolist()
        rates[str(n)] = {
            "all": statistics.mean(fallback),
            **{
                kind: statistics.mean(f for f, k in zip(fallback, kinds, strict=True) if k == kind)
                for kind in set(kinds)
            },
        }
    return {"prompts": len(kinds), "kinds": sorted(set(kinds)), "fallback_rate": rates}


# ------------------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-train", type=int, default=400, help="training windows per source (seeded choice)")
    parser.add_argument("--max-test", type=int, default=100, help="test windows per held-out source")
    parser.add_argument("--encoders", nargs="+", default=["all"], help="featurizers to compare (default: all)")
    parser.add_argument("--baselines", nargs="+", default=["all"], help="baselines to run ('none' for none)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.manual_seed(0)
    bench = load_bench(args.max_train, args.max_test)
    tried = variants()
    summary: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "protocol": {
            "max_train_per_source": args.max_train,
            "max_test_per_source": args.max_test,
            "pool_windows": len(bench.texts),
            "folds": [
                {"source": f.source, "domain": f.domain, "train": len(f.train), "test": len(f.test)}
                for f in bench.folds
            ],
        },
        "encoders": {},
        "baselines": {},
    }
    chosen_predictions: Predictions | None = None
    for name, make in encoders().items():
        if "all" not in args.encoders and name not in args.encoders:
            continue
        accuracy, kept, timings = evaluate_ir3de(make, bench, tried, f"IR3DE {name}")
        choice = choose(accuracy, tried)
        summary["encoders"][name] = {
            "timings": timings,
            "choice": choice,
            "variants": [
                {"settings": s, "per_source": a, "summary": summary_of(a, accuracy[tried.index(OLD_DEFAULT)])}
                for s, a in zip(tried, accuracy, strict=True)
            ],
        }
        if name == "smollm2":
            chosen_predictions = kept[settings_key(choice["chosen"])]
            summary["default"] = choice["chosen"]
    if chosen_predictions is not None:
        default = summary["default"]
        calibration = calibration_by_source(chosen_predictions, bench, default["aggregation"])
        report = calibration.pop("final_report")
        calibration["unknown_domain"] = unknown_fallback(encoders()["smollm2"], bench, default, report)
        calibration["target_accuracy"] = TARGET_ACCURACY
        summary["calibration"] = calibration
    if "none" not in args.baselines:
        encoder = SentenceEncoder(minilm_path(), max_length=512)
        for name, make in baselines(args.baselines).items():
            accuracy_b, fit_s = evaluate_baseline(make, encoder, bench, name)
            summary["baselines"][name] = {
                "per_source": accuracy_b,
                "fold_fit_s": fit_s,
                "summary": summary_of(accuracy_b),
            }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "generalisation.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    markdown = render_markdown(summary)
    (args.out_dir / "generalisation.md").write_text(markdown)
    print(markdown)


# -------------------------------------------------------------------------------------------------------- markdown


def pct(entry: dict[str, float]) -> str:
    return f"{100 * entry['mean']:.1f} ± {100 * entry['se']:.1f}"


def render_markdown(summary: dict[str, Any]) -> str:
    protocol = summary["protocol"]
    folds = protocol["folds"]
    lines = [
        f"Leave-one-source-out over {len(folds)} sources of {len(DOMAINS)} domains ({protocol['pool_windows']:,} "
        f"windows; at most {protocol['max_train_per_source']} training windows per source and "
        f"{protocol['max_test_per_source']} test windows per held-out source; "
        f"{sum(f['test'] for f in folds):,} test prompts per length). Accuracy (%) as mean over held-out sources ± "
        "standard error; min = the worst source.",
        "",
    ]
    lines += render_settings(summary)
    lines += render_routers(summary)
    lines += render_per_source(summary)
    if "calibration" in summary:
        lines += render_calibration(summary["calibration"])
    return "\n".join(lines) + "\n"


def render_settings(summary: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, entry in summary["encoders"].items():
        ranked = sorted(entry["variants"], key=lambda v: -v["summary"]["overall"]["mean"])
        shown = ranked[:12] + [v for v in ranked[12:] if v["settings"] in (OLD_DEFAULT, RIDGE_ONLY)]
        choice = entry["choice"]
        lines += [
            f"IR3DE settings on the {name} table ({len(ranked)} variants tried; the 12 best and the old defaults). "
            f"Nested choice (picked without each source, scored on it): "
            + " / ".join(f"{100 * v:.1f}" for v in choice["nested"].values())
            + f" at {'/'.join(map(str, LENGTHS))} tokens. Gain of the best over the old default: "
            f"{100 * choice['gain']['mean']:+.2f} ± {100 * choice['gain']['se']:.2f} points.",
            "",
            "| variant | " + " | ".join(f"@{n}" for n in LENGTHS) + " | min @64 | mean | vs old default |",
            "|---" * (4 + len(LENGTHS)) + "|",
        ]
        for variant in shown:
            s = variant["summary"]
            label = settings_key(variant["settings"])
            if variant["settings"] == choice["chosen"]:
                label = f"**{label}** (default)"
            elif variant["settings"] == OLD_DEFAULT:
                label += " *(old default, issue 15)*"
            elif variant["settings"] == RIDGE_ONLY:
                label += " *(default before issue 15)*"
            cells = " | ".join(pct(s[str(n)]) for n in LENGTHS)
            diff = s["vs_old_default"]
            lines.append(
                f"| {label} | {cells} | {100 * s['64']['min']:.1f} | {pct(s['overall'])} | "
                f"{100 * diff['mean']:+.2f} ± {100 * diff['se']:.2f} |"
            )
        lines.append("")
    return lines


def render_routers(summary: dict[str, Any]) -> list[str]:
    lines = [
        "Routers under the protocol (IR3DE: each featurizer with the default settings; fit = one fold, from counts "
        "for IR3DE, from encoded text for the baselines):",
        "",
        "| router | " + " | ".join(f"@{n}" for n in LENGTHS) + " | min @64 | fit per fold (s) |",
        "|---" * (3 + len(LENGTHS)) + "|",
    ]
    for name, entry in summary["encoders"].items():
        variant = next(v for v in entry["variants"] if v["settings"] == entry["choice"]["chosen"])
        s = variant["summary"]
        cells = " | ".join(pct(s[str(n)]) for n in LENGTHS)
        lines.append(
            f"| IR3DE, {name} table | {cells} | {100 * s['64']['min']:.1f} | {entry['timings']['fold_fit_s']:.2f} |"
        )
    for name, entry in summary["baselines"].items():
        s = entry["summary"]
        cells = " | ".join(pct(s[str(n)]) for n in LENGTHS)
        lines.append(f"| {name} | {cells} | {100 * s['64']['min']:.1f} | {entry['fold_fit_s']:.2f} |")
    return [*lines, ""]


def render_per_source(summary: dict[str, Any]) -> list[str]:
    folds = summary["protocol"]["folds"]
    routers: dict[str, dict[str, dict[str, float]]] = {}
    for name, entry in summary["encoders"].items():
        chosen = entry["choice"]["chosen"]
        routers[f"IR3DE {name}"] = next(v for v in entry["variants"] if v["settings"] == chosen)["per_source"]
    for name, entry in summary["baselines"].items():
        routers[name] = entry["per_source"]
    lines = [
        "Accuracy (%) at 64 tokens per held-out source:",
        "",
        "| held-out source | domain | test prompts | " + " | ".join(routers) + " |",
        "|---" * (3 + len(routers)) + "|",
    ]
    for fold in folds:
        cells = " | ".join(f"{100 * per_source[fold['source']]['64']:.1f}" for per_source in routers.values())
        lines.append(f"| {fold['source']} | {fold['domain']} | {fold['test']} | {cells} |")
    return [*lines, ""]


def render_calibration(calibration: dict[str, Any]) -> list[str]:
    target = 100 * calibration["target_accuracy"]
    lines = [
        f"Calibration by the protocol (target {target:.0f}% accuracy of the routed prompts): for each held-out source "
        "the temperature and `min_confidence` are fitted on the other folds' held-out predictions (16/64/256 tokens "
        "pooled) and judged on it. Final fit on every fold: temperature "
        f"{calibration['final']['temperature']:.4g}, `min_confidence` {calibration['final']['min_confidence']:.4f}.",
        "",
        "| held-out source | " + " | ".join(f"coverage @{n} | routed acc. @{n}" for n in LENGTHS) + " | ECE @64 |",
        "|---" * (2 + 2 * len(LENGTHS)) + "|",
    ]
    for source, per_length in calibration["per_source"].items():
        cells = " | ".join(
            f"{100 * per_length[n]['coverage']:.1f} | {100 * per_length[n]['routed_accuracy']:.1f}" for n in LENGTHS
        )
        lines.append(f"| {source} | {cells} | {100 * per_length[64]['ece']:.2f} |")
    unknown = calibration["unknown_domain"]
    rates = ", ".join(f"{100 * unknown['fallback_rate'][str(n)]['all']:.0f}% at {n}" for n in LENGTHS)
    lines += [
        "",
        f"Unknown-domain prompts ({unknown['prompts']}: {', '.join(unknown['kinds'])}) sent to the fallback by the "
        f"router fitted on every source with the final calibration: {rates} tokens.",
        "",
    ]
    return lines


if __name__ == "__main__":
    main()
