"""Embed images at one width into a Parquet file: ``path`` (or the dataset's id) and a unit-norm ``embedding``.

Batched through a DataLoader with the model's own eval transform (``pretrained_cfg``: size, crop, mean, std), with a
tqdm progress bar. Under torchrun each rank embeds a contiguous share of the images into a shard file next to the
output; rank 0 then merges the shards in rank order, so the file lists the images in the source's order whatever the
number of processes. Rows are written in row groups as they are computed, so memory does not grow with the number
of images. The file is written under a temporary name and renamed when complete.
"""
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import timm
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..atomic_io import check_destination
from ..data.image_mode import to_rgb
from ..train.distributed import DistInfo, barrier, cleanup_distributed, setup_distributed
from .model import load_embedding_model
from .sources import ImageSource, open_images

__all__ = ['EmbedResult', 'embed_images', 'read_embeddings', 'is_sfsc_parquet', 'METADATA_KEY']

METADATA_KEY = b'sfsc'  # Parquet schema metadata: model, width, embed_dim, normalised
ROWS_PER_GROUP = 8192


@dataclass
class EmbedResult:
    """What :func:`embed_images` wrote."""
    output: Path
    count: int
    embed_dim: int
    width: float
    id_column: str
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float('nan')


class _TransformedImages(Dataset):
    def __init__(self, images: ImageSource, indices: range, transform, mode: str):
        self.images, self.indices, self.transform, self.mode = images, indices, transform, mode

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = to_rgb(self.images.load(self.indices[i]), where=str(self.images.ids[self.indices[i]]))
        return self.transform(image if self.mode == 'RGB' else image.convert(self.mode))  # 'L': 1-channel models


def embed_images(
        model: Union[str, Path, nn.Module],
        images: Union[str, Path, ImageSource],
        output: Union[str, Path],
        *,
        width: Optional[float] = None,
        batch_size: int = 64,
        workers: int = 0,
        device: str = 'auto',
        split: Optional[str] = None,
        image_column: Optional[str] = None,
        id_column: Optional[str] = None,
        progress: bool = True,
) -> EmbedResult:
    """Embed ``images`` with ``model`` at ``width`` into the Parquet file ``output``.

    Args:
        model: anything :func:`sfsc_timm.inference.load_embedding_model` takes: ``hf-hub:``, ``local-dir:``, a
            checkpoint or run folder, a registered name, or a network in memory.
        images: a folder of images (recursive), a dataset saved with ``save_to_disk``, a Hub dataset id, or an
            :class:`ImageSource`.
        output: the Parquet file to write.
        width: the sub-model's width (default: a supernet's full width, a static checkpoint's own).
        batch_size: images per forward pass.
        workers: DataLoader processes that read and transform images.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``.
        split, image_column, id_column: which part of a dataset to read (see :func:`open_images`).
        progress: show a tqdm progress bar (on rank 0).

    Returns:
        What was written (on every rank; ``count`` is the whole file's).
    """
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
    output = Path(output)
    check_destination(output, folder=False, fix='pass another .parquet file for --output',
                      own_file=is_sfsc_parquet, own_kind='a file of embeddings sfsc-timm embed wrote')
    source = images if isinstance(images, ImageSource) else open_images(
        images, split=split, image_column=image_column, id_column=id_column)
    net = load_embedding_model(model, width)
    output.parent.mkdir(parents=True, exist_ok=True)  # only once the images and the model are known to load
    joined = dist.is_available() and dist.is_initialized()  # a process group of the caller's is left as it is
    dist_info = setup_distributed(device)
    try:
        start = time.perf_counter()
        share = _share(len(source), dist_info)
        shard = _shard_path(output, dist_info) if dist_info.distributed else output
        metadata = _metadata(net, model, source)
        _embed_share(net.to(dist_info.device), source, share, shard, metadata, batch_size, workers, dist_info,
                     progress)
        barrier()
        if dist_info.distributed and dist_info.is_primary:
            _merge([_shard_path(output, DistInfo(r, r, dist_info.world_size)) for r in range(dist_info.world_size)],
                   output)
        barrier()
        seconds = time.perf_counter() - start
    finally:
        if dist_info.distributed and not joined:
            cleanup_distributed()
    return EmbedResult(output=output, count=len(source), embed_dim=net.embed_dim, width=float(net.active_width),
                       id_column=source.id_column, seconds=seconds)


def is_sfsc_parquet(path: Path) -> bool:
    """A Parquet file whose schema carries sfsc-timm's metadata (embeddings, or index search results; only the
    footer is read)."""
    try:
        return METADATA_KEY in (pq.read_schema(path).metadata or {})
    except (pa.ArrowInvalid, OSError):
        return False


def _share(count: int, dist_info: DistInfo) -> range:
    return range(count * dist_info.rank // dist_info.world_size, count * (dist_info.rank + 1) // dist_info.world_size)


def _shard_path(output: Path, dist_info: DistInfo) -> Path:
    return output.with_name(f'.{output.name}.rank{dist_info.rank:05d}-of-{dist_info.world_size:05d}')


def _metadata(net: nn.Module, model: Any, source: ImageSource) -> Dict[str, Any]:
    from ..index.identity import checkpoint_identity  # one per checkpoint, whatever the width: index search checks it

    cfg = net.pretrained_cfg
    return dict(model=str(model) if not isinstance(model, nn.Module) else cfg.get('architecture'),
                architecture=cfg.get('architecture'), width=float(net.active_width), embed_dim=net.embed_dim,
                normalized=True, id_column=source.id_column, count=len(source), checkpoint_id=checkpoint_identity(net))


def _schema(source: ImageSource, embed_dim: int, metadata: Dict[str, Any]) -> pa.Schema:
    id_type = pa.array(list(source.ids[:1])).type if len(source) else pa.string()
    return pa.schema([(source.id_column, pa.string() if id_type == pa.null() else id_type),
                      ('embedding', pa.list_(pa.float32(), embed_dim))],
                     metadata={METADATA_KEY: json.dumps(metadata).encode()})


@torch.inference_mode()
def _embed_share(net: nn.Module, source: ImageSource, share: range, path: Path, metadata: Dict[str, Any],
                 batch_size: int, workers: int, dist_info: DistInfo, progress: bool) -> None:
    config = timm.data.resolve_data_config(model=net)
    transform = timm.data.create_transform(**config, is_training=False)
    mode = 'L' if config['input_size'][0] == 1 else 'RGB'
    loader = DataLoader(_TransformedImages(source, share, transform, mode), batch_size=batch_size, num_workers=workers,
                        pin_memory=dist_info.device.type == 'cuda')
    schema = _schema(source, net.embed_dim, metadata)
    temp = path.with_name(f'.{path.name}.partial')
    ids, rows, done = [], [], 0
    try:
        with pq.ParquetWriter(temp, schema) as writer:
            bar = tqdm(loader, desc=f'embedding at width {net.active_width:g}', unit='batch',
                       disable=not (progress and dist_info.is_primary), dynamic_ncols=True)
            for batch in bar:
                embedding = F.normalize(net(batch.to(dist_info.device, non_blocking=True)).float(), dim=1)
                finite = torch.isfinite(embedding).all(dim=1)
                if not bool(finite.all()):  # NaN weights (or inputs): never written as if they were embeddings
                    bad = source.ids[share[done + int((~finite).nonzero()[0])]]
                    raise ValueError(f'the embedding of {bad} by {metadata["model"]} is not finite (NaN or inf): the '
                                     f'model\'s weights are; nothing was written to {path}. Use a finite checkpoint.')
                rows.append(embedding.cpu().numpy())
                ids.extend(source.ids[share[done + i]] for i in range(len(batch)))
                done += len(batch)
                if len(ids) >= ROWS_PER_GROUP:
                    _write_rows(writer, schema, ids, rows)
                    ids, rows = [], []
            _write_rows(writer, schema, ids, rows)
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()


def _write_rows(writer: pq.ParquetWriter, schema: pa.Schema, ids: List[Any], rows: List[np.ndarray]) -> None:
    if not rows:
        return
    values = pa.array(np.concatenate(rows).reshape(-1), type=pa.float32())
    embeddings = pa.FixedSizeListArray.from_arrays(values, schema.field('embedding').type.list_size)
    writer.write_table(pa.table([pa.array(ids, type=schema.field(0).type), embeddings], schema=schema))


def _merge(shards: List[Path], output: Path) -> None:
    """Concatenate the ranks' shard files in rank order into ``output`` (row group by row group), then remove them."""
    schema = pq.read_schema(shards[0])
    temp = output.with_name(f'.{output.name}.partial')
    try:
        with pq.ParquetWriter(temp, schema) as writer:
            for shard in shards:
                part = pq.ParquetFile(shard)
                for group in range(part.num_row_groups):
                    writer.write_table(part.read_row_group(group))
        os.replace(temp, output)
    finally:
        if temp.exists():
            temp.unlink()
    for shard in shards:
        shard.unlink()


def read_embeddings(path: Union[str, Path]) -> Dict[str, Any]:
    """A file written by :func:`embed_images`: ``ids`` (list), ``embeddings`` ((N, D) float32 tensor), ``metadata``."""
    table = pq.read_table(path)
    metadata = json.loads(table.schema.metadata[METADATA_KEY])
    column = table.column('embedding').combine_chunks()
    dim = column.type.list_size
    embeddings = torch.from_numpy(column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).copy())
    return dict(ids=table.column(0).to_pylist(), embeddings=embeddings, metadata=metadata)
