"""Training and test data loaders.

Training draws from an infinite stream of index batches that depends only on the seed (and the
process's rank), so a run resumed at iteration k sees exactly the batches a straight run sees
from k on. Each batch holds ``IMS_PER_BATCH`` images of one orientation (landscape or portrait),
the paper's hierarchical sampling: N images per step, R/N RoIs from each.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from ..utils import comm
from ..utils.stop_signals import leave_stop_signals_to_the_main_process
from .build import get_detection_dataset_dicts
from .classes import check_num_classes, log_class_histograms
from .mapper import BadImageError, DatasetMapper
from .records import DatasetRecords
from .transforms import build_transforms
from .validation import BadImages

logger = logging.getLogger(__name__)


def index_batches(
    aspect_landscape: Sequence[bool], batch_size: int, seed: int, rank: int = 0, world_size: int = 1
) -> Iterator[list[int]]:
    """Endless batches of dataset indices for one process.

    Epoch e visits the images in the order of a permutation seeded by ``(seed, e)``; process
    ``rank`` takes every ``world_size``-th position; indices are buffered by orientation and a
    batch is released as soon as one orientation has ``batch_size`` of them.
    """
    count = len(aspect_landscape)
    buckets: dict[bool, list[int]] = {True: [], False: []}
    for epoch in itertools.count():
        order = np.random.default_rng([seed, epoch]).permutation(count)
        for index in order[rank::world_size]:
            bucket = buckets[bool(aspect_landscape[index])]
            bucket.append(int(index))
            if len(bucket) == batch_size:
                yield bucket.copy()
                bucket.clear()


class TrainingBatches(IterableDataset):
    """Mapped batches of :func:`index_batches`, from ``start_iter`` on, split across workers.

    Batch b is mapped by worker ``b % num_workers``, each record as ``mapper(record, rng)``
    with one ``numpy.random.Generator`` for the batch, seeded by ``(seed, rank, b)``, which the
    batch's images draw from in turn; so resizing and flipping do not depend on the number of
    workers, and a resumed run draws what a straight one does.
    The records are held as :class:`~detkit.data.records.DatasetRecords` (serialized, or
    memory-mapped from the cache), which the workers share instead of each copying them, and
    the mapper gets a fresh copy of each.
    A record whose image is bad is handled by ``bad_images`` (a
    :class:`~detkit.data.validation.BadImages`); when it is skipped, its place goes to another
    record of the same orientation, drawn by ``(seed, rank, b, index)``, so a resumed run maps
    the same replacements.
    """

    def __init__(
        self,
        dataset_dicts: Sequence[dict],
        mapper: Callable[[dict, np.random.Generator], object],
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_iter: int = 0,
        bad_images: BadImages | None = None,
    ) -> None:
        self.dataset_dicts = as_records(dataset_dicts)
        self.bad_images = bad_images or BadImages()
        self.mapper = mapper
        self.batch_size = batch_size
        self.seed, self.rank, self.world_size, self.start_iter = seed, rank, world_size, start_iter
        self.landscape = self.dataset_dicts.landscape()

    def __iter__(self) -> Iterator[list[dict]]:
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        batches = index_batches(
            self.landscape, self.batch_size, self.seed, self.rank, self.world_size
        )
        for number, indices in enumerate(
            itertools.islice(batches, self.start_iter, None), self.start_iter
        ):
            if number % workers != worker_id:
                continue
            rng = np.random.default_rng([self.seed, self.rank, number])
            yield [self._map(index, number, rng) for index in indices]

    def _map(self, index: int, number: int, rng: np.random.Generator) -> object:
        """Record ``index`` mapped with ``rng``, or under the skip policy a replacement for it."""
        if index not in self.bad_images:
            try:
                return self.mapper(self.dataset_dicts[index], rng)
            except BadImageError as error:
                self.bad_images.found(index, self.dataset_dicts[index]["file_name"], error)
        same = np.flatnonzero(self.landscape == self.landscape[index])
        replacements = np.random.default_rng([self.seed, self.rank, number, index])
        for candidate in replacements.permutation(same).tolist():
            if candidate in self.bad_images:
                continue
            try:
                return self.mapper(self.dataset_dicts[candidate], rng)
            except BadImageError as error:
                self.bad_images.found(candidate, self.dataset_dicts[candidate]["file_name"], error)
        raise BadImageError(
            f"every {'landscape' if self.landscape[index] else 'portrait'} image is bad; "
            "nothing can take the place of the bad ones"
        )


def as_records(dataset_dicts: Sequence[dict]) -> DatasetRecords:
    """``dataset_dicts`` as :class:`DatasetRecords` (a list is serialized once)."""
    if isinstance(dataset_dicts, DatasetRecords):
        return dataset_dicts
    return DatasetRecords.of(dataset_dicts)


def filter_images_without_objects(dicts: Sequence[dict]) -> DatasetRecords:
    """The images with at least one non-crowd object; the count dropped is logged."""
    records = as_records(dicts)
    kept = records.select(np.flatnonzero(records.summary().has_object))
    if len(kept) < len(dicts):
        logger.info(
            f"Dropped {len(dicts) - len(kept)} of {len(dicts)} training images without objects "
            "(DATALOADER.FILTER_EMPTY_ANNOTATIONS)"
        )
    if not len(kept):
        raise ValueError("no training image has an object to learn from")
    return kept


def check_training_mapper(mapper: Callable) -> None:
    """Refuses a mapper that cannot be called as ``mapper(record, rng)``, saying how the
    training loader calls it (a callable without a readable signature is found out when
    called)."""
    try:
        signature = inspect.signature(mapper)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(None, None)
    except TypeError:
        name = getattr(mapper, "__qualname__", type(mapper).__qualname__)
        raise TypeError(
            "the training loader calls its mapper as mapper(record, rng), rng being the "
            f"batch's numpy.random.Generator to draw augmentations from, but {name} takes "
            f"{signature}; add an rng parameter (a mapper that draws nothing ignores it)"
        ) from None


def build_detection_train_loader(
    cfg_or_dataset: DictConfig | Sequence[dict],
    mapper: Callable[[dict, np.random.Generator], object] | None = None,
    start_iter: int = 0,
    *,
    total_batch_size: int | None = None,
    seed: int | None = None,
    num_workers: int = 0,
    bad_image_policy: str = "stop",
    max_bad_images: int = 10,
) -> DataLoader:
    """Endless loader of lists of ``total_batch_size / world_size`` mapped images.

    Two ways to call it, as detectron2's: with a config, ``(cfg, mapper=None, start_iter=0)``
    reads ``DATASETS.TRAIN`` (with their proposal files), ``SOLVER.IMS_PER_BATCH``, ``SEED``
    and ``DATALOADER.*``, and maps with ``DatasetMapper.from_config(cfg)`` unless given a
    ``mapper``; with plain arguments, ``(dataset_dicts, mapper, start_iter, total_batch_size=,
    seed=, num_workers=, bad_image_policy=, max_bad_images=)`` loads any list of dataset dicts
    (``seed=None``: one drawn at random and shared by all processes). The mapper is called as
    ``mapper(record, rng)`` (:class:`TrainingBatches`); one that cannot be is refused first.
    A bad image stops the loader, or with ``bad_image_policy="skip"`` is replaced, up to
    ``max_bad_images`` (:class:`~detkit.data.validation.BadImages`).
    """
    if mapper is not None:
        check_training_mapper(mapper)
    if isinstance(cfg_or_dataset, DictConfig):
        cfg = cfg_or_dataset
        return build_detection_train_loader(
            train_dataset_dicts(cfg),
            mapper or DatasetMapper.from_config(cfg, is_train=True),
            start_iter,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            seed=cfg.SEED if cfg.SEED >= 0 else None,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
            bad_image_policy=cfg.DATALOADER.BAD_IMAGE_POLICY,
            max_bad_images=cfg.DATALOADER.MAX_BAD_IMAGES,
        )
    dicts = as_records(cfg_or_dataset)
    if mapper is None or total_batch_size is None:
        raise TypeError(
            "build_detection_train_loader(dataset_dicts, ...) needs a mapper and a "
            "total_batch_size (or pass a config first)"
        )
    if not len(dicts):
        raise ValueError("build_detection_train_loader: the dataset is empty")
    rank, world_size = comm.get_rank(), comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world_size:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH={total_batch_size} does not divide among {world_size} processes"
        )
    seed = seed if seed is not None else comm.shared_random_seed()
    batches = TrainingBatches(
        dicts,
        mapper,
        total_batch_size // world_size,
        seed,
        rank,
        world_size,
        start_iter,
        bad_images=BadImages(bad_image_policy, max_bad_images),
    )
    # its own generator: creating the iterator must not draw from torch's global one, which
    # the model's sampling and dropout use (resuming would shift them by one draw)
    return DataLoader(
        batches,
        batch_size=None,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=leave_stop_signals_to_the_main_process,
    )


def train_dataset_dicts(cfg: DictConfig) -> DatasetRecords:
    """The dataset dicts of ``DATASETS.TRAIN`` with their proposals; without the images that
    have no object when ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``."""
    if not cfg.DATASETS.TRAIN:
        raise ValueError("DATASETS.TRAIN is empty; name the registered datasets to train on")
    proposal_files = list(cfg.DATASETS.PROPOSAL_FILES_TRAIN) or None
    with comm.main_process_first():  # data made on first use (shapes, proposals) is made once
        dicts = get_detection_dataset_dicts(
            list(cfg.DATASETS.TRAIN),
            proposal_files,
            proposal_topk=cfg.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN,
            proposal_loader=cfg.DATASETS.PROPOSAL_LOADER,
        )
    heads = cfg.MODEL.ROI_HEADS
    check_num_classes(heads.NUM_CLASSES, list(cfg.DATASETS.TRAIN), dicts, heads.CLASS_NAMES)
    log_class_histograms(list(cfg.DATASETS.TRAIN), dicts)
    if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        dicts = filter_images_without_objects(dicts)
    return dicts


def evaluation_dataset_dicts(cfg: DictConfig, dataset_name: str) -> DatasetRecords:
    """The dataset dicts of ``dataset_name`` with its proposal file (the one at its position in
    ``DATASETS.TEST``), ``difficult`` objects kept for evaluation."""
    names = list(cfg.DATASETS.TEST)
    files = list(cfg.DATASETS.PROPOSAL_FILES_TEST)
    proposal_file = [files[names.index(dataset_name)]] if files and dataset_name in names else None
    with comm.main_process_first():
        dicts = get_detection_dataset_dicts(
            [dataset_name],
            proposal_file,
            proposal_topk=cfg.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST,
            drop_difficult=False,
            proposal_loader=cfg.DATASETS.PROPOSAL_LOADER,
        )
    heads = cfg.MODEL.ROI_HEADS
    check_num_classes(heads.NUM_CLASSES, [dataset_name], dicts, heads.CLASS_NAMES)
    log_class_histograms([dataset_name], dicts)
    return dicts


class _MappedList(Dataset):
    """Records mapped in order; held as the workers share them (:class:`DatasetRecords`)."""

    def __init__(self, dicts: DatasetRecords, mapper: Callable[[dict], dict]) -> None:
        self.dicts, self.mapper = dicts, mapper

    def __len__(self) -> int:
        return len(self.dicts)

    def __getitem__(self, index: int) -> dict:
        return self.mapper(self.dicts[index])


def _as_list(batch: list[dict]) -> list[dict]:
    return batch


def evaluation_transforms(cfg: DictConfig) -> list:
    """The transforms of test images: those of ``INPUT.TRANSFORMS_TEST``; none when
    ``TEST.MIN_SIZES`` lists a test pyramid, which the inference model makes from the image as
    read (:class:`~detkit.modeling.PyramidInference`, chosen by
    :func:`~detkit.modeling.build_inference_model`)."""
    return [] if list(cfg.TEST.MIN_SIZES) else build_transforms(cfg, is_train=False)


def evaluation_mapper(cfg: DictConfig) -> DatasetMapper:
    """The test-time mapper of ``cfg``, with :func:`evaluation_transforms`;
    :class:`~detkit.engine.DefaultPredictor` prepares an image with the same transforms."""
    return DatasetMapper(
        False,
        evaluation_transforms(cfg),
        cfg.MODEL.INPUT_FORMAT,
        max_image_pixels=cfg.INPUT.MAX_IMAGE_PIXELS,
    )


def build_detection_test_loader(
    cfg_or_dataset: DictConfig | Sequence[dict],
    dataset_name: str | None = None,
    mapper: Callable[[dict], dict] | None = None,
    *,
    num_workers: int = 0,
) -> DataLoader:
    """The images of a dataset in order, one per batch (a list of one mapped dict).

    With a config, ``(cfg, dataset_name, mapper=None)`` loads the registered ``dataset_name``
    (:func:`evaluation_dataset_dicts`) and maps with :func:`evaluation_mapper` unless given a
    ``mapper``; with plain arguments, ``(dataset_dicts, mapper=mapper, num_workers=)`` loads any
    list of dataset dicts. In a distributed run each process gets a contiguous share of the
    images (the evaluators gather the results).
    """
    if isinstance(cfg_or_dataset, DictConfig):
        cfg = cfg_or_dataset
        if dataset_name is None:
            raise TypeError("build_detection_test_loader(cfg, dataset_name): name the dataset")
        return build_detection_test_loader(
            evaluation_dataset_dicts(cfg, dataset_name),
            mapper=mapper or evaluation_mapper(cfg),
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )
    if mapper is None:
        raise TypeError(
            "build_detection_test_loader(dataset_dicts, mapper=...) needs a mapper (or pass a "
            "config first)"
        )
    dicts = as_records(cfg_or_dataset)
    rank, world_size = comm.get_rank(), comm.get_world_size()
    share = range(len(dicts) * rank // world_size, len(dicts) * (rank + 1) // world_size)
    return DataLoader(
        _MappedList(dicts.select(share), mapper),
        batch_size=1,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_as_list,
        worker_init_fn=leave_stop_signals_to_the_main_process,
    )
