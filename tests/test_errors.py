""" How every command reports a failure: one line, exit 2 for bad input, 1 at run time, a traceback only on request. """
import errno

import pytest

from sfsc_timm.errors import CommandParser, RunError, UsageError, run_command


def _failing(error):
    def command(argv):
        raise error
    return command


@pytest.mark.parametrize('error, status, message', [
    (UsageError('--width 0.3 is not trained; choose 0.5'), 2, '--width 0.3 is not trained; choose 0.5'),
    (ValueError('bad value'), 2, 'bad value'),
    (FileNotFoundError('no such recipe'), 2, 'no such recipe'),
    (RunError('the upload failed; run again'), 1, 'the upload failed; run again'),
    (OSError(errno.ENOSPC, 'No space left on device', '/out/metrics.json'), 1,
     'cannot write (/out/metrics.json): No space left on device. Free disk space'),
    (OSError(errno.EROFS, 'Read-only file system', '/out'), 1, 'Choose a folder you can write to'),
    (KeyError('surprise'), 1, "KeyError: 'surprise' (run with --debug for the traceback)"),
    (KeyboardInterrupt(), 130, 'interrupted'),
])
def test_one_line_and_the_exit_status(error, status, message, capsys):
    assert run_command('sfsc-timm test', _failing(error), []) == status
    err = capsys.readouterr().err
    assert err.startswith('sfsc-timm test: error: ') and message in err
    assert err.count('\n') == 1 and 'Traceback' not in err


def test_the_traceback_only_on_request(capsys, monkeypatch):
    multi_line = RunError('first line\nsecond line')
    assert run_command('sfsc-timm test', _failing(multi_line), ['--debug']) == 1
    err = capsys.readouterr().err
    assert 'Traceback' in err and err.splitlines()[-1] == 'sfsc-timm test: error: first line second line'
    monkeypatch.setenv('SFSC_DEBUG', '1')
    assert run_command('sfsc-timm test', _failing(multi_line), []) == 1
    assert 'Traceback' in capsys.readouterr().err


def test_usage_errors_are_one_line_and_debug_is_not_passed_on(capsys):
    parser = CommandParser(prog='sfsc-timm test')
    parser.add_argument('--size', type=int)
    seen = []

    def command(argv):
        seen.append(list(argv))
        parser.parse_args(argv)

    assert run_command('sfsc-timm test', command, ['--size', 'big', '--debug']) == 2
    assert seen == [['--size', 'big']]
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == ("sfsc-timm test: error: argument --size: invalid int value: 'big'; see sfsc-timm test "
                       '--help')
    assert run_command('sfsc-timm test', command, ['--help']) == 0


def test_sigterm_ends_a_command_with_143_and_one_line(capsys):
    import os
    import signal

    from sfsc_timm.errors import run_command

    def long_command(argv):
        os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler's stop sends
        raise AssertionError('SIGTERM did not stop the command')

    before = signal.getsignal(signal.SIGTERM)
    assert run_command('sfsc-timm train', long_command, []) == 143
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'terminated (SIGTERM)' in err and '--resume' in err
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


def test_widths_as_a_string_is_refused_not_iterated():
    import pytest
    import timm
    with pytest.raises(ValueError, match=r"widths must be a sequence of numbers, got '0.5,1.0'"):
        timm.create_model('sfsc_resnet18', widths='0.5,1.0')
