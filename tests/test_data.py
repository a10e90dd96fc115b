""" Tests of sfsc_timm.data: loaders, subsets, transforms, the torch wrapper and the PK sampler. """
import os
from pathlib import Path

import datasets
import huggingface_hub.constants
import numpy as np
import pytest
import torch
from PIL import Image

from sfsc_timm.data import (
    PKSampler, RetrievalData, balanced_subset, build_transforms, first_per_class, load_fashion_mnist,
    load_retrieval_data, read_idx, subset_retrieval_data, with_image_transform)
from sfsc_timm.data.fashion_mnist import fashion_mnist_dir
from sfsc_timm.data.splits import column_array

HAS_FASHION_MNIST = (fashion_mnist_dir() / 't10k-labels-idx1-ubyte.gz').is_file()
needs_fashion_mnist = pytest.mark.skipif(
    not HAS_FASHION_MNIST, reason='Fashion-MNIST IDX files absent (apt-get install -y dataset-fashion-mnist)')


def _labels(ds: datasets.Dataset) -> np.ndarray:
    return column_array(ds, 'label')


def _save_image(path: Path, mode: str = 'RGB', size=(8, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=128 if mode == 'L' else (200, 10, 10)).save(path)


@pytest.fixture(scope='module')
def fashion() -> RetrievalData:
    if not HAS_FASHION_MNIST:
        pytest.skip('Fashion-MNIST IDX files absent')
    return load_retrieval_data('fashion_mnist')


# Fashion-MNIST

@needs_fashion_mnist
def test_fashion_mnist_splits(fashion):
    assert isinstance(fashion, RetrievalData)
    assert (len(fashion.train), len(fashion.query), len(fashion.gallery)) == (60_000, 1_000, 9_000)
    assert fashion.num_classes == 10 and fashion.name == 'fashion_mnist' and not fashion.has_cameras
    test_labels = read_idx(fashion_mnist_dir() / 't10k-labels-idx1-ubyte.gz')
    q, g = _labels(fashion.query), _labels(fashion.gallery)
    assert np.array_equal(q, test_labels[first_per_class(test_labels, 100)])
    assert np.array_equal(np.bincount(q), [100] * 10)
    # query = the first 100 test images of each class, gallery = the rest, both in file order
    is_query = np.zeros(len(test_labels), bool)
    for c in range(10):
        is_query[np.flatnonzero(test_labels == c)[:100]] = True
    assert np.array_equal(g, test_labels[~is_query])
    for split in (fashion.train, fashion.query, fashion.gallery):
        assert set(np.unique(_labels(split))) == set(range(10))
    test_images = read_idx(fashion_mnist_dir() / 't10k-images-idx3-ubyte.gz')
    img = fashion.query[5]['image']
    assert img.size == (28, 28) and img.mode == 'L'
    assert np.array_equal(np.asarray(img), test_images[np.flatnonzero(is_query)[5]])
    assert np.array_equal(np.asarray(fashion.gallery[7]['image']), test_images[np.flatnonzero(~is_query)[7]])


@needs_fashion_mnist
def test_fashion_mnist_subsets(fashion):
    small = load_retrieval_data(max_train=500, max_query=50, max_gallery=200, seed=3)
    assert (len(small.train), len(small.query), len(small.gallery)) == (500, 50, 200)
    assert small.num_classes == 10
    for split in (small.train, small.query, small.gallery):
        assert np.array_equal(np.bincount(_labels(split), minlength=10), [len(split) // 10] * 10)
    # query / gallery subsets are the first items of each class, in order
    assert np.array_equal(_labels(small.query), _labels(fashion.query)[first_per_class(_labels(fashion.query), 5)])
    assert np.asarray(small.gallery[0]['image']).tobytes() == np.asarray(fashion.gallery[0]['image']).tobytes()
    # the train subset is seeded
    again = subset_retrieval_data(fashion, max_train=500, seed=3)
    other = subset_retrieval_data(fashion, max_train=500, seed=4)
    pixels = lambda d: np.stack([np.asarray(d.train[i]['image']) for i in range(10)])  # noqa: E731
    assert np.array_equal(pixels(again), pixels(small)) and not np.array_equal(pixels(other), pixels(small))
    assert len(again.query) == 1_000  # untouched splits stay whole


@needs_fashion_mnist
def test_fashion_mnist_env_dir(tmp_path, monkeypatch):
    for name in os.listdir(fashion_mnist_dir()):
        (tmp_path / name).symlink_to(fashion_mnist_dir() / name)
    monkeypatch.setenv('SFSC_FASHION_MNIST_DIR', str(tmp_path))
    data = load_fashion_mnist(query_per_class=10)
    assert (len(data.query), len(data.gallery)) == (100, 9_900)


def test_fashion_mnist_missing_offline(tmp_path, monkeypatch):
    monkeypatch.setenv('SFSC_FASHION_MNIST_DIR', str(tmp_path / 'empty'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(datasets.config, 'HF_HUB_OFFLINE', True)
    with pytest.raises(FileNotFoundError) as info:
        load_retrieval_data('fashion_mnist', cache_dir=str(tmp_path / 'cache'))
    msg = str(info.value)
    assert 'apt-get install -y dataset-fashion-mnist' in msg
    assert 'Hub' in msg and 'SFSC_FASHION_MNIST_DIR' in msg and str(tmp_path / 'empty') in msg


def _fake_splits(**sizes) -> datasets.DatasetDict:
    """A stand-in for a Hub DatasetDict: 28x28 images in an `img` column, labels cycling over 10 classes."""
    features = datasets.Features(img=datasets.Image(), label=datasets.ClassLabel(num_classes=10))
    return datasets.DatasetDict({
        name: datasets.Dataset.from_dict(
            {'img': [Image.new('L', (28, 28), i % 256) for i in range(n)], 'label': [i % 10 for i in range(n)]},
            features=features)
        for name, n in sizes.items()})


def test_fashion_mnist_hub_fallback(tmp_path, monkeypatch):
    calls = []

    def fake_load_dataset(path, **kwargs):  # the Hub is unreachable here: stand in for it
        calls.append(path)
        return _fake_splits(train=30, test=50)

    monkeypatch.setenv('SFSC_FASHION_MNIST_DIR', str(tmp_path))
    monkeypatch.setattr(datasets, 'load_dataset', fake_load_dataset)
    data = load_retrieval_data('fashion_mnist', query_per_class=2)
    assert calls == ['zalando-datasets/fashion_mnist']
    assert (len(data.train), len(data.query), len(data.gallery)) == (30, 20, 30)
    assert np.array_equal(np.bincount(_labels(data.query)), [2] * 10)


def test_hub_dataset_id(monkeypatch):
    monkeypatch.setattr(datasets, 'load_dataset', lambda path, **kw: _fake_splits(train=20, query=10, gallery=30))
    data = load_retrieval_data('some-org/some-retrieval-set')
    assert (len(data.train), len(data.query), len(data.gallery)) == (20, 10, 30)
    assert data.name == 'some-org/some-retrieval-set' and data.num_classes == 10
    assert data.query.column_names == ['image', 'label'] and isinstance(data.query.features['image'], datasets.Image)
    carved = load_retrieval_data('some-org/some-retrieval-set', gallery_split='gallery', query_per_class=1)
    assert (len(carved.query), len(carved.gallery)) == (10, 20)


def test_read_idx_plain(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / 'x-idx3-ubyte').write_bytes(bytes([0, 0, 8, 3]) + b''.join(
        int(d).to_bytes(4, 'big') for d in arr.shape) + arr.tobytes())
    assert np.array_equal(read_idx(tmp_path / 'x-idx3-ubyte'), arr)


# re-ID folders

def _market_tree(root: Path) -> Path:
    names = {
        'bounding_box_train': ['0002_c1s1_000451_03.jpg', '0002_c2s1_000551_01.jpg', '0002_c3s1_000651_01.jpg',
                               '0007_c1s1_000001_01.jpg', '0007_c6s1_000002_01.jpg', '-1_c1s1_000003_01.jpg',
                               '0000_c2s1_000004_01.jpg'],
        'query': ['0002_c1s1_001000_00.jpg', '0007_c6s1_001001_00.jpg'],
        'bounding_box_test': ['0002_c4s1_002000_01.jpg', '0007_c2s1_002001_01.jpg', '0000_c5s1_002002_01.jpg',
                              '0000_c1s1_002003_01.jpg', '-1_c3s1_002004_01.jpg', '0009_c2s1_002005_01.jpg'],
    }
    for folder, files in names.items():
        for name in files:
            _save_image(root / folder / name)
    (root / 'bounding_box_test' / 'Thumbs.db').write_bytes(b'')
    return root


def test_market_folder(tmp_path):
    root = _market_tree(tmp_path / 'Market-1501-v15.09.15')
    data = load_retrieval_data(str(root))
    assert data.name == 'Market-1501-v15.09.15' and data.has_cameras
    # junk (-1) dropped everywhere, distractors (0) dropped from train only, train relabelled 0..N-1
    assert data.num_classes == 2
    assert list(data.train['label']) == [0, 0, 0, 1, 1]
    assert list(data.train['camera']) == [0, 1, 2, 0, 5]
    assert list(data.query['label']) == [2, 7] and list(data.query['camera']) == [0, 5]
    assert sorted(data.gallery['label']) == [0, 0, 2, 7, 9]
    assert -1 not in list(data.gallery['label']) + list(data.train['label'])
    assert data.gallery.features['image'] == datasets.Image()
    assert data.train[0]['image'].size == (8, 16)
    # the parent folder works too (one dataset inside), and the explicit prefix
    assert len(load_retrieval_data(str(tmp_path)).gallery) == 5
    assert len(load_retrieval_data('reid:' + str(root)).train) == 5


def test_market_missing_folder(tmp_path):
    root = _market_tree(tmp_path / 'market')
    for f in (root / 'query').iterdir():
        f.unlink()
    (root / 'query').rmdir()
    with pytest.raises(FileNotFoundError, match=r'lacks the folder\(s\) query.*bounding_box_train/'):
        load_retrieval_data(str(root))
    with pytest.raises(FileNotFoundError, match='not a re-ID dataset folder.*imagefolder:PATH'):
        load_retrieval_data(str(tmp_path / 'market' / 'bounding_box_train'))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_retrieval_data(str(tmp_path / 'nowhere'))


def test_msmt_list_layout(tmp_path):
    root = tmp_path / 'MSMT17_V1'
    lists = {
        'list_train.txt': [('train', '0000/0000_000_01_0303morning_0015_0.jpg', 0),
                           ('train', '0000/0000_001_03_0303morning_0016_0.jpg', 0)],
        'list_val.txt': [('train', '0001/0001_000_15_0303noon_0001_0.jpg', 1)],
        'list_query.txt': [('test', '0000/0000_000_02_0303morning_0001_0.jpg', 0)],
        'list_gallery.txt': [('test', '0000/0000_001_05_0303morning_0002_0.jpg', 0),
                             ('test', '0003/0003_000_07_0303morning_0003_0.jpg', 3)],
    }
    for list_name, rows in lists.items():
        for folder, rel, _ in rows:
            _save_image(root / folder / rel)
        (root / list_name).write_text(''.join(f'{rel} {label}\n' for _, rel, label in rows))
    data = load_retrieval_data(str(root))
    assert data.num_classes == 2 and len(data.train) == 3
    assert list(data.train['label']) == [0, 0, 1] and list(data.train['camera']) == [0, 2, 14]
    assert list(data.query['camera']) == [1] and list(data.gallery['label']) == [0, 3]
    (root / 'list_query.txt').unlink()
    with pytest.raises(FileNotFoundError, match='list_query.txt'):
        load_retrieval_data(str(root))


# imagefolder / Hub-style datasets

def test_imagefolder_class_folders(tmp_path):
    for split, per_class in (('train', 3), ('test', 4)):
        for cls in ('bag', 'coat', 'shoe'):
            for i in range(per_class):
                _save_image(tmp_path / 'data' / split / cls / f'{i}.png', mode='L', size=(10, 10))
    source = 'imagefolder:' + str(tmp_path / 'data')
    data = load_retrieval_data(source, query_per_class=1, cache_dir=str(tmp_path / 'cache'))
    assert (len(data.train), len(data.query), len(data.gallery)) == (9, 3, 9)
    assert data.num_classes == 3 and data.name == 'data'
    assert sorted(data.query['label']) == [0, 1, 2]
    assert data.query.column_names == ['image', 'label']
    with pytest.raises(ValueError, match='query_per_class'):
        load_retrieval_data(source, cache_dir=str(tmp_path / 'cache'))
    with pytest.raises(ValueError, match=r"no split 'val'; its splits are \[.*'train'"):
        load_retrieval_data(source, query_split='test', gallery_split='val', cache_dir=str(tmp_path / 'cache'))
    same = load_retrieval_data(source, query_split='test', gallery_split='test', cache_dir=str(tmp_path / 'cache'))
    assert len(same.query) == len(same.gallery) == 12


def test_imagefolder_metadata_columns(tmp_path):
    for split, rows in (('train', [(5, 0), (5, 1), (9, 0), (9, 2)]), ('query', [(5, 1), (9, 0)]),
                        ('gallery', [(5, 2), (9, 1), (12, 0)])):
        lines = ['file_name,identity,cam']
        for i, (identity, cam) in enumerate(rows):
            _save_image(tmp_path / 'reid' / split / f'{i}.jpg')
            lines.append(f'{i}.jpg,{identity},{cam}')
        (tmp_path / 'reid' / split / 'metadata.csv').write_text('\n'.join(lines) + '\n')
    source = 'imagefolder:' + str(tmp_path / 'reid')
    cache = str(tmp_path / 'cache')
    data = load_retrieval_data(source, label_column='identity', camera_column='cam', cache_dir=cache)
    assert data.num_classes == 2 and list(data.train['label']) == [0, 0, 1, 1]  # 5, 9 relabelled
    assert list(data.query['label']) == [5, 9] and list(data.gallery['camera']) == [2, 1, 0]
    assert data.has_cameras and data.train.column_names == ['image', 'label', 'camera']
    with pytest.raises(ValueError, match=r"no label column 'person'.*'identity'.*label_column="):
        load_retrieval_data(source, label_column='person', cache_dir=cache)
    with pytest.raises(ValueError, match='label_column'):
        load_retrieval_data(source, cache_dir=cache)  # default 'label' is absent


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='query_split'):
        load_retrieval_data('fashion_mnist', query_split='test')
    with pytest.raises(ValueError, match='root='):
        load_retrieval_data(str(_market_tree(tmp_path / 'm')), root='/tmp')


# subsets

def test_balanced_subset():
    labels = np.array([3, 3, 3, 1, 1, 7, 3, 1, 7, 7])
    assert list(first_per_class(labels, 2)) == [0, 1, 3, 4, 5, 8]
    idx = balanced_subset(labels, 4)
    assert list(idx) == [0, 3, 4, 5]  # one per class, then the second of the lowest class (1)
    assert list(balanced_subset(labels, 2, priority_classes=[7])) == [3, 5]
    seeded = balanced_subset(labels, 6, seed=1)
    assert np.array_equal(np.bincount(labels[seeded]), np.bincount(labels[balanced_subset(labels, 6)]))
    assert np.array_equal(seeded, balanced_subset(labels, 6, seed=1))
    assert len(balanced_subset(labels, 100)) == 10


# transforms and the torch wrapper

@pytest.mark.parametrize('train', [False, True])
def test_transforms_grayscale_to_model_input(train):
    timm = pytest.importorskip('timm')
    cfg = timm.create_model('resnet18', pretrained=False).pretrained_cfg
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8), mode='L')
    x = build_transforms(cfg, train=train)(img)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    if not train:
        assert torch.allclose(x[0] * 0.229 + 0.485, x[1] * 0.224 + 0.456, atol=1e-5)  # replicated channels
    reid = dict(input_size=(3, 256, 128), interpolation='bilinear', mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)
    assert build_transforms(reid, train=train)(img.convert('RGBA')).shape == (3, 256, 128)
    assert build_transforms(reid, train=train, img_size=64)(img).shape == (3, 64, 64)


def test_train_transform_options():
    cfg = dict(input_size=(3, 256, 128), mean=(0.5,) * 3, std=(0.5,) * 3)
    names = lambda tf: [type(t).__name__ for t in tf.transforms]  # noqa: E731
    assert 'RandomErasing' in names(build_transforms(cfg, train=True))
    assert 'RandomErasing' not in names(build_transforms(cfg, train=True, re_prob=0.))
    crop = build_transforms(cfg, train=True).transforms[1]
    assert crop.ratio == pytest.approx((0.375, 2 / 3))  # aspect range follows the 256x128 input


def test_with_image_transform_dataloader(tmp_path):
    root = _market_tree(tmp_path / 'market')
    data = load_retrieval_data(str(root))
    cfg = dict(input_size=(3, 32, 16), mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)
    ds = with_image_transform(data.gallery, build_transforms(cfg, train=False))
    image, label, camera, index = ds[2]
    assert image.shape == (3, 32, 16) and (label, camera, index) == (data.gallery[2]['label'],
                                                                     data.gallery[2]['camera'], 2)
    images, labels, cameras, indices = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert images.shape == (4, 3, 32, 16) and indices.tolist() == [0, 1, 2, 3]
    assert labels.tolist() == list(data.gallery['label'][:4]) and cameras.dtype == torch.int64
    no_cam = datasets.Dataset.from_dict({'image': [Image.new('L', (5, 5))], 'label': [3]},
                                        features=datasets.Features(image=datasets.Image(),
                                                                   label=datasets.Value('int64')))
    assert with_image_transform(no_cam, build_transforms(cfg, train=False))[0][1:] == (3, -1, 0)


# PK sampler

def _pk_labels() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.permutation(np.repeat(np.arange(12), rng.integers(1, 14, size=12)))


def _batches(sampler: PKSampler) -> np.ndarray:
    return np.array(list(sampler)).reshape(-1, sampler.batch_size)


def test_pk_sampler_batches():
    labels = _pk_labels()
    sampler = PKSampler(labels, num_identities_per_batch=4, num_instances=3, seed=1)
    batches = _batches(sampler)
    assert len(sampler) == len(list(sampler)) == batches.size and len(batches) >= 1
    for batch in batches:
        groups = labels[batch].reshape(4, 3)
        assert (groups == groups[:, :1]).all()  # K images of one identity
        assert len(set(groups[:, 0])) == 4  # P distinct identities
    small = np.flatnonzero(np.bincount(labels) < 3)
    assert len(small) and np.isin(labels[batches], small).any()  # identities with < K images sampled too


def test_pk_sampler_determinism_and_epochs():
    labels = _pk_labels()
    a = PKSampler(labels, 4, 3, seed=5)
    b = PKSampler(labels, 4, 3, seed=5)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and len(list(a)) == len(first)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(PKSampler(labels, 4, 3, seed=6)) != first
    ds = datasets.Dataset.from_dict({'label': labels})
    assert list(PKSampler(ds, 4, 3, seed=5)) == first  # a dataset's `label` column works too


def test_pk_sampler_distributed_shares():
    labels = np.repeat(np.arange(20), 6)
    world = [PKSampler(labels, 4, 3, seed=2, rank=r, world_size=3) for r in range(3)]
    for s in world:
        s.set_epoch(4)
    shares = [list(s) for s in world]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == len(world[0]) > 0
    flat = sum(shares, [])
    assert len(flat) == len(set(flat))  # disjoint: no image on two ranks (or twice on one)
    single = PKSampler(labels, 4, 3, seed=2)
    single.set_epoch(4)
    assert set(flat) <= set(single)


def test_pk_sampler_errors():
    labels = np.repeat(np.arange(3), 4)
    with pytest.raises(ValueError, match='num_instances'):
        PKSampler(labels, 2, 0)
    with pytest.raises(ValueError, match='3 identities.*P=4'):
        PKSampler(labels, 4, 2)
    with pytest.raises(ValueError, match='world_size'):
        PKSampler(labels, 3, 4, world_size=2)
    with pytest.raises(ValueError, match='rank'):
        PKSampler(labels, 2, 2, rank=2, world_size=2)
