"""ir3de-multidomain: a six-domain benchmark (code, legal, politics, biomedical, fiction, multilingual) for routing.

``load_benchmark()`` reads the committed parquet files; ``build_benchmark()`` rebuilds them from pinned corpora.
"""

from ir3de_hf._extras import require

# the one line that names the extra, before any of the modules below imports datasets
require("datasets", extra="data", purpose="the ir3de-multidomain benchmark and its builders (ir3de_hf.data)")

from ir3de_hf.data.build import BuildConfig, build_benchmark  # noqa: E402
from ir3de_hf.data.card import render_dataset_card  # noqa: E402
from ir3de_hf.data.load import benchmark_path, load_benchmark, load_sources  # noqa: E402
from ir3de_hf.data.publish import save_benchmark  # noqa: E402
from ir3de_hf.data.sources import DOMAINS, SOURCES  # noqa: E402
from ir3de_hf.data.splits import SPLITS  # noqa: E402

__all__ = [
    "DOMAINS",
    "SOURCES",
    "SPLITS",
    "BuildConfig",
    "benchmark_path",
    "build_benchmark",
    "load_benchmark",
    "load_sources",
    "render_dataset_card",
    "save_benchmark",
]
