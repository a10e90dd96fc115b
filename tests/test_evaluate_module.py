""" The `evaluate` metric module shipped in the package: loads offline, returns `retrieval_metrics`'s numbers. """
import numpy as np
import pytest
import torch

from sfsc_timm.eval import METRIC_PATH, retrieval_metrics

evaluate = pytest.importorskip('evaluate')


@pytest.fixture
def metric(monkeypatch, tmp_path):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_DATASETS_OFFLINE', '1')
    return evaluate.load(METRIC_PATH, cache_dir=str(tmp_path))


def make_set(seed, num_query=15, num_gallery=40, dim=8, num_ids=5):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids, dim))
    query_labels = rng.integers(0, num_ids, num_query)
    gallery_labels = rng.integers(0, num_ids, num_gallery)
    return dict(
        query=(centres[query_labels] + rng.standard_normal((num_query, dim))).astype(np.float32),
        gallery=(centres[gallery_labels] + rng.standard_normal((num_gallery, dim))).astype(np.float32),
        query_labels=query_labels, gallery_labels=gallery_labels,
        query_cameras=rng.integers(0, 3, num_query), gallery_cameras=rng.integers(0, 3, num_gallery))


def test_metric_path_points_at_the_module():
    assert METRIC_PATH.endswith('sfsc_retrieval.py')


def test_batches_with_cameras_match_function(metric):
    data = make_set(0)
    # query and gallery rows interleaved over several batches, as numpy, torch and lists
    metric.add_batch(predictions=data['query'][:7], references=data['query_labels'][:7], is_query=[True] * 7,
                     cameras=data['query_cameras'][:7])
    metric.add_batch(predictions=torch.from_numpy(data['gallery']), references=torch.from_numpy(data['gallery_labels']),
                     is_query=np.zeros(40, dtype=bool), cameras=data['gallery_cameras'].tolist())
    metric.add_batch(predictions=data['query'][7:].tolist(), references=data['query_labels'][7:], is_query=[True] * 8,
                     cameras=data['query_cameras'][7:])
    result = metric.compute(max_rank=5)
    assert result == retrieval_metrics(**data, max_rank=5)
    assert len(result['cmc']) == 5 and 0 <= result['mAP'] <= 1


def test_one_shot_compute_without_cameras(metric):
    data = make_set(1)
    rows = np.concatenate([data['gallery'], data['query']])
    labels = np.concatenate([data['gallery_labels'], data['query_labels']])
    is_query = np.r_[np.zeros(40, dtype=bool), np.ones(15, dtype=bool)]
    result = metric.compute(predictions=rows, references=labels, is_query=is_query)
    expected = retrieval_metrics(query=data['query'], gallery=data['gallery'], query_labels=data['query_labels'],
                                 gallery_labels=data['gallery_labels'])
    assert result == expected


def test_sample_ids_exclude_self_matches(metric):
    # every sample is in the gallery; the first 10 are also queries, with the same sample id
    data = make_set(2)
    gallery, labels, cameras = data['gallery'], data['gallery_labels'], data['gallery_cameras']
    ids = np.arange(40)
    metric.add_batch(predictions=gallery, references=labels, is_query=[False] * 40, cameras=cameras, sample_ids=ids)
    metric.add_batch(predictions=gallery[:10], references=labels[:10], is_query=[True] * 10, cameras=cameras[:10],
                     sample_ids=ids[:10])
    expected = retrieval_metrics(query=gallery[:10], gallery=gallery, query_labels=labels[:10], gallery_labels=labels,
                                 query_cameras=cameras[:10], gallery_cameras=cameras, query_ids=ids[:10],
                                 gallery_ids=ids)
    assert metric.compute() == expected


def test_single_rows_with_add(metric):
    # q (1, 0) label 0; gallery (0, 1) label 1 at d 1, (1, 1) label 0 at d 1 - 1/sqrt(2): positive first -> AP 1
    metric.add(prediction=[1., 0.], reference=0, is_query=True)
    metric.add(prediction=[0., 1.], reference=1, is_query=False)
    metric.add(prediction=[1., 1.], reference=0, is_query=False)
    result = metric.compute(max_rank=2)
    assert result == {'mAP': 1.0, 'cmc': [1.0, 1.0], 'mINP': 1.0, 'num_valid_queries': 1, 'num_skipped_queries': 0}


def test_cameras_on_some_rows_only_raise(metric):
    metric.add_batch(predictions=[[1., 0.]], references=[0], is_query=[True], cameras=[0])
    metric.add_batch(predictions=[[1., 0.]], references=[0], is_query=[False])
    with pytest.raises(ValueError, match='cameras is missing for 1 of 2 rows'):
        metric.compute()


def test_no_query_rows_raise(metric):
    with pytest.raises(ValueError, match='No row has is_query=True'):
        metric.compute(predictions=[[1., 0.], [0., 1.]], references=[0, 1], is_query=[False, False])


def test_errors_of_the_function_come_through(metric):
    with pytest.raises(ValueError, match='gallery is empty'):
        metric.compute(predictions=[[1., 0.]], references=[0], is_query=[True])
