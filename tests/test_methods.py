""" The methods as algorithms with typed options: the public list, recipes' method blocks, adding a method. """
from dataclasses import dataclass
from typing import List, Literal, Optional

import pytest
import torch

from sfsc_timm.train import (
    METHODS, ConfigError, SFSCOptions, SFSCStep, SummedLossStep, config_from_dict, create_train_step, register_method,
)
from sfsc_timm.train.config import build_parser, load_recipe
from sfsc_timm.train.distributed import DistInfo
from sfsc_timm.train.trainer import create_model

from test_train import tiny_batch

PUBLIC = ['sfsc', 'sfsc_ce_ens', 'bct_s', 'asymmetric_s', 'independent', 'bct', 'asymmetric']
TINY = dict(widths=[0.25, 0.5, 1.0], embed_dim=32, input_size=[3, 16, 16], batch_size=8, opt='momentum',
            momentum=0.0, weight_decay=0.0, lr=0.1)


@pytest.fixture
def registered():
    """Names registered by a test, removed after it (METHODS is the process's registry)."""
    names: List[str] = []
    yield names
    for name in names:
        METHODS.pop(name, None)


def test_the_package_registers_the_papers_methods_and_the_recommended_one_first():
    # the tables' presets (benchmarks/experiments/methods.py, registered by conftest) come after them
    assert list(METHODS)[:len(PUBLIC)] == PUBLIC
    from sfsc_timm.train.methods import METHODS as package_methods
    assert package_methods is METHODS


def test_a_recipe_sets_options_under_the_methods_name_and_other_methods_blocks_are_checked_then_ignored(tmp_path):
    recipe = tmp_path / 'r.yaml'
    recipe.write_text('method: sfsc_ce_ens\nsfsc_ce_ens:\n  lambda_kd: 0.3\nbct_s:\n  lambda_cross_tri: 1\n')
    cfg = config_from_dict(load_recipe(recipe))
    assert cfg.options.lambda_kd == 0.3 and cfg.options.kd_teacher == 'ensemble'  # the rest: the method's own
    bct_s = config_from_dict(dict(load_recipe(recipe), method='bct_s'))  # --method bct_s on the same recipe
    assert bct_s.options.lambda_cross_tri == 1.0
    assert config_from_dict(dict(load_recipe(recipe), method='bct')).to_dict()['bct'] == {'transfer_loss': 'influence'}
    recipe.write_text('method: sfsc\nbct_s:\n  lambda_kd: 1\n')
    with pytest.raises(ConfigError, match=r'bct_s: unknown option\(s\) lambda_kd; its options: student_loss'):
        config_from_dict(load_recipe(recipe))


def test_a_config_is_the_recipe_it_writes():
    cfg = config_from_dict(dict(TINY, method='sfsc_ce_ens', lambda_kd=0.2, lambda_cross_tri=1.0))
    again = config_from_dict(cfg.to_dict())
    assert again == cfg and again.options == cfg.options
    assert list(cfg.to_dict())[list(cfg.to_dict()).index('method') + 1] == 'sfsc_ce_ens'  # the block follows


def test_the_command_line_lists_every_option_of_every_method():
    text = build_parser().format_help()
    for name, method in METHODS.items():
        assert name in text
        for option in method.options_class.__dataclass_fields__:
            assert f'--{option.replace("_", "-")}' in text, option


def test_a_method_from_an_existing_algorithm_is_one_register_call(registered):
    register_method('my_sfsc', SFSCStep, 'sfsc with relative priorities', priority='relative')
    registered.append('my_sfsc')
    cfg = config_from_dict(dict(TINY, method='my_sfsc', lambda_kd=0.5))
    assert (cfg.options.priority, cfg.options.lambda_kd) == ('relative', 0.5)
    torch.manual_seed(0)
    result = create_train_step(cfg, create_model(cfg, num_classes=5), DistInfo())(*tiny_batch(), epoch=0.0)
    assert not result.skipped and result.priorities[0] == pytest.approx(1.0)  # relative: the widest at 1
    with pytest.raises(ValueError, match='already registered'):
        register_method('my_sfsc', SFSCStep, 'again')
    with pytest.raises(ConfigError, match=r'method bad: unknown option\(s\) lambda_typo'):
        register_method('bad', SFSCStep, 'a typo', lambda_typo=1.0)


@dataclass(frozen=True)
class WidestOnlyOptions:
    """A new algorithm's options: which widths train (a toy to show the three places)."""
    widths_trained: Literal['widest', 'all'] = 'widest'


class WidestOnlyStep(SummedLossStep):
    """Cross-entropy of the widest width only, or of every width."""
    options_class = WidestOnlyOptions

    def batch_losses(self, images: torch.Tensor, labels: torch.Tensor, epoch: float) -> List[Optional[torch.Tensor]]:
        trained = self.widths[:1] if self.options.widths_trained == 'widest' else self.widths
        return [self.width_classification_loss(w, images, labels) if w in trained else None for w in self.widths]


def test_a_new_algorithm_is_its_step_class_its_options_and_one_register_call(registered):
    register_method('widest_only', WidestOnlyStep, 'the widest width alone')
    registered.append('widest_only')
    cfg = config_from_dict(dict(TINY, method='widest_only'))
    torch.manual_seed(0)
    result = create_train_step(cfg, create_model(cfg, num_classes=5), DistInfo())(*tiny_batch(), epoch=0.0)
    assert result.priorities == [1.0, 0.0, 0.0]
    assert config_from_dict(dict(TINY, method='widest_only', widths_trained='all')).options.widths_trained == 'all'
    with pytest.raises(ConfigError, match="option widths_trained='some'; allowed: widest, all"):
        config_from_dict(dict(method='widest_only', widths_trained='some'))
    with pytest.raises(ConfigError, match='kl_coef is not an option of method widest_only'):
        config_from_dict(dict(method='widest_only', kl_coef=1.0))


def test_a_step_refuses_options_of_another_class():
    cfg = config_from_dict(dict(TINY, method='bct_s'))
    cfg.options = SFSCOptions()
    with pytest.raises(TypeError, match='SupernetSumStep takes SupernetSumOptions, got SFSCOptions'):
        create_train_step(cfg, create_model(cfg, num_classes=5), DistInfo())


def _without_preset(monkeypatch, name: str) -> None:
    # the registry as the modules read it, without `name`; the process's registry keeps its order (error messages list
    # the methods in it, and docs/errors.md holds them)
    import sfsc_timm.train.methods as methods
    monkeypatch.setattr(methods, 'METHODS', {k: v for k, v in METHODS.items() if k != name})


def test_a_former_method_name_says_where_it_went(monkeypatch):
    from sfsc_timm.train.cli import resolve_run
    _without_preset(monkeypatch, 'sfsc_exp')  # as in `sfsc-timm train`, where the tables' presets are not registered
    with pytest.raises(ConfigError, match="unknown method 'sfsc_exp'.*a preset of the published tables now: `python "
                                          'benchmarks/experiments/train.py` takes it, or write method sfsc'):
        resolve_run(['--method', 'sfsc_exp'])


def test_a_run_of_a_tables_preset_resumes_without_the_preset_registered(monkeypatch):
    from sfsc_timm.train.config import upgrade_saved_recipe
    saved = config_from_dict(dict(TINY, method='sfsc_exp')).to_dict()  # what a run of the preset saved
    _without_preset(monkeypatch, 'sfsc_exp')  # `sfsc-timm train --resume`: the tables' presets are not registered
    cfg = config_from_dict(upgrade_saved_recipe(saved))
    assert cfg.method == 'sfsc' and cfg.to_dict()['sfsc'] == saved['sfsc_exp']
