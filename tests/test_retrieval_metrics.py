""" Retrieval metrics: hand-computed cases, agreement with a plain per-query reference, and input errors. """
import math

import numpy as np
import pytest
import torch

from sfsc_timm.eval import rank_metrics_from_distances, retrieval_metrics


def reference_metrics(distances, query_labels, gallery_labels, query_cameras=None, gallery_cameras=None,
                      query_ids=None, gallery_ids=None, max_rank=10):
    """Straightforward per-query loop in numpy: the definition the fast implementation must match."""
    average_precisions, inverse_negative_penalties, skipped = [], [], 0
    cmc_hits = np.zeros(max_rank)
    for i in range(len(query_labels)):
        keep = np.ones(len(gallery_labels), dtype=bool)
        if query_cameras is not None:
            keep &= ~((gallery_labels == query_labels[i]) & (gallery_cameras == query_cameras[i]))
        if query_ids is not None:
            keep &= gallery_ids != query_ids[i]
        matches = gallery_labels[keep] == query_labels[i]
        if not matches.any():
            skipped += 1
            continue
        order = np.lexsort((matches, distances[i, keep]))  # by distance, non-matches first among equal distances
        positive_ranks = np.flatnonzero(matches[order]) + 1
        average_precisions.append(np.mean(np.arange(1, len(positive_ranks) + 1) / positive_ranks))
        inverse_negative_penalties.append(len(positive_ranks) / positive_ranks[-1])
        cmc_hits += positive_ranks[0] <= np.arange(1, max_rank + 1)
    num_valid = len(average_precisions)
    return {
        'mAP': float(np.mean(average_precisions)), 'cmc': list(cmc_hits / num_valid),
        'mINP': float(np.mean(inverse_negative_penalties)),
        'num_valid_queries': num_valid, 'num_skipped_queries': skipped,
    }


def assert_metrics_close(actual, expected, tol=1e-9):
    assert actual['num_valid_queries'] == expected['num_valid_queries']
    assert actual['num_skipped_queries'] == expected['num_skipped_queries']
    assert actual['mAP'] == pytest.approx(expected['mAP'], abs=tol)
    assert actual['mINP'] == pytest.approx(expected['mINP'], abs=tol)
    assert actual['cmc'] == pytest.approx(expected['cmc'], abs=tol)


# ---- hand-computed cases -------------------------------------------------------------------------------------------

def test_two_queries_by_hand():
    # query 0 (label 0): ranking g0 neg, g1 POS, g2 neg, g3 POS, g4 neg -> positives at ranks 2 and 4
    #   AP = (1/2 + 2/4) / 2 = 0.5; first hit at rank 2; INP = 2 positives / rank 4 = 0.5
    # query 1 (label 2): ranking g4 POS first, its only positive -> AP = 1, hit at rank 1, INP = 1/1 = 1
    # mAP = (0.5 + 1) / 2 = 0.75; CMC@1 = 1/2, CMC@2 = CMC@3 = 2/2; mINP = (0.5 + 1) / 2 = 0.75
    result = rank_metrics_from_distances(
        [[0.1, 0.2, 0.3, 0.4, 0.5],
         [0.5, 0.4, 0.3, 0.2, 0.1]],
        query_labels=[0, 2], gallery_labels=[1, 0, 1, 0, 2], max_rank=3)
    assert result['mAP'] == pytest.approx(0.75)
    assert result['cmc'] == pytest.approx([0.5, 1.0, 1.0])
    assert result['mINP'] == pytest.approx(0.75)
    assert (result['num_valid_queries'], result['num_skipped_queries']) == (2, 0)


def test_camera_rule_by_hand():
    # query: label 0, camera 0. Gallery by distance:
    #   g0 label 0 cam 0 -> same identity and camera: ignored
    #   g1 label 1 cam 0 -> other identity, same camera: stays a negative (rank 1)
    #   g2 label 0 cam 1 -> positive (rank 2)
    #   g3 label 0 cam 0 -> ignored
    #   g4 label 0 cam 2 -> positive (rank 3)
    # AP = (1/2 + 2/3) / 2 = 7/12; CMC@1 = 0, CMC@2 = 1; INP = 2 / 3
    distances = [[0.1, 0.2, 0.3, 0.4, 0.5]]
    labels = dict(query_labels=[0], gallery_labels=[0, 1, 0, 0, 0])
    result = rank_metrics_from_distances(
        distances, **labels, query_cameras=[0], gallery_cameras=[0, 0, 1, 0, 2], max_rank=3)
    assert result['mAP'] == pytest.approx(7 / 12)
    assert result['cmc'] == pytest.approx([0.0, 1.0, 1.0])
    assert result['mINP'] == pytest.approx(2 / 3)

    # without cameras nothing is ignored: POS r1, neg r2, POS r3, POS r4, POS r5
    #   AP = (1/1 + 2/3 + 3/4 + 4/5) / 4 = (60 + 40 + 45 + 48) / 60 / 4 = 193/240; INP = 4/5
    result = rank_metrics_from_distances(distances, **labels, max_rank=3)
    assert result['mAP'] == pytest.approx(193 / 240)
    assert result['cmc'] == pytest.approx([1.0, 1.0, 1.0])
    assert result['mINP'] == pytest.approx(4 / 5)


def test_ties_put_negatives_first_by_hand():
    # g0 (POS) and g1 (neg) are both at 0.2: the tie rule ranks the negative first -> neg r1, POS r2, POS r3 (g2)
    # AP = (1/2 + 2/3) / 2 = 7/12; CMC@1 = 0 (no credit from a tie); INP = 2/3
    labels = np.array([0, 1, 0])
    distances = np.array([[0.2, 0.2, 0.5]])
    result = rank_metrics_from_distances(distances, query_labels=[0], gallery_labels=labels, max_rank=2)
    assert result['mAP'] == pytest.approx(7 / 12)
    assert result['cmc'] == pytest.approx([0.0, 1.0])
    assert result['mINP'] == pytest.approx(2 / 3)
    # the rule does not depend on gallery order
    for order in ([1, 0, 2], [2, 1, 0], [2, 0, 1]):
        permuted = rank_metrics_from_distances(
            distances[:, order], query_labels=[0], gallery_labels=labels[order], max_rank=2)
        assert permuted == result


def test_ties_between_positives_and_collapsed_embeddings():
    # two positives tied at 0.1 take ranks 1 and 2 in either order: AP = (1/1 + 2/2) / 2 = 1
    result = rank_metrics_from_distances([[0.1, 0.1, 0.3]], query_labels=[0], gallery_labels=[0, 0, 1], max_rank=1)
    assert result['mAP'] == pytest.approx(1.0) and result['cmc'] == [1.0] and result['mINP'] == pytest.approx(1.0)
    # all embeddings identical (a collapsed model): every item is tied, negatives first: neg r1, neg r2, POS r3
    # AP = 1/3, CMC@1 = 0, INP = 1/3 -- a collapsed model does not get lucky from the gallery order
    result = retrieval_metrics(query=np.ones((1, 4)), gallery=np.ones((3, 4)), query_labels=[0],
                               gallery_labels=[0, 1, 2], max_rank=3)
    assert result['mAP'] == pytest.approx(1 / 3)
    assert result['cmc'] == pytest.approx([0.0, 0.0, 1.0])


def test_self_match_exclusion_by_hand():
    # the query is also gallery item g0 (sample id 5, distance 0). Without ids: POS r1 (itself), neg r2, POS r3
    #   AP = (1/1 + 2/3) / 2 = 5/6
    # with ids g0 is ignored: neg r1 (g2), POS r2 (g1) -> AP = 1/2, CMC@1 = 0, INP = 1/2
    distances = [[0.0, 0.3, 0.1]]
    labels = dict(query_labels=[0], gallery_labels=[0, 0, 1])
    assert rank_metrics_from_distances(distances, **labels)['mAP'] == pytest.approx(5 / 6)
    result = rank_metrics_from_distances(distances, **labels, query_ids=[5], gallery_ids=[5, 6, 7], max_rank=2)
    assert result['mAP'] == pytest.approx(0.5)
    assert result['cmc'] == pytest.approx([0.0, 1.0])
    assert result['mINP'] == pytest.approx(0.5)
    # the sample-id rule holds whatever the labels say: g0 shares the query's id but carries another label; it is
    # ignored rather than counted as a negative -> POS r1 -> AP = 1 (with cameras too)
    result = rank_metrics_from_distances([[0.0, 0.3]], query_labels=[0], gallery_labels=[1, 0], query_ids=[5],
                                         gallery_ids=[5, 6], query_cameras=[0], gallery_cameras=[1, 1])
    assert result['mAP'] == 1.0


def test_self_match_with_shared_embeddings():
    # query set = gallery set (leave-one-out retrieval); unit vectors at angles 0, 10, 90, 100 degrees
    # labels 0, 0, 1, 1: each item's nearest other item has its label -> every query: AP = 1, rank-1 hit
    angles = np.deg2rad([0., 10., 90., 100.])
    embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    ids = np.arange(4)
    result = retrieval_metrics(query=embeddings, gallery=embeddings, query_labels=[0, 0, 1, 1],
                               gallery_labels=[0, 0, 1, 1], query_ids=ids, gallery_ids=ids, max_rank=1)
    assert result == {'mAP': 1.0, 'cmc': [1.0], 'mINP': 1.0, 'num_valid_queries': 4, 'num_skipped_queries': 0}


def test_skipped_queries_are_counted_by_hand():
    # q0 (label 0, cam 0): g1 is its only positive (cam 1): neg r1 (g0), POS r2 -> AP = 1/2, INP = 1/2
    # q1 (label 9): no gallery item has label 9 -> skipped
    # q2 (label 2, cam 3): its only same-label item g2 is also cam 3 -> ignored -> skipped
    # averages over q0 only: mAP = 1/2, CMC = [0, 1], mINP = 1/2; 1 valid, 2 skipped
    result = rank_metrics_from_distances(
        [[0.1, 0.2, 0.3],
         [0.1, 0.2, 0.3],
         [0.3, 0.2, 0.1]],
        query_labels=[0, 9, 2], gallery_labels=[1, 0, 2],
        query_cameras=[0, 0, 3], gallery_cameras=[0, 1, 3], max_rank=2)
    assert result == {'mAP': 0.5, 'cmc': [0.0, 1.0], 'mINP': 0.5, 'num_valid_queries': 1, 'num_skipped_queries': 2}


def test_no_valid_query_raises():
    with pytest.raises(ValueError, match='None of the 2 queries has a positive'):
        rank_metrics_from_distances([[0.1, 0.2], [0.3, 0.4]], query_labels=[7, 8], gallery_labels=[0, 1])


def test_embeddings_by_hand_and_scale_invariance():
    # query (1, 0); gallery (1, 0) label 1 -> d 0; (4, 3) = 5 * (0.8, 0.6) label 0 -> d = 1 - 0.8 = 0.2;
    # (0, 1) label 0 -> d 1; (-1, 0) label 2 -> d 2. Ranking: neg, POS, POS, neg
    # AP = (1/2 + 2/3) / 2 = 7/12; CMC@1 = 0; INP = 2/3
    result = retrieval_metrics(query=torch.tensor([[3., 0.]]), gallery=np.array([[1., 0.], [4., 3.], [0., 1.],
                                                                                 [-1., 0.]]),
                               query_labels=torch.tensor([0]), gallery_labels=np.array([1, 0, 0, 2]), max_rank=3)
    assert result['mAP'] == pytest.approx(7 / 12)
    assert result['cmc'] == pytest.approx([0.0, 1.0, 1.0])
    assert result['mINP'] == pytest.approx(2 / 3)


def test_cmc_longer_than_gallery():
    # 2 gallery items, positive at rank 2: CMC stays 1 beyond the end of the gallery
    result = rank_metrics_from_distances([[0.1, 0.2]], query_labels=[0], gallery_labels=[1, 0], max_rank=4)
    assert result['cmc'] == [0.0, 1.0, 1.0, 1.0]


def test_string_labels_and_cameras():
    # same numbers as test_camera_rule_by_hand, with string ids
    result = rank_metrics_from_distances(
        [[0.1, 0.2, 0.3, 0.4, 0.5]], query_labels=['p0'], gallery_labels=['p0', 'p1', 'p0', 'p0', 'p0'],
        query_cameras=['c0'], gallery_cameras=['c0', 'c0', 'c1', 'c0', 'c2'], max_rank=3)
    assert result['mAP'] == pytest.approx(7 / 12)


# ---- agreement with the reference on random data ----------------------------------------------------------------

def random_retrieval_set(seed, num_query=37, num_gallery=211, dim=16, num_ids=12, num_cameras=3):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids, dim))
    query_labels = rng.integers(0, num_ids, num_query)
    gallery_labels = rng.integers(0, num_ids, num_gallery)
    return dict(
        query=(centres[query_labels] + 1.5 * rng.standard_normal((num_query, dim))).astype(np.float32),
        gallery=(centres[gallery_labels] + 1.5 * rng.standard_normal((num_gallery, dim))).astype(np.float32),
        query_labels=query_labels, gallery_labels=gallery_labels,
        query_cameras=rng.integers(0, num_cameras, num_query),
        gallery_cameras=rng.integers(0, num_cameras, num_gallery))


def float64_cosine_distances(query, gallery):
    query = query / np.linalg.norm(query, axis=1, keepdims=True)
    gallery = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    return 1. - query.astype(np.float64) @ gallery.astype(np.float64).T


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('use_cameras', [False, True])
@pytest.mark.parametrize('chunk_size', [5, 16, None])
def test_embeddings_agree_with_reference(seed, use_cameras, chunk_size):
    data = random_retrieval_set(seed)
    if not use_cameras:
        data.pop('query_cameras'), data.pop('gallery_cameras')
    result = retrieval_metrics(**data, max_rank=10, chunk_size=chunk_size)
    expected = reference_metrics(
        float64_cosine_distances(data['query'], data['gallery']), data['query_labels'], data['gallery_labels'],
        data.get('query_cameras'), data.get('gallery_cameras'), max_rank=10)
    # float32 vs float64 distances: same ranking here (no near ties), so only float rounding of the averages
    assert_metrics_close(result, expected, tol=1e-9)


@pytest.mark.parametrize('seed', [3, 4])
def test_shared_samples_agree_with_reference(seed):
    # gallery = all samples, queries = a subset of them, sample ids remove each query's own copy
    data = random_retrieval_set(seed, num_query=60, num_gallery=60)
    gallery, labels, cameras = data['gallery'], data['gallery_labels'], data['gallery_cameras']
    query_rows = np.arange(0, 60, 3)
    ids = np.arange(60) + 1000
    result = retrieval_metrics(
        query=gallery[query_rows], gallery=gallery, query_labels=labels[query_rows], gallery_labels=labels,
        query_cameras=cameras[query_rows], gallery_cameras=cameras, query_ids=ids[query_rows], gallery_ids=ids,
        chunk_size=7)
    expected = reference_metrics(
        float64_cosine_distances(gallery[query_rows], gallery), labels[query_rows], labels, cameras[query_rows],
        cameras, ids[query_rows], ids)
    assert_metrics_close(result, expected)


@pytest.mark.parametrize('seed', [0, 1, 2, 3])
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_heavily_tied_distances_agree_with_reference(seed, dtype):
    # distances rounded to one decimal: most positives share their distance with negatives and other positives
    rng = np.random.default_rng(seed)
    num_query, num_gallery = 23, 97
    distances = np.round(rng.uniform(0, 1, (num_query, num_gallery)), 1).astype(dtype)
    query_labels, gallery_labels = rng.integers(0, 6, num_query), rng.integers(0, 6, num_gallery)
    query_cameras, gallery_cameras = rng.integers(0, 2, num_query), rng.integers(0, 2, num_gallery)
    result = rank_metrics_from_distances(
        distances, query_labels=query_labels, gallery_labels=gallery_labels, query_cameras=query_cameras,
        gallery_cameras=gallery_cameras, max_rank=20, chunk_size=4)
    expected = reference_metrics(
        distances, query_labels, gallery_labels, query_cameras, gallery_cameras, max_rank=20)
    assert_metrics_close(result, expected, tol=1e-12)


def test_input_types_and_chunking_do_not_change_results():
    data = random_retrieval_set(5)
    base = retrieval_metrics(**data)
    as_torch = {k: torch.from_numpy(np.asarray(v)) for k, v in data.items()}
    as_float64 = {**data, 'query': data['query'].astype(np.float64), 'gallery': data['gallery'].astype(np.float64)}
    for variant in (as_torch, as_float64):
        assert retrieval_metrics(**variant) == base
    for chunk_size in (1, 3, 36, 37, 1000):
        assert_metrics_close(retrieval_metrics(**data, chunk_size=chunk_size), base, tol=1e-12)


def test_distance_and_embedding_entry_points_agree():
    data = random_retrieval_set(6)
    query = torch.nn.functional.normalize(torch.from_numpy(data['query']), dim=1)
    gallery = torch.nn.functional.normalize(torch.from_numpy(data['gallery']), dim=1)
    distances = 1. - query @ gallery.t()
    codes = {k: v for k, v in data.items() if k not in ('query', 'gallery')}
    assert_metrics_close(rank_metrics_from_distances(distances, **codes), retrieval_metrics(**data), tol=1e-12)


def test_infinite_distances_rank_last():
    # +inf is a valid distance (e.g. a masked pair): neg r1 (0.1), POS r2 (0.3), neg r3 (inf), POS r4 (inf, tie ->
    # after the negative): AP = (1/2 + 2/4) / 2 = 1/2
    result = rank_metrics_from_distances([[math.inf, 0.3, 0.1, math.inf]], query_labels=[0],
                                         gallery_labels=[0, 0, 1, 2])
    assert result['mAP'] == pytest.approx(0.5)


# ---- bad input -------------------------------------------------------------------------------------------------------

def good_inputs():
    return dict(query=np.ones((4, 3), np.float32), gallery=np.ones((5, 3), np.float32), query_labels=[0, 1, 2, 3],
                gallery_labels=[0, 1, 2, 3, 4])


@pytest.mark.parametrize('change, message', [
    (dict(gallery=np.ones((5, 4))), r'query embeddings have dimension 3 but gallery embeddings have 4'),
    (dict(query=np.full((4, 3), np.nan)), r'query contains 12 non-finite value\(s\) \(NaN or inf\) in 4 row'),
    (dict(gallery=np.array([[1., 2., np.inf]] + [[1., 1., 1.]] * 4)), r'gallery contains 1 non-finite.*rows: \[0\]'),
    (dict(query=np.ones((0, 3)), query_labels=[]), r'query is empty'),
    (dict(gallery=np.ones((0, 3)), gallery_labels=[]), r'gallery is empty'),
    (dict(query_labels=[0, 1, 2]), r'query_labels has 3 entries but query has 4 rows'),
    (dict(gallery_labels=[0, 1]), r'gallery_labels has 2 entries but gallery has 5 rows'),
    (dict(query_cameras=[0, 0, 0, 0], gallery_cameras=[0, 0]), r'gallery_cameras has 2 entries but gallery has 5'),
    (dict(query=np.ones(3)), r'query must be 2-D \(num_items, dim\), got shape \(3,\)'),
    (dict(gallery=np.ones((5, 3, 1))), r'gallery must be 2-D'),
    (dict(query_cameras=[0, 0, 0, 0]), r'query_cameras is given but gallery_cameras is not'),
    (dict(gallery_cameras=[0] * 5), r'gallery_cameras is given but query_cameras is not'),
    (dict(query_ids=[0, 1, 2, 3]), r'query_ids is given but gallery_ids is not'),
    (dict(query_labels=[0.5, 1., 2., 3.]), r'query_labels must hold integers or strings, got dtype float64'),
    (dict(query_labels=None), r'query_labels and gallery_labels are required'),
    (dict(query=[[1., 2., 3.], [1., 2.], [1., 2., 3.], [1., 2., 3.]]), r'query could not be read as a regular array'),
    (dict(query=[['a', 'b', 'c']] * 4), r'query must hold numbers, got dtype <U1'),
    (dict(max_rank=0), r'max_rank must be a positive integer'),
    (dict(chunk_size=0), r'chunk_size must be a positive integer or None'),
])
def test_bad_embedding_inputs_raise(change, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(**{**good_inputs(), **change})


@pytest.mark.parametrize('change, message', [
    (dict(distances=[[0.1, np.nan]]), r'distances contains 1 NaN'),
    (dict(distances=[0.1, 0.2]), r'distances must be 2-D'),
    (dict(distances=np.ones((0, 2))), r'distances is empty'),
    (dict(query_labels=[0, 1]), r'query_labels has 2 entries but distances \(query axis\) has 1 rows'),
    (dict(gallery_labels=[0]), r'gallery_labels has 1 entries but distances \(gallery axis\) has 2 rows'),
    (dict(gallery_ids=[1, 2]), r'gallery_ids is given but query_ids is not'),
])
def test_bad_distance_inputs_raise(change, message):
    inputs = {**dict(distances=[[0.1, 0.2]], query_labels=[0], gallery_labels=[0, 1]), **change}
    with pytest.raises(ValueError, match=message):
        rank_metrics_from_distances(inputs.pop('distances'), **inputs)
