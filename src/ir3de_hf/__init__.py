# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""ir3de_hf: the IR3DE linear router for domain-expert LLMs, as a Hugging Face `PreTrainedModel`.

`import ir3de_hf` is cheap: it imports neither torch nor transformers (about 6 s together), so `ir3de --help` starts
at once. The public names (`IR3DERouterModel`, ...) are imported on first access (PEP 562 `__getattr__`).

Importing the package still registers `IR3DEConfig` and `IR3DERouterModel` with `AutoConfig`, `AutoModel` and
`AutoModelForSequenceClassification` (for `pipeline("text-classification")`), so
`AutoModel.from_pretrained(path)` returns a router for any saved ``model_type: "ir3de"``: if transformers' auto
classes are already imported the registration happens now, otherwise an import hook (`_AutoRegistration`) does it
right after transformers imports them.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._lazy import lazy_exports

if TYPE_CHECKING:
    from .configuration_ir3de import ExpertSpec, IR3DEConfig
    from .model_card import CardInfo
    from .modeling_ir3de import IR3DERouterModel, IR3DERouterOutput
    from .shared_statistics import ExpertStatistics, StatisticsError

__version__ = "0.1.0.dev0"

# public name -> the submodule that defines it, imported on first access
_EXPORTS = {
    "CardInfo": "model_card",
    "ExpertSpec": "configuration_ir3de",
    "ExpertStatistics": "shared_statistics",
    "IR3DEConfig": "configuration_ir3de",
    "IR3DERouterModel": "modeling_ir3de",
    "IR3DERouterOutput": "modeling_ir3de",
    "StatisticsError": "shared_statistics",
}

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


def _register_config() -> None:
    from transformers import AutoConfig

    from .configuration_ir3de import IR3DEConfig

    AutoConfig.register(IR3DEConfig.model_type, IR3DEConfig, exist_ok=True)


def _register_model() -> None:
    from transformers import AutoModel, AutoModelForSequenceClassification

    from .configuration_ir3de import IR3DEConfig
    from .modeling_ir3de import IR3DERouterModel

    AutoModel.register(IR3DEConfig, IR3DERouterModel, exist_ok=True)
    # pipeline("text-classification", model=router) resolves the model through this auto class
    AutoModelForSequenceClassification.register(IR3DEConfig, IR3DERouterModel, exist_ok=True)


_WATCHED = "transformers"  # every module of transformers: registration waits until none is half executed


class _AutoRegistration(importlib.abc.MetaPathFinder):
    """Registers the router with `AutoConfig` / `AutoModel` once transformers has imported the module of each.

    A `sys.meta_path` finder that wraps the loaders of transformers' modules and of this package's submodules.
    Registering imports `modeling_ir3de`, which must not happen while one of those modules is half executed in this
    thread (``import ir3de_hf.experts`` imports transformers' auto classes, and `modeling_ir3de` imports `experts`;
    ``from transformers import AutoTokenizer`` runs `tokenization_auto`, which imports the modeling auto module
    before it defines `AutoTokenizer`, which `modeling_ir3de` imports: circular imports), so it waits until the
    outermost one has finished. Watching every module of transformers, not only the auto ones, means no import order
    can register while some other module of transformers is half executed; a step that fails with an `ImportError`
    anyway stays pending and is retried after the next watched import. The finder removes itself when both
    registrations are done.
    """

    _STEPS = {
        "transformers.models.auto.configuration_auto": _register_config,
        "transformers.models.auto.modeling_auto": _register_model,
    }

    def __init__(self) -> None:
        self._pending = dict(self._STEPS)
        self._depth = threading.local()  # this thread's watched modules being executed, and registrations running

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        """The spec the other finders give for a watched module, with a loader that registers after executing it."""
        if fullname != _WATCHED and not fullname.startswith((f"{_WATCHED}.", f"{__name__}.")):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisteringLoader(spec.loader, self)
                return spec
        return None

    def enter(self) -> None:
        self._depth.value = getattr(self._depth, "value", 0) + 1

    def leave(self) -> None:
        self._depth.value -= 1

    def register(self) -> None:
        """Registers with each auto class transformers has imported, unless one of our modules is half executed."""
        if getattr(self._depth, "value", 0):
            return
        self.enter()
        try:
            for module, step in list(self._pending.items()):
                if module in sys.modules and _run(step):  # a failed step stays pending: the next import retries it
                    self._pending.pop(module, None)
        finally:
            self.leave()
        if not self._pending:
            with contextlib.suppress(ValueError):  # another thread removed it
                sys.meta_path.remove(self)


def _run(step: Callable[[], None]) -> bool:
    """Runs a registration step and says whether it succeeded. A failure (a module of transformers still half
    imported, outside what the finder sees) is retried after the next watched import; it is never raised, because it
    happens inside transformers' own imports."""
    try:
        step()
    except ImportError:  # a circular import under way: the next watched import retries
        return False
    except Exception as error:  # a broken ir3de_hf must not break `from transformers import ...`
        warnings.warn(
            f"ir3de_hf could not register with transformers' auto classes: {error!r}", RuntimeWarning, stacklevel=2
        )
    return True


class _RegisteringLoader(importlib.abc.Loader):
    """Executes a module with its own loader, then lets `_AutoRegistration` register what has become possible."""

    def __init__(self, loader: importlib.abc.Loader, registration: _AutoRegistration) -> None:
        self._loader = loader
        self._registration = registration

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)  # get_code (runpy, `python -m`), get_source, is_package...

    def exec_module(self, module: ModuleType) -> None:
        # the module keeps its real loader, for `inspect`, `linecache`, resources and `importlib.reload`
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._registration.enter()
        try:
            self._loader.exec_module(module)
        finally:
            self._registration.leave()
        self._registration.register()


_registration = _AutoRegistration()
sys.meta_path.insert(0, _registration)
_registration.register()  # transformers' auto classes may be imported already
