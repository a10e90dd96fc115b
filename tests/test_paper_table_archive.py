""" benchmarks/experiments/paper_table.py: rewriting a table never drops a published row (its ``archived_batches``). """
import importlib.util
import json
from pathlib import Path

_SCRIPT = Path(__file__).parents[1] / 'benchmarks' / 'experiments' / 'paper_table.py'
_SPEC = importlib.util.spec_from_file_location('paper_table', _SCRIPT)
paper_table = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(paper_table)
_RESULTS = Path(__file__).parents[1] / 'benchmarks' / 'results' / 'experiments'


def _row(seeds):
    return dict(label='x', seeds=seeds, columns={f'{q:g}->{g:g}': '1' for q, g in paper_table.PAPER_COLUMNS},
                mean_of_matrix='1', diagonal_mean='1', cross_mean='1', narrowest_row_self_compatible_runs=0,
                self_compatible_runs=0)


def test_rows_whose_runs_are_gone_move_to_the_archive_and_earlier_batches_stay():
    earlier = dict(seeds=[3, 4], note='an earlier batch', rows={'a': _row([3, 4])})
    previous = dict(rows={'a': _row([0, 1, 2]), 'b': _row([0])}, goal={'a': None}, archived_batches=[earlier])
    # the folder now holds runs of a at seeds 3-4 only, and of b at seed 0 and 1
    batches = paper_table.archived_batches(previous, {'a': _row([3, 4]), 'b': _row([0, 1])})
    assert batches[0] == earlier
    assert batches[1]['seeds'] == [0, 1, 2] and list(batches[1]['rows']) == ['a']  # b's seed 0 is still covered
    assert batches[1]['goal'] == {'a': None} and 'x' in batches[1]['table_markdown']
    assert paper_table.archived_batches(None, {}) == []
    assert paper_table.archived_batches(dict(rows={'a': _row([0])}), {'a': _row([0, 1])}) == []


def test_the_tables_split_by_seeds_are_one_json_each():
    assert not list(_RESULTS.glob('open_set_seeds_*')) and not (_RESULTS / 'layer_conflicts_6_epochs').exists()
    table = json.loads((_RESULTS / 'open_set' / 'paper_table.json').read_text())
    assert [b['seeds'] for b in table['archived_batches']] == [[3, 4], [5, 6, 7]]
    for batch in table['archived_batches']:
        assert batch['command'].startswith('.venv/bin/python benchmarks/experiments/paper_table.py ')
        assert '--output benchmarks/results/experiments/open_set' in batch['command']
        assert all(row['seeds'] == batch['seeds'] for row in batch['rows'].values())
