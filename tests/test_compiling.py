"""torch.compile as an option: compiled and eager JUDE agree; training, validation and jude-restore read the option."""
import pytest
import torch

from jude_arch.archs import JUDE, compile_network, compiling
from jude_arch.restore import cli
from jude_arch.restore.errors import RestoreError
from jude_arch.restore.restorer import JUDERestorer
from training_helpers import make_model, tiny_lolblur

# A small network that compiles in seconds: the operators' code is the full preset's, only narrower.
NET = dict(preset='small', num_stages=3, unet_channels=[8, 8, 8, 8], kernel_size=7, enhancer_width=8,
           denoiser_width=8, kernel_width=4)


@pytest.mark.slow
def test_compiled_operators_give_the_eager_output():
    """The CUDA tests' fp32 tolerance (1e-4 of the output's largest value), on the CPU; the compilation of the
    operators (what `compile: true` means) takes about a minute on a 2-core CPU."""
    torch.manual_seed(0)
    eager_net = JUDE(**NET).eval()
    x = 0.3 * torch.rand(1, 3, 40, 48)
    with torch.inference_mode():
        eager = eager_net(x)
        compiled_net = compile_network(JUDE(**NET).eval(), True)
        compiled_net.load_state_dict(eager_net.state_dict())  # state-dict keys unchanged by compiling in place
        compiled = compiled_net(x)
    assert all(m._compiled_call_impl is not None for m in compiling.operator_modules(compiled_net))
    assert (compiled - eager).abs().max() <= 1e-4 * eager.abs().max()


@pytest.mark.parametrize('value,parts', [(False, None), (None, None), (True, 'operators'), ('operators', 'operators'),
                                         ('network', 'network')])
def test_option_values(value, parts):
    assert compiling.compile_parts(value) == parts


def test_bad_value_is_named():
    with pytest.raises(ValueError, match="train.compile must be false, true, operators or network, got 'fast'"):
        compiling.compile_parts('fast', 'train.compile')


def test_which_parts_are_compiled(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, 'compile', lambda self, **kw: compiled.append(self))
    net = JUDE(**NET)
    compile_network(net, 'operators')
    assert compiled == [net.prox_p[0], net.prox_q[0], net.prox_z[0], net.enhancer, net.denoiser]
    compiled.clear()
    compile_network(net, 'network')
    assert compiled == [net]
    compiled.clear()
    other = torch.nn.Conv2d(3, 3, 3)
    compile_network(other, True)  # another architecture has no operators: compiled whole
    assert compiled == [other]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_lolblur(tmp_path_factory)


def test_training_and_validation_read_the_option(data, tmp_path, monkeypatch):
    calls = []
    from jude_arch.models import jude_model
    monkeypatch.setattr(jude_model, 'compile_network', lambda net, parts: calls.append((type(net).__name__, parts)))
    make_model(data, tmp_path, train={'compile': True}, val={'compile': 'network'})
    assert calls == [('JUDE', 'operators'), ('JUDE', 'network')]
    with pytest.raises(ValueError, match='options: train.compile must be false, true, operators or network'):
        make_model(data, tmp_path, train={'compile': 'yes'})


def test_restorer_and_cli_read_the_option(monkeypatch):
    calls = []
    from jude_arch.restore import restorer
    monkeypatch.setattr(restorer, 'compile_network', lambda net, parts: calls.append(parts))
    JUDERestorer(JUDE(**NET), device='cpu', compile='network')
    assert calls == ['network']
    args = cli.build_parser().parse_args(['-i', 'a', '-o', 'b', '--model-path', 'c', '--compile'])
    assert args.compile == 'operators'
    args = cli.build_parser().parse_args(['-i', 'a', '-o', 'b', '--model-path', 'c'])
    assert args.compile is False
    monkeypatch.undo()
    with pytest.raises(RestoreError, match='compile must be'):
        JUDERestorer(JUDE(**NET), device='cpu', compile='fast')
