""" k-reciprocal re-ranking and average query expansion equal a reference written here from the definitions (Zhong
et al., CVPR 2017; fast-reid's aqe), independently of sfsc_timm/eval/reranking.py; and `sfsc-timm eval --rerank
--aqe` ranks by them. """
import json

import numpy as np
import pytest
import torch

from sfsc_timm.eval import rank_metrics_from_distances, retrieval_metrics
from sfsc_timm.eval.compatibility import Embeddings, compatibility_from_embeddings
from sfsc_timm.eval.reranking import (
    QueryExpansion, RerankOptions, average_query_expansion, k_reciprocal_distances, re_ranking,
)


def reference_rerank(dist, num_query, k1, k2, lambda_value):
    """The definitions, one item at a time, with Python sets; ``dist`` is the (N, N) matrix, queries first.

    Returns the (Q, G) re-ranked distances and how many items had R*(i) larger than R(i, k1).
    """
    n = len(dist)
    order = [sorted(range(n), key=lambda j: (dist[i][j], j)) for i in range(n)]

    def nearest(i, k):  # N(i, k): the k + 1 nearest, i included
        return order[i][:k + 1]

    def reciprocal(i, k):  # R(i, k)
        return {j for j in nearest(i, k) if i in nearest(j, k)}

    half = round(k1 / 2)
    v = np.zeros((n, n))
    expanded = 0
    for i in range(n):
        r = reciprocal(i, k1)
        r_star = set(r)
        for c in r:
            r_c = reciprocal(c, half)
            if len(r_c & r) >= 2 / 3 * len(r_c):
                r_star |= r_c
        expanded += r_star != r
        weights = {j: np.exp(-dist[i][j]) for j in r_star}
        total = sum(weights.values())
        for j, w in weights.items():
            v[i, j] = w / total
    v_qe = np.stack([v[order[i][:k2]].mean(axis=0) for i in range(n)])
    jaccard = np.array([[1 - np.minimum(v_qe[p], v_qe[g]).sum() / np.maximum(v_qe[p], v_qe[g]).sum()
                         for g in range(num_query, n)] for p in range(num_query)])
    return (1 - lambda_value) * jaccard + lambda_value * np.asarray(dist)[:num_query, num_query:], expanded


def reference_aqe(query, gallery, k, alpha):
    """q' = normalise(q + sum over the k most similar gallery items g of max(<q, g>, 0)^alpha g), one query at a
    time."""
    out = []
    for q in query:
        similarity = gallery @ q
        top = np.argsort(-similarity, kind='stable')[:k]
        expanded = q + sum(max(similarity[j], 0.0) ** alpha * gallery[j] for j in top)
        out.append(expanded / np.linalg.norm(expanded))
    return np.stack(out)


def clustered(num_ids=6, per_id=8, dim=16, noise=0.35, seed=0):
    """Unit embeddings around ``num_ids`` centres; labels; float32 as a model gives them."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids, dim))
    labels = np.repeat(np.arange(num_ids), per_id)
    x = centres[labels] + noise * rng.standard_normal((len(labels), dim)) * np.sqrt(dim) / 4
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return x, labels


def _split(x, labels, num_query):
    rng = np.random.default_rng(1)
    order = rng.permutation(len(x))
    return x[order[:num_query]], labels[order[:num_query]], x[order[num_query:]], labels[order[num_query:]]


@pytest.mark.parametrize('k1, k2, lambda_value', [(6, 3, 0.3), (20, 6, 0.3), (4, 1, 0.0), (5, 2, 1.0)])
def test_embeddings_rerank_equals_the_reference(k1, k2, lambda_value):
    x, labels = clustered()
    query, _, gallery, _ = _split(x, labels, num_query=7)
    items = np.concatenate([query, gallery]).astype(np.float64)
    dist = 1 - items @ items.T  # the cosine distance
    expected, expanded = reference_rerank(dist, len(query), k1, k2, lambda_value)
    got = k_reciprocal_distances(torch.from_numpy(query), torch.from_numpy(gallery), k1=k1, k2=k2,
                                 lambda_value=lambda_value)
    assert got.shape == (7, len(gallery)) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-6)
    if lambda_value < 1:
        assert expanded > 0  # the 2/3 expansion was exercised, not only R(i, k1)
        assert not np.allclose(expected, dist[:7, 7:])  # re-ranking changed something


def test_distance_matrix_rerank_equals_the_reference_in_float64():
    # any distance, not only the cosine one: Euclidean here, with the reference code's three-matrix interface
    x, labels = clustered(num_ids=5, per_id=7, seed=3)
    query, _, gallery, _ = _split(x.astype(np.float64), labels, num_query=5)

    def euclid(a, b):
        return np.sqrt(np.maximum(((a[:, None] - b[None]) ** 2).sum(-1), 0))
    got = re_ranking(euclid(query, gallery), euclid(query, query), euclid(gallery, gallery), k1=7, k2=3,
                     lambda_value=0.2)
    items = np.concatenate([query, gallery])
    expected, _ = reference_rerank(euclid(items, items), len(query), 7, 3, 0.2)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


def test_fewer_items_than_k1_takes_every_item():
    x, labels = clustered(num_ids=2, per_id=4)
    query, _, gallery, _ = _split(x, labels, num_query=2)
    items = np.concatenate([query, gallery]).astype(np.float64)
    expected, _ = reference_rerank(1 - items @ items.T, 2, 20, 6, 0.3)
    got = k_reciprocal_distances(query, gallery)  # the defaults: k1 = 20 > 8 items
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-6)


def test_rerank_helps_on_clustered_data():
    x, labels = clustered(num_ids=10, per_id=12, noise=0.6, seed=5)
    query, query_labels, gallery, gallery_labels = _split(x, labels, num_query=20)
    plain = retrieval_metrics(query=query, gallery=gallery, query_labels=query_labels, gallery_labels=gallery_labels)
    reranked = rank_metrics_from_distances(k_reciprocal_distances(query, gallery, k1=8, k2=3),
                                           query_labels=query_labels, gallery_labels=gallery_labels)
    assert reranked['mAP'] > plain['mAP']


@pytest.mark.parametrize('k, alpha', [(5, 3.0), (3, 0.0), (1, 1.0)])
def test_query_expansion_equals_the_reference(k, alpha):
    x, labels = clustered(seed=2)
    query, _, gallery, _ = _split(x, labels, num_query=6)
    got = average_query_expansion(query, gallery, k=k, alpha=alpha)
    expected = reference_aqe(query.astype(np.float64), gallery.astype(np.float64), k, alpha)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(6))


@pytest.mark.parametrize('make, message', [
    (lambda: RerankOptions(k1=0), 'k1 must be a positive integer'),
    (lambda: RerankOptions(lambda_value=1.5), r'lambda_value must be in \[0, 1\]'),
    (lambda: QueryExpansion(alpha=-1), 'alpha must be >= 0'),
    (lambda: QueryExpansion(k=2.5), 'k must be a positive integer'),
    (lambda: re_ranking(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((2, 2))), r'g_g_dist \(3, 3\)'),
])
def test_bad_parameters_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def _embeddings(features, labels):
    return Embeddings(torch.from_numpy(features), torch.from_numpy(labels), torch.full((len(labels),), -1))


def test_compatibility_matrix_with_rerank_and_aqe():
    x, labels = clustered(num_ids=8, per_id=10, noise=0.5)
    query, query_labels, gallery, gallery_labels = _split(x, labels, num_query=16)
    rng = np.random.default_rng(0)
    # a second "width": the same items slightly moved, so the two rows of the matrix differ
    narrow = {'q': query + 0.05 * rng.standard_normal(query.shape).astype(np.float32),
              'g': gallery + 0.05 * rng.standard_normal(gallery.shape).astype(np.float32)}
    queries = {0.5: _embeddings(narrow['q'], query_labels), 1.0: _embeddings(query, query_labels)}
    galleries = {0.5: _embeddings(narrow['g'], gallery_labels), 1.0: _embeddings(gallery, gallery_labels)}
    rerank, aqe = RerankOptions(k1=6, k2=3), QueryExpansion(k=3)
    result = compatibility_from_embeddings(queries, galleries, (0.5, 1.0), rerank=rerank, query_expansion=aqe)
    for q in (0.5, 1.0):
        for g in (0.5, 1.0):
            expanded = average_query_expansion(queries[q].features, galleries[g].features, options=aqe)
            expected = rank_metrics_from_distances(
                k_reciprocal_distances(expanded, galleries[g].features, options=rerank),
                query_labels=query_labels, gallery_labels=gallery_labels)
            assert result.metrics[f'{q:g}->{g:g}'] == expected
    plain = compatibility_from_embeddings(queries, galleries, (0.5, 1.0))
    assert plain.matrix != result.matrix


def test_eval_command_with_rerank_and_aqe(tmp_path, capsys):
    from sfsc_timm.eval import cli
    from test_eval_cli import _checkpoint, _query_gallery_folder

    data = _query_gallery_folder(tmp_path / 'camera', per_class=(2, 4))
    ckpt = _checkpoint(tmp_path)
    out = tmp_path / 'out'
    argv = [str(ckpt), '--data', f'imagefolder:{data}', '--output', str(out), '--rerank', '--rerank-k1', '4',
            '--rerank-k2', '2', '--aqe', '--aqe-k', '2']
    assert cli.main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert 'average query expansion k=2 alpha=3, then k-reciprocal re-ranking k1=4 k2=2 lambda=0.3' in printed
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['rerank'] == dict(k1=4, k2=2, lambda_value=0.3) and metrics['aqe'] == dict(k=2, alpha=3.0)
    assert cli.main([str(ckpt), '--data', f'imagefolder:{data}', '--output', str(tmp_path / 'plain')]) == 0
    plain = json.loads((tmp_path / 'plain' / 'metrics.json').read_text())
    assert 'rerank' not in plain and 'aqe' not in plain


@pytest.mark.parametrize('extra, message', [
    (['--rerank-k1', '10'], r'--rerank-k1 is a parameter of --rerank; add --rerank'),
    (['--aqe-alpha', '2'], r'--aqe-alpha is a parameter of --aqe; add --aqe'),
    (['--rerank', '--rerank-lambda', '2'], r'--rerank-lambda: lambda_value must be in \[0, 1\]'),
    (['--aqe', '--aqe-k', '0'], r'--aqe-k: k must be a positive integer'),
])
def test_eval_refuses_bad_reranking_flags_before_any_work(tmp_path, capsys, extra, message):
    from sfsc_timm.eval import cli
    assert cli.main(['/nonexistent/ckpt', '--output', str(tmp_path / 'o'), *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert __import__('re').search(message, err), err


@pytest.mark.parametrize('count', [30, 5])  # enough candidates for one joint problem; too few: one at a time
def test_each_query_among_its_own_candidates(count):
    from sfsc_timm.eval.reranking import rerank_each_query
    x, _ = clustered(num_ids=6, per_id=40, seed=7)
    rng = np.random.default_rng(0)
    query = torch.from_numpy(x[:5])
    candidates = torch.from_numpy(x[5:][rng.choice(len(x) - 5, (5, count), replace=False)])
    options = RerankOptions(k1=8, k2=3)
    got = rerank_each_query(query, candidates, options=options)
    expected = torch.stack([k_reciprocal_distances(query[b:b + 1], candidates[b], options=options)[0]
                            for b in range(5)])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
