""" benchmarks/experiments/layer_conflicts.py: the per-epoch conflict counts the projection-granularity reading
rests on. """
import importlib.util
import json
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).parents[1] / 'benchmarks' / 'experiments' / 'layer_conflicts.py'
_SPEC = importlib.util.spec_from_file_location('layer_conflicts', _SCRIPT)
layer_conflicts = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(layer_conflicts)


def _write_log(folder: Path, row: str, seed: int, records, finished: bool = True):
    run = folder / 'runs' / row / f'seed_{seed}'
    (run / 'export').mkdir(parents=True)
    (run / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
    if finished:
        (run / 'export' / 'metrics.json').write_text('{}')


def test_shares_are_of_all_pairs_and_of_the_widest_widths_pairs(tmp_path):
    # 4 widths: of 60 layer pairs (10 parameters x 6 width pairs) 30 involve the widest width
    _write_log(tmp_path, 'sfsc_ce_ens', 0, [
        dict(epoch=1, conflicts=4, width_losses=[1, 1, 1, 1], layer_pairs=60, layer_conflicts=12,
             layer_conflicts_widest=3),
        dict(epoch=2, conflicts=0, width_losses=[1, 1, 1, 1]),  # a run that logged no layer counts
    ])
    _write_log(tmp_path, 'sfsc_ce_ens', 1, [dict(epoch=1, conflicts=0, width_losses=[1, 1], layer_pairs=8,
                                                 layer_conflicts=2, layer_conflicts_widest=2)], finished=False)
    runs = layer_conflicts.read_runs([tmp_path], 'sfsc_ce_ens')
    first, second = runs['seed_0']['epochs']
    assert first['layer_conflict_share'] == pytest.approx(0.2)
    assert first['widest_layer_conflict_share'] == pytest.approx(0.1)
    assert first['projections'] == 4
    assert second['layer_pairs'] is None and second['layer_conflict_share'] is None
    assert runs['seed_0']['finished'] and not runs['seed_1']['finished']
    # 2 widths: every pair involves the widest
    assert runs['seed_1']['epochs'][0]['widest_layer_conflict_share'] == pytest.approx(0.25)


def test_missing_rows_and_a_seed_in_two_folders_are_refused(tmp_path):
    with pytest.raises(SystemExit, match='no runs of bct_s'):
        layer_conflicts.read_runs([tmp_path], 'bct_s')
    record = dict(epoch=1, conflicts=0, width_losses=[1, 1], layer_pairs=2, layer_conflicts=0,
                  layer_conflicts_widest=0)
    _write_log(tmp_path / 'a', 'r', 0, [record])
    _write_log(tmp_path / 'b', 'r', 0, [record])
    with pytest.raises(SystemExit, match='seed 0 is in more than one of the folders'):
        layer_conflicts.read_runs([tmp_path / 'a', tmp_path / 'b'], 'r')


def test_rows_tabulated_apart_share_the_tables_json(tmp_path):
    output = tmp_path / 'layer_conflicts.json'
    layer_conflicts.record_rows(output, ['t'], {'a': {'seed_0': {}}}, 'command a')
    layer_conflicts.record_rows(output, ['t', 'u'], {'b': {'seed_0': {}}}, 'command b')
    layer_conflicts.record_rows(output, ['t'], {'a': {'seed_0': {}, 'seed_1': {}}}, 'command a again')
    result = json.loads(output.read_text())
    assert result['folders'] == ['t', 'u']
    assert set(result['rows']) == {'a', 'b'} and list(result['rows']['a']) == ['seed_0', 'seed_1']
    assert result['commands'] == {'a': 'command a again', 'b': 'command b'}
