"""Precision that fits the machine: 'auto', the CPU feature detection (patched both ways), the warnings for
a precision the CPU does not run natively, and their use by the restorer, the CLI and training."""
import logging
from collections import OrderedDict

import cv2
import numpy as np
import pytest
import torch

from jude_arch import precision
from jude_arch.archs import JUDE
from jude_arch.restore.cli import main
from jude_arch.models.jude_model import _check_precision
from jude_arch.restore.restorer import JUDERestorer, RestoreError

CPU = torch.device('cpu')


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Every test sees the warn-once state of a fresh process."""
    monkeypatch.setattr(precision, '_warned', set())


def cpu_with(monkeypatch, feature):
    monkeypatch.setattr(precision, 'cpu_bf16_feature', lambda: feature)


def gpu_with(monkeypatch, bf16):
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *args, **kwargs: bf16)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *args: 'Test GPU')


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.name == precision.__name__ and r.levelno == logging.WARNING]


@pytest.mark.parametrize('feature, expected', [(None, 'fp32'), ('AMX', 'bf16'), ('AVX512-BF16', 'bf16')])
def test_auto_on_a_cpu_takes_bf16_only_where_it_is_native(monkeypatch, feature, expected):
    cpu_with(monkeypatch, feature)
    assert precision.resolve('auto', 'cpu') == expected
    assert (feature or 'without native bf16') in precision.auto_precision(CPU)[1]


@pytest.mark.parametrize('bf16, expected', [(True, 'bf16'), (False, 'fp16')])
def test_auto_on_a_gpu_takes_bf16_else_fp16(monkeypatch, bf16, expected):
    gpu_with(monkeypatch, bf16)
    assert precision.resolve('auto', 'cuda') == expected
    assert precision.auto_precision('cuda') == (expected, 'Test GPU runs bf16' if bf16 else 'Test GPU has no bf16')


def test_bf16_on_a_gpu_without_it_is_an_error(monkeypatch):
    gpu_with(monkeypatch, False)
    with pytest.raises(ValueError, match='train.precision: this GPU has no bf16 support; use fp16'):
        precision.resolve('bf16', 'cuda', 'train.precision')
    assert precision.resolve('fp16', 'cuda') == 'fp16'


def test_explicit_bf16_on_a_cpu_without_native_bf16_runs_and_warns_once_with_the_reason(monkeypatch, caplog):
    cpu_with(monkeypatch, None)
    with caplog.at_level(logging.WARNING):
        assert precision.resolve('bf16', 'cpu', '--precision') == 'bf16'
        assert precision.resolve('bf16', 'cpu', '--precision') == 'bf16'
    [message] = warnings_of(caplog)
    assert message.startswith('--precision bf16 on a CPU without native bf16 (no AMX, no AVX512-BF16)')
    assert '11 GFLOP/s in bf16 against 143 in fp32' in message and 'Use fp32 (or auto)' in message


def test_explicit_bf16_on_a_cpu_with_native_bf16_is_quiet_and_fp16_always_warns(monkeypatch, caplog):
    cpu_with(monkeypatch, 'AMX')
    with caplog.at_level(logging.WARNING):
        assert precision.resolve('bf16', 'cpu') == 'bf16' and precision.resolve('fp32', 'cpu') == 'fp32'
        assert warnings_of(caplog) == []
        assert precision.resolve('fp16', 'cpu') == 'fp16'
    [message] = warnings_of(caplog)
    assert 'fp16 on a CPU' in message


def test_unknown_precision_names_the_setting_and_the_choices():
    with pytest.raises(ValueError, match=r"val.precision: precision must be one of auto, fp32, bf16, fp16, got 'fp8'"):
        precision.resolve('fp8', 'cpu', 'val.precision')


@pytest.mark.parametrize('flags, expected', [('fpu avx2 amx_bf16 amx_tile avx512_bf16', 'AMX'),
                                             ('fpu avx2 avx512f avx512_bf16', 'AVX512-BF16'),
                                             ('fpu sse4_2 avx2 fma', None)])
def test_cpuinfo_flags_are_the_fallback_where_torch_cannot_tell(monkeypatch, tmp_path, flags, expected):
    for name in ('_is_amx_tile_supported', '_is_avx512_bf16_supported'):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text(f'processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\n')
    monkeypatch.setattr(precision, 'CPUINFO', str(cpuinfo))
    assert precision.cpu_bf16_feature() == expected


def test_torch_is_asked_first(monkeypatch):
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: True, raising=False)
    monkeypatch.setattr(precision, 'CPUINFO', '/nonexistent/cpuinfo')
    assert precision.cpu_bf16_feature() == 'AVX512-BF16'
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: False, raising=False)
    assert precision.cpu_bf16_feature() is None


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    net = JUDE(preset='small', num_stages=1, unet_channels=[8, 8, 8, 8], kernel_size=7)
    path = tmp_path_factory.mktemp('model') / 'net.pth'
    state = OrderedDict(net.state_dict())
    torch.save({'params': state, 'network_g': {'type': 'JUDE', **net.config}}, path)
    return path


@pytest.mark.parametrize('feature, expected', [(None, 'fp32'), ('AMX', 'bf16')])
def test_restorer_and_cli_default_to_auto_and_say_what_they_chose(monkeypatch, tmp_path, caplog, checkpoint,
                                                                  feature, expected):
    cpu_with(monkeypatch, feature)
    image = tmp_path / 'dark.png'
    cv2.imwrite(str(image), np.full((24, 20, 3), 40, np.uint8))
    with caplog.at_level(logging.INFO, logger='jude_arch'):
        assert main(['-i', str(image), '-o', str(tmp_path / 'out'), '--model-path', str(checkpoint), '--tile',
                     '0']) == 0
    reason = 'CPU with AMX' if feature else 'CPU without native bf16'
    assert f'cpu, precision {expected} (auto: {reason}' in caplog.text
    restorer = JUDERestorer.from_checkpoint(checkpoint, device='cpu', precision='auto')
    assert restorer.precision == expected and restorer.dtype == precision.PRECISIONS[expected]
    assert JUDERestorer.from_checkpoint(checkpoint, device='cpu').precision == 'fp32'  # the API's default


def test_restorer_reports_a_bad_precision_as_a_restore_error():
    with pytest.raises(RestoreError, match="precision must be one of auto, fp32, bf16, fp16, got 'int8'"):
        JUDERestorer(torch.nn.Identity(), device='cpu', precision='int8')


@pytest.mark.parametrize('feature, expected', [(None, 'fp32'), ('AVX512-BF16', 'bf16')])
def test_training_accepts_auto(monkeypatch, feature, expected):
    cpu_with(monkeypatch, feature)
    assert _check_precision('train.precision', 'auto', CPU) == expected
    assert _check_precision('val.precision', 'fp32', CPU) == 'fp32'
