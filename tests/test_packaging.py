"""A wheel (not an editable install) carries the recipes and the model card template; recipes by name; ``--version``;
help text for every ``sfsc-timm train`` flag."""
import argparse
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import sfsc_timm
from sfsc_timm.cli import main as cli_main
from sfsc_timm.hub.model_card import TEMPLATE_NAME
from sfsc_timm.train.config import TrainConfig, build_parser, load_recipe, parse_args

ROOT = Path(__file__).resolve().parents[1]
WHEEL_SOURCES = ('pyproject.toml', 'setup.py', 'README.md', 'sfsc_timm', 'recipes', 'model_cards')


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    """`pip wheel` of a copy of the source tree (the build leaves build/ and egg-info behind, not in the checkout)."""
    work = tmp_path_factory.mktemp('wheel')
    source = work / 'source'
    source.mkdir()
    for name in WHEEL_SOURCES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(
            ROOT / name, source / name, **({'ignore': shutil.ignore_patterns('__pycache__')}
                                           if (ROOT / name).is_dir() else {}))
    done = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index',
                           '-q', '-w', str(work / 'dist'), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = (work / 'dist').glob('sfsc_timm-*.whl')
    return path


@pytest.mark.slow  # the slow tier (make test-slow; CI runs it too)
def test_wheel_carries_the_package_recipes_and_card_template(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = {f'sfsc_timm/recipes/{p.name}' for p in (ROOT / 'recipes').glob('*.yaml')}
    assert recipes and recipes <= names
    assert 'sfsc_timm/model_cards/sfsc_model_card.md' in names
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / 'sfsc_timm').rglob('*.py')
               if '__pycache__' not in p.parts}
    assert sources <= names  # every module, the evaluate metric script (no __init__.py) included
    assert f'sfsc_timm-{sfsc_timm.__version__}.dist-info/entry_points.txt' in names


@pytest.mark.slow  # the slow tier (make test-slow; CI runs it too)
def test_installed_wheel_finds_its_recipes_and_template(wheel, tmp_path):
    site = tmp_path / 'site'
    done = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index', '-q', '--target',
                           str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    script = (
        'import sfsc_timm\n'
        'from sfsc_timm._resources import shipped_file\n'
        'from sfsc_timm.train.config import load_recipe\n'
        f'template = shipped_file("model_cards", "{TEMPLATE_NAME}")\n'
        'print(sfsc_timm.__file__); print(template); print(template.is_file())\n'
        'print(load_recipe("sfsc_ce_ens_resnet10t_glyphs")["model"])\n'
        'from sfsc_timm.cli import main; main(["--version"])\n')
    # run from an empty folder, with only the installed copy on the path: the checkout cannot be imported
    done = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, env={'PYTHONPATH': str(site), 'PATH': ''},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    module, template, exists, model, version = done.stdout.splitlines()
    assert module.startswith(str(site)) and template.startswith(str(site)) and exists == 'True'
    assert model == 'sfsc_resnet10t' and version == f'sfsc-timm {sfsc_timm.__version__}'


def test_version(capsys):
    assert cli_main(['--version']) == 0
    assert capsys.readouterr().out.strip() == f'sfsc-timm {sfsc_timm.__version__}'
    assert cli_main(['no-such-command']) == 2
    assert 'unknown command' in capsys.readouterr().err


def test_recipes_by_name():
    given, extra = parse_args(['-c', 'sfsc_resnet18_fashion_mnist', '--epochs', '3'])
    assert given == dict(load_recipe(ROOT / 'recipes' / 'sfsc_resnet18_fashion_mnist.yaml'),
                         experiment='sfsc_resnet18_fashion_mnist', epochs=3)
    assert load_recipe('recipes/market1501_resnet50_sfsc.yaml') == load_recipe('market1501_resnet50_sfsc')
    with pytest.raises(FileNotFoundError, match='built-in recipes .*sfsc_resnet18_fashion_mnist'):
        load_recipe('no_such_recipe')


def test_every_train_flag_has_help_text():
    parser = build_parser()
    group = next(g for g in parser._action_groups if g.title.startswith('recipe keys'))
    keys = {action.dest: action.help for action in group._group_actions}
    assert set(keys) == set(TrainConfig.__dataclass_fields__) - {'options'}  # options: the method's, flags of their own
    for key, text in keys.items():
        assert text and not text.startswith('(built-in default'), key  # the key's comment, then its default
    assert keys['lr'].startswith('base learning rate') and 'built-in default: 0.1' in keys['lr']
    assert 'Hub dataset id' in keys['dataset']  # a comment block above the field counts too
    options = [g for g in parser._action_groups if g.title.startswith('method options of')]
    # one group per options class, named by its methods (the package's first; the tables' presets may follow)
    assert [g.title.split(' (')[0].split(', ')[:2] for g in options] == [
        ['method options of sfsc', 'sfsc_ce_ens'], ['method options of bct_s', 'asymmetric_s'],
        ['method options of bct', 'asymmetric']]
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction):
            assert action.help and not action.help.startswith('('), action.dest  # its comment, then the values
