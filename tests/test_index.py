""" sfsc-timm index: a gallery embedded at one width, searched with queries of another width of the same checkpoint,
queries of another checkpoint or size refused; add and remove under stable ids; every kind; re-ranking in search
equal to evaluation's; the folder written whole or not at all. """
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import timm
import torch
from PIL import Image

import sfsc_timm
from sfsc_timm.eval.reranking import QueryExpansion, RerankOptions, average_query_expansion, k_reciprocal_distances
from sfsc_timm.index import (
    GalleryIndex, IncompatibleEmbeddings, IndexSpec, MissingDependency, build_index, embeddings_from_array,
    read_embedding_file,
)
from sfsc_timm.index.cli import main as index_main
from sfsc_timm.inference import embed_images

pytest.importorskip('faiss')
ROOT = Path(__file__).resolve().parents[1]
SIZE = (3, 32, 32)


def _supernet(seed, embed_dim=24):
    torch.manual_seed(seed)
    net = timm.create_model('sfsc_resnet18', num_classes=4, widths=(0.25, 0.5, 1.0), embed_dim=embed_dim,
                            pretrained_cfg_overlay=dict(input_size=SIZE))
    with torch.no_grad():
        for width in net.widths:  # BatchNorm statistics of their own per width
            with net.width(width):
                net.train()(torch.randn(8, *SIZE) * (1 + width))
    return net.eval()


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """Embeddings written by sfsc-timm embed: a gallery at width 1.0, queries at 0.25 and 0.5 of the same checkpoint,
    queries of another checkpoint and of another embedding size, and a second part of the gallery."""
    root = tmp_path_factory.mktemp('index')
    rng = np.random.default_rng(0)
    images = root / 'images'
    for identity in range(6):  # six "identities", five views each: a base pattern plus noise
        base = rng.integers(0, 255, (32, 32, 3))
        for view in range(5):
            image = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
            (images / f'id{identity}').mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(images / f'id{identity}' / f'{view}.png')
    more = root / 'more'
    for view in range(4):
        (more / 'new').mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(more / 'new' / f'{view}.png')
    checkpoints = {}
    for name, seed, dim in (('ours', 0, 24), ('foreign', 1, 24), ('wide', 0, 32)):
        checkpoints[name] = sfsc_timm.save(_supernet(seed, dim), root / name)
    out = {}
    for key, checkpoint, source, width in (('gallery', 'ours', images, 1.0), ('q025', 'ours', images, 0.25),
                                           ('q05', 'ours', images, 0.5), ('more', 'ours', more, 0.5),
                                           ('foreign', 'foreign', images, 0.25), ('wide', 'wide', images, 1.0)):
        out[key] = root / f'{key}.parquet'
        embed_images(checkpoints[checkpoint], source, out[key], width=width, batch_size=16, progress=False)
    out['root'] = root
    return out


def _exact(queries, gallery, k):
    scores = queries.vectors @ gallery.vectors.T
    order = np.argsort(-scores, axis=1, kind='stable')[:, :k]
    return order, np.take_along_axis(scores, order, 1)


def test_the_checkpoint_identity_is_one_per_checkpoint_whatever_the_width(files):
    ids = {key: read_embedding_file(files[key]).metadata['checkpoint_id'] for key in
           ('gallery', 'q025', 'q05', 'foreign', 'wide')}
    assert ids['gallery'] == ids['q025'] == ids['q05'] and ids['gallery'].startswith('sha256:')
    assert len({ids['gallery'], ids['foreign'], ids['wide']}) == 3


def test_build_then_search_from_another_width(files, tmp_path, capsys):
    assert index_main(['build', str(files['gallery']), '--output', str(tmp_path / 'gallery')]) == 0
    assert 'wrote' in capsys.readouterr().out
    meta = json.loads((tmp_path / 'gallery' / 'index.json').read_text())
    gallery = read_embedding_file(files['gallery'])
    assert {k: meta[k] for k in ('kind', 'embed_dim', 'widths', 'count', 'next_item_id', 'id_column', 'metric')} == \
        dict(kind='flat', embed_dim=24, widths=[1.0], count=30, next_item_id=30, id_column='path',
             metric='inner_product')
    assert meta['checkpoint_id'] == gallery.metadata['checkpoint_id'] and meta['model'] == gallery.metadata['model']
    assert meta['faiss_version'] == __import__('faiss').__version__
    assert sorted(p.name for p in (tmp_path / 'gallery').iterdir()) == ['index.faiss', 'index.json', 'items.parquet']

    out = tmp_path / 'hits.parquet'
    assert index_main(['search', str(tmp_path / 'gallery'), str(files['q025']), '--k', '4', '--output', str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r'searched 30 queries \(width 0.25\) in .*flat, 30 items, width 1, D=24', printed), printed
    table = pq.read_table(out)
    assert table.column_names == ['query_path', 'rank', 'item_id', 'gallery_path', 'score']
    queries = read_embedding_file(files['q025'])
    order, scores = _exact(queries, gallery, 4)
    assert table.column('rank').to_pylist() == [1, 2, 3, 4] * 30
    assert table.column('query_path').to_pylist() == [p for p in queries.ids.to_pylist() for _ in range(4)]
    assert table.column('item_id').to_pylist() == order.reshape(-1).tolist()  # item ids: the build's row numbers
    assert table.column('gallery_path').to_pylist() == [gallery.ids[int(i)].as_py() for i in order.reshape(-1)]
    np.testing.assert_allclose(table.column('score').to_numpy(), scores.reshape(-1), atol=1e-5)
    searched = json.loads(table.schema.metadata[b'sfsc'])
    assert searched['query_width'] == 0.25 and searched['gallery_widths'] == [1.0] and searched['k'] == 4


@pytest.mark.parametrize('queries, pattern', [
    ('foreign', r'queries .*foreign.parquet come from .*\(checkpoint [0-9a-f]{12}, width 0.25\), the index .* from '
                r'.*\(checkpoint [0-9a-f]{12}, width 1\): embeddings of another checkpoint are not comparable.*'
                r'--allow-other-checkpoint'),
    ('wide', r'queries .*wide.parquet embed into D=32 .*, but the index .* holds D=24 embeddings .*: embed them with '
             r'the index\'s checkpoint'),
])
def test_queries_of_another_checkpoint_or_size_are_refused_naming_both(files, tmp_path, capsys, queries, pattern):
    build_index(files['gallery'], tmp_path / 'gallery')
    argv = ['search', str(tmp_path / 'gallery'), str(files[queries]), '--output', str(tmp_path / 'hits.parquet')]
    assert index_main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(pattern, err), err
    assert not (tmp_path / 'hits.parquet').exists()
    if queries == 'foreign':  # models trained compatible with separate weights (e.g. BCT): the user says so
        assert index_main(argv + ['--allow-other-checkpoint']) == 0
        assert 'note: queries' in capsys.readouterr().out
    else:  # another size can never be searched
        assert index_main(argv + ['--allow-other-checkpoint']) == 2


def test_embeddings_without_an_identity_are_indexed_and_their_search_needs_the_flag(files, tmp_path, capsys):
    # a file of an older sfsc-timm embed: the same, without checkpoint_id in its metadata
    old = tmp_path / 'old.parquet'
    table = pq.read_table(files['gallery'])
    meta = json.loads(table.schema.metadata[b'sfsc'])
    del meta['checkpoint_id']
    pq.write_table(table.replace_schema_metadata({b'sfsc': json.dumps(meta).encode()}), old)
    assert index_main(['build', str(old), '--output', str(tmp_path / 'gallery')]) == 0
    assert json.loads((tmp_path / 'gallery' / 'index.json').read_text())['checkpoint_id'] is None
    argv = ['search', str(tmp_path / 'gallery'), str(files['q025']), '--output', str(tmp_path / 'h.parquet')]
    assert index_main(argv) == 2
    assert re.search(r'the index .*gallery records no checkpoint identity \(written by an older sfsc-timm embed\)',
                     capsys.readouterr().err)
    assert index_main(argv + ['--allow-other-checkpoint']) == 0


def _clustered(count, dim=32, clusters=40, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, count)] + 0.5 * rng.standard_normal((count, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _synthetic(vectors, first=0, width=1.0, checkpoint='sha256:test'):
    ids = [f'img/{i:05d}.png' for i in range(first, first + len(vectors))]
    return embeddings_from_array(vectors, ids, dict(model='test', checkpoint_id=checkpoint, width=width,
                                                    id_column='path'))


KIND_SPECS = {
    'flat': IndexSpec('flat'),
    'ivf-flat': IndexSpec('ivf-flat', nlist=16, nprobe=8),
    'ivf-pq': IndexSpec('ivf-pq', nlist=8, nprobe=8, pq_m=8, pq_nbits=6),
    'hnsw': IndexSpec('hnsw', hnsw_m=16, ef_search=64),
}


@pytest.mark.parametrize('kind', list(KIND_SPECS))
def test_every_kind_adds_and_removes_under_stable_ids(tmp_path, kind):
    vectors = _clustered(3000)
    index = build_index(_synthetic(vectors[:2500]), tmp_path / 'g', KIND_SPECS[kind])
    added = index.add(_synthetic(vectors[2500:], first=2500, width=0.5))
    assert added.tolist() == list(range(2500, 3000))
    removed_paths = [f'img/{i:05d}.png' for i in (3, 7, 2600)]
    assert index.remove(removed_paths) == 3
    assert index.remove(item_ids=[11]) == 1

    reopened = GalleryIndex.open(tmp_path / 'g')
    assert len(reopened) == 2996 and reopened.meta['next_item_id'] == 3000 and reopened.meta['widths'] == [0.5, 1.0]
    assert [e['operation'] for e in reopened.meta['history']] == ['build', 'add', 'remove', 'remove']
    kept = np.setdiff1d(np.arange(3000), [3, 7, 11, 2600])
    assert reopened.item_ids.tolist() == kept.tolist()  # nobody was renumbered
    queries = _synthetic(_clustered(200, seed=1), width=0.25)
    result = reopened.search(queries, k=10)
    assert not np.isin(result.item_ids, [3, 7, 11, 2600]).any()
    # each hit's gallery id is its own: item id i was built from img/i.png
    hits = result.to_table()
    assert hits.column('gallery_path').to_pylist() == [f'img/{i:05d}.png' for i in hits.column('item_id').to_pylist()]
    exact_scores = queries.vectors @ vectors[kept].T
    exact = kept[np.argsort(-exact_scores, axis=1)[:, :10]]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(result.item_ids, exact)])
    assert recall >= {'flat': 1.0, 'ivf-flat': 0.9, 'ivf-pq': 0.3, 'hnsw': 0.9}[kind], recall  # random: 0.003
    if kind != 'ivf-pq':  # stored vectors are exact, so are the scores
        np.testing.assert_allclose(reopened.vectors(np.array([2999])), vectors[2999:], atol=1e-6)


def test_add_refuses_ids_already_there_and_remove_unknown_ids(tmp_path, files, capsys):
    build_index(files['gallery'], tmp_path / 'g')
    assert index_main(['add', str(tmp_path / 'g'), str(files['q05'])]) == 2  # the same images at another width
    assert re.search(r'30 ids are already in the index .* remove them first', capsys.readouterr().err)
    assert index_main(['add', str(tmp_path / 'g'), str(files['more'])]) == 0
    assert 'added 4 items, item ids 30..33' in capsys.readouterr().out
    assert index_main(['remove', str(tmp_path / 'g'), 'new/0.png', 'nope.png']) == 2
    assert re.search(r"1 of the items to remove are not in the index .*\('nope.png'\); nothing was removed",
                     capsys.readouterr().err)
    assert index_main(['remove', str(tmp_path / 'g'), '--ids-from', str(files['more'])]) == 0
    assert len(GalleryIndex.open(tmp_path / 'g')) == 30
    assert index_main(['add', str(tmp_path / 'g'), str(files['foreign'])]) == 2
    assert 'embeddings of another checkpoint are not comparable' in capsys.readouterr().err


def test_a_stale_handle_is_refused_after_another_change(tmp_path):
    vectors = _clustered(100)
    build_index(_synthetic(vectors[:50]), tmp_path / 'g')
    first, second = GalleryIndex.open(tmp_path / 'g'), GalleryIndex.open(tmp_path / 'g')
    first.add(_synthetic(vectors[50:60], first=50))
    with pytest.raises(Exception, match='was changed by another process since it was opened'):
        second.add(_synthetic(vectors[60:], first=60))
    assert len(GalleryIndex.open(tmp_path / 'g')) == 60


def test_rerank_and_aqe_in_search_equal_evaluation(tmp_path):
    gallery = _synthetic(_clustered(300, dim=16, clusters=12, seed=3))
    queries = _synthetic(_clustered(20, dim=16, clusters=12, seed=4), width=0.25)
    index = build_index(gallery, tmp_path / 'g')
    options = RerankOptions(k1=8, k2=3, lambda_value=0.3)
    result = index.search(queries, k=10, rerank=options, rerank_candidates=300)  # every item is a candidate
    for row in range(20):
        # per query, with the whole gallery: the same definition evaluation uses (sfsc_timm.eval.reranking)
        expected = k_reciprocal_distances(queries.vectors[row:row + 1], gallery.vectors, options=options)[0]
        order = torch.argsort(expected, stable=True)[:10].numpy()
        assert result.item_ids[row].tolist() == order.tolist()
        np.testing.assert_allclose(result.rerank_distances[row], expected.numpy()[order], atol=1e-5)
    plain = index.search(queries, k=10)
    assert (plain.item_ids != result.item_ids).any()  # re-ranking moved something

    aqe = QueryExpansion(k=4, alpha=3.0)
    expanded = index.search(queries, k=10, query_expansion=aqe)
    exact = average_query_expansion(queries.vectors, gallery.vectors, options=aqe).numpy()
    order, scores = _exact(_synthetic(exact), gallery, 10)
    assert expanded.item_ids.tolist() == order.tolist()
    np.testing.assert_allclose(expanded.scores, scores, atol=1e-5)


def test_search_rerank_from_the_command_line(files, tmp_path, capsys):
    build_index(files['gallery'], tmp_path / 'g', IndexSpec('hnsw'))
    out = tmp_path / 'hits.parquet'
    argv = ['search', str(tmp_path / 'g'), str(files['q025']), '--output', str(out), '--k', '5', '--rerank',
            '--rerank-k1', '6', '--rerank-k2', '2', '--aqe', '--aqe-k', '3', '--ef-search', '32']
    assert index_main(argv) == 0, capsys.readouterr().err
    table = pq.read_table(out)
    assert table.column_names[-1] == 'rerank_distance' and table.num_rows == 150
    searched = json.loads(table.schema.metadata[b'sfsc'])
    assert searched['rerank'] == dict(k1=6, k2=2, lambda_value=0.3, candidates=30) and searched['ef_search'] == 32
    assert searched['aqe'] == dict(k=3, alpha=3.0)


def test_a_killed_build_leaves_the_previous_index_intact(files, tmp_path):
    target = tmp_path / 'g'
    build_index(files['more'], target)  # the previous index: 4 items
    # a build killed (SIGKILL: no clean-up runs) after writing index.faiss into its staging folder
    script = (
        'import os, signal, sys\n'
        'import pyarrow.parquet as pq\n'
        'real = pq.write_table\n'
        'def die(*args, **kwargs):\n'
        '    real(*args, **kwargs)\n'
        '    os.kill(os.getpid(), signal.SIGKILL)\n'
        'pq.write_table = die\n'
        'from sfsc_timm.index.cli import main\n'
        'main(sys.argv[1:])\n')
    done = subprocess.run([sys.executable, '-c', script, 'build', str(files['gallery']), '--output', str(target)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    left = [p.name for p in tmp_path.iterdir() if p.name != 'g']
    assert len(left) == 1 and '.sfsc-tmp.' in left[0]  # the half-built folder, beside the index
    assert len(GalleryIndex.open(target)) == 4  # the previous index, whole
    build_index(files['gallery'], target)  # the next build removes what the killed one left
    assert [p.name for p in tmp_path.iterdir()] == ['g'] and len(GalleryIndex.open(target)) == 30


def test_a_folder_with_the_users_files_is_not_replaced(files, tmp_path, capsys):
    taken = tmp_path / 'photos'
    taken.mkdir()
    (taken / 'holiday.jpg').write_bytes(b'mine')
    argv = ['build', str(files['gallery']), '--output', str(taken)]
    assert index_main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(r'photos holds files this writer does not write \(holiday.jpg\).*pass --force to replace it, or '
                     r'another --output', err), err
    assert (taken / 'holiday.jpg').read_bytes() == b'mine'
    (tmp_path / 'file').write_text('x')
    assert index_main(['build', str(files['gallery']), '--output', str(tmp_path / 'file')]) == 2
    assert 'is a file' in capsys.readouterr().err
    assert index_main(argv + ['--force']) == 0 and not (taken / 'holiday.jpg').exists()


@pytest.mark.parametrize('argv, pattern', [
    (['build', '{gallery}', '--output', '{tmp}/g', '--nlist', '8'],
     r'--nlist is a parameter of ivf-flat and ivf-pq, not of flat; drop it or choose --kind ivf-flat'),
    (['build', '{gallery}', '--output', '{tmp}/g', '--kind', 'ivf-flat', '--nlist', '64'],
     r'64 lists \(--nlist\) need at least 64 training vectors, but there are 30'),
    (['build', '{gallery}', '--output', '{tmp}/g', '--kind', 'ivf-pq', '--pq-m', '5', '--nlist', '1'],
     r'--pq-m 5 does not divide the embedding size D=24'),
    (['build', '{tmp}/nothing.parquet', '--output', '{tmp}/g'], r'nothing.parquet does not exist'),
    (['build', '{notembed}', '--output', '{tmp}/g'], r'was not written by sfsc-timm embed'),
    (['search', '{tmp}', '{q025}', '--output', '{tmp}/h.parquet'], r'is not an index folder \(no index.json\)'),
    (['search', '{index}', '{q025}', '--output', '{tmp}/h.csv'], r'--output .*h.csv must end in .parquet'),
    (['search', '{index}', '{q025}', '--output', '{tmp}/h.parquet', '--k', '0'], r'--k must be an integer >= 1'),
    (['search', '{index}', '{q025}', '--output', '{tmp}/h.parquet', '--nprobe', '4'],
     r'--nprobe is a search parameter of ivf-flat and ivf-pq indexes; this one is flat'),
    (['search', '{index}', '{q025}', '--output', '{tmp}/h.parquet', '--rerank-candidates', '50'],
     r'--rerank-candidates is a parameter of --rerank'),
    (['remove', '{index}'], r'name the items to remove'),
    (['info', '{tmp}/missing'], r'index .*missing does not exist; build one with sfsc-timm index build'),
])
def test_bad_input_is_one_line(files, tmp_path, capsys, argv, pattern):
    build_index(files['gallery'], tmp_path / 'index')
    pq.write_table(pq.read_table(files['gallery']).replace_schema_metadata({}), tmp_path / 'notembed.parquet')
    values = dict(gallery=files['gallery'], q025=files['q025'], tmp=tmp_path, index=tmp_path / 'index',
                  notembed=tmp_path / 'notembed.parquet')
    assert index_main([a.format(**values) for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(pattern, err), err


def test_info(files, tmp_path, capsys):
    build_index(files['gallery'], tmp_path / 'g', IndexSpec('ivf-flat', nlist=2))
    assert index_main(['info', str(tmp_path / 'g')]) == 0
    out = capsys.readouterr().out
    assert re.search(r'ivf-flat, 30 items, width 1, D=24', out) and "'nlist': 2, 'nprobe': 1" in out
    assert 'trained on: 30 vectors (seed 0)' in out
    assert index_main(['info', str(tmp_path / 'g'), '--json']) == 0
    assert json.loads(capsys.readouterr().out)['parameters']['nlist'] == 2


def test_without_faiss_the_message_names_the_extra(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'faiss', None)  # what `import faiss` does when it is not installed
    with pytest.raises(MissingDependency, match=re.escape('pip install sfsc-timm[index]')):
        build_index(files['gallery'], tmp_path / 'g')
    assert index_main(['info', str(tmp_path)]) == 2
    assert 'pip install sfsc-timm[index]' in capsys.readouterr().err


def test_python_api_refuses_arrays_without_an_identity(tmp_path):
    vectors = _clustered(50)
    index = build_index(_synthetic(vectors), tmp_path / 'g')
    with pytest.raises(IncompatibleEmbeddings, match='records no checkpoint identity'):
        index.search(vectors[:3])
    result = index.search(vectors[:3], k=1, allow_other_checkpoint=True)
    assert result.item_ids[:, 0].tolist() == [0, 1, 2]
    assert os.path.isdir(tmp_path / 'g')
