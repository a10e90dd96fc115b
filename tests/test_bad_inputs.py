""" Every bad input of tests/bad_inputs.py gives one clear line (or is accepted), and the table of docs/errors.md
is what the commands print today. """
import pytest

import bad_inputs

CASES = bad_inputs.cases()


@pytest.fixture(scope='module')
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp('bad_inputs')
    return root, bad_inputs.run_all(root)


@pytest.mark.parametrize('index', range(len(CASES)), ids=[f'{c.command}: {c.input}' for c in CASES])
def test_bad_input_gives_one_clear_line(outcomes, index):
    _, rows = outcomes
    case, result = rows[index]
    assert not result.traceback, result.message
    assert result.status == case.status, result.message
    if case.command != 'python' and case.status != 0:
        assert len(result.error_lines) == 1, result.error_lines
    assert bad_inputs.is_clear(case, result), f'{result.message!r} does not match {case.match!r}'


def test_documented_table_is_what_the_commands_print(outcomes):
    root, rows = outcomes
    assert bad_inputs.documented_table() == bad_inputs.table(rows, root), \
        'docs/errors.md is out of date: run python tests/bad_inputs.py --write-table'
