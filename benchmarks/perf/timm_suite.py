"""Run timm's own model test suite against the registered ``sfsc_*`` models, and count what passes.

timm's ``tests/test_models.py`` is not part of this project: pass the path of a copy (from a clone of
huggingface/pytorch-image-models). It is copied into a scratch folder together with a small conftest that imports
``sfsc_timm`` (registering the models) and, with ``--width W``, makes every ``create_model('sfsc_*', ...)`` build the
static sub-model at width W. pytest then runs the tests whose id names an ``sfsc_*`` model, one process per run, and
the per-test outcomes are printed and written to ``benchmarks/results/perf/timm_suite.json``.

    python benchmarks/perf/timm_suite.py /path/to/pytorch-image-models/tests/test_models.py --static 0.25
        # the supernets, then the static sub-models at width 0.25
"""
import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / 'benchmarks' / 'results' / 'perf' / 'timm_suite.json'
SUPERNET_FAILURES = {'test_model_backward', 'test_model_backward_fx'}  # by design (docs/guide.md)

CONFTEST = '''
import functools
import os

import timm
import sfsc_timm  # noqa: F401  registers the sfsc_* models

_WIDTH = os.environ.get('SFSC_SUITE_WIDTH')
if _WIDTH:
    _create_model = timm.create_model

    @functools.wraps(_create_model)
    def create_model(model_name, *args, **kwargs):
        if str(model_name).startswith('sfsc_'):
            kwargs.setdefault('width', float(_WIDTH))
        return _create_model(model_name, *args, **kwargs)

    timm.create_model = create_model  # before the test module runs `from timm import create_model`
'''


def run_suite(test_file: Path, width: Optional[float], root: Path = ROOT) -> Dict[str, str]:
    """Outcome ('passed', 'failed', 'skipped') of every timm test whose id names an sfsc_* model."""
    with tempfile.TemporaryDirectory(prefix='timm_suite.') as scratch:
        scratch = Path(scratch)
        shutil.copy(test_file, scratch / 'test_timm_models.py')
        (scratch / 'conftest.py').write_text(CONFTEST)
        report = scratch / 'report.xml'
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get('PYTHONPATH')])))
        if width is not None:
            env['SFSC_SUITE_WIDTH'] = str(width)
        subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-k', 'sfsc_',
                        f'--junitxml={report}', 'test_timm_models.py'], cwd=scratch, env=env, check=False,
                       stdout=subprocess.DEVNULL)
        if not report.is_file():
            raise RuntimeError(f'pytest wrote no report; run it by hand in a copy of {test_file} to see why.')
        return _outcomes(report)


def _outcomes(report: Path) -> Dict[str, str]:
    outcomes = {}
    for case in ElementTree.parse(report).iter('testcase'):
        tags = {child.tag for child in case}
        outcome = 'failed' if tags & {'failure', 'error'} else 'skipped' if 'skipped' in tags else 'passed'
        outcomes[case.get('name')] = outcome
    return outcomes


def unexpected_failures(summary: Dict, supernet: bool) -> List[str]:
    """The failed tests the target does not allow: any, but a supernet's backward tests (they want a gradient on every
    parameter after one forward, which computes one width)."""
    return [test for test, outcome in summary['by_test'].items()
            if outcome.get('failed') and not (supernet and test in SUPERNET_FAILURES)]


def summarize(outcomes: Dict[str, str]) -> Dict[str, object]:
    counts = collections.Counter(outcomes.values())
    by_test: Dict[str, Dict[str, List[str]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for name, outcome in sorted(outcomes.items()):
        test, _, params = name.partition('[')
        model = next((p for p in params.rstrip(']').split('-') if p.startswith('sfsc_')), params)
        by_test[test][outcome].append(model)
    return dict(counts=dict(counts), total=len(outcomes),
                by_test={t: dict(v) for t, v in sorted(by_test.items())})


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('test_file', type=Path, help="timm's tests/test_models.py")
    parser.add_argument('--static', type=float, action='append', default=[], metavar='WIDTH',
                        help='after the supernets, run on the static sub-models at this width (repeatable)')
    parser.add_argument('--no-write', action='store_true', help=f'do not update {RESULTS.relative_to(ROOT)}')
    args = parser.parse_args(argv)
    if not args.test_file.is_file():
        parser.error(f'{args.test_file} does not exist')
    results = {}
    for width in [None] + args.static:
        label = 'supernet' if width is None else f'width {width:g}'
        start = time.time()
        summary = summarize(run_suite(args.test_file, width))
        summary['seconds'] = round(time.time() - start, 1)
        results[label] = summary
        counts = summary['counts']
        print(f'{label}: {counts.get("passed", 0)} passed, {counts.get("failed", 0)} failed, '
              f'{counts.get("skipped", 0)} skipped of {summary["total"]} ({summary["seconds"]} s)')
        unexpected = unexpected_failures(summary, supernet=width is None)
        print(f'  target: every test passes, but the supernets\' {" and ".join(sorted(SUPERNET_FAILURES))} (by design,'
              f' docs/guide.md): ' + ('met' if not unexpected else f'missed ({", ".join(unexpected)})'))
        for test, outcome in summary['by_test'].items():
            shown = '; '.join(f'{k}: {", ".join(v)}' for k, v in sorted(outcome.items()))
            print(f'  {test}: {shown}')
    if not args.no_write:
        from sfsc_timm.atomic_io import write_json_atomically  # here: the suite itself runs in subprocesses

        previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        previous.update(results)
        write_json_atomically(RESULTS, previous)
    return 0


if __name__ == '__main__':
    sys.exit(main())
