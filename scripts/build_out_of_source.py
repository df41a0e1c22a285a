"""Build the out-of-source evaluation of ir3de-multidomain (see `ir3de_hf.data.out_of_source`) from its pinned
corpora, write its parquet files beside the benchmark's and re-render the dataset card; or check the committed copy.

python scripts/build_out_of_source.py            # writes data/ir3de-multidomain/data/{out_of_source_*,unknown_domain}*
python scripts/build_out_of_source.py --check    # rebuild in memory and compare with the committed rows
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

from ir3de_hf.data import benchmark_path, load_benchmark
from ir3de_hf.data.build import load_tokenizer
from ir3de_hf.data.card import render_dataset_card
from ir3de_hf.data.out_of_source import (
    OUT_OF_SOURCE_FILES,
    UNKNOWN_FILE,
    build_out_of_source,
    build_unknown,
    load_out_of_source,
    load_unknown,
)
from ir3de_hf.data.publish import BUILD_INFO_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=benchmark_path(), help="dataset folder (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="compare with the committed rows instead of writing")
    args = parser.parse_args(argv)
    halves, unknown = build_out_of_source(load_tokenizer()), build_unknown()
    if args.check:
        same = all(load_out_of_source(args.out)[s].to_list() == halves[s].to_list() for s in halves)
        same = same and load_unknown(args.out).to_list() == unknown.to_list()
        print("identical to the committed rows" if same else f"DIFFERENT from the rows in {args.out}")
        return 0 if same else 1
    for split, part in halves.items():
        path = args.out / OUT_OF_SOURCE_FILES[split]
        pq.write_table(part.data.table, path, compression="zstd", compression_level=19)
        print(f"wrote {path} ({len(part)} rows)")
    pq.write_table(unknown.data.table, args.out / UNKNOWN_FILE, compression="zstd", compression_level=19)
    print(f"wrote {args.out / UNKNOWN_FILE} ({len(unknown)} rows)")
    report = json.loads((args.out / BUILD_INFO_FILE).read_text(encoding="utf-8"))
    (args.out / "README.md").write_text(render_dataset_card(load_benchmark(args.out), report), encoding="utf-8")
    print(f"rendered {args.out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
