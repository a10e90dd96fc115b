""" Bad inputs and faults, tried for real on every command: each must give one clear line (or be accepted).

``tests/test_bad_inputs.py`` runs every case and checks the table of docs/errors.md against what the commands
printed, so the table cannot drift. Regenerate the table after changing a message::

    python tests/bad_inputs.py --write-table

Every case runs in this process (``sfsc_timm.cli.main``), except the full disk, which needs its own process to limit
the size of the files it may write.
"""
import argparse
import contextlib
import io
import json
import multiprocessing
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import timm
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's sfsc_timm and `benchmarks`, whatever the working folder
import benchmarks.experiments.methods  # noqa: E402,F401  (the tables' presets, registered as tests/conftest.py does)
ERRORS_DOC = REPO / 'docs' / 'errors.md'
TABLE_START, TABLE_END = '<!-- bad-inputs:start -->', '<!-- bad-inputs:end -->'
RECIPE = REPO / 'recipes' / 'sfsc_resnet18_fashion_mnist.yaml'

WIDTHS = (0.5, 1.0)
TINY_MODEL = ['--widths', '0.5', '1.0', '--embed-dim', '16', '--input-size', '3', '16', '16']


@dataclass
class Case:
    """One bad input: what is run and what must come back.

    Attributes:
        command: ``train``, ``eval``, ``export``, ``push``, ``export-width``, ``embed``, ``demo``, ``sfsc-timm`` (the
            top-level command) or ``python`` (the Python API).
        input: The input, as the table of docs/errors.md shows it.
        run: ``fixtures -> argv`` for a command; a callable taking the fixtures for ``python``.
        status: The exit status (0: accepted); for ``python`` the exception class name, or ``ok``.
        match: A regular expression the message must match (it names the problem and the fix).
        subprocess: Run in a process of its own, under resource limits (``ulimit_fsize``: bytes a file may have).
    """
    command: str
    input: str
    run: Callable
    status: object
    match: str
    ulimit_fsize: Optional[int] = None


@dataclass
class Result:
    status: object
    message: str
    error_lines: List[str] = field(default_factory=list)
    traceback: bool = False


# --- the files the cases run on ---

def _image(path: Path, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _reid(root: Path, train_ids=(1, 2, 3), per_id: int = 10) -> Path:
    layout = {'bounding_box_train': (train_ids, per_id), 'query': ((50, 51), 2), 'bounding_box_test': ((50, 51), 4)}
    for folder, (ids, count) in layout.items():
        (root / folder).mkdir(parents=True)
        for identity in ids:
            for k in range(count):
                _image(root / folder / f'{identity:04d}_c{k % 2 + 1}s1_{k:06d}_00.png', seed=identity * 100 + k)
    return root


def _imagefolder(root: Path, splits: Dict[str, Tuple[str, ...]]) -> Path:
    for split, classes in splits.items():
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for k in range(3):
                _image(root / split / name / f'{k}.png', seed=k)
    return root


def _corrupt_header_dtype(path: Path, key: str) -> None:
    data = path.read_bytes()
    size = int.from_bytes(data[:8], 'little')
    header = data[8:8 + size].replace(f'"{key}":{{"dtype":"F32"'.encode(), f'"{key}":{{"dtype":"I32"'.encode())
    path.write_bytes(data[:8] + header + data[8 + size:])


def _set_weight(folder: Path, key: str, value: float) -> None:
    """One element of ``key`` in ``folder``'s model.safetensors set to ``value`` (NaN, inf), rewritten whole."""
    from safetensors.torch import load_file, save_file
    path = folder / 'model.safetensors'
    tensors = load_file(path)
    tensors[key].view(-1)[0] = value
    save_file(tensors, path)


def _mode_images(root: Path) -> Dict[str, Path]:
    """One folder per image mode ``to_rgb`` converts or refuses, each holding one 16x16 image."""
    ramp = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    with_nan = ramp.copy()
    with_nan[3, 3] = np.nan
    palette = rgb.convert('P')
    images = {
        'img_uint16': ('a.png', Image.fromarray((ramp * 65535).astype(np.uint16)), {}),  # mode I;16
        'img_float01': ('a.tif', Image.fromarray(ramp), {}),  # mode F, values in [0, 1]
        'img_float1000': ('a.tif', Image.fromarray(ramp * 1000), {}),  # mode F, values in [0, 1000]
        'img_float_nan': ('a.tif', Image.fromarray(with_nan), {}),
        'img_int_negative': ('a.tif', Image.fromarray(np.linspace(-100, 100, 256).astype(np.int32).reshape(16, 16)),
                             {}),  # mode I
        'img_cmyk': ('a.jpg', rgb.convert('CMYK'), {}),
        'img_palette_alpha': ('a.png', palette, dict(transparency=0)),
    }
    paths = {}
    for name, (file, image, options) in images.items():
        (root / name).mkdir(parents=True)
        image.save(root / name / file, **options)
        paths[name] = root / name
    return paths


def _bomb_png(path: Path, side: int = 20000) -> None:
    """A 65-byte PNG whose header claims side x side pixels: over twice PIL's decompression-bomb limit."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    header = struct.pack('>IIBBBBB', side, side, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(b''))
                     + chunk(b'IEND', b''))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


def make_read_only(folder: Path) -> bool:
    """A folder this process cannot write in, also as root (immutable attribute); False where none can be made."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return True
    return shutil.which('chattr') is not None and subprocess.run(['chattr', '+i', str(folder)]).returncode == 0


def undo_read_only(folder: Path) -> None:
    if os.geteuid() == 0 and shutil.which('chattr'):
        subprocess.run(['chattr', '-i', str(folder)])
    folder.chmod(0o755)


def _hold_lock(run_dir: str, ready) -> None:
    from sfsc_timm.train.run_lock import RunLock
    RunLock(run_dir).acquire()
    ready.set()
    time.sleep(3600)


@dataclass
class Fixtures:
    root: Path
    paths: Dict[str, Path]
    lock_holder: Optional[multiprocessing.Process] = None

    def __getitem__(self, name: str) -> str:
        return str(self.paths[name])

    def train(self, output: str, *extra: str, data: str = 'data') -> List[str]:
        return ['-c', str(RECIPE), '--dataset', 'reid', '--data-dir', self[data], *TINY_MODEL, '--max-train', 'none',
                '--batch-size', '4', '--val-fraction', '0.2', '--epochs', '1', '--no-progress',
                '--output', str(self.root / output), *extra]

    def copy(self, name: str, new: str) -> str:
        """A fresh copy of the fixture ``name`` for a case that alters it (the shared fixture stays as built)."""
        target = self.root / new
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.paths[name], target)
        return str(target)

    def close(self) -> None:
        if self.lock_holder is not None:
            os.kill(self.lock_holder.pid, signal.SIGKILL)
            self.lock_holder.join()
        if 'read_only' in self.paths:
            undo_read_only(self.paths['read_only'])


def build_fixtures(root: Path) -> Fixtures:
    """Every file the cases need, under ``root``."""
    import sfsc_timm
    from sfsc_timm.train.config import config_from_dict
    root.mkdir(parents=True, exist_ok=True)
    paths = {'data': _reid(root / 'data'), 'one_class': _reid(root / 'one_class', train_ids=(1,))}
    paths['bad_image'] = _reid(root / 'bad_image')
    (paths['bad_image'] / 'bounding_box_train' / '0002_c1s1_000004_00.png').write_bytes(b'not a png')
    (paths['bad_image'] / 'query' / '0050_c1s1_000000_00.png').write_bytes(b'')
    paths['if_one_class'] = _imagefolder(root / 'if_one_class', {'train': ('cat',), 'test': ('cat', 'dog')})
    paths['if_two_splits'] = _imagefolder(root / 'if_two_splits', {'train': ('cat', 'dog'), 'test': ('cat', 'dog')})

    torch.manual_seed(0)
    net = timm.create_model('sfsc_resnet18', num_classes=3, widths=WIDTHS, embed_dim=16,
                            pretrained_cfg_overlay=dict(input_size=(3, 16, 16))).eval()
    paths['ckpt'] = sfsc_timm.save(net, root / 'ckpt')
    for name in ('truncated_weights', 'dtype_changed', 'truncated_config'):
        paths[name] = Path(shutil.copytree(paths['ckpt'], root / name))
    _truncate(paths['truncated_weights'] / 'model.safetensors')
    _corrupt_header_dtype(paths['dtype_changed'] / 'model.safetensors', 'backbone.conv1.weight')
    _truncate(paths['truncated_config'] / 'config.json')
    for name, key, value in (('nan_weights', 'backbone.conv1.weight', float('nan')),
                             ('inf_norm_stats', 'backbone.bn1.per_width.0_5.running_var', float('inf'))):
        paths[name] = Path(shutil.copytree(paths['ckpt'], root / name))
        _set_weight(paths[name], key, value)
    # pickled weights (what torch.save writes) where safetensors are expected: a folder, and the file alone
    paths['pickled'] = root / 'pickled'
    paths['pickled'].mkdir()
    shutil.copy(paths['ckpt'] / 'config.json', paths['pickled'])
    from safetensors.torch import load_file
    torch.save(load_file(paths['ckpt'] / 'model.safetensors'), paths['pickled'] / 'pytorch_model.bin')
    paths['pickle_file'] = Path(shutil.copy(paths['pickled'] / 'pytorch_model.bin', root / 'model.bin'))
    paths['lone_weights'] = Path(shutil.copy(paths['ckpt'] / 'model.safetensors', root / 'weights.safetensors'))

    # what embed reads and where writers must not write: a few images, image modes, a folder of the user's files
    paths['images'] = root / 'images'
    paths['images'].mkdir()
    for k in range(4):
        _image(paths['images'] / f'{k}.png', seed=k)
    paths.update(_mode_images(root))
    paths['no_images'] = root / 'no_images'
    paths['no_images'].mkdir()
    (paths['no_images'] / 'notes.txt').write_text('no image here\n')
    paths['broken_image'] = root / 'broken_image'
    paths['broken_image'].mkdir()
    (paths['broken_image'] / 'a.png').write_bytes(b'not a png')
    paths['img_bomb'] = root / 'img_bomb'
    paths['img_bomb'].mkdir()
    _bomb_png(paths['img_bomb'] / 'big.png')
    paths['if_bomb'] = _imagefolder(root / 'if_bomb', {'query': ('cat', 'dog'), 'gallery': ('cat', 'dog')})
    _bomb_png(paths['if_bomb'] / 'gallery' / 'cat' / 'big.png')
    paths['user_files'] = root / 'user_files'
    paths['user_files'].mkdir()
    (paths['user_files'] / 'notes.txt').write_text('the user\'s notes\n')
    _image(paths['user_files'] / 'holiday.png', seed=7)
    paths['folder_parquet'] = root / 'folder.parquet'
    paths['folder_parquet'].mkdir()
    (paths['folder_parquet'] / 'part-0.parquet').write_bytes(b'PAR1')
    paths['file_parquet'] = root / 'gallery.parquet'
    paths['file_parquet'].write_bytes(b'PAR1 the user\'s gallery PAR1')
    paths['if_query_gallery'] = _imagefolder(root / 'if_query_gallery',
                                             {'query': ('cat', 'dog'), 'gallery': ('cat', 'dog')})

    # the gallery index: the images embedded at two widths of the checkpoint and by another checkpoint, an index
    from sfsc_timm.index import build_index
    for name, model, width in (('emb_w1', paths['ckpt'], 1.0), ('emb_w05', paths['ckpt'], 0.5),
                               ('emb_foreign', root / 'ckpt_other', 1.0)):
        if name == 'emb_foreign':
            torch.manual_seed(1)
            sfsc_timm.save(timm.create_model('sfsc_resnet18', num_classes=3, widths=WIDTHS, embed_dim=16,
                                             pretrained_cfg_overlay=dict(input_size=(3, 16, 16))), model)
        paths[name] = root / f'{name}.parquet'
        sfsc_timm.embed_images(model, paths['images'], paths[name], width=width, progress=False)
    paths['index'] = root / 'index'
    build_index(paths['emb_w1'], paths['index'])

    # run folders: finished (export/), unfinished (checkpoints only), holding a run, with a broken checkpoint
    paths['run_done'] = root / 'run_done'
    shutil.copytree(paths['ckpt'], paths['run_done'] / 'export')
    (paths['run_done'] / 'config.yaml').write_text('model: sfsc_resnet18\n')
    (paths['run_done'] / 'export' / 'metrics.json').write_text(json.dumps(
        dict(widths=list(WIDTHS), matrix=[[0.5, 0.6], [0.6, 0.7]], architecture='sfsc_resnet18')))
    paths['run_unfinished'] = root / 'run_unfinished'
    (paths['run_unfinished'] / 'checkpoints' / 'last').mkdir(parents=True)
    paths['run_existing'] = root / 'run_existing'
    paths['run_existing'].mkdir()
    (paths['run_existing'] / 'config.yaml').write_text('model: sfsc_resnet18\n')
    (paths['run_existing'] / 'metrics.jsonl').write_text('{"epoch": 1}\n')
    (paths['run_existing'] / 'checkpoints' / 'last').mkdir(parents=True)  # a run that can be resumed
    paths['run_no_checkpoint'] = root / 'run_no_checkpoint'  # killed before its first checkpoint
    paths['run_no_checkpoint'].mkdir()
    (paths['run_no_checkpoint'] / 'config.yaml').write_text('model: sfsc_resnet18\n')
    (paths['run_no_checkpoint'] / 'metrics.jsonl').write_text('')
    cfg = config_from_dict(dict(dataset='reid', data_dir=str(paths['data']), widths=list(WIDTHS), embed_dim=16,
                                input_size=[3, 16, 16], max_train=None, batch_size=4, val_fraction=0.2, epochs=1))
    state = dict(epoch=0, config=cfg.to_dict(), step={}, scheduler={}, rng=[])
    for name in ('run_bad_state', 'run_bad_weights'):
        folder = root / name / 'checkpoints' / 'last'
        shutil.copytree(paths['ckpt'], folder)
        torch.save(dict(state, config=dict(state['config'], output=str(root / name))), folder / 'training_state.pt')
        paths[name] = root / name
    _truncate(paths['run_bad_state'] / 'checkpoints' / 'last' / 'training_state.pt')
    _truncate(paths['run_bad_weights'] / 'checkpoints' / 'last' / 'model.safetensors')

    (root / 'bad.yaml').write_text('model: sfsc_resnet18\nlr: [0.1\nepochs: 3\n')
    (root / 'list.yaml').write_text('- model\n- lr\n')
    (root / 'flat_option.yaml').write_text('method: sfsc_ce_ens\nlambda_kd: 0.3\n')
    (root / 'a_file').write_text('not a folder\n')
    paths.update(bad_yaml=root / 'bad.yaml', list_yaml=root / 'list.yaml', flat_option_yaml=root / 'flat_option.yaml',
                 a_file=root / 'a_file')
    fixtures = Fixtures(root, paths)
    paths['read_only'] = root / 'read_only'
    paths['read_only'].mkdir()
    if not make_read_only(paths['read_only']):
        del paths['read_only']

    context = multiprocessing.get_context('fork')
    ready = context.Event()
    fixtures.lock_holder = context.Process(target=_hold_lock, args=(str(root / 'run_locked'), ready), daemon=True)
    fixtures.lock_holder.start()
    ready.wait(60)
    return fixtures


# --- the cases ---

def _python_cases() -> List[Case]:
    import sfsc_timm

    def create(**kwargs):
        return lambda fx: timm.create_model('sfsc_resnet18', **kwargs)

    def with_nan_weight(fx):
        net = sfsc_timm.load(fx['ckpt'])
        net.state_dict()['backbone.conv1.weight'].view(-1)[0] = float('nan')  # the parameter's own storage
        return net

    return [
        Case('python', "timm.create_model('sfsc_resnet18', embed_dim=0)", create(embed_dim=0), 'ValueError',
             r'embed_dim must be a positive int .* got 0'),
        Case('python', "timm.create_model('sfsc_resnet18', embed_dim='abc')", create(embed_dim='abc'), 'ValueError',
             r"embed_dim must be a positive int .* got 'abc'"),
        Case('python', "timm.create_model('sfsc_resnet18', width=np.float32(0.25))",
             create(width=np.float32(0.25)), 'ok', r'^accepted'),
        Case('python', "timm.create_model('sfsc_resnet18', width=0.3)", create(width=0.3), 'ValueError',
             r'width 0.3 is not one of the widths .* Choose one of'),
        Case('python', "timm.create_model('sfsc_resnet18', width=1.5)", create(width=1.5), 'ValueError',
             r'width must be in \(0, 1\]'),
        Case('python', 'sfsc_timm.load(folder with a truncated config.json)',
             lambda fx: sfsc_timm.load(fx['truncated_config']), 'CheckpointError',
             r'config.json is not valid JSON .* truncated or corrupt'),
        Case('python', 'sfsc_timm.load(a safetensors header whose dtype was changed)',
             lambda fx: sfsc_timm.load(fx['dtype_changed']), 'CheckpointError',
             r'stored as torch.int32, the model needs torch.float32'),
        Case('python', 'sfsc_timm.load(folder with a truncated model.safetensors)',
             lambda fx: sfsc_timm.load(fx['truncated_weights']), 'CheckpointError', r'truncated or corrupt'),
        Case('python', 'sfsc_timm.load(a checkpoint whose backbone.conv1.weight is NaN)',
             lambda fx: sfsc_timm.load(fx['nan_weights']), 'CheckpointError',
             r'tensor backbone.conv1.weight holds non-finite values \(NaN or inf\).*Load an earlier checkpoint'),
        Case('python', "timm.create_model('local-dir:...', pretrained=True) of a checkpoint with a NaN weight",
             lambda fx: timm.create_model(f'local-dir:{fx["nan_weights"]}', pretrained=True), 'CheckpointError',
             r'tensor backbone.conv1.weight holds non-finite values \(NaN or inf\).*Load an earlier checkpoint'),
        Case('python', 'sfsc_timm.load(a folder of pickled weights, pytorch_model.bin)',
             lambda fx: sfsc_timm.load(fx['pickled']), 'CheckpointNotFoundError',
             r'no checkpoint there .*missing: model.safetensors. It holds pytorch_model.bin: pickled weights are never '
             r'loaded .unpickling can run code.*sfsc_timm.save'),
        Case('python', "timm.create_model('local-dir:...', pretrained=True) of a folder of pickled weights",
             lambda fx: timm.create_model(f'local-dir:{fx["pickled"]}', pretrained=True), 'CheckpointNotFoundError',
             r'pickled weights are never loaded .unpickling can run code.*sfsc_timm.save'),
        Case('python', "sfsc_timm.load('CK/model.safetensors') (the weights file of a checkpoint folder: loads CK)",
             lambda fx: sfsc_timm.load(Path(fx['ckpt']) / 'model.safetensors'), 'ok', r'^accepted'),
        Case('python', "sfsc_timm.load('weights.safetensors') (a weights file with no config.json beside it)",
             lambda fx: sfsc_timm.load(fx['lone_weights']), 'CheckpointError',
             r"has no config.json beside it, so its architecture is unknown. Pass it: .*model_name='sfsc_resnet50'"),
        Case('python', 'sfsc_timm.load(checkpoint, width=0.3) (not trained)',
             lambda fx: sfsc_timm.load(fx['ckpt'], width=0.3), 'ValueError',
             r'width 0.3 is not one of the widths \(0.5, 1.0\) .* Choose one of'),
        Case('python', "sfsc_timm.save(net, a folder of the user's files)",
             lambda fx: sfsc_timm.save(sfsc_timm.load(fx['ckpt']), fx['user_files']), 'DestinationInUse',
             r'user_files holds files this writer does not write \(holiday.png, notes.txt\).*pass force=True'),
        Case('python', "sfsc_timm.save(net, 'gallery.parquet') onto an existing file",
             lambda fx: sfsc_timm.save(sfsc_timm.load(fx['ckpt']), fx['file_parquet']), 'DestinationInUse',
             r'gallery.parquet is a file; writing a folder there would replace it: .*pass force=True'),
        Case('python', "sfsc_timm.save(net, a copy of a folder of the user's files, force=True)",
             lambda fx: sfsc_timm.save(sfsc_timm.load(fx['ckpt']), fx.copy('user_files', 'user_files_saved'),
                                       force=True), 'ok', r'^accepted'),
        Case('python', 'sfsc_timm.save(a network with a NaN weight, folder)',
             lambda fx: sfsc_timm.save(with_nan_weight(fx), fx.root / 'nan_saved'), 'CheckpointError',
             r'tensor backbone.conv1.weight holds non-finite values .*nothing was written'),
        Case('python', 'sfsc_timm.embed_images(a network with a NaN weight, images, output)',
             lambda fx: sfsc_timm.embed_images(with_nan_weight(fx), fx['images'], fx.root / 'nan.parquet',
                                               progress=False), 'ValueError',
             r'is not finite \(NaN or inf\).*nothing was written to .*nan.parquet. Use a finite checkpoint'),
        Case('python', "sfsc_timm.embed_images(timm.create_model('resnet18'), images, output) (not an SFSC model)",
             lambda fx: sfsc_timm.embed_images(timm.create_model('resnet18', num_classes=0), fx['images'],
                                               fx.root / 'plain.parquet', progress=False), 'TypeError',
             r'ResNet is not an sfsc_timm network .*sfsc_timm.load\(FOLDER\)'),
        Case('python', 'sfsc_timm.embed_images(checkpoint, images, output, batch_size=0)',
             lambda fx: sfsc_timm.embed_images(fx['ckpt'], fx['images'], fx.root / 'e.parquet', batch_size=0),
             'ValueError', r'batch_size must be >= 1, got 0'),
    ]


def cases() -> List[Case]:
    """Every case, in the order of the table of docs/errors.md."""
    train = [
        Case('train', 'recipe with malformed YAML', lambda fx: ['-c', fx['bad_yaml']], 2,
             r'not valid YAML at line 3, column 7.*Fix the file'),
        Case('train', 'recipe that is a list, not a mapping', lambda fx: ['-c', fx['list_yaml']], 2,
             r'must be a YAML mapping'),
        Case('train', 'recipe file that does not exist', lambda fx: ['-c', str(fx.root / 'nothing.yaml')], 2,
             r'recipe .* not found'),
        Case('train', '--opt foo', lambda fx: fx.train('out', '--opt', 'foo'), 2, r"opt='foo' is not a timm optimizer"),
        Case('train', '--sched bar', lambda fx: fx.train('out', '--sched', 'bar'), 2, r"sched='bar'; allowed: cosine"),
        Case('train', '--lr fast', lambda fx: fx.train('out', '--lr', 'fast'), 2, r"--lr.*invalid float value"),
        Case('train', '--epochs 0', lambda fx: fx.train('out', '--epochs', '0'), 2, r'epochs must be >= 1'),
        Case('train', '--widths 0.25 1.5', lambda fx: fx.train('out', '--widths', '0.25', '1.5'), 2,
             r'width must be in \(0, 1\]'),
        Case('train', '--widths 0.25 0.5 (no 1.0)', lambda fx: fx.train('out', '--widths', '0.25', '0.5'), 2,
             r'must include the full width 1.0'),
        Case('train', '--embed-dim 0', lambda fx: fx.train('out', '--embed-dim', '0'), 2, r'embed_dim must be >= 1'),
        Case('train', '--kd-temperature 3 on a method without distillation',
             lambda fx: fx.train('out', '--kd-temperature', '3'), 2, r'kd_temperature=3 has no effect'),
        Case('train', '--projection-granularity layer on a method without projection',
             lambda fx: fx.train('out', '--method', 'bct_s', '--projection-granularity', 'layer'), 2,
             r"projection_granularity is not an option of method bct_s \(its options: student_loss, lambda_cross_tri, "
             r"cross_tri_direction\); it is one of sfsc, sfsc_ce_ens"),
        Case('train', '--classifier-scale 16 with the linear classifier',
             lambda fx: fx.train('out', '--classifier-scale', '16'), 2,
             r"classifier_scale=16 has no effect: it scales the cosine classifier"),
        Case('train', '--lambda-cross-tri 1 on the independent models',
             lambda fx: fx.train('out', '--method', 'independent', '--lambda-cross-tri', '1'), 2,
             r'lambda_cross_tri is not an option of method independent \(its options: none\)'),
        Case('train', '--gradient-merge mean on a summed-loss method',
             lambda fx: fx.train('out', '--method', 'bct_s', '--gradient-merge', 'mean'), 2,
             r"gradient_merge is not an option of method bct_s .*Leave it out, or choose one of those methods"),
        Case('train', 'recipe with a method option at the top level', lambda fx: ['-c', fx['flat_option_yaml']], 2,
             r"lambda_kd is an option of the method; write it under the method's name \(sfsc_ce_ens:"),
        Case('train', 'an option of the method that is not a number',
             lambda fx: fx.train('out', '--kl-coef', '-1'), 2, r'option kl_coef must be a finite number >= 0, got -1'),
        Case('train', '--input-size 3 0 0', lambda fx: fx.train('out', '--input-size', '3', '0', '0'), 2,
             r'input_size must be \[channels, height, width\] of positive ints'),
        Case('train', '--model resnet18 (not an sfsc model)', lambda fx: fx.train('out', '--model', 'resnet18'), 2,
             r"unknown model 'resnet18'; available: sfsc_"),
        Case('train', '--device cuda on a machine without CUDA', lambda fx: fx.train('out', '--device', 'cuda'), 2,
             r'CUDA is not available here; use --device cpu'),
        Case('train', '--dataset imagefolder without --data-dir',
             lambda fx: ['-c', str(RECIPE), '--dataset', 'imagefolder', '--output', str(fx.root / 'out')], 2,
             r'needs data_dir'),
        Case('train', '--data-dir that does not exist', lambda fx: fx.train('out', '--data-dir', '/nonexistent'), 2,
             r'does not exist'),
        Case('train', 'a dataset with a single class', lambda fx: fx.train('out', data='one_class'), 2,
             r'1 class left to train on .* at least 2'),
        Case('train', 'an image folder with a single class folder',
             lambda fx: ['-c', str(RECIPE), '--dataset', 'imagefolder', '--data-dir', fx['if_one_class'],
                         '--output', str(fx.root / 'out')], 2, r"split 'train' has only one class folder \(cat/\)"),
        Case('train', 'unreadable image files in the data', lambda fx: fx.train('out', data='bad_image'), 2,
             r'2 image file\(s\) cannot be read: .*0002_c1s1_000004_00.png.*Replace or remove them'),
        Case('train', '--batch-size larger than the training set', lambda fx: fx.train('out', '--batch-size', '64'),
             2, r'cannot fill one batch of 64'),
        Case('train', '--output of an existing run, without --resume',
             lambda fx: fx.train('run_existing'), 2, r'already holds a run .* --resume .* another --output'),
        Case('train', '--output of a run stopped before its first checkpoint',
             lambda fx: fx.train('run_no_checkpoint'), 2,
             r'holds a run stopped before its first checkpoint .*nothing to resume: remove .*another --output'),
        Case('train', '--resume of a run stopped before its first checkpoint',
             lambda fx: ['--resume', fx['run_no_checkpoint']], 2,
             r'stopped before its first checkpoint, so there is nothing to resume; remove .* without --resume'),
        Case('train', '--output of a run in progress (another process holds it)',
             lambda fx: fx.train('run_locked'), 2, r'another sfsc-timm train \(pid \d+\) is writing to'),
        Case('train', '--output in a read-only folder', lambda fx: fx.train('read_only/run'), 2,
             r'cannot write in .* choose a folder you can write to'),
        Case('train', '--output that is a file', lambda fx: fx.train('a_file'), 2,
             r'--output .*a_file is a file, not a folder; choose a folder'),
        Case('train', '--output under a file (a_file/run)', lambda fx: fx.train('a_file/run'), 2,
             r'a_file is a file, so no folder can be made under it; choose another --output'),
        Case('train', '--resume of a folder without a checkpoint', lambda fx: ['--resume', str(fx.root / 'data')], 2,
             r'no checkpoint there'),
        Case('train', '--resume with a truncated training_state.pt', lambda fx: ['--resume', fx['run_bad_state']], 2,
             r'training_state.pt is truncated or corrupt'),
        Case('train', '--resume with a truncated model.safetensors',
             lambda fx: ['--resume', fx['run_bad_weights']], 2, r'model.safetensors is truncated or corrupt'),
        Case('train', '--resume with another recipe (-c ... --lr 0.5)',
             lambda fx: ['-c', str(RECIPE), '--lr', '0.5', '--resume', fx['run_bad_weights']], 2,
             r'trained with another recipe; differing keys'),
    ]
    evaluate = [
        Case('eval', 'a checkpoint folder that does not exist', lambda fx: [str(fx.root / 'nothing')], 2,
             r'does not exist; pass a checkpoint folder \(sfsc_timm.save\), a run folder of sfsc-timm train'),
        Case('eval', 'a folder that is not a checkpoint', lambda fx: [fx['data']], 2, r'no checkpoint there'),
        Case('eval', 'a run folder (evaluates its export/)',
             lambda fx: [fx['run_done'], '--data', fx['data'], '--output', str(fx.root / 'eval_run')], 0,
             r'queries skipped'),
        Case('eval', 'a run folder that has not finished', lambda fx: [fx['run_unfinished']], 2,
             r'looks like a training run that has not finished.*sfsc-timm train --resume'),
        Case('eval', '--output that is a file', lambda fx: [fx['ckpt'], '--data', fx['data'], '--output',
                                                            fx['a_file']], 2, r'is a file, not a folder'),
        Case('eval', '--output under a file (a_file/out)',
             lambda fx: [fx['ckpt'], '--data', fx['data'], '--output', str(Path(fx['a_file']) / 'out')], 2,
             r'a_file is a file, so no folder can be made under it; choose another --output'),
        Case('eval', '--output in a read-only folder',
             lambda fx: [fx['ckpt'], '--data', fx['data'], '--output', str(fx.root / 'read_only' / 'eval')], 2,
             r'cannot write in'),
        Case('eval', '--img-size 0 0', lambda fx: [fx['ckpt'], '--img-size', '0', '0'], 2,
             r'--img-size takes a positive height and width'),
        Case('eval', '--batch-size 0', lambda fx: [fx['ckpt'], '--batch-size', '0'], 2, r'--batch-size must be >= 1'),
        Case('eval', '--widths 0.25 (not trained)',
             lambda fx: [fx['ckpt'], '--widths', '0.25', '--data', fx['data'], '--output', str(fx.root / 'e')], 2,
             r'--widths 0.25: the checkpoint has widths 0.5 1 only'),
        Case('eval', '--data that does not exist',
             lambda fx: [fx['ckpt'], '--data', '/nonexistent/market', '--output', str(fx.root / 'e')], 2,
             r'does not exist|not a re-ID dataset'),
        Case('eval', 'an image folder with a single class folder',
             lambda fx: [fx['ckpt'], '--data', f'imagefolder:{fx["if_one_class"]}', '--query-per-class', '1',
                         '--output', str(fx.root / 'e')], 2, r'only one class folder'),
        Case('eval', 'an image folder with --query-split but no --gallery-split',
             lambda fx: [fx['ckpt'], '--data', f'imagefolder:{fx["if_two_splits"]}', '--query-split', 'test',
                         '--output', str(fx.root / 'e')], 2, r"--query-split 'test' needs --gallery-split too"),
        Case('eval', 'an image folder whose query / gallery are not named',
             lambda fx: [fx['ckpt'], '--data', f'imagefolder:{fx["if_two_splits"]}', '--output',
                         str(fx.root / 'e')], 2,
             r'name the query and gallery splits \(--query-split, --gallery-split\).*--query-per-class N'),
        Case('eval', 'unreadable image files in the data',
             lambda fx: [fx['ckpt'], '--data', fx['bad_image'], '--output', str(fx.root / 'e')], 2,
             r'1 image file\(s\) cannot be read: .*0050_c1s1_000000_00.png'),
        Case('eval', 'a truncated model.safetensors', lambda fx: [fx['truncated_weights']], 2,
             r'not a readable safetensors file .* truncated or corrupt'),
        Case('eval', 'a truncated config.json', lambda fx: [fx['truncated_config']], 2,
             r'truncated_config/config.json is not valid JSON'),
        Case('eval', 'a safetensors header whose dtype was changed', lambda fx: [fx['dtype_changed']], 2,
             r'backbone.conv1.weight is stored as torch.int32'),
        Case('eval', 'a checkpoint whose backbone.conv1.weight is NaN', lambda fx: [fx['nan_weights']], 2,
             r'tensor backbone.conv1.weight holds non-finite values \(NaN or inf\).*Load an earlier checkpoint'),
        Case('eval', 'a folder of pickled weights (pytorch_model.bin)', lambda fx: [fx['pickled']], 2,
             r'no checkpoint there .*It holds pytorch_model.bin: pickled weights are never loaded .unpickling can run '
             r'code.*sfsc_timm.save'),
        Case('eval', 'a weights file (model.bin) instead of its folder', lambda fx: [fx['pickle_file']], 2,
             r'model.bin is a pickled weights file: pickled weights are never loaded'),
        Case('eval', '--data imagefolder:FILE (a file, not a folder)',
             lambda fx: [fx['ckpt'], '--data', f'imagefolder:{fx["a_file"]}'], 2,
             r'imagefolder:.*a_file is a file; imagefolder: takes a folder of class sub-folders'),
        Case('eval', 'an image folder of query/ and gallery/ only (no training split)',
             lambda fx: [fx['ckpt'], '--data', f'imagefolder:{fx["if_query_gallery"]}', '--output',
                         str(fx.root / 'eval_qg')], 0, r'0 of 6 queries skipped'),
        Case('eval', 'the same, with --query-split query --gallery-split gallery',
             lambda fx: [fx['ckpt'], '--data', f'imagefolder:{fx["if_query_gallery"]}', '--query-split', 'query',
                         '--gallery-split', 'gallery', '--output', str(fx.root / 'eval_qg_named')], 0,
             r'0 of 6 queries skipped'),
        Case('eval', "an image folder and --query-split foo (no such split)",
             lambda fx: [fx['ckpt'], '--data', f'imagefolder:{fx["if_query_gallery"]}', '--query-split', 'foo',
                         '--gallery-split', 'gallery', '--output', str(fx.root / 'e')], 2,
             r"has no split 'foo'; its splits are \['gallery', 'query'\]"),
        Case('eval', "an image over PIL's decompression-bomb limit (a 65-byte PNG of 20000 x 20000)",
             lambda fx: [fx['ckpt'], '--data', f'imagefolder:{fx["if_bomb"]}', '--output', str(fx.root / 'e')], 2,
             r'1 image file\(s\) cannot be read: .*big.png.*decompression bomb'),
        Case('eval', '--img-size 32 32 (height and width)',
             lambda fx: [fx['ckpt'], '--data', fx['data'], '--img-size', '32', '32', '--output',
                         str(fx.root / 'eval_32')], 0, r'queries skipped'),
        Case('eval', '--img-size 0 32', lambda fx: [fx['ckpt'], '--img-size', '0', '32'], 2,
             r'--img-size takes a positive height and width, got 0 32; e.g. --img-size 256 128'),
        Case('eval', '--max-query 0', lambda fx: [fx['ckpt'], '--max-query', '0'], 2, r'--max-query must be >= 1'),
        Case('eval', '--workers -1', lambda fx: [fx['ckpt'], '--workers', '-1'], 2, r'--workers must be >= 0'),
        Case('eval', '--device tpu', lambda fx: [fx['ckpt'], '--device', 'tpu'], 2,
             r"--device 'tpu' is not one of cpu, cuda, cuda:N"),
        Case('eval', 'a full disk while writing the results (file size limit)',
             lambda fx: [fx['ckpt'], '--data', fx['data'], '--output', str(fx.root / 'eval_full')], 1,
             r'cannot write \(.*eval_full/metrics.json\): File too large. Free disk space', ulimit_fsize=1024),
    ]
    export = [
        Case('export', 'a run folder that does not exist', lambda fx: [str(fx.root / 'nothing'), str(fx.root / 'h')],
             2, r'nothing does not exist: no checkpoint there. Pass a checkpoint folder .* or a run folder'),
        Case('export', 'a run that has not finished', lambda fx: [fx['run_unfinished'], str(fx.root / 'h')], 2,
             r'has not finished'),
        Case('export', 'a checkpoint without metrics.json', lambda fx: [fx['ckpt'], str(fx.root / 'h')], 2,
             r'lack metrics.json.* sfsc-timm eval'),
        Case('export', 'OUT_DIR that holds other files', lambda fx: [fx['run_done'], fx['data']], 2,
             r'holds files this writer does not write .*choose a new or empty OUT_DIR'),
        Case('export', 'OUT_DIR in a read-only folder',
             lambda fx: [fx['run_done'], str(fx.root / 'read_only' / 'hub')], 2, r'OUT_DIR .*cannot write in'),
        Case('export', 'OUT_DIR that is a file', lambda fx: [fx['run_done'], fx['a_file']], 2,
             r'OUT_DIR .*a_file is a file, not a folder; choose a folder'),
    ]
    push = [
        Case('push', '--repo-id without a namespace', lambda fx: [fx['ckpt'], '--repo-id', 'nonamespace'], 2,
             r'has no namespace; use ORG/NAME'),
        Case('push', 'no Hugging Face token', lambda fx: [fx['ckpt'], '--repo-id', 'org/name'], 1,
             r'No Hugging Face token found.*HF_TOKEN'),
        Case('push', 'a folder that does not exist', lambda fx: [str(fx.root / 'nothing'), '--repo-id', 'org/name'],
             2, r'does not exist; pass an export folder'),
    ]
    export_width = [
        Case('export-width', '--width 0.3 (not trained)', lambda fx: [fx['ckpt'], '--width', '0.3'], 2,
             r'width 0.3 is not one of the widths \(0.5, 1.0\)'),
        Case('export-width', '--format foo', lambda fx: [fx['ckpt'], '--width', '0.5', '--format', 'foo'], 2,
             r"--format: invalid choice: 'foo'"),
        Case('export-width', 'ORG/NAME without hf-hub:', lambda fx: ['someone/repo', '--width', '0.5'], 2,
             r'For a Hub repository write hf-hub:someone/repo'),
        Case('export-width', '--output in a read-only folder',
             lambda fx: [fx['ckpt'], '--width', '0.5', '--output', str(fx.root / 'read_only' / 'w.onnx')], 2,
             r'--output .*cannot write in'),
        Case('export-width', "--format hf --output a folder of the user's files",
             lambda fx: [fx['ckpt'], '--width', '0.5', '--format', 'hf', '--output', fx['user_files']], 2,
             r'user_files holds files this writer does not write \(holiday.png, notes.txt\).*--force'),
        Case('export-width', "--format hf --force --output a copy of a folder of the user's files",
             lambda fx: [fx['ckpt'], '--width', '0.5', '--format', 'hf', '--force', '--output',
                         fx.copy('user_files', 'user_files_forced')], 0, r'^wrote .*user_files_forced: width 0.5, hf'),
        Case('export-width', '--format hf --output an existing file',
             lambda fx: [fx['ckpt'], '--width', '0.5', '--format', 'hf', '--output', fx['a_file']], 2,
             r'a_file is a file; writing a folder there would replace it: .*--force'),
        Case('export-width', '--format torchscript --output an existing folder',
             lambda fx: [fx['ckpt'], '--width', '0.5', '--format', 'torchscript', '--output', fx['user_files']], 2,
             r'user_files is a folder; writing a file there would replace it and everything in it: .*--force'),
        Case('export-width', '--format onnx --output an existing folder',
             lambda fx: [fx['ckpt'], '--width', '0.5', '--output', fx['folder_parquet']], 2,
             r'folder.parquet is a folder; writing a file there would replace it .*--force'),
        Case('export-width', '--output under a file (a_file/w.onnx)',
             lambda fx: [fx['ckpt'], '--width', '0.5', '--output', str(fx.root / 'a_file' / 'w.onnx')], 2,
             r'--output .*a_file/w.onnx: .*a_file is a file, so no folder can be made under it'),
        Case('export-width', 'a checkpoint whose backbone.conv1.weight is NaN',
             lambda fx: [fx['nan_weights'], '--width', '0.5', '--output', str(fx.root / 'nan.onnx')], 2,
             r'tensor backbone.conv1.weight holds non-finite values \(NaN or inf\).*Load an earlier checkpoint'),
        Case('export-width', '--width 0.5 of a checkpoint whose width-0.5 BatchNorm variance is inf',
             lambda fx: [fx['inf_norm_stats'], '--width', '0.5', '--output', str(fx.root / 'inf.onnx')], 2,
             r'tensor backbone.bn1.per_width.0_5.running_var holds non-finite values'),
        Case('export-width', "--format torchscript --output a file of the user's",
             lambda fx: [fx['ckpt'], '--width', '0.5', '--format', 'torchscript', '--output', fx['a_file']], 2,
             r'a_file is not a torchscript file export-width wrote; writing there would replace it: .*--force'),
        Case('export-width', '--atol -1', lambda fx: [fx['ckpt'], '--width', '0.5', '--atol', '-1'], 2,
             r'argument --atol: must be >= 0, got -1'),
        Case('export-width', 'a folder of pickled weights (pytorch_model.bin)',
             lambda fx: [fx['pickled'], '--width', '0.5'], 2,
             r'pickled weights are never loaded .unpickling can run code.*sfsc_timm.save'),
        Case('export-width', '--width 1.5', lambda fx: [fx['ckpt'], '--width', '1.5'], 2,
             r'width must be in \(0, 1\] \(1.0 is the full network\), got 1.5'),
        Case('export-width', 'a weights file (model.bin) instead of a folder',
             lambda fx: [fx['pickle_file'], '--width', '0.5'], 2,
             r'model.bin is a pickled weights file: pickled weights are never loaded'),
    ]

    def embed(images: str, *extra: str, model: str = 'ckpt', output: Optional[str] = None) -> Callable:
        """``sfsc-timm embed`` of the fixture ``images`` (or that path) into ``output`` (default <tmp>/NAME.parquet,
        always under the fixtures' folder)."""
        def argv(fx: Fixtures) -> List[str]:
            target = fx.root / (output or f'{Path(images).name}.parquet')
            return [fx[model], fx[images] if images in fx.paths else images, '--no-progress', '--output', str(target),
                    *extra]
        return argv

    embed_cases = [
        Case('embed', '--output an existing folder named .parquet', embed('images', output='folder.parquet'), 2,
             r'folder.parquet is a folder; writing a file there would replace it and everything in it: pass '
             r'another \.parquet file for --output'),
        Case('embed', '--output an existing Parquet file embed did not write',
             embed('images', output='gallery.parquet'), 2,
             r'gallery.parquet is not a file of embeddings sfsc-timm embed wrote; writing there would replace it'),
        Case('embed', '--output x.txt', embed('images', output='x.txt'), 2, r'--output .*x.txt must end in \.parquet'),
        Case('embed', '--output in a read-only folder', embed('images', output='read_only/e.parquet'), 2,
             r'--output .*read_only: cannot write in .*read_only .*choose a folder you can write to'),
        Case('embed', '--output under a file (a_file/e.parquet)', embed('images', output='a_file/e.parquet'), 2,
             r'--output .*a_file is a file, so no folder can be made under it'),
        Case('embed', '--workers -1', embed('images', '--workers', '-1'), 2,
             r'argument --workers: must be >= 0, got -1'),
        Case('embed', 'a folder of pickled weights (pytorch_model.bin)', embed('images', model='pickled'), 2,
             r'pickled weights are never loaded .unpickling can run code.*sfsc_timm.save'),
        Case('embed', 'a checkpoint whose backbone.conv1.weight is NaN', embed('images', model='nan_weights'), 2,
             r'tensor backbone.conv1.weight holds non-finite values \(NaN or inf\).*Load an earlier checkpoint'),
        Case('embed', '--width 0.5 of a checkpoint whose width-0.5 BatchNorm variance is inf',
             embed('images', '--width', '0.5', model='inf_norm_stats'), 2,
             r'tensor backbone.bn1.per_width.0_5.running_var holds non-finite values'),
        Case('embed', "a 16-bit PNG (mode 'I;16')", embed('img_uint16'), 0, r'^wrote .*: 1 embeddings'),
        Case('embed', "a float TIFF (mode 'F') in [0, 1]", embed('img_float01'), 0, r'^wrote .*: 1 embeddings'),
        Case('embed', "a float TIFF (mode 'F') in [0, 1000]", embed('img_float1000'), 2,
             r"mode 'F' with values in \[0, 1000\]; float images must lie in \[0, 1\] or \[0, 255\].*convert it"),
        Case('embed', "a float TIFF (mode 'F') holding NaN", embed('img_float_nan'), 2,
             r"mode 'F' with NaN or infinite values.*convert it to 8-bit RGB"),
        Case('embed', "a 32-bit integer TIFF (mode 'I') with negative values", embed('img_int_negative'), 2,
             r"mode 'I' with negative values \(range \[-100, 100\]\).*convert it to 8-bit RGB"),
        Case('embed', 'a CMYK JPEG', embed('img_cmyk'), 0, r'^wrote .*: 1 embeddings'),
        Case('embed', 'a palette PNG with a transparent colour', embed('img_palette_alpha'), 0,
             r'^wrote .*: 1 embeddings'),
        Case('embed', 'an image file that cannot be read', embed('broken_image'), 1,
             r'cannot read image .*a.png .*remove or fix the file'),
        Case('embed', "an image over PIL's decompression-bomb limit (a 65-byte PNG of 20000 x 20000)",
             embed('img_bomb'), 1, r'cannot read image .*big.png \(Image size \(400000000 pixels\) exceeds limit'),
        Case('embed', 'a folder without images', embed('no_images'), 2, r'no_images holds no image files'),
        Case('embed', 'images that do not exist', embed('/nonexistent/images'), 2,
             r'/nonexistent/images does not exist. Pass a folder of images'),
        Case('embed', 'a file where the folder of images goes', embed('a_file'), 2,
             r'a_file is a file; pass a folder of images or a dataset'),
        Case('embed', 'a weights file (model.bin) instead of a folder', embed('images', model='pickle_file'), 2,
             r'model.bin is a pickled weights file: pickled weights are never loaded'),
        Case('embed', 'a model that does not exist',
             lambda fx: ['/nonexistent/model', fx['images'], '--output', str(fx.root / 'e.parquet')], 2,
             r'/nonexistent/model does not exist; pass a checkpoint folder .*registered sfsc_\* model name'),
        Case('embed', '--width 0.3 (not trained)', embed('images', '--width', '0.3'), 2,
             r'width 0.3 is not one of the widths \(0.5, 1.0\) .*Choose one of'),
        Case('embed', '--batch-size 0', embed('images', '--batch-size', '0'), 2, r'batch_size must be >= 1, got 0'),
        Case('embed', '--device tpu', embed('images', '--device', 'tpu'), 2,
             r"device 'tpu' is not one of auto, cpu, cuda, cuda:N"),
    ]
    other = [
        Case('sfsc-timm', 'an unknown command', lambda fx: ['frobnicate'], 2, r"unknown command 'frobnicate'"),
        Case('demo', '--model resnet18', lambda fx: ['--model', 'resnet18'], 2, r'not an sfsc model; available'),
    ]
    index = [
        Case('index', 'search with queries of another width of the same checkpoint',
             lambda fx: ['search', fx['index'], fx['emb_w05'], '--k', '2', '--output', str(fx.root / 'hits.parquet')],
             0, r'searched 4 queries \(width 0.5\) in .*top 2 of each to .*hits.parquet'),
        Case('index', 'search with queries of another checkpoint',
             lambda fx: ['search', fx['index'], fx['emb_foreign'], '--output', str(fx.root / 'hits2.parquet')], 2,
             r'come from .*checkpoint .*embeddings of another checkpoint are not comparable.*--allow-other-checkpoint'),
        Case('index', "build --output a folder of the user's files",
             lambda fx: ['build', fx['emb_w1'], '--output', fx['user_files']], 2,
             r'user_files holds files this writer does not write \(holiday.png, notes.txt\).*--force'),
        Case('index', 'build --output an existing file',
             lambda fx: ['build', fx['emb_w1'], '--output', fx['a_file']], 2,
             r'--output .*a_file is a file, not a folder; choose a folder'),
        Case('index', 'build from a Parquet file sfsc-timm embed did not write',
             lambda fx: ['build', fx['file_parquet'], '--output', str(fx.root / 'index_bad')], 2,
             r'gallery.parquet is not a readable Parquet file \(another format, or truncated\); pass a file'),
        Case('index', 'build from a file that does not exist',
             lambda fx: ['build', str(fx.root / 'missing.parquet'), '--output', str(fx.root / 'index_missing')], 2,
             r'missing.parquet does not exist'),
        Case('index', 'build --kind flat --nlist 8 (a parameter of another kind)',
             lambda fx: ['build', fx['emb_w1'], '--output', str(fx.root / 'index_nlist'), '--nlist', '8'], 2,
             r'--nlist is a parameter of ivf-flat and ivf-pq, not of flat'),
        Case('index', "search --output a Parquet file of the user's",
             lambda fx: ['search', fx['index'], fx['emb_w05'], '--output', fx['file_parquet']], 2,
             r'gallery.parquet is not a Parquet file sfsc-timm wrote; writing there would replace it'),
        Case('index', 'search --k 0',
             lambda fx: ['search', fx['index'], fx['emb_w05'], '--k', '0', '--output', str(fx.root / 'h0.parquet')],
             2, r'--k must be an integer >= 1, got 0'),
        Case('index', 'search a folder that is not an index',
             lambda fx: ['search', fx['user_files'], fx['emb_w05'], '--output', str(fx.root / 'h1.parquet')], 2,
             r'is not an index folder \(no index.json\)'),
        Case('index', 'remove an id that is not in the index',
             lambda fx: ['remove', fx['index'], 'nope.png'], 2, r'not in the index .*nope.png.*nothing was removed'),
        Case('eval', '--rerank-k1 10 without --rerank', lambda fx: [fx['ckpt'], '--rerank-k1', '10'], 2,
             r'--rerank-k1 is a parameter of --rerank; add --rerank'),
    ]
    return train + evaluate + export + push + export_width + embed_cases + index + other + _python_cases()


# --- running them ---

def normalise(text: str, root: Path) -> str:
    """A message without what changes from run to run (the temporary folder, process ids)."""
    text = text.replace(str(root), '<tmp>')
    text = re.sub(r'[\d.]+ images/s', 'N images/s', text)  # embed's speed
    text = re.sub(r'[\d,.]+ queries/s', 'N queries/s', text)  # the index search's
    return re.sub(r'\(pid \d+\)', '(pid N)', text)


def _argv(case: Case, fx: Fixtures) -> List[str]:
    argv = case.run(fx)
    return argv if case.command == 'sfsc-timm' else [case.command, *argv]


def _run_in_subprocess(case: Case, fx: Fixtures) -> Result:
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (case.ulimit_fsize, case.ulimit_fsize))
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE='1')
    done = subprocess.run([sys.executable, '-m', 'sfsc_timm.cli', *_argv(case, fx)], capture_output=True, text=True,
                          env=env, preexec_fn=limit, cwd=fx.root)
    return _result(done.returncode, done.stdout, done.stderr)


def _result(status: int, out: str, err: str) -> Result:
    errors = [line for line in err.splitlines() if re.match(r'^sfsc-timm[\w -]*: error: ', line)]
    message = errors[0] if errors else next((line for line in out.splitlines() if 'skipped' in line),
                                            out.strip().splitlines()[-1] if out.strip() else '')
    return Result(status, message, errors, 'Traceback' in err)


def run_case(case: Case, fx: Fixtures) -> Result:
    """Run one case; its exit status (or exception) and its message."""
    if case.command == 'python':
        try:
            case.run(fx)
        except Exception as e:  # the API's errors are exceptions; the message is what a user reads
            return Result(type(e).__name__, str(e))
        return Result('ok', 'accepted')
    if case.ulimit_fsize is not None:
        return _run_in_subprocess(case, fx)
    from sfsc_timm.cli import main
    out, err = io.StringIO(), io.StringIO()
    env = dict(HF_TOKEN=None, HUGGING_FACE_HUB_TOKEN=None)
    saved = {k: os.environ.pop(k, None) for k in env}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(_argv(case, fx))
    finally:
        os.environ.update({k: v for k, v in saved.items() if v is not None})
    return _result(status, out.getvalue(), err.getvalue())


def is_clear(case: Case, result: Result) -> bool:
    """The case's expectation: its status, one error line (for a refusal), no traceback, the message matching."""
    if result.status != case.status or result.traceback:
        return False
    if case.command != 'python' and case.status != 0 and len(result.error_lines) != 1:
        return False
    return re.search(case.match, result.message) is not None


def table(rows: List[Tuple[Case, Result]], root: Path) -> str:
    """The table of docs/errors.md: command, input, exit status, the message (temporary paths shown as <tmp>)."""
    lines = ['| # | command | input | exit | message |', '| ---: | --- | --- | --- | --- |']
    for number, (case, result) in enumerate(rows, 1):
        message = normalise(result.message, root).replace('|', '\\|')
        status = result.status if case.command != 'python' else f'`{result.status}`'
        lines.append(f'| {number} | {case.command} | {case.input.replace("|", "/")} | {status} | {message} |')
    clear = sum(is_clear(case, result) for case, result in rows)
    lines.append('')
    lines.append(f'{len(rows)} cases tried, {clear} clear (the expected exit status or exception, one line, no '
                 'traceback, a message that names the fix).')
    return '\n'.join(lines)


def documented_table() -> str:
    text = ERRORS_DOC.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    return text[start:end].strip()


def write_documented_table(new: str) -> None:
    text = ERRORS_DOC.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    ERRORS_DOC.write_text(text[:start] + '\n' + new + '\n' + text[end:])


def run_all(root: Path) -> List[Tuple[Case, Result]]:
    import datasets
    cache = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = root / 'hf_datasets_cache'  # image folders are built here, not in ~/.cache
    fx = build_fixtures(root)
    try:
        return [(case, run_case(case, fx)) for case in cases()]
    finally:
        fx.close()
        datasets.config.HF_DATASETS_CACHE = cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--write-table', action='store_true', help='replace the table in docs/errors.md')
    parser.add_argument('--root', type=Path, default=None, help='where to build the fixtures (default: a temp dir)')
    args = parser.parse_args()
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        root = (args.root or Path(tmp)) / 'bad_inputs'
        rows = run_all(root)
        new = table(rows, root)
        print(new)
        print(json.dumps({c.input: r.status for c, r in rows if not is_clear(c, r)}, indent=1))
        if args.write_table:
            write_documented_table(new)


if __name__ == '__main__':
    main()
