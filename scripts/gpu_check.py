"""GPU check of the expert side: accelerate placement, bf16 experts, routed generation. Prints and writes JSON.

    python scripts/gpu_check.py --model-dir DIR --experts space_app/experts --out gpu_check.json

Fits a router on the benchmark train split (SmolLM2 embeddings), registers the six LoRA experts on one bf16 base
placed on cuda:0 by accelerate, routes one test prompt per domain and generates 32 greedy tokens.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

from ir3de_hf import IR3DERouterModel
from ir3de_hf.experts import ExpertPool

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--experts", type=Path, default=REPO / "space_app" / "experts")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "ir3de-multidomain")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    def split(name: str) -> dict[str, list[str]]:
        table = pq.read_table(next((args.data_dir / "data").glob(f"{name}-*.parquet")), columns=["text", "domain"])
        texts: dict[str, list[str]] = {}
        for text, domain in zip(table.column("text").to_pylist(), table.column("domain").to_pylist(), strict=True):
            texts.setdefault(domain, []).append(text)
        return texts

    start = time.perf_counter()
    router = IR3DERouterModel.from_encoder(str(args.model_dir))
    for domain, texts in split("train").items():
        router.add_expert(domain, texts=texts, source=str(args.experts / domain), base_model=str(args.model_dir))
    fit_s = time.perf_counter() - start
    router.expert_pool = ExpertPool(dtype=torch.bfloat16, device_map="cuda:0")
    prompts = {
        domain: router.tokenizer.decode(router.tokenizer(texts[0])["input_ids"][:64])
        for domain, texts in split("test").items()
    }

    start = time.perf_counter()
    results = router.generate(list(prompts.values()), max_new_tokens=32, do_sample=False)
    generate_s = time.perf_counter() - start
    model = router.expert_pool.get(results[0].expert).model
    report = {
        "device": torch.cuda.get_device_name(0),
        "fit_router_s": fit_s,
        "routed_generate_6_prompts_32_tokens_s": generate_s,
        "parameter_devices": sorted({str(p.device) for p in model.parameters()}),
        "parameter_dtypes": sorted({str(p.dtype) for p in model.parameters()}),
        "hf_device_map": getattr(model.get_base_model(), "hf_device_map", None),
        "loaded_experts": router.expert_pool.loaded,
        "pool_memory_mb": router.expert_pool.memory_bytes / 1e6,
        "cuda_memory_allocated_mb": torch.cuda.memory_allocated() / 1e6,
        "routes": [
            {"domain": domain, "expert": r.expert, "margin": r.margin, "answer": r.text}
            for domain, r in zip(prompts, results, strict=True)
        ],
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
