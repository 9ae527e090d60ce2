"""detkit's registries: fvcore's ``Registry`` that admits only what can be built from a config.

Every extension point (backbones, RoI heads, box heads, poolers, samplers, evaluators,
transforms, proposal loaders, meta-architectures) is one :class:`Registry`. An entry is either

* a class with a ``from_config`` classmethod: ``cls.from_config(cfg, *args)`` builds it, and
  the class stays usable with plain arguments (detectron2's style); or
* a builder callable taking the config first: ``builder(cfg, *args)`` (detectron2's habit for
  backbones, ``@BACKBONE_REGISTRY.register()`` on ``def build_my_backbone(cfg, input_shape)``).

Anything else is refused when it is registered, with a message saying what is expected, so
a mistake shows at import time and not as an ``AttributeError`` deep inside a build. A registry
whose entries are built otherwise says what it admits instead (pooler types: module classes
built with plain arguments; proposal loaders: plain functions).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from fvcore.common.registry import Registry as _FvcoreRegistry

__all__ = ["Registry"]


class Registry(_FvcoreRegistry):
    """A name → class-or-builder map; see the module docstring for what it admits.

    ``build(name, cfg, *args)`` builds the entry ``name``; an unknown name raises ``KeyError``
    naming the registered ones and the closest to it. A registry of other entries gives
    ``reason``, which says why an object cannot be an entry (``""`` when it can; default:
    :func:`unbuildable_reason`), and ``expects``, the description of a valid entry in the
    refusal message.
    """

    def __init__(
        self,
        name: str,
        expects: str | None = None,
        reason: Callable[[Any], str] | None = None,
    ) -> None:
        super().__init__(name)
        self.expects = expects or (
            "a class with a from_config(cfg, ...) classmethod or a builder function whose first "
            "argument is the config, builder(cfg, ...)"
        )
        self.reason = reason or unbuildable_reason

    def _do_register(self, name: str, obj: Any) -> None:
        problem = self.reason(obj)
        if problem:
            raise TypeError(
                f"{self._name} registry: cannot register {name!r}: {problem}. An entry must be "
                f"{self.expects}"
            )
        super()._do_register(name, obj)

    def register(self, obj: Any = None, name: str | None = None) -> Any:
        """Registers ``obj`` under ``name`` (default: its ``__name__``); as a decorator,
        ``@register()`` or ``@register(name="Other")``."""
        if obj is None:

            def decorate(entry: Any) -> Any:
                self._do_register(name or entry.__name__, entry)
                return entry

            return decorate
        self._do_register(name or obj.__name__, obj)
        return obj

    def get(self, name: str) -> Any:
        if name not in self:
            raise KeyError(self.unknown_name_message(name))
        return super().get(name)

    def build(self, name: str, cfg, *args: Any, **kwargs: Any) -> Any:
        """The entry ``name`` built from ``cfg``: ``from_config(cfg, *args, **kwargs)`` of a
        class, ``builder(cfg, *args, **kwargs)`` of a builder."""
        entry = self.get(name)
        if isinstance(entry, type):
            return entry.from_config(cfg, *args, **kwargs)
        return entry(cfg, *args, **kwargs)

    def unknown_name_message(self, name: str) -> str:
        """The message for a name that is not registered: what is, and the closest match."""
        known = sorted(registered for registered, _ in self)
        message = f"no {name!r} in the {self._name} registry; registered: {', '.join(known)}"
        close = difflib.get_close_matches(str(name), known, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        return message


def unbuildable_reason(obj: Any) -> str:
    """Why ``obj`` cannot be a registry entry, or ``""`` when it can."""
    if isinstance(obj, type):
        if not callable(getattr(obj, "from_config", None)):
            return f"the class {obj.__name__} has no from_config classmethod"
        return ""
    if not callable(obj):
        return f"{obj!r} ({type(obj).__name__}) is neither a class nor callable"
    try:
        parameters = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):  # a callable without a signature: trust it
        return ""
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not any(p.kind in (*positional, inspect.Parameter.VAR_POSITIONAL) for p in parameters):
        return f"the builder {getattr(obj, '__name__', obj)!r} takes no positional argument"
    return ""
