# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Everything that moves a router or statistics between memory and files: a local directory or a Hub repository.

Data flows one way (model2vec's shape). ``IR3DERouterModel.save_pretrained`` lets transformers write ``config.json``
and ``model.safetensors``, then hands plain data (`_companions.Companions`) to one writer for everything else: the
tokenizer, the expert folders, the model card, its figures and its data files (``card.json``, ``calibration.json``).
A push is that save into a scratch folder and one upload; a load reads each file once.

One module per job:

- `_locations`: whether a string is a local path or a Hub id, one cached Hub file, the one-commit upload;
- `_atomic`: whole-directory atomic saves and their recovery;
- `_router_files`: what a router directory holds (portable registry, checks before loading, the saved card);
- `_companions`: the writer of the files beside config and weights;
- `_push`: pushing and pulling routers, publishing an expert's statistics.

The public functions are re-exported here and imported on first access, so the core's modules can use the private
ones without importing the router class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ._locations import local_path_or_hub_id
    from ._push import pull_router, push_router, push_statistics_to_hub

__all__ = ["local_path_or_hub_id", "pull_router", "push_router", "push_statistics_to_hub"]

_EXPORTS = {
    "local_path_or_hub_id": "_locations",
    "pull_router": "_push",
    "push_router": "_push",
    "push_statistics_to_hub": "_push",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)  # `_push` imports the router class: not at import
