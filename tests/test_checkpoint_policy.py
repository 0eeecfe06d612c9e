"""`checkpoint_stages: auto`: the memory model of a training step against what the CPU really allocates, and the
decision against the free memory (faked both ways)."""
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from jude_arch.archs import JUDE, checkpoint_policy
from jude_arch.archs.checkpoint_policy import estimate_bytes, measure_training_memory


def checkpoint_calls(monkeypatch):
    """Count the calls of torch.utils.checkpoint made by the operators."""
    from jude_arch.archs import operators
    calls = []
    original = operators.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(operators, 'checkpoint', counting)
    return calls


@pytest.mark.parametrize('free_gib,expected', [(1000.0, False), (0.01, True)])
def test_auto_checkpoints_only_when_the_step_would_not_fit(monkeypatch, free_gib, expected):
    from jude_arch.restore import memory
    monkeypatch.setattr(memory, 'available_memory', lambda device: int(free_gib * 2**30))
    calls = checkpoint_calls(monkeypatch)
    torch.manual_seed(0)
    net = JUDE('small', checkpoint_stages='auto').train()
    x = torch.rand(2, 3, 48, 48)
    F.l1_loss(net(x), x).backward()
    assert bool(calls) == expected
    assert all(op.checkpointed == expected for op in net.prox_p)
    calls.clear()
    with torch.no_grad():  # inference never checkpoints, whatever the memory
        net(x)
    assert not calls


def test_auto_gives_the_same_gradients_either_way(monkeypatch):
    from jude_arch.restore import memory
    grads = []
    for free in (2**50, 1):
        monkeypatch.setattr(memory, 'available_memory', lambda device, free=free: free)
        torch.manual_seed(0)
        net = JUDE('small', checkpoint_stages='auto').train()
        x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        F.l1_loss(net(x), x).backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_bad_value_is_named():
    with pytest.raises(ValueError, match="checkpoint_stages must be true, false or auto, got 'sometimes'"):
        JUDE('small', checkpoint_stages='sometimes')


# A training step of the small preset in a fresh process: its resident-set growth (VmHWM after the step minus the
# resident set before it) in bytes.
MEASURE = textwrap.dedent('''
    import sys, torch, torch.nn.functional as F
    from jude_arch.archs import JUDE
    torch.set_num_threads(1)
    side, batch = int(sys.argv[1]), int(sys.argv[2])
    torch.manual_seed(0)
    net = JUDE('small').train()
    x = torch.rand(batch, 3, side, side)
    F.l1_loss(net(torch.rand(1, 3, 32, 32)), torch.rand(1, 3, 32, 32)).backward()  # fault in oneDNN, the allocator
    net.zero_grad(set_to_none=True)
    def rss(field):
        return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith(field))
    open('/proc/self/clear_refs', 'w').write('5')
    before = rss('VmRSS:')
    F.l1_loss(net(x), x).backward()
    print(rss('VmHWM:') - before)
''')


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc/self/status')
def test_memory_model_matches_the_cpu_allocations():
    """The model measured on 64² and 128² probes predicts a 2×160² and a 1×256² step's resident-set growth within
    25% (the growth also holds oneDNN buffers and malloc slack that the tensor count does not see)."""
    torch.manual_seed(0)
    model = measure_training_memory(lambda: JUDE('small').train(), torch.device('cpu'))
    for side, batch in ((160, 2), (256, 1)):
        done = subprocess.run([sys.executable, '-c', MEASURE, str(side), str(batch)], capture_output=True,
                              text=True, check=True)
        measured = int(done.stdout.split()[-1])
        estimate = estimate_bytes(model, batch, side, side)
        assert 0.75 <= measured / estimate <= 1.25, (side, batch, measured / 2**20, estimate / 2**20)


def test_the_decision_is_taken_once_per_shape(monkeypatch):
    from jude_arch.restore import memory
    probes = []
    original = checkpoint_policy.measure_training_memory
    monkeypatch.setattr(checkpoint_policy, 'measure_training_memory',
                        lambda *a: probes.append(1) or original(*a))
    monkeypatch.setattr(memory, 'available_memory', lambda device: 2**40)
    net = JUDE('small', checkpoint_stages='auto').train()
    for side in (32, 32, 40):
        F.l1_loss(net(torch.rand(1, 3, side, side)), torch.zeros(1, 3, side, side)).backward()
    assert len(probes) == 1 and len(net.auto_checkpoint.decisions) == 2
