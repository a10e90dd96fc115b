""" Data for the trainer: the recipe's dataset, a training loader (random or PK batches, split over ranks) and the
validation / final query and gallery sets. """
from dataclasses import dataclass
from typing import Union

from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..data import (
    PKSampler, RetrievalData, build_transforms, column_array, load_retrieval_data, subset_retrieval_data,
    with_image_transform,
)
from ..data.torch_dataset import TransformedImageDataset
from .config import ConfigError
from .distributed import DistInfo

__all__ = ['TrainData', 'load_dataset', 'build_train_data']


@dataclass
class TrainData:
    """Everything the loop reads: the training loader and its sampler, and two query / gallery pairs."""
    loader: DataLoader
    sampler: Union[DistributedSampler, PKSampler]
    val_query: TransformedImageDataset
    val_gallery: TransformedImageDataset
    test_query: TransformedImageDataset
    test_gallery: TransformedImageDataset
    num_classes: int
    sizes: dict


def load_dataset(cfg) -> RetrievalData:
    """The recipe's ``dataset`` / ``data_dir`` as RetrievalData, the training split cut to ``max_train``."""
    if cfg.dataset in ('fashion_mnist', 'fashion-mnist'):
        data = load_retrieval_data('fashion_mnist', root=cfg.data_dir)
    elif cfg.dataset in ('reid', 'imagefolder'):
        if not cfg.data_dir:
            raise ConfigError(f'dataset: {cfg.dataset} needs data_dir: the dataset folder '
                             f'(e.g. .../Market-1501-v15.09.15).')
        data = load_retrieval_data(f'{cfg.dataset}:{cfg.data_dir}')
    else:
        if cfg.data_dir:
            raise ConfigError(f'data_dir applies to fashion_mnist, reid and imagefolder, not to the Hub id '
                             f'{cfg.dataset!r}.')
        data = load_retrieval_data(cfg.dataset)
    if cfg.max_train is not None:
        data = subset_retrieval_data(data, max_train=cfg.max_train, seed=cfg.seed)
    return data


def build_train_data(cfg, data: RetrievalData, net: nn.Module, dist_info: DistInfo) -> TrainData:
    """Loader and evaluation sets; transforms from the model's pretrained_cfg (input size, mean, std)."""
    train_tf = build_transforms(net, train=True, hflip=cfg.hflip, re_prob=cfg.re_prob, scale=tuple(cfg.scale))
    eval_tf = build_transforms(net, train=False, crop_pct=cfg.crop_pct)
    train_ds = with_image_transform(data.train, train_tf)
    if cfg.sampler == 'pk':
        sampler = PKSampler(column_array(data.train, 'label'), cfg.pk_p, cfg.pk_k, seed=cfg.seed,
                            rank=dist_info.rank, world_size=dist_info.world_size)
    else:
        if len(train_ds) < cfg.batch_size * dist_info.world_size:
            raise ConfigError(f'{len(train_ds)} training images cannot fill one batch of {cfg.batch_size} per process '
                             f'on {dist_info.world_size} process(es); lower batch_size or raise max_train.')
        sampler = DistributedSampler(train_ds, num_replicas=dist_info.world_size, rank=dist_info.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True)
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                        drop_last=True, pin_memory=dist_info.device.type == 'cuda')
    val = subset_retrieval_data(data, max_query=cfg.val_max_query, max_gallery=cfg.val_max_gallery)
    test = subset_retrieval_data(data, max_query=cfg.eval_max_query, max_gallery=cfg.eval_max_gallery)
    sizes = dict(train=len(data.train), val_query=len(val.query), val_gallery=len(val.gallery),
                 test_query=len(test.query), test_gallery=len(test.gallery))
    return TrainData(loader=loader, sampler=sampler,
                     val_query=with_image_transform(val.query, eval_tf),
                     val_gallery=with_image_transform(val.gallery, eval_tf),
                     test_query=with_image_transform(test.query, eval_tf),
                     test_gallery=with_image_transform(test.gallery, eval_tf),
                     num_classes=data.num_classes, sizes=sizes)
