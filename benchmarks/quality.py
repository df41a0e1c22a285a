"""Routing quality of IR3DE and the paper's baselines on the ir3de-multidomain test split (in-distribution) and on its
out-of-source test half (the same six domains from sources the training split never saw), plus IR3DE's calibration.

    python benchmarks/quality.py                      # full test splits; writes results/quality.{json,md} + PNGs
    python benchmarks/quality.py --test-per-domain 50 --ppl-per-domain 10   # a quick look

Every router sees the same prompts: each test text cut to its first 16, 64 and 256 SmolLM2 tokens. The MiniLM
baselines encode each distinct prompt once per run (kNN, the linear head and the logistic regression share
the embeddings).
Calibration: the default IR3DE router is calibrated (`router.calibrate`, target accuracy 99%) as the demo router is,
on sources it never saw (the out-of-source validation half and the additional sources), at 16/64/256 tokens; the
out-of-source test half shares its sources with the validation half (document-disjoint). The report gives its ECE and,
at the chosen threshold, the coverage and accuracy of the routed prompts on both test sets, and the share of the
unknown-domain prompts (everyday text and data of none of the domains) it sends to the fallback. IR3DE routes the
token ids; the MiniLM baselines get the same prompts as text. Fit time includes tokenisation and (for the baselines)
encoding the train split; routing time is per 1,000 prompts of 64 tokens, including each router's own tokenisation
except IR3DE's (given ids; see benchmarks/bench_routing.py for tokenisation measured separately).
Time to add one domain (the last of the six, multilingual) to a router fitted on the other five: for IR3DE
`router.add_expert(domain, texts=...)` plus the re-solve on the next route; for the trained baselines a refit on the
five domains' data plus the new one's (none has a cheaper path; the MiniLM ones reuse the memoised embeddings of the
five and encode the new domain's texts). The model2vec classifier trains on a static table distilled once from the
same MiniLM (`minilm_static_path`; the distillation is a one-off asset build, not counted).
Routed perplexity: each router picks an expert from a text's first 64 tokens, the expert is scored on the text's
first 256 tokens; normalised performance = mean over domains of ppl_oracle / ppl_routed x 100.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ir3de_hf import IR3DEConfig, IR3DERouterModel
from ir3de_hf.aggregation import AGGREGATIONS
from ir3de_hf.assets import minilm_path, minilm_static_path, smollm2_path
from ir3de_hf.baselines import (
    ClassifierRouter,
    KNNRouter,
    LogisticRegressionRouter,
    Model2VecRouter,
    OracleRouter,
    RandomRouter,
    SentenceEncoder,
)
from ir3de_hf.calibration import expected_calibration_error
from ir3de_hf.data import load_benchmark
from ir3de_hf.data.more_sources import load_more_sources
from ir3de_hf.data.out_of_source import load_out_of_source, load_unknown
from ir3de_hf.demo import DOMAINS, load_demo_router
from ir3de_hf.evaluation import normalized_performance, perplexity_by_domain, plot_confusion_matrix, routing_report
from ir3de_hf.perplexity import NLLTotal, per_text_nll
from settings import ISSUE_15_DEFAULTS

RESULTS = Path(__file__).parent / "results"
TARGET_ACCURACY = 0.99


def per_domain(rows: Any, count: int | None) -> tuple[list[str], list[str]]:
    texts, domains, seen = [], [], dict.fromkeys(DOMAINS, 0)
    for text, domain in zip(rows["text"], rows["domain"], strict=True):
        if count is None or seen[domain] < count:
            texts.append(text)
            domains.append(domain)
            seen[domain] += 1
    return texts, domains


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def of_domain(texts: list[str], domains: list[str], domain: str) -> list[str]:
    return [text for text, d in zip(texts, domains, strict=True) if d == domain]


def fit_ir3de(train_texts: list[str], train_domains: list[str], **config: Any) -> tuple[float, IR3DERouterModel]:
    def fit() -> IR3DERouterModel:
        router = IR3DERouterModel.from_encoder(str(smollm2_path()), **config)
        for domain in DOMAINS:
            router.add_expert(domain, texts=of_domain(train_texts, train_domains, domain))
        router.route([[1]])  # solve
        return router

    return timed(fit)


def add_domain_ir3de(router: IR3DERouterModel, train_texts: list[str], train_domains: list[str]) -> float:
    """Seconds to add the last domain to a copy of ``router`` without it, including the re-solve."""
    five = router.copy()
    five.remove_expert(DOMAINS[-1])
    five.route([[1]])  # solved without it
    texts = of_domain(train_texts, train_domains, DOMAINS[-1])
    seconds, _ = timed(lambda: (five.add_expert(DOMAINS[-1], texts=texts), five.route([[1]])))
    return seconds


def add_domain_baseline(
    make: Callable[[Sequence[str]], Any], texts: list[str], domains: list[str], encoder: SentenceEncoder | None
) -> float:
    """Seconds for a baseline fitted on the first five domains to add the last one (a refit), encoding its texts
    afresh when the baseline reads the memoised MiniLM ``encoder``."""
    router = make(DOMAINS[:-1])
    kept = [i for i, domain in enumerate(domains) if domain != DOMAINS[-1]]
    router.fit([texts[i] for i in kept], [domains[i] for i in kept])
    new = of_domain(texts, domains, DOMAINS[-1])
    if encoder is not None:
        encoder.forget(new)
    seconds, _ = timed(lambda: router.add_domain(DOMAINS[-1], new))
    return seconds


def fit_padding_counted(train_ids: list[list[int]], train_domains: list[str], eos: int) -> IR3DERouterModel:
    """The reference code's statistics: batches of 16 padded with EOS to their longest text, padding counted."""
    router = IR3DERouterModel.from_encoder(
        str(smollm2_path()), aggregation="majority_vote", pad_token_id=None, ignored_token_ids=[]
    )
    for domain in DOMAINS:
        ids = [row for row, d in zip(train_ids, train_domains, strict=True) if d == domain]
        counts = torch.zeros(router.config.vocab_size, dtype=torch.long)
        for start in range(0, len(ids), 16):
            batch = ids[start : start + 16]
            width = max(len(row) for row in batch)
            padded = torch.tensor([row + [eos] * (width - len(row)) for row in batch])
            counts += torch.bincount(padded.reshape(-1), minlength=router.config.vocab_size)
        router.add_expert(domain, histogram=counts)
    return router


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--test-per-domain", type=int, help="test prompts per domain (default: all 400)")
    parser.add_argument(
        "--index-per-domain", type=int, help="train samples per domain for the baselines (default: all)"
    )
    parser.add_argument("--index-tokens", type=int, default=128, help="train tokens per sample for the baselines")
    parser.add_argument("--ppl-per-domain", type=int, default=40, help="test texts per domain for perplexity")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.manual_seed(0)

    data = load_benchmark()
    train_texts, train_domains = per_domain(data["train"], None)
    test_texts, test_domains = per_domain(data["test"], args.test_per_domain)
    oos = load_out_of_source()
    oos_texts, oos_domains = per_domain(oos["test"], args.test_per_domain)
    demo = load_demo_router()
    tokenizer = demo.tokenizer
    sets = {"in_distribution": (test_texts, test_domains), "out_of_source": (oos_texts, oos_domains)}
    cut_ids: dict[str, dict[int, list[list[int]]]] = {}
    prompts: dict[str, dict[int, list[str]]] = {}
    for key, (texts, _) in sets.items():
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        cut_ids[key] = {n: [row[:n] for row in ids] for n in args.lengths}
        prompts[key] = {n: [tokenizer.decode(row[:n]) for row in ids] for n in args.lengths}
    results: dict[str, dict[str, Any]] = {}

    def record(
        name: str, fit_s: float, route: Callable[[str, int], list[str | None]], per_1k: float, add_s: float
    ) -> None:
        entry: dict[str, Any] = {"fit_s": fit_s, "add_domain_s": add_s, "route_ms_per_1k_prompts_64": per_1k}
        for key, (_, domains) in sets.items():
            entry[key] = {
                str(n): routing_report(domains, route(key, n), labels=DOMAINS).to_dict() for n in args.lengths
            }
        results[name] = entry
        accuracies = {key: {n: round(v["accuracy"], 4) for n, v in entry[key].items()} for key in sets}
        print(name, accuracies, flush=True)

    # IR3DE: one fit, every aggregation.
    fit_s, ir3de = fit_ir3de(train_texts, train_domains)
    add_s = add_domain_ir3de(ir3de, train_texts, train_domains)
    default_aggregation = ir3de.config.aggregation
    for aggregation in AGGREGATIONS:
        ir3de.config.aggregation = aggregation
        route_s, _ = timed(lambda: ir3de.route(cut_ids["in_distribution"][64]))
        record(
            f"IR3DE {aggregation}",
            fit_s,
            lambda key, n: ir3de.route(cut_ids[key][n]).expert_names,
            1000 * route_s * 1000 / len(test_texts),
            add_s,
        )
    ir3de.config.aggregation = default_aggregation
    for field, value in ISSUE_15_DEFAULTS.items():  # the same counts, re-solved with issue 15's settings
        setattr(ir3de.config, field, value)
    record(
        f"IR3DE {default_aggregation} + naive Bayes 0.1, unbalanced (old default, issue 15)",
        fit_s,
        lambda key, n: ir3de.route(cut_ids[key][n]).expert_names,
        float("nan"),
        add_s,
    )
    for field in ISSUE_15_DEFAULTS:
        setattr(ir3de.config, field, getattr(IR3DEConfig(), field))

    # The reference code's padding: EOS counted in the statistics and voting in prompts padded to 256 tokens.
    eos = tokenizer.eos_token_id
    padded_fit_s, padded = timed(
        lambda: fit_padding_counted(tokenizer(train_texts, add_special_tokens=False)["input_ids"], train_domains, eos)
    )

    def route_padded(key: str, n: int) -> list[str | None]:
        rows = [ids + [eos] * (256 - len(ids)) for ids in cut_ids[key][n]]
        return padded.route(torch.tensor(rows)).expert_names

    nan = float("nan")
    record("IR3DE majority_vote, padding counted (reference code)", padded_fit_s, route_padded, nan, nan)
    padded.config.aggregation = "mean"
    record("IR3DE mean, padding counted", padded_fit_s, route_padded, nan, nan)

    # Baselines on MiniLM: index / classifier features from the first --index-tokens of --index-per-domain samples.
    encoder = SentenceEncoder(minilm_path(), max_length=512)
    index_texts, index_domains = per_domain(data["train"], args.index_per_domain)
    index_ids = tokenizer(index_texts, add_special_tokens=False)["input_ids"]
    index_texts = [tokenizer.decode(ids[: args.index_tokens]) for ids in index_ids]
    encode_s, _ = timed(lambda: encoder.encode(index_texts, desc="MiniLM train split"))
    encode_test_s, _ = timed(lambda: encoder.encode(prompts["in_distribution"][64], desc="MiniLM prompts"))
    static_table = minilm_static_path()  # distilled once (a cached asset, like MiniLM itself)
    makers: dict[str, tuple[Callable[[Sequence[str]], Any], SentenceEncoder | None]] = {
        "kNN MiniLM (k=5)": (lambda names: KNNRouter(encoder, names), encoder),
        "MoDEM-style MiniLM + linear head": (lambda names: ClassifierRouter(encoder, names), encoder),
        "MiniLM + logistic regression": (lambda names: LogisticRegressionRouter(encoder, names), encoder),
        "model2vec classifier (MiniLM static table)": (lambda names: Model2VecRouter(static_table, names), None),
    }
    baselines: dict[str, Any] = {}
    for name, (make, memo) in makers.items():
        fit_s, baselines[name] = timed(lambda m=make: m(DOMAINS).fit(index_texts, index_domains))
        fit_s += encode_s if memo else 0.0  # the MiniLM ones read the embeddings encoded above
        add_s = add_domain_baseline(make, index_texts, index_domains, memo)
        route_s, _ = timed(lambda r=baselines[name]: r.route(prompts["in_distribution"][64]))
        per_1k = 1000 * ((encode_test_s if memo else 0.0) + route_s) * 1000 / len(test_texts)
        if memo:
            for key in sets:  # every prompt encoded once; the MiniLM baselines read the memo
                for n in args.lengths:
                    memo.encode(prompts[key][n], desc=f"MiniLM {key} {n}")
        record(name, fit_s, lambda key, n, r=baselines[name]: r.route(prompts[key][n]).expert_names, per_1k, add_s)
    random_router = RandomRouter(DOMAINS, seed=0)
    record("random", 0.0, lambda key, n: random_router.route(prompts[key][n]).expert_names, nan, nan)
    record("oracle", 0.0, lambda key, n: list(sets[key][1]), nan, nan)

    calibration = calibrate_default(ir3de, oos["validation"], load_more_sources(), cut_ids, sets, args)

    # Routed perplexity with the demo experts on a subset.
    ppl_texts, ppl_domains = per_domain(data["test"], args.ppl_per_domain)
    ppl_prompts = [tokenizer.decode(ids[:64]) for ids in tokenizer(ppl_texts, add_special_tokens=False)["input_ids"]]
    ppl_ids = [ids[:64] for ids in tokenizer(ppl_texts, add_special_tokens=False)["input_ids"]]
    default_name = f"IR3DE {default_aggregation}"
    assignments = {
        "oracle": OracleRouter(DOMAINS, dict(zip(ppl_prompts, ppl_domains, strict=True)))
        .route(ppl_prompts)
        .expert_names,
        default_name: ir3de.route(ppl_ids).expert_names,
        **{name: router.route(ppl_prompts).expert_names for name, router in baselines.items()},
        "random": RandomRouter(DOMAINS, seed=1).route(ppl_prompts).expert_names,
    }
    nll: dict[tuple[int, str], NLLTotal] = {}
    for expert in DOMAINS:
        needed = sorted({i for chosen in assignments.values() for i, e in enumerate(chosen) if e == expert})
        if not needed:
            continue
        demo.generate([ppl_prompts[needed[0]]], expert=expert, max_new_tokens=1)  # registers and loads it
        loaded = demo.expert_pool.get(expert)
        totals = per_text_nll(loaded.model, tokenizer, [ppl_texts[i] for i in needed], max_tokens=256)
        nll.update({(i, expert): total for i, total in zip(needed, totals, strict=True)})
        print(f"perplexity: {expert} scored {len(needed)} texts", flush=True)
    oracle_ppl = perplexity_by_domain(ppl_domains, [nll[i, e] for i, e in enumerate(assignments["oracle"])], DOMAINS)
    perplexity: dict[str, Any] = {}
    for name, chosen in assignments.items():
        routed_ppl = perplexity_by_domain(ppl_domains, [nll[i, e] for i, e in enumerate(chosen)], DOMAINS)
        perplexity[name] = {
            "per_domain": routed_ppl,
            "normalized_performance": normalized_performance(oracle_ppl, routed_ppl),
            "routing_accuracy": routing_report(ppl_domains, chosen, labels=DOMAINS).accuracy,
        }

    default = routing_report(test_domains, ir3de.route(cut_ids["in_distribution"][64]).expert_names, labels=DOMAINS)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot_confusion_matrix(
        default, args.out_dir / "confusion_ir3de_64.png", title=f"IR3DE ({default_aggregation}), 64-token prompts"
    )
    calibration["report"].plot(args.out_dir / "calibration_ir3de.png")
    summary = {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "test_prompts": {key: len(texts) for key, (texts, _) in sets.items()},
        "baseline_index": {"per_domain": args.index_per_domain, "tokens": args.index_tokens},
        "default_aggregation": default_aggregation,
        "routers": results,
        "calibration": {**calibration, "report": calibration["report"].to_dict()},
        "perplexity": {"texts": len(ppl_texts), "route_tokens": 64, "scored_tokens": 256, "routers": perplexity},
        "confusion_ir3de_default_64": default.to_dict(),
    }
    (args.out_dir / "quality.json").write_text(json.dumps(summary, indent=2) + "\n")
    markdown = render_markdown(summary, args.lengths, default.confusion_markdown())
    (args.out_dir / "quality.md").write_text(markdown)
    print(markdown)


def calibrate_default(
    router: IR3DERouterModel,
    oos_validation: Any,
    more_sources: Any,
    cut_ids: dict[str, dict[int, list[list[int]]]],
    sets: dict[str, tuple[list[str], list[str]]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Calibrates the default router on sources it never saw, then measures its threshold on the test sets and on
    the unknown-domain prompts."""
    texts = [*oos_validation["text"], *more_sources["text"]]
    labels = [*oos_validation["domain"], *more_sources["domain"]]
    report = router.calibrate(texts, labels, target_accuracy=TARGET_ACCURACY, prompt_tokens=args.lengths)
    measured: dict[str, Any] = {}
    for key, (_, domains) in sets.items():
        measured[key] = {}
        for n in args.lengths:
            output = router.route(cut_ids[key][n], token_details=False)
            targets = torch.tensor([DOMAINS.index(d) for d in domains])
            right = output.expert_ids == targets
            confident = output.confident
            top = output.probabilities.max(dim=1).values
            measured[key][str(n)] = {
                "coverage": float(confident.float().mean()),
                "routed_accuracy": float(right[confident].float().mean()),
                "accuracy": float(right.float().mean()),
                "ece": expected_calibration_error(top, right),
            }
    unknown = load_unknown()
    unknown_ids = router.tokenizer(list(unknown["text"]), add_special_tokens=False)["input_ids"]
    fallback = {}
    for n in args.lengths:
        output = router.route([row[:n] for row in unknown_ids], token_details=False)
        fallback[str(n)] = float((~output.confident).float().mean())
    kinds = sorted(set(unknown["kind"]))
    return {
        "target_accuracy": TARGET_ACCURACY,
        "calibration_prompts": len(texts) * len(args.lengths),
        "report": report,
        "test": measured,
        "unknown_domain": {"prompts": len(unknown), "kinds": kinds, "fallback_rate": fallback},
    }


def render_markdown(summary: dict[str, Any], lengths: list[int], confusion: str) -> str:
    sizes = summary["test_prompts"]
    header = " | ".join(f"in-dist. @{n}" for n in lengths) + " | " + " | ".join(f"out-of-source @{n}" for n in lengths)
    header += " | " + " | ".join(f"OOS norm. @{n}" for n in lengths)
    lines = [
        f"Accuracy (%) on the ir3de-multidomain test split ({sizes['in_distribution']} prompts) and on its "
        f"out-of-source test half ({sizes['out_of_source']} prompts; OOS norm. = mean recall over the domains).",
        "",
        f"| router | fit (s) | add 1 domain (s) | route ms / 1k prompts | {header} |",
        "|---" * (4 + 3 * len(lengths)) + "|",
    ]
    for name, entry in summary["routers"].items():
        accs = " | ".join(f"{100 * entry['in_distribution'][str(n)]['accuracy']:.1f}" for n in lengths)
        oos = " | ".join(f"{100 * entry['out_of_source'][str(n)]['accuracy']:.1f}" for n in lengths)
        norms = " | ".join(f"{100 * entry['out_of_source'][str(n)]['normalized_accuracy']:.1f}" for n in lengths)
        add, route = cell(entry["add_domain_s"], ",.2f"), cell(entry["route_ms_per_1k_prompts_64"], ",.1f")
        lines.append(f"| {name} | {entry['fit_s']:.1f} | {add} | {route} | {accs} | {oos} | {norms} |")
    lines += ["", *render_calibration(summary["calibration"], lengths, summary["default_aggregation"])]
    ppl = summary["perplexity"]
    lines += ["", f"Routed perplexity ({ppl['texts']} test texts, expert chosen from 64 tokens, scored on 256):", ""]
    lines += ["| router | routing acc. | normalised performance | " + " | ".join(DOMAINS) + " |"]
    lines += ["|---" * (3 + len(DOMAINS)) + "|"]
    for name, entry in ppl["routers"].items():
        cells = " | ".join(f"{entry['per_domain'][d]:.2f}" for d in DOMAINS)
        lines.append(
            f"| {name} | {100 * entry['routing_accuracy']:.1f}% | {entry['normalized_performance']:.2f}% | {cells} |"
        )
    aggregation = summary["default_aggregation"]
    lines += ["", f"IR3DE ({aggregation}) confusion matrix at 64 tokens:", "", confusion, ""]
    return "\n".join(lines)


def cell(value: float, spec: str) -> str:
    """A number for the table; empty when not measured (NaN)."""
    return "" if value != value else format(value, spec)


def render_calibration(calibration: dict[str, Any], lengths: list[int], aggregation: str) -> list[str]:
    report = calibration["report"]
    lines = [
        f"Calibration of IR3DE ({aggregation}) on unseen sources (out-of-source validation half and additional "
        f"sources, {calibration['calibration_prompts']} prompts "
        f"at {'/'.join(map(str, lengths))} tokens), target accuracy {100 * calibration['target_accuracy']:.0f}%: "
        f"temperature {report['temperature']:.4g}, `min_confidence` {report['min_confidence']:.4f}, ECE "
        f"{100 * report['ece']:.2f}% (uncalibrated {100 * report['ece_uncalibrated']:.2f}%). At that threshold, on "
        "the test sets:",
        "",
        "| test set | tokens | coverage | accuracy of routed | accuracy of all | ECE |",
        "|---|---|---|---|---|---|",
    ]
    for key, per_length in calibration["test"].items():
        for n in lengths:
            m = per_length[str(n)]
            lines.append(
                f"| {key.replace('_', '-')} | {n} | {100 * m['coverage']:.1f}% | {100 * m['routed_accuracy']:.1f}% | "
                f"{100 * m['accuracy']:.1f}% | {100 * m['ece']:.2f}% |"
            )
    unknown = calibration["unknown_domain"]
    rates = ", ".join(f"{100 * unknown['fallback_rate'][str(n)]:.0f}% at {n} tokens" for n in lengths)
    lines += [
        "",
        f"Unknown-domain prompts ({unknown['prompts']}: {', '.join(unknown['kinds'])}) sent to the fallback: {rates}.",
    ]
    return lines


if __name__ == "__main__":
    main()
