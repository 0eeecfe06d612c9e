"""The cuDNN autotuning policy (basicsr_glue/cudnn.py): the options' `cudnn` section reaches
torch.backends.cudnn.benchmark in the training iterations, in validation and in the test pipeline, over
BasicSR's own `benchmark = True`, also through BasicSR's own entry point; a typo in the section stops the run
before anything is built.

The flag is plain state in torch and can be set without a GPU, so the CPU sees what a GPU run would use."""
import runpy

import basicsr.test
import pytest
import torch
from basicsr.train import train_pipeline

from jude_arch.basicsr_glue.cudnn import DEFAULTS, cudnn_settings
from jude_arch.models.jude_model import JUDEModel
from jude_arch.option_check import OptionError
from training_helpers import eval_options, pipeline_in_process, tiny_lolblur, tiny_options, write_yaml


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_lolblur(tmp_path_factory)


@pytest.fixture
def seen(monkeypatch):
    """torch.backends.cudnn.benchmark as JUDEModel's training step and validation see it: {'train': [...],
    'val': [...]}. The flag is restored after the test."""
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', torch.backends.cudnn.benchmark)
    flags = {'train': [], 'val': []}
    for name, phase in (('optimize_parameters', 'train'), ('nondist_validation', 'val')):
        real = getattr(JUDEModel, name)

        def spy(self, *args, real=real, phase=phase, **kwargs):
            flags[phase].append(torch.backends.cudnn.benchmark)
            return real(self, *args, **kwargs)

        monkeypatch.setattr(JUDEModel, name, spy)
    return flags


@pytest.mark.parametrize('section', [None, {'benchmark_train': False, 'benchmark_val': True}],
                         ids=['defaults', 'swapped'])
def test_the_options_reach_cudnn_in_training_validation_and_test(data, tmp_path, monkeypatch, seen, section):
    expected = {**DEFAULTS, **(section or {})}
    opt = tiny_options(data, 'cudnn_policy', total_iter=2, val={'save_img': False},
                       **({'cudnn': section} if section else {}))
    train_yml = write_yaml(opt, tmp_path / 'train.yml')
    log = pipeline_in_process(train_pipeline, ['train.py', '-opt', train_yml], tmp_path, monkeypatch)
    assert seen['train'] == [expected['benchmark_train']] * 2
    assert seen['val'] and set(seen['val']) == {expected['benchmark_val']}  # at iteration 1, 2 and at the end
    on_off = {True: 'on', False: 'off'}
    assert (f"cuDNN autotuning (torch.backends.cudnn.benchmark): training {on_off[expected['benchmark_train']]}, "
            f"validation/test {on_off[expected['benchmark_val']]}") in log

    seen['val'].clear()
    checkpoint = tmp_path / 'experiments' / 'cudnn_policy' / 'models' / 'net_g_latest.pth'
    test_opt = eval_options(opt, 'cudnn_policy_test', checkpoint)
    test_opt['val']['save_img'] = False
    if section:
        test_opt['cudnn'] = section
    test_yml = write_yaml(test_opt, tmp_path / 'test.yml')
    pipeline_in_process(basicsr.test.test_pipeline, ['test.py', '-opt', test_yml], tmp_path, monkeypatch)
    assert seen['val'] == [expected['benchmark_val']]


def test_the_policy_holds_under_basicsrs_own_entry_point(data, tmp_path, monkeypatch, seen):
    """`python -m basicsr.train` runs a fresh copy of basicsr/train.py as __main__, whose names (build_model,
    parse_options) are not the patched module's: the policy must live where every copy passes."""
    fresh = runpy.run_module('basicsr.train', run_name='as_python_dash_m')
    opt = tiny_options(data, 'cudnn_dash_m', total_iter=2, val={'save_img': False},
                       cudnn={'benchmark_train': False, 'benchmark_val': True})
    yml = write_yaml(opt, tmp_path / 'train.yml')
    pipeline_in_process(fresh['train_pipeline'], ['train.py', '-opt', yml], tmp_path, monkeypatch)
    assert seen['train'] == [False, False] and set(seen['val']) == {True}


def test_a_typo_in_the_section_stops_training_before_anything_is_built(data, tmp_path, monkeypatch):
    opt = tiny_options(data, 'cudnn_typo', total_iter=2, cudnn={'benchmark_trian': False})
    with pytest.raises(OptionError, match=r'unknown key cudnn\.benchmark_trian; did you mean benchmark_train\?'):
        pipeline_in_process(train_pipeline, ['train.py', '-opt', write_yaml(opt, tmp_path / 'train.yml')], tmp_path,
                            monkeypatch)
    assert not (tmp_path / 'experiments' / 'cudnn_typo' / 'models').exists()


@pytest.mark.parametrize('section, message', [
    ({'benchmark_val': 'no'}, "options: cudnn.benchmark_val must be true or false, not 'no'"),
    ({'benchmark_train': 1}, 'options: cudnn.benchmark_train must be true or false, not 1'),
    (True, 'options: cudnn must be a mapping with the keys benchmark_train, benchmark_val; got True'),
])
def test_bad_values_are_named(section, message):
    with pytest.raises(OptionError) as error:
        cudnn_settings({'cudnn': section})
    assert str(error.value) == message


def test_defaults_autotune_training_only():
    assert cudnn_settings({}) == {'benchmark_train': True, 'benchmark_val': False}
    assert cudnn_settings({'cudnn': {'benchmark_val': True}}) == {'benchmark_train': True, 'benchmark_val': True}
