""" Open-set protocol: validation carved from the training split only, the glyph re-identification benchmark, the
Fashion-MNIST open split, and a small open-set training run. """
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

import sfsc_timm.train.trainer as trainer_module
from sfsc_timm.data import carve_validation, load_retrieval_data, pick_queries
from sfsc_timm.data.fashion_mnist import fashion_mnist_dir
from sfsc_timm.data.glyphs import build_glyph_dataset, find_glyph_faces, load_glyphs, render_glyph
from sfsc_timm.data.splits import column_array
from sfsc_timm.train.cli import main

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = REPO / 'recipes' / 'sfsc_resnet18_fashion_mnist.yaml'
GLYPH_FACES = find_glyph_faces()
needs_cjk_fonts = pytest.mark.skipif(
    len({f.design for f in GLYPH_FACES}) < 3,
    reason='fewer than three CJK font designs installed (apt-get install -y fonts-noto-cjk fonts-arphic-ukai '
           'fonts-wqy-zenhei ..., or `make glyphs`)')
needs_fashion_mnist = pytest.mark.skipif(
    not (fashion_mnist_dir() / 't10k-labels-idx1-ubyte.gz').is_file(),
    reason='Fashion-MNIST IDX files absent (apt-get install -y dataset-fashion-mnist)')


def _labelled(num_classes: int, per_class: int, cameras: int = 0, names=None) -> datasets.Dataset:
    labels = np.repeat(np.arange(num_classes), per_class)
    columns = dict(image=[f'{i}.png' for i in range(len(labels))], label=labels)  # never decoded
    features = dict(image=datasets.Value('string'),
                    label=datasets.ClassLabel(names=names) if names else datasets.Value('int64'))
    if cameras:
        columns['camera'] = np.tile(np.arange(per_class) % cameras, num_classes)
        features['camera'] = datasets.Value('int64')
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


# --- validation from the training split ---

def test_identity_validation_holds_out_whole_identities():
    names = [f'id{i:03d}' for i in range(200)]
    train = _labelled(200, 6, cameras=3, names=names)
    split = carve_validation(train, mode='auto', fraction=0.1, seed=0)
    assert split.info['mode'] == 'identities' and split.info['split'] == 'train'
    held = set(split.info['classes'])
    assert len(held) == 20 and held <= set(names)
    val_names = {names[i] for ds in (split.query, split.gallery) for i in column_array(ds, 'label')}
    assert val_names == held
    # nothing held out is trained on; the rest is relabelled 0..N-1 and keeps its names
    left = split.train.features['label'].names
    assert split.num_classes == 180 and set(left) == set(names) - held
    assert np.array_equal(np.unique(column_array(split.train, 'label')), np.arange(180))
    assert len(split.train) + len(split.query) + len(split.gallery) == len(train)
    # 2 queries per identity, from different cameras
    q_labels, q_cams = column_array(split.query, 'label'), column_array(split.query, 'camera')
    assert np.array_equal(np.bincount(q_labels)[np.unique(q_labels)], [2] * 20)
    for label in np.unique(q_labels):
        assert len(set(q_cams[q_labels == label])) == 2
    assert (split.info['num_query'], split.info['num_gallery']) == (40, 80)


def test_few_classes_hold_out_images_and_say_so():
    train = _labelled(10, 50, names=[f'c{i}' for i in range(10)])
    split = carve_validation(train, mode='auto', fraction=0.1, seed=0)
    assert split.info['mode'] == 'images' and split.info['classes'] == [f'c{i}' for i in range(10)]
    assert split.num_classes == 10 and len(split.train) == 450  # 5 of each class's 50 images held out
    assert len(split.query) == 10 and len(split.gallery) == 40  # one held-out image in ten is a query


def test_validation_errors_name_the_fix():
    with pytest.raises(ValueError, match='val_split: images'):
        carve_validation(_labelled(5, 10), mode='identities', fraction=0.1)
    with pytest.raises(ValueError, match='val_fraction'):
        carve_validation(_labelled(5, 10), fraction=1.5)
    with pytest.raises(ValueError, match='allowed: auto, identities, images'):
        carve_validation(_labelled(5, 10), mode='test')


def test_pick_queries_spreads_cameras_and_leaves_a_gallery():
    labels = np.array([0] * 6 + [1] * 2)
    cameras = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    chosen = pick_queries(labels, 3, cameras=cameras, seed=1)
    assert len(set(cameras[chosen[labels[chosen] == 0]])) == 3
    assert (labels[chosen] == 1).sum() == 1  # a class of 2 gives 1 query and keeps 1 for the gallery


def _write_folder(root: Path, split: str, classes, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = (rng.random((16, 16)) * 60 + (c * 37) % 190).astype(np.uint8)
            Image.fromarray(pixels, mode='L').save(folder / f'{i}.png')


@pytest.fixture
def disjoint_folder(tmp_path) -> Path:
    """An imagefolder whose query / gallery identities are named unlike any training identity."""
    root = tmp_path / 'data'
    _write_folder(root, 'train', [f'train_{i:02d}' for i in range(12)], 8, seed=0)
    test_classes = [f'unseen_{i}' for i in range(4)]
    _write_folder(root, 'query', test_classes, 2, seed=1)
    _write_folder(root, 'gallery', test_classes, 5, seed=2)
    return root


def test_validation_never_reads_the_query_or_gallery(tmp_path, disjoint_folder, monkeypatch):
    seen = []  # class names of every set the trainer evaluates, in order
    original = trainer_module.compatibility_matrix

    def recording(net, *, query, gallery, **kwargs):
        for ds in (query, gallery):
            names = ds.dataset.features['label'].names
            seen.append({names[i] for i in column_array(ds.dataset, 'label')})
        return original(net, query=query, gallery=gallery, **kwargs)

    monkeypatch.setattr(trainer_module, 'compatibility_matrix', recording)
    run = tmp_path / 'run'
    args = ['-c', str(DEFAULT_RECIPE), '--dataset', 'imagefolder', '--data-dir', str(disjoint_folder),
            '--val-split', 'identities', '--val-fraction', '0.25', '--widths', '0.5', '1.0', '--embed-dim', '16',
            '--input-size', '3', '16', '16', '--max-train', 'none', '--batch-size', '8', '--epochs', '2',
            '--warmup-epochs', '0', '--no-progress', '--output', str(run)]
    assert main(args) == 0
    test_names = {f'unseen_{i}' for i in range(4)}
    assert len(seen) == 3 * 2  # two epochs of validation, then the final evaluation
    for names in seen[:4]:
        assert names and names.isdisjoint(test_names) and all(n.startswith('train_') for n in names)
    assert seen[4] == seen[5] == test_names
    metrics = json.loads((run / 'export' / 'metrics.json').read_text())
    validation = metrics['validation']
    assert validation['split'] == 'train' and validation['mode'] == 'identities'
    assert len(validation['classes']) == 3 and set(validation['classes']) <= {f'train_{i:02d}' for i in range(12)}
    assert validation['num_query'] == 6 and validation['num_gallery'] == 18
    assert metrics['data_sizes']['train_classes'] == 9  # the held-out identities are not trained on
    assert metrics['data_sizes']['train'] == 72


def test_a_dataset_too_small_to_validate_is_a_clear_error(tmp_path, disjoint_folder, capsys):
    args = ['-c', str(DEFAULT_RECIPE), '--dataset', 'imagefolder', '--data-dir', str(disjoint_folder),
            '--val-split', 'identities', '--val-fraction', '0.05', '--output', str(tmp_path / 'run'), '--no-progress']
    assert main(args) == 2
    err = capsys.readouterr().err
    assert 'holds out 1 of the 12 training identities' in err and 'val_split: images' in err


# --- the Fashion-MNIST open split ---

@needs_fashion_mnist
def test_fashion_mnist_open_split_trains_and_retrieves_disjoint_classes():
    data = load_retrieval_data('fashion_mnist_open')
    assert data.num_classes == 5 and data.name == 'fashion_mnist_open'
    assert set(np.unique(column_array(data.train, 'label'))) == set(range(5))
    assert len(data.train) == 30_000
    for split, size in ((data.query, 500), (data.gallery, 4_500)):
        assert set(np.unique(column_array(split, 'label'))) == set(range(5, 10)) and len(split) == size
    assert data.query.features['label'].names[5] == 'Sandal'


# --- glyph re-identification ---

def _small_faces():
    by_design = {}
    for face in GLYPH_FACES:
        by_design.setdefault(face.design, face)
    return list(by_design.values())[:3]


@needs_cjk_fonts
def test_glyph_builder_on_three_faces(tmp_path):
    faces = _small_faces()
    codepoints = range(0x4E00, 0x4E00 + 40)
    splits, info = build_glyph_dataset(faces, codepoints=codepoints, num_train=8, num_test=6, query_per_identity=2,
                                       image_size=32, seed=0)
    assert info['designs'] == [f.design for f in faces] and info['num_faces'] == 3
    train, query, gallery = splits['train'], splits['query'], splits['gallery']
    train_ids = set(train.features['label'].names)
    test_ids = set(query.features['label'].names)
    assert len(train_ids) == 8 and len(test_ids) == 6 and train_ids.isdisjoint(test_ids)  # open-set
    assert len(train) == 8 * 3 and len(query) + len(gallery) == 6 * 3 and len(query) == 6 * 2
    # each test identity: 2 queries from 2 designs, and its third design in the gallery
    q_labels, q_cams = column_array(query, 'label'), column_array(query, 'camera')
    g_labels, g_cams = column_array(gallery, 'label'), column_array(gallery, 'camera')
    for label in range(6):
        assert len(set(q_cams[q_labels == label])) == 2
        assert set(g_cams[g_labels == label]).isdisjoint(q_cams[q_labels == label])
    image = train[0]['image']
    assert image.size == (32, 32) and image.mode == 'L' and np.asarray(image).min() < 100  # ink on the canvas
    # only characters every face really holds count: identities are code points all three faces render
    assert all(0x4E00 <= ord(name) < 0x4E00 + 40 for name in train_ids | test_ids)
    again, _ = build_glyph_dataset(faces, codepoints=codepoints, num_train=8, num_test=6, query_per_identity=2,
                                   image_size=32, seed=0)
    assert again['train'][5]['image'].tobytes() == train[5]['image'].tobytes()  # seeded


@needs_cjk_fonts
def test_a_character_a_face_lacks_is_not_an_identity():
    from PIL import ImageFont
    from sfsc_timm.data.glyphs import covered_codepoints
    faces = _small_faces()
    # U+3400 (CJK extension A) is absent from some faces' cmaps, U+0041 'A' is not a CJK ideograph but every face
    # maps it; a private-use code point renders as .notdef everywhere
    covered = covered_codepoints(faces, [0x4E00, 0xE000])
    assert covered == [0x4E00]
    font = ImageFont.truetype(faces[0].path, 32, index=faces[0].index)
    assert render_glyph(font, '\u4e00', 32).size == (32, 32)


@needs_cjk_fonts
def test_glyphs_are_cached_on_disk(tmp_path):
    kwargs = dict(faces=_small_faces(), codepoints=range(0x4E00, 0x4E00 + 30), num_train=6, num_test=4,
                  query_per_identity=1, image_size=24)
    first = load_glyphs(tmp_path, **kwargs)
    assert first.name == 'glyphs' and first.num_classes == 6 and first.has_cameras
    (entry,) = [p for p in tmp_path.iterdir() if not p.name.startswith('.')]
    assert (entry / 'info.json').is_file()
    stamp = (entry / 'info.json').stat().st_mtime_ns
    second = load_glyphs(tmp_path, **kwargs)
    assert (entry / 'info.json').stat().st_mtime_ns == stamp  # loaded, not rebuilt
    assert column_array(second.gallery, 'label').tolist() == column_array(first.gallery, 'label').tolist()
    load_glyphs(tmp_path, **dict(kwargs, seed=1))
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith('.')]) == 2  # another key, another entry


def test_no_cjk_font_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='apt-get install -y fonts-noto-cjk'):
        load_glyphs(tmp_path, faces=[])


# --- the open-set remedy (docs/open_set.md, section 3) ---

@pytest.mark.parametrize('method, overrides, expected', [
    ('sfsc', {}, dict(evidence='softplus', kl_coef=0.0005, kl_anneal_epochs=0.0, lambda_align=0.0, priority='uniform',
                      widest_loss='cross_entropy', gradient_merge='mean')),
    ('sfsc_first_reading', {}, dict(evidence='softplus', kl_coef=1.0, kl_anneal_epochs=10.0, lambda_align=0.0,
                                    priority='uncertainty', widest_loss='uncertainty', gradient_merge='sum')),
    ('sfsc_exp', {}, dict(widest_loss='uncertainty', gradient_merge='sum')),  # the remedies keep the first reading's
    ('sfsc_exp', {}, dict(evidence='exp', kl_coef=0.0, lambda_align=0.0)),
    ('sfsc_ipd', {}, dict(evidence='exp', kl_coef=0.0, lambda_align=1.0)),
    ('sfsc_ce', {}, dict(evidence='exp', kl_coef=0.0, lambda_align=0.0, lambda_kd=0.5, priority='uncertainty')),
    ('sfsc_ce_ens', {}, dict(evidence='exp', kl_coef=0.0, lambda_kd=0.5, priority='relative')),
    ('sfsc_ce_ens', dict(priority='uncertainty'), dict(priority='uncertainty')),
    ('sfsc_exp', dict(kl_coef=0.5, evidence='softplus'), dict(evidence='softplus', kl_coef=0.5)),  # a set key wins
])
def test_unset_options_take_the_methods_own_settings(method, overrides, expected):
    from sfsc_timm.train.config import config_from_dict
    cfg = config_from_dict(dict(method=method, **overrides))
    assert {k: getattr(cfg.options, k) for k in expected} == expected


def test_in_place_distillation_is_refused_for_a_method_without_it():
    from sfsc_timm.train.config import ConfigError, config_from_dict
    with pytest.raises(ConfigError, match='lambda_align is not an option of method bct_s.* one of sfsc, sfsc_ce_ens'):
        config_from_dict(dict(method='bct_s', lambda_align=1.0))


@pytest.mark.parametrize('method,granularity', [('sfsc_exp', 'model'), ('sfsc_ce_ens', 'model'),
                                                ('sfsc_ce_ens', 'layer')])
def test_open_set_methods_train_on_an_open_split_and_log_each_width(tmp_path, disjoint_folder, method, granularity):
    run = tmp_path / 'run'
    args = ['-c', str(DEFAULT_RECIPE), '--dataset', 'imagefolder', '--data-dir', str(disjoint_folder),
            '--method', method, '--val-split', 'identities', '--val-fraction', '0.25', '--widths', '0.5', '1.0',
            '--embed-dim', '16', '--input-size', '3', '16', '16', '--projection-granularity', granularity,
            '--max-train', 'none', '--batch-size', '8', '--epochs', '1', '--warmup-epochs', '0', '--no-progress',
            '--output', str(run)]
    assert main(args) == 0
    epoch = json.loads((run / 'metrics.jsonl').read_text().splitlines()[-1])
    assert len(epoch['width_losses']) == len(epoch['priorities']) == len(epoch['uncertainties']) == 2
    # per-layer conflicts are logged whatever decides the projection; with 2 widths every pair involves the widest
    assert epoch['layer_pairs'] > 0
    assert 0 <= epoch['layer_conflicts_widest'] == epoch['layer_conflicts'] <= epoch['layer_pairs']
    if granularity == 'layer':  # 2 widths: each conflicting layer projects both widths' gradients, and only those
        assert epoch['conflicts'] == 2 * epoch['layer_conflicts']
    assert all(0.0 < u <= 1.0 for u in epoch['uncertainties'])
    metrics = json.loads((run / 'export' / 'metrics.json').read_text())
    options = metrics['recipe'][method]
    assert options['evidence'] == 'exp' and options['kl_coef'] == 0.0
    assert options['priority'] == ('relative' if method == 'sfsc_ce_ens' else 'uncertainty')
    if method == 'sfsc_ce_ens':  # the widest width's weight is held at 1
        assert epoch['priorities'][0] == pytest.approx(1.0)
    assert len(metrics['matrix']) == 2
