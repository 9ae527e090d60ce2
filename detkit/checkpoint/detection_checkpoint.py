"""Loading detkit checkpoints and torchvision ImageNet weights into a detector."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from fvcore.common.checkpoint import Checkpointer, _strip_prefix_if_present
from torch import nn

from ..utils.errors import UserError
from ..utils.file_io import PathManager, write_atomically, write_bytes_atomically
from .files import (
    CHECKPOINT_NAME,
    CheckpointFileError,
    CheckpointNotFoundError,
    ResumePoint,
    last_checkpoint,
    load_checkpoint_file,
    read_resume_point,
    resumable_checkpoint,
)
from .weights_report import WeightsReport, non_finite_weights

# torchvision VGG16 classifier layers that initialise the box head, as in the paper.
VGG16_CLASSIFIER_TO_BOX_HEAD = {
    "classifier.0.": "roi_heads.box_head.fc6.",
    "classifier.3.": "roi_heads.box_head.fc7.",
}
# Where a torchvision network sits in a detector: the backbone itself, or an FPN's trunk.
BACKBONE_PREFIXES = ("backbone.", "backbone.bottom_up.")


class IncompatibleCheckpointError(UserError, ValueError):
    """A checkpoint that does not fit the objects it would be loaded into: the model (weights
    it lacks, of another shape or layout) or the saved trainer state."""


class PartialWeightsError(IncompatibleCheckpointError):
    """Weights refused because they leave part of the model uninitialised (a checkpointer
    with ``allow_partial=False``); a tool that can load them anyway adds its option."""


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


class DetectionCheckpointer(Checkpointer):
    """fvcore's Checkpointer that also reads torchvision ImageNet ``state_dict`` files, and
    refuses files it cannot use instead of loading part of them silently.

    A file holding ``{"model": state_dict, ...}`` is a detkit checkpoint. Any other state dict is
    taken for torchvision weights (vgg16, resnet18/34/50/101) and mapped by name: backbone keys
    gain the ``backbone.`` prefix (``backbone.bottom_up.`` where an FPN holds the network as its
    trunk) and VGG16's fc6/fc7 go to the box head; weights the detector has no place for are
    skipped. Every load logs what it filled and what it left as initialised
    (:class:`WeightsReport`); with ``allow_partial=False`` a file that leaves any of the model's
    weights uninitialised is refused (:class:`IncompatibleCheckpointError`, naming them), which
    is what evaluating needs.

    Paths go through detkit's iopath ``PathManager`` (:mod:`detkit.utils.file_io`), so any
    registered path handler works, ``https://`` included. Files are read with
    ``torch.load(weights_only=True)``; a file that needs arbitrary unpickling (which can run
    code) is refused unless ``allow_unsafe_pickle=True``. Plain pickles of numpy arrays
    (detectron2's model-zoo ``.pkl``) are read by an unpickler that builds plain data only. A
    directory, an empty, truncated or corrupt file, or weights that are not finite are refused
    naming the file (:class:`CheckpointFileError`). Optimizer state is checked against the
    optimizer before it is loaded (:func:`check_optimizer_state`).
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: bool = True,
        allow_unsafe_pickle: bool = False,
        allow_partial: bool = True,
        **checkpointables,
    ) -> None:
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.allow_unsafe_pickle = allow_unsafe_pickle
        self.allow_partial = allow_partial
        self.path_manager = PathManager
        self.saved_iteration: int | None = None

    def save(self, name: str, **extra_state: Any) -> None:
        """Writes ``<save_dir>/<name>.pth`` (model, checkpointables, ``extra_state``) and points
        ``last_checkpoint`` at it; ``saved_iteration`` records its ``iteration``.

        Both files are written to a temporary name and renamed into place, so a crash or kill
        mid-save leaves the previous checkpoint and tag intact, never a truncated file. ``name``
        is a plain file name (letters, digits, ``_``, ``-``, ``.``), as ``--resume`` accepts.
        """
        if not CHECKPOINT_NAME.fullmatch(f"{name}.pth"):
            raise ValueError(
                f"checkpoint name {name!r}: give a plain file name of letters, digits, _, - and . "
                "(e.g. model_0000199), as --resume accepts"
            )
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
        self.saved_iteration = extra_state.get("iteration")

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        write_bytes_atomically(path, last_filename_basename)

    def has_checkpoint(self) -> bool:
        return last_checkpoint(self.save_dir) is not None

    def get_checkpoint_file(self) -> str:
        """The newest intact checkpoint of ``save_dir`` (:func:`resumable_checkpoint`)."""
        return resumable_checkpoint(self.save_dir) or ""

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict[str, Any]:
        """With ``resume``: everything from the newest intact checkpoint of ``save_dir`` when
        there is one (:func:`read_resume_point`, which reads it once). Otherwise the model's
        weights from ``path``."""
        point = read_resume_point(self.save_dir) if resume else None
        if point is not None:
            return self.load_resume_point(point)
        return self.load(path, checkpointables=[])

    def load_resume_point(self, point: ResumePoint) -> dict[str, Any]:
        """Loads everything from the checkpoint ``point`` names, from the content read with it
        (:meth:`ResumePoint.take_content`: the file is not read again); warns naming the newer
        checkpoints skipped as broken. Returns what else the checkpoint holds."""
        point.warn_skipped()
        self.logger.info(f"Loading {point.path}")
        checkpoint = self._as_checkpoint(point.take_content(), point.path)
        return self._load_checkpoint(point.path, checkpoint, None)

    def load(self, path: str, checkpointables: list[str] | None = None) -> dict[str, Any]:
        """Loads the model's weights from ``path`` and then ``checkpointables`` (all when None);
        returns what else the file holds. An empty ``path`` loads nothing."""
        if not path:
            self.logger.info("No weights to load: the model keeps its initial weights")
            return {}
        local = self._local_file(path)
        self.logger.info(f"Loading {path}" + (f" (local copy {local})" if local != path else ""))
        return self._load_checkpoint(path, self._load_file(local), checkpointables)

    def _load_checkpoint(
        self, path: str, checkpoint: dict[str, Any], checkpointables: list[str] | None
    ) -> dict[str, Any]:
        """Loads ``checkpoint``, read from ``path``, as :meth:`load` describes."""
        self._load_weights(path, checkpoint)
        checks = [
            obj.register_load_state_dict_pre_hook(check_optimizer_state)
            for obj in self.checkpointables.values()
            if isinstance(obj, torch.optim.Optimizer)
        ]
        try:
            for key in self.checkpointables if checkpointables is None else checkpointables:
                if key in checkpoint:
                    self.checkpointables[key].load_state_dict(checkpoint.pop(key))
        except IncompatibleCheckpointError as error:
            raise IncompatibleCheckpointError(f"{path}: {error}") from None
        finally:
            for check in checks:
                check.remove()
        return checkpoint

    def _local_file(self, path: str) -> str:
        """``path`` as a local file: itself, or the copy its iopath handler makes. A handler
        need not say whether a path exists or is a directory (iopath's HTTP handler does not):
        fetching the copy says so, and the copy is checked like a local file."""
        if os.path.exists(path):
            return path
        if not self._ask_handler(self.path_manager.exists, path, default=True):
            raise CheckpointNotFoundError(f"checkpoint not found: {path}")
        if self._ask_handler(self.path_manager.isdir, path, default=False):
            raise CheckpointFileError(path, "is a directory, not a checkpoint file", "name a file")
        try:
            return self.path_manager.get_local_path(path)
        except OSError as error:  # e.g. an address that cannot be reached
            raise CheckpointFileError(
                path,
                f"could not be fetched ({type(error).__name__}: {error})",
                "check the address and the network, or download it and give the local file",
            ) from None

    @staticmethod
    def _ask_handler(question: Callable[[str], bool], path: str, *, default: bool) -> bool:
        """``question(path)`` of ``path``'s handler, or ``default`` for a handler that does not
        implement it."""
        try:
            return question(path)
        except NotImplementedError:
            return default

    def _load_file(self, filename: str) -> dict[str, Any]:
        data = load_checkpoint_file(filename, weights_only=not self.allow_unsafe_pickle)
        return self._as_checkpoint(data, filename)

    def _as_checkpoint(self, data: Any, filename: str) -> dict[str, Any]:
        """``data`` read from ``filename`` as a detkit checkpoint, ``{"model": state_dict,
        ...}``: itself, or torchvision weights mapped by name."""
        if not isinstance(data, dict):
            raise CheckpointFileError(
                filename,
                f"holds a {type(data).__name__}, not a checkpoint dict or a state_dict",
                "use a file written by detkit or a torchvision state_dict",
            )
        if isinstance(data.get("model"), dict):
            return data
        return {"model": self._map_torchvision(data, filename)}

    def _load_weights(self, path: str, checkpoint: dict[str, Any]) -> None:
        """Loads ``checkpoint["model"]`` into the model and logs what it filled; refuses weights
        that are not finite, and weights that leave some uninitialised unless
        ``allow_partial``."""
        state = checkpoint["model"]
        _strip_prefix_if_present(state, "module.")  # saved from a DistributedDataParallel
        broken = non_finite_weights(state)
        if broken:
            raise CheckpointFileError(
                path,
                f"{len(broken)} weights hold NaN or infinite values: {', '.join(broken[:8])}",
                "the run that wrote it diverged; use an earlier checkpoint",
            )
        report = WeightsReport.compare(self.model.state_dict(), state)
        if report.uninitialised and not self.allow_partial:
            raise PartialWeightsError(f"{path}: {report.refusal()}")
        try:
            self._load_model(checkpoint)
        except ValueError as error:  # e.g. the box head refusing another fc layout
            raise IncompatibleCheckpointError(f"{path}: {error}") from None
        complete = not (report.uninitialised or report.unused)
        log = self.logger.info if complete else self.logger.warning
        log(f"{path}: {report.describe()}")

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
            raise IncompatibleCheckpointError(
                f"{filename}: none of its {len(state)} weights match this model"
            )
        if unused:
            self.logger.info(
                f"{filename}: {len(unused)} torchvision weights have no place in this model and "
                f"were skipped: {', '.join(sorted(unused)[:8])}{' …' if len(unused) > 8 else ''}"
            )
        return mapped
