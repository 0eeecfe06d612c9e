"""Numerics of the unrolling: float32 hyper-parameters under autocast, stages that reach the output."""
import warnings

import pytest
import torch

from jude_arch.archs import JUDE
from jude_arch.archs.data_step import FFTDataStep


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_lambdas_under_autocast_equal_the_fp32_lambdas(dtype):
    torch.manual_seed(0)
    net = JUDE('small').eval()
    with torch.no_grad():
        kernel, _ = net.kernel_estimator(torch.rand(2, 3, 32, 32))
        with torch.autocast('cpu', dtype=dtype):
            mixed_lambdas, mixed_gammas = net.hyper_net(kernel.to(dtype))
    assert mixed_lambdas.dtype == mixed_gammas.dtype == torch.float32
    # The kernel itself went through `dtype` (as under autocast in the network): that rounding aside, equal.
    with torch.no_grad():
        fp32_lambdas, fp32_gammas = net.hyper_net(kernel.to(dtype).float())
    torch.testing.assert_close(mixed_lambdas, fp32_lambdas, rtol=1e-6, atol=0)
    torch.testing.assert_close(mixed_gammas, fp32_gammas, rtol=1e-6, atol=0)


@pytest.mark.parametrize('stages', [1, 2])
def test_too_few_stages_for_the_data_step_to_matter_are_warned(stages):
    with pytest.warns(UserWarning, match=f'num_stages={stages} leaves the FFT data step without any effect'):
        JUDE('small', num_stages=stages, unet_channels=[4, 4, 4, 4])
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        JUDE('small', num_stages=3, unet_channels=[4, 4, 4, 4])


@pytest.mark.parametrize('stages', [3, 4])
def test_dead_solves_are_skipped_without_changing_the_output(stages, monkeypatch):
    solve, calls = FFTDataStep.solve, []

    def counted(self, *args):
        calls.append(1)
        return solve(self, *args)

    monkeypatch.setattr(FFTDataStep, 'solve', counted)
    torch.manual_seed(1)
    net = JUDE('small', num_stages=stages, unet_channels=[8, 8, 8, 8]).eval()
    x = 0.4 * torch.rand(1, 3, 24, 28)
    with torch.no_grad():
        full = net(x, return_intermediates=True)
        solves_full = len(calls)
        lean = net(x)
    assert solves_full == stages and len(calls) - solves_full == stages - 2  # only the solves that reach Ŷ
    assert torch.equal(lean, full['output'])
