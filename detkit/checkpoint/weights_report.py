"""What a weights file gives a model: which of its weights it fills, which it leaves as they
were initialised, and weights that are not finite."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch


def _names(names: Sequence[str], shown: int = 8) -> str:
    more = f" … and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


@dataclass(frozen=True)
class WeightsReport:
    """How a file's state dict fits a model's: ``missing`` (the model's weights, parameters and
    buffers, the file lacks), ``mismatched`` (``(name, file shape, model shape)``, not loaded)
    and ``unused`` (the file's weights the model has no place for)."""

    total: int
    missing: tuple[str, ...]
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]
    unused: tuple[str, ...]

    @classmethod
    def compare(
        cls, model_state: Mapping[str, torch.Tensor], file_state: Mapping[str, object]
    ) -> WeightsReport:
        mismatched = tuple(
            (name, tuple(value.shape), tuple(model_state[name].shape))
            for name, value in file_state.items()
            if name in model_state
            and hasattr(value, "shape")
            and tuple(value.shape) != tuple(model_state[name].shape)
        )
        return cls(
            total=len(model_state),
            missing=tuple(name for name in model_state if name not in file_state),
            mismatched=mismatched,
            unused=tuple(name for name in file_state if name not in model_state),
        )

    @property
    def uninitialised(self) -> list[str]:
        """The model's weights this file leaves as they were initialised."""
        return [*self.missing, *(name for name, _, _ in self.mismatched)]

    @property
    def loaded(self) -> int:
        return self.total - len(self.uninitialised)

    def describe(self) -> str:
        """What is loaded and what is not, in one line."""
        parts = [f"loaded {self.loaded} of the model's {self.total} weights"]
        if self.missing:
            parts.append(
                f"{len(self.missing)} not in the file keep their initial values: "
                f"{_names(self.missing)}"
            )
        if self.mismatched:
            shapes = [f"{n} ({list(a)} in the file, {list(b)} here)" for n, a, b in self.mismatched]
            parts.append(f"{len(shapes)} of another shape were skipped: {_names(shapes)}")
        if self.unused:
            parts.append(
                f"{len(self.unused)} in the file have no place in the model: {_names(self.unused)}"
            )
        return "; ".join(parts)

    def refusal(self) -> str:
        """Why evaluating the model with these weights is refused, and what to do."""
        unused = (
            f"; it holds {len(self.unused)} weights this model lacks ({_names(self.unused, 4)}): "
            "another architecture or layout?"
            if self.unused
            else ""
        )
        return (
            f"it leaves {len(self.uninitialised)} of the model's {self.total} weights "
            f"uninitialised ({_names(self.uninitialised)}), so the model would be partly random"
            f"{unused}; use weights trained with this config's model, or the config of the run "
            "that wrote them (its OUTPUT_DIR/config.yaml as --config-file)"
        )


def non_finite_weights(state: Mapping[str, object]) -> list[str]:
    """The names of the floating-point tensors in ``state`` that hold a NaN or an infinity."""
    return [
        name
        for name, value in state.items()
        if isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and not bool(torch.isfinite(value).all())
    ]
