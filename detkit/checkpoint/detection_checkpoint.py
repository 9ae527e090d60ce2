"""Loading detkit checkpoints and torchvision ImageNet weights into a detector."""

from __future__ import annotations

import os
import pickle
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


class DetectionCheckpointer(Checkpointer):
    """fvcore's Checkpointer that also reads torchvision ImageNet ``state_dict`` files.

    A file holding ``{"model": state_dict, ...}`` is a detkit checkpoint. Any other state dict is
    taken for torchvision weights (vgg16, resnet18/34/50/101) and mapped by name: backbone keys
    gain the ``backbone.`` prefix (``backbone.bottom_up.`` where an FPN holds the network as its
    trunk) and VGG16's fc6/fc7 go to the box head; weights the detector has no place for are
    reported and skipped, as are the detector's parameters the file lacks.
    Files are read with ``torch.load(weights_only=True)``; a file that needs arbitrary
    unpickling (which can run code) is refused unless ``allow_unsafe_pickle=True``.
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

    def load(self, path: str, checkpointables: list[str] | None = None) -> dict[str, Any]:
        if path and not os.path.isfile(path) and not self.path_manager.exists(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return super().load(path, checkpointables)

    def _load_file(self, filename: str) -> dict[str, Any]:
        try:
            data = torch.load(
                filename, map_location="cpu", weights_only=not self.allow_unsafe_pickle
            )
        except pickle.UnpicklingError as error:
            raise RuntimeError(
                f"{filename} needs arbitrary unpickling to load, which can run code; if you trust "
                "it, load it with DetectionCheckpointer(model, allow_unsafe_pickle=True)"
            ) from error
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
