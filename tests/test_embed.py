"""``sfsc-timm embed``: images -> Parquet of unit-norm embeddings, equal to the sub-model's own, with any number of
processes."""
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

import sfsc_timm
from sfsc_timm.inference import DatasetImages, embed_images, load_embedding_model, read_embeddings
from sfsc_timm.inference.cli import main as embed_main

from net_utils import free_port

ROOT = Path(__file__).resolve().parents[1]
SIZE = (3, 32, 32)


@pytest.fixture(scope='module')
def supernet(tmp_path_factory):
    torch.manual_seed(0)
    net = timm.create_model('sfsc_resnet18', num_classes=4, widths=(0.25, 0.5, 1.0), embed_dim=24,
                            pretrained_cfg_overlay=dict(input_size=SIZE))
    with torch.no_grad():
        for width in net.widths:  # BatchNorm statistics of their own per width
            with net.width(width):
                net.train()(torch.randn(8, *SIZE) * (1 + width))
    folder = tmp_path_factory.mktemp('ckpt') / 'sfsc_resnet18'
    sfsc_timm.save(net.eval(), folder)
    return net, folder


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    """An imagefolder-like tree: images at several depths, one non-image file, one hidden file."""
    root = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    for i, rel in enumerate(['cat/1.png', 'cat/2.jpg', 'dog/a/3.png', 'dog/4.PNG', 'top.jpeg', 'dog/a/5.bmp']):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40 + i, 30, 3), dtype=np.uint8)).save(root / rel)
    (root / 'notes.txt').write_text('not an image')
    (root / '.hidden.png').write_bytes((root / 'cat/1.png').read_bytes())
    return root


def _expected(net, width, images):
    """The sub-model's embeddings of PIL images through its own eval transform, L2-normalised."""
    sub = sfsc_timm.extract(net, width).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=sub))
    with torch.no_grad():
        batch = torch.stack([transform(image.convert('RGB')) for image in images])
        return F.normalize(sub.forward_head(sub.forward_features(batch), pre_logits=True), dim=1)


def test_folder_of_images(supernet, image_folder, tmp_path):
    net, folder = supernet
    result = embed_images(folder, image_folder, tmp_path / 'out.parquet', width=0.25, batch_size=4, progress=False)
    table = pq.read_table(tmp_path / 'out.parquet')
    assert table.column_names == ['path', 'embedding'] and result.count == 6 and result.embed_dim == 24
    column_type = table.schema.field('embedding').type
    assert pa.types.is_fixed_size_list(column_type) and column_type.list_size == 24
    assert column_type.value_type == pa.float32()
    paths = table.column('path').to_pylist()
    assert paths == ['cat/1.png', 'cat/2.jpg', 'dog/4.PNG', 'dog/a/3.png', 'dog/a/5.bmp', 'top.jpeg']  # recursive
    got = read_embeddings(tmp_path / 'out.parquet')
    assert got['embeddings'].dtype == torch.float32
    torch.testing.assert_close(got['embeddings'].norm(dim=1), torch.ones(6))
    expected = _expected(net, 0.25, [Image.open(image_folder / p) for p in paths])
    torch.testing.assert_close(got['embeddings'], expected, rtol=1e-4, atol=1e-5)
    assert got['metadata']['width'] == 0.25 and got['metadata']['normalized'] is True
    assert sfsc_timm.embed_images is embed_images  # also at the package level


def test_every_width_embeds_into_the_same_dimension(supernet, image_folder, tmp_path):
    net, folder = supernet
    outputs = {w: read_embeddings(embed_images(f'local-dir:{folder}', image_folder, tmp_path / f'{w}.parquet',
                                               width=w, progress=False).output) for w in net.widths}
    assert {o['embeddings'].shape for o in outputs.values()} == {(6, 24)}
    full = embed_images(folder, image_folder, tmp_path / 'default.parquet', progress=False)  # no width: the full one
    assert full.width == 1.0
    torch.testing.assert_close(read_embeddings(full.output)['embeddings'], outputs[1.0]['embeddings'])


def test_model_in_memory_and_static_checkpoint(supernet, image_folder, tmp_path):
    net, _ = supernet
    sfsc_timm.save(sfsc_timm.extract(net, 0.5), tmp_path / 'w05')
    from_file = embed_images(tmp_path / 'w05', image_folder, tmp_path / 'a.parquet', progress=False)  # its own width
    from_memory = embed_images(net, image_folder, tmp_path / 'b.parquet', width=0.5, progress=False)
    assert from_file.width == from_memory.width == 0.5 and net.active_width == 1.0  # the supernet is left as it was
    torch.testing.assert_close(read_embeddings(from_file.output)['embeddings'],
                               read_embeddings(from_memory.output)['embeddings'])
    with pytest.raises(ValueError, match='width 0.5'):
        load_embedding_model(tmp_path / 'w05', width=0.25)


def test_saved_dataset_with_an_id_column(supernet, tmp_path):
    net, folder = supernet
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(5)]
    ds = datasets.Dataset.from_dict({'image': images, 'id': [f'item-{i}' for i in range(5)], 'label': [0, 1, 0, 1, 2]},
                                    features=datasets.Features(image=datasets.Image(), id=datasets.Value('string'),
                                                               label=datasets.Value('int64')))
    datasets.DatasetDict(test=ds).save_to_disk(tmp_path / 'ds')
    result = embed_images(folder, tmp_path / 'ds', tmp_path / 'out.parquet', width=0.5, batch_size=2, progress=False)
    got = read_embeddings(result.output)
    assert result.id_column == 'id' and got['ids'] == [f'item-{i}' for i in range(5)]  # the only split, in order
    torch.testing.assert_close(got['embeddings'], _expected(net, 0.5, images), rtol=1e-4, atol=1e-5)


def test_hub_dataset_id(supernet, tmp_path, monkeypatch):
    # the Hub is unreachable here: datasets.load_dataset stands in for it with a real dataset, as in test_data.py
    net, folder = supernet
    rng = np.random.default_rng(2)
    images = [Image.fromarray(rng.integers(0, 255, (36, 28, 3), dtype=np.uint8)) for _ in range(3)]
    calls = []

    def load_dataset(path, split=None, **kwargs):
        calls.append((path, split))
        return datasets.Dataset.from_dict({'picture': images}, features=datasets.Features(picture=datasets.Image()))

    monkeypatch.setattr(datasets, 'load_dataset', load_dataset)
    result = embed_images(folder, 'someone/pictures', tmp_path / 'out.parquet', width=1.0, split='validation',
                          progress=False)
    got = read_embeddings(result.output)
    assert calls == [('someone/pictures', 'validation')]
    assert result.id_column == 'index' and got['ids'] == [0, 1, 2]  # no id, no file paths: the row number
    torch.testing.assert_close(got['embeddings'], _expected(net, 1.0, images), rtol=1e-4, atol=1e-5)


def test_imagefolder_dataset_keeps_the_file_paths(image_folder, tmp_path):
    ds = datasets.load_dataset('imagefolder', data_dir=str(image_folder / 'cat'), split='train',
                               cache_dir=str(tmp_path))
    source = DatasetImages(ds)
    assert source.id_column == 'path' and [Path(p).name for p in source.ids] == ['1.png', '2.jpg']


def test_command_line(supernet, image_folder, tmp_path, capsys):
    _, folder = supernet
    assert embed_main([str(folder), str(image_folder), '--width', '0.5', '--output', str(tmp_path / 'e.parquet'),
                       '--batch-size', '2', '--no-progress']) == 0
    assert 'wrote' in capsys.readouterr().out and pq.read_table(tmp_path / 'e.parquet').num_rows == 6
    bad = [
        ([str(folder), str(image_folder), '--width', '0.75', '--output', str(tmp_path / 'x.parquet')],
         r'width 0.75 is not one of'),
        ([str(folder), str(tmp_path / 'nowhere'), '--output', str(tmp_path / 'x.parquet')], 'does not exist'),
        ([str(folder), str(image_folder), '--output', str(tmp_path / 'x.csv')], 'must end in .parquet'),
        ([str(tmp_path / 'nowhere'), str(image_folder), '--output', str(tmp_path / 'x.parquet')],
         'does not exist; pass a checkpoint folder'),
    ]
    for argv, message in bad:
        assert embed_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith('sfsc-timm embed: ') and err.count('\n') == 1 and message in err, err
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'bad.png').write_bytes(b'not a png')
    assert embed_main([str(folder), str(broken), '--output', str(tmp_path / 'y.parquet'), '--no-progress']) == 1
    err = capsys.readouterr().err
    assert 'cannot read image' in err and 'bad.png' in err and err.count('\n') == 1
    assert not (tmp_path / 'y.parquet').exists() and not list(tmp_path.glob('.y.parquet*'))  # nothing half-written


@pytest.mark.slow  # the slow tier (make test-slow; CI runs it too)
def test_torchrun_shards_are_merged_in_order(supernet, image_folder, tmp_path):
    _, folder = supernet
    single = embed_images(folder, image_folder, tmp_path / 'one.parquet', width=0.5, progress=False)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
               '--master_port', str(free_port()), '-m', 'sfsc_timm.cli', 'embed', str(folder), str(image_folder),
               '--width', '0.5', '--batch-size', '2', '--device', 'cpu', '--no-progress',
               '--output', str(tmp_path / 'two.parquet')]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = read_embeddings(single.output), read_embeddings(tmp_path / 'two.parquet')
    assert two['ids'] == one['ids']  # rank 0's share, then rank 1's: the source's order
    torch.testing.assert_close(two['embeddings'], one['embeddings'], rtol=1e-4, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['one.parquet', 'two.parquet']  # shards removed
