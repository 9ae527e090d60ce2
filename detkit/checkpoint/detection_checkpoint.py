"""Loading detkit checkpoints and torchvision ImageNet weights into a detector."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Sequence
from typing import Any

import torch
from fvcore.common.checkpoint import Checkpointer
from torch import nn

from ..utils.file_io import write_atomically, write_bytes_atomically

# torchvision VGG16 classifier layers that initialise the box head, as in the paper.
VGG16_CLASSIFIER_TO_BOX_HEAD = {
    "classifier.0.": "roi_heads.box_head.fc6.",
    "classifier.3.": "roi_heads.box_head.fc7.",
}
# Where a torchvision network sits in a detector: the backbone itself, or an FPN's trunk.
BACKBONE_PREFIXES = ("backbone.", "backbone.bottom_up.")


class IncompatibleCheckpointError(ValueError):
    """A checkpoint whose saved trainer state does not fit the objects it would be loaded into."""


def last_checkpoint(save_dir: str) -> str | None:
    """The checkpoint ``save_dir/last_checkpoint`` names (the newest one), or None without one."""
    tag = os.path.join(save_dir, "last_checkpoint")
    if not os.path.isfile(tag):
        return None
    with open(tag) as file:
        return os.path.join(save_dir, file.read().strip())


def read_training_state(path: str) -> dict[str, Any]:
    """The ``iteration`` and ``seed`` a checkpoint records (those it has), read cheaply.

    The file is memory-mapped, so only its small pickled index is read, not its tensors: a run
    can settle where it starts before it builds anything.
    """
    data = _torch_load(path, weights_only=True, mmap=zipfile.is_zipfile(path))
    if not isinstance(data, dict):
        return {}
    return {key: data[key] for key in ("iteration", "seed") if key in data}


def check_optimizer_state(optimizer: torch.optim.Optimizer, state_dict: dict) -> None:
    """Raises :class:`IncompatibleCheckpointError` unless ``state_dict`` fits ``optimizer``:
    as many parameter groups, of the same sizes, and each parameter's saved state (momentum, …)
    of that parameter's shape.

    torch pairs saved state with parameters by position only: it refuses another number or size
    of groups with a message that does not say why, and loads a reordered layout of equal sizes
    silently, giving parameters each other's momentum.
    """
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    saved_sizes = [len(group["params"]) for group in state_dict["param_groups"]]
    if saved_sizes != sizes:
        raise IncompatibleCheckpointError(
            f"its optimizer state has {_describe_groups(saved_sizes)} but this optimizer has "
            f"{_describe_groups(sizes)}. Parameters of equal lr and weight decay share a group, "
            "so a checkpoint written with other solver settings, or by a detkit that kept one "
            "group per parameter, cannot be resumed; start a new run from its weights instead "
            "(MODEL.WEIGHTS=<this file>, without --resume)"
        )
    for group, saved in zip(optimizer.param_groups, state_dict["param_groups"], strict=True):
        for parameter, index in zip(group["params"], saved["params"], strict=True):
            for name, value in state_dict["state"].get(index, {}).items():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape != parameter.shape:
                    raise IncompatibleCheckpointError(
                        f"its optimizer state {name!r} of shape {tuple(value.shape)} would go to "
                        f"a parameter of shape {tuple(parameter.shape)}: the parameter groups "
                        "are ordered differently; start a new run from its weights instead "
                        "(MODEL.WEIGHTS=<this file>, without --resume)"
                    )


def _describe_groups(sizes: Sequence[int]) -> str:
    shown = ", ".join(str(size) for size in sizes[:6]) + (", …" if len(sizes) > 6 else "")
    return f"{len(sizes)} parameter groups (of {shown} parameters)"


def _torch_load(filename: str, *, weights_only: bool, mmap: bool = False) -> Any:
    try:
        return torch.load(filename, map_location="cpu", weights_only=weights_only, mmap=mmap)
    except pickle.UnpicklingError as error:
        raise RuntimeError(
            f"{filename} needs arbitrary unpickling to load, which can run code; if you trust "
            "it, load it with DetectionCheckpointer(model, allow_unsafe_pickle=True)"
        ) from error


class DetectionCheckpointer(Checkpointer):
    """fvcore's Checkpointer that also reads torchvision ImageNet ``state_dict`` files.

    A file holding ``{"model": state_dict, ...}`` is a detkit checkpoint. Any other state dict is
    taken for torchvision weights (vgg16, resnet18/34/50/101) and mapped by name: backbone keys
    gain the ``backbone.`` prefix (``backbone.bottom_up.`` where an FPN holds the network as its
    trunk) and VGG16's fc6/fc7 go to the box head; weights the detector has no place for are
    reported and skipped, as are the detector's parameters the file lacks.
    Files are read with ``torch.load(weights_only=True)``; a file that needs arbitrary
    unpickling (which can run code) is refused unless ``allow_unsafe_pickle=True``. Optimizer
    state is checked against the optimizer before it is loaded (:func:`check_optimizer_state`).
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: bool = True,
        allow_unsafe_pickle: bool = False,
        **checkpointables,
    ) -> None:
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.allow_unsafe_pickle = allow_unsafe_pickle

    def save(self, name: str, **extra_state: Any) -> None:
        """Writes ``<save_dir>/<name>.pth`` (model, checkpointables, ``extra_state``) and points
        ``last_checkpoint`` at it.

        Both files are written to a temporary name and renamed into place, so a crash or kill
        mid-save leaves the previous checkpoint and tag intact, never a truncated file.
        """
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(extra_state)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        write_atomically(path, lambda file: torch.save(data, file))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        write_bytes_atomically(path, last_filename_basename)

    def has_checkpoint(self) -> bool:
        return last_checkpoint(self.save_dir) is not None

    def get_checkpoint_file(self) -> str:
        return last_checkpoint(self.save_dir) or ""

    def load(self, path: str, checkpointables: list[str] | None = None) -> dict[str, Any]:
        if path and not os.path.isfile(path) and not self.path_manager.exists(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        checks = [
            obj.register_load_state_dict_pre_hook(check_optimizer_state)
            for obj in self.checkpointables.values()
            if isinstance(obj, torch.optim.Optimizer)
        ]
        try:
            return super().load(path, checkpointables)
        except IncompatibleCheckpointError as error:
            raise IncompatibleCheckpointError(f"{path}: {error}") from None
        finally:
            for check in checks:
                check.remove()

    def _load_file(self, filename: str) -> dict[str, Any]:
        data = _torch_load(filename, weights_only=not self.allow_unsafe_pickle)
        if not isinstance(data, dict):
            raise ValueError(
                f"{filename}: expected a checkpoint dict or a state_dict, got {type(data)}"
            )
        if isinstance(data.get("model"), dict):
            return data
        return {"model": self._map_torchvision(data, filename)}

    def _map_torchvision(self, state: dict[str, Any], filename: str) -> dict[str, Any]:
        own = self.model.state_dict()
        mapped, unused = {}, []
        for key, value in state.items():
            targets = [prefix + key for prefix in BACKBONE_PREFIXES]
            for source, head in VGG16_CLASSIFIER_TO_BOX_HEAD.items():
                if key.startswith(source):
                    targets = [head + key[len(source) :]]
            target = next((t for t in targets if t in own), None)
            if target is None:
                unused.append(key)
            else:
                mapped[target] = value
        if not mapped:
            raise ValueError(f"{filename}: none of its {len(state)} weights match this model")
        if unused:
            self.logger.info(
                f"{filename}: {len(unused)} torchvision weights have no place in this model and "
                f"were skipped: {', '.join(sorted(unused)[:8])}{' …' if len(unused) > 8 else ''}"
            )
        return mapped
