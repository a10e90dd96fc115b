""" Data for the trainer: the recipe's dataset, a validation query / gallery carved from its training split, a
training loader (random or PK batches, split over ranks) and, for the final evaluation only, the query / gallery.

Validation never reads the query / gallery splits: checkpoints are chosen on held-out training identities (or
held-out training images when there are few classes; see ``sfsc_timm/data/validation.py``), and the test splits are
wrapped only when the final evaluation asks for them (:meth:`TrainData.test_sets`).
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple, Union

import datasets
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..data import (
    BUILT_IN_SOURCES, PKSampler, RetrievalData, build_transforms, carve_validation, column_array,
    load_retrieval_data, subset_retrieval_data, with_image_transform,
)
from ..data.splits import balanced_subset, relabel_contiguous
from ..data.torch_dataset import TransformedImageDataset
from .config import ConfigError
from .distributed import DistInfo

__all__ = ['TrainData', 'TrainingSplit', 'load_dataset', 'split_training_data', 'build_train_data', 'VALIDATION_SEED']

# the held-out validation images are a property of the dataset, not of a run: every training seed trains on the
# same images, so seeds can be compared
VALIDATION_SEED = 0


@dataclass
class TrainData:
    """Everything the loop reads: the training loader and its sampler, the validation query / gallery (from the
    training split) and, through :meth:`test_sets`, the final query / gallery."""
    loader: DataLoader
    sampler: Union[DistributedSampler, PKSampler]
    val_query: TransformedImageDataset
    val_gallery: TransformedImageDataset
    num_classes: int
    sizes: Dict[str, int]
    validation: Dict[str, Any]
    _test_sets: Callable[[], Tuple[TransformedImageDataset, TransformedImageDataset]]

    def test_sets(self) -> Tuple[TransformedImageDataset, TransformedImageDataset]:
        """(query, gallery) of the final evaluation, subset to ``eval_max_query`` / ``eval_max_gallery``."""
        return self._test_sets()


def load_dataset(cfg) -> RetrievalData:
    """The recipe's ``dataset`` / ``data_dir`` as RetrievalData, whole (validation and ``max_train`` come later)."""
    if cfg.dataset.replace('-', '_') in BUILT_IN_SOURCES:
        return load_retrieval_data(cfg.dataset.replace('-', '_'), root=cfg.data_dir)
    if cfg.dataset in ('reid', 'imagefolder'):
        if not cfg.data_dir:
            raise ConfigError(f'dataset: {cfg.dataset} needs data_dir: the dataset folder '
                              f'(e.g. .../Market-1501-v15.09.15).')
        return load_retrieval_data(f'{cfg.dataset}:{cfg.data_dir}')
    if cfg.data_dir:
        raise ConfigError(f'data_dir applies to {", ".join(BUILT_IN_SOURCES)}, reid and imagefolder, not to the Hub '
                          f'id {cfg.dataset!r}.')
    return load_retrieval_data(cfg.dataset)


@dataclass
class TrainingSplit:
    """The training split after validation is carved out and ``max_train`` applied, and the validation sets."""
    train: datasets.Dataset
    num_classes: int
    val_query: datasets.Dataset
    val_gallery: datasets.Dataset
    validation: Dict[str, Any]


def split_training_data(cfg, data: RetrievalData) -> TrainingSplit:
    """Carve validation from the training split (``val_split``, ``val_fraction``), cut the rest to ``max_train``.

    Raises:
        ConfigError: too few classes or images to hold validation out, or fewer than 2 classes left to train on.
    """
    try:
        split = carve_validation(data.train, mode=cfg.val_split, fraction=cfg.val_fraction, seed=VALIDATION_SEED)
    except ValueError as err:
        raise ConfigError(f'{data.name}: {err}') from None
    train, num_classes = split.train, split.num_classes
    if cfg.max_train is not None and cfg.max_train < len(train):
        train, num_classes = relabel_contiguous(
            train.select(balanced_subset(column_array(train, 'label'), cfg.max_train, seed=cfg.seed)))
    if num_classes < 2:
        raise ConfigError(f'{data.name}: {num_classes} class left to train on after holding out validation; a '
                          'classifier needs at least 2. Use a dataset with more classes or raise max_train.')
    val = subset_retrieval_data(
        RetrievalData(train=train, query=split.query, gallery=split.gallery, num_classes=num_classes, name=data.name),
        max_query=cfg.val_max_query, max_gallery=cfg.val_max_gallery)
    return TrainingSplit(train=train, num_classes=num_classes, val_query=val.query, val_gallery=val.gallery,
                         validation=dict(split.info, num_query=len(val.query), num_gallery=len(val.gallery)))


def build_train_data(cfg, data: RetrievalData, split: TrainingSplit, net: nn.Module,
                     dist_info: DistInfo) -> TrainData:
    """Loaders and evaluation sets; transforms from the model's pretrained_cfg (input size, mean, std)."""
    train = split.train
    train_tf = build_transforms(net, train=True, hflip=cfg.hflip, re_prob=cfg.re_prob, scale=tuple(cfg.scale))
    eval_tf = build_transforms(net, train=False, crop_pct=cfg.crop_pct)
    train_ds = with_image_transform(train, train_tf)
    if cfg.sampler == 'pk':
        sampler = PKSampler(column_array(train, 'label'), cfg.pk_p, cfg.pk_k, seed=cfg.seed,
                            rank=dist_info.rank, world_size=dist_info.world_size)
    else:
        if len(train_ds) < cfg.batch_size * dist_info.world_size:
            raise ConfigError(f'{len(train_ds)} training images cannot fill one batch of {cfg.batch_size} per process '
                              f'on {dist_info.world_size} process(es); lower batch_size or raise max_train.')
        sampler = DistributedSampler(train_ds, num_replicas=dist_info.world_size, rank=dist_info.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True)
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                        drop_last=True, pin_memory=dist_info.device.type == 'cuda')

    def test_sets() -> Tuple[TransformedImageDataset, TransformedImageDataset]:
        test = subset_retrieval_data(data, max_query=cfg.eval_max_query, max_gallery=cfg.eval_max_gallery)
        return with_image_transform(test.query, eval_tf), with_image_transform(test.gallery, eval_tf)

    sizes = dict(train=len(train), train_classes=split.num_classes, val_query=len(split.val_query),
                 val_gallery=len(split.val_gallery))
    return TrainData(loader=loader, sampler=sampler, val_query=with_image_transform(split.val_query, eval_tf),
                     val_gallery=with_image_transform(split.val_gallery, eval_tf), num_classes=split.num_classes,
                     sizes=sizes, validation=split.validation, _test_sets=test_sets)
