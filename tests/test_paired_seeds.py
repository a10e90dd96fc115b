""" benchmarks/experiments/paired_seeds.py: the seed-by-seed comparison the open-set reading rests on
(docs/open_set.md). """
import importlib.util
import json
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).parents[1] / 'benchmarks' / 'experiments' / 'paired_seeds.py'
_SPEC = importlib.util.spec_from_file_location('paired_seeds', _SCRIPT)
paired_seeds = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(paired_seeds)


def _write_run(folder: Path, row: str, seed: int, matrix):
    path = folder / 'runs' / row / f'seed_{seed}' / 'export' / 'metrics.json'
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(dict(matrix=matrix)))


def test_the_sign_flip_test_counts_the_flips_at_least_as_extreme_as_the_observed_mean():
    assert paired_seeds.sign_flip_p_value([1.0, 2.0, 3.0]) == pytest.approx(1 / 8)  # only the observed signs
    assert paired_seeds.sign_flip_p_value([1.0, -1.0]) == pytest.approx(3 / 4)  # sums 2, 0, 0, -2: three reach 0
    assert paired_seeds.sign_flip_p_value([-1.0, -2.0]) == pytest.approx(1.0)


def test_rows_are_paired_by_seed_across_folders_and_a_seed_in_two_folders_is_refused(tmp_path):
    first, second = tmp_path / 'table', tmp_path / 'more_seeds'
    for seed, (full_a, full_b) in enumerate([(0.80, 0.70), (0.60, 0.65), (0.90, 0.50)]):
        folder = first if seed < 2 else second
        _write_run(folder, 'a', seed, [[0.5, 0.5], [0.5, full_a]])
        _write_run(folder, 'b', seed, [[0.5, 0.5], [0.5, full_b]])
    _write_run(second, 'b', 7, [[0.5, 0.5], [0.5, 0.5]])  # no partner: left out
    result = paired_seeds.compare(paired_seeds.matrices('a', [first, second]),
                                  paired_seeds.matrices('b', [first, second]))
    assert result['seeds'] == [0, 1, 2]
    full = result['quantities']['full_width']
    assert full['differences'] == pytest.approx([10.0, -5.0, 40.0])
    assert full['difference_mean'] == pytest.approx(15.0) and full['seeds_a_above'] == 2
    assert full['p_a_above'] == pytest.approx(2 / 8)  # +10 -5 +40 and +10 +5 +40 reach the observed sum
    # each width's own gallery (ascending): the full width's is φ→φ, the narrow one's never differs here
    assert result['quantities']['own_gallery_2_of_2']['differences'] == pytest.approx(full['differences'])
    assert result['quantities']['own_gallery_1_of_2']['differences'] == pytest.approx([0.0, 0.0, 0.0])
    _write_run(first, 'a', 2, [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(SystemExit, match='a seed 2 is in more than one of the folders'):
        paired_seeds.matrices('a', [first, second])


def test_a_tables_pairs_share_one_json_keyed_by_pair_and_a_rerun_replaces_only_its_own(tmp_path):
    output = tmp_path / 'table' / 'paired_seeds.json'
    output.parent.mkdir()
    first = dict(row_a='a', row_b='b', seeds=[0, 1], quantities={})
    paired_seeds.record_pair(output, first)
    paired_seeds.record_pair(output, dict(row_a='c', row_b='b', seeds=[0, 1, 2], quantities={}))
    paired_seeds.record_pair(output, dict(first, seeds=[0, 1, 2]))  # more seeds: the same key, replaced
    pairs = json.loads(output.read_text())
    assert list(pairs) == ['a_vs_b', 'c_vs_b']
    assert pairs['a_vs_b']['seeds'] == [0, 1, 2] and pairs['c_vs_b']['seeds'] == [0, 1, 2]
    assert not [p for p in output.parent.iterdir() if p != output]  # written in place, no temporary left


def test_the_archived_pairs_hold_every_seed_and_the_command_that_made_them():
    results = Path(__file__).parents[1] / 'benchmarks' / 'results' / 'experiments'
    for table in ('open_set', 'open_set_6_epochs', 'glyphs_scratch', 'glyphs_pretrained', 'glyphs_scratch_12_epochs'):
        pairs = json.loads((results / table / 'paired_seeds.json').read_text())
        for key, pair in pairs.items():
            assert key == paired_seeds.pair_key(pair['row_a'], pair['row_b'])
            assert pair['command'].startswith('.venv/bin/python benchmarks/experiments/paired_seeds.py ')
            assert pair['folders'] == [f'benchmarks/results/experiments/{table}']
            for quantity in pair['quantities'].values():
                assert len(quantity['differences']) == len(pair['seeds'])
    assert json.loads((results / 'open_set' / 'paired_seeds.json').read_text())['sfsc_ce_ens_vs_bct_s']['seeds'] == \
        list(range(8))
