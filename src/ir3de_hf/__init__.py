# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""ir3de_hf: the IR3DE linear router for domain-expert LLMs, as a Hugging Face `PreTrainedModel`.

Importing the package registers `IR3DEConfig` and `IR3DERouterModel` with `AutoConfig` and `AutoModel`, so
`AutoModel.from_pretrained(path)` returns a router for any saved ``model_type: "ir3de"``.
"""

from transformers import AutoConfig, AutoModel

from .cards import CardInfo
from .configuration_ir3de import ExpertSpec, IR3DEConfig
from .modeling_ir3de import IR3DERouterModel, IR3DERouterOutput
from .shared_statistics import ExpertStatistics, StatisticsError

__version__ = "0.1.0.dev0"

AutoConfig.register(IR3DEConfig.model_type, IR3DEConfig)
AutoModel.register(IR3DEConfig, IR3DERouterModel)

__all__ = [
    "CardInfo",
    "ExpertSpec",
    "ExpertStatistics",
    "IR3DEConfig",
    "IR3DERouterModel",
    "IR3DERouterOutput",
    "StatisticsError",
    "__version__",
]
