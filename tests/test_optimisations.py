"""JUDE's speed and memory options change nothing but speed and memory.

Each switch is compared with the plain path in fp32 within 1e-5: channels_last on/off, gradient
checkpointing on/off, the skipped dead last-stage updates (return_intermediates=False vs True), the
padding skipped for aligned sizes. Each test also checks that the optimisation actually takes effect,
so that it fails if the switch silently does nothing.
"""
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from jude_arch.archs import JUDE, ResUNet
from jude_arch.archs import operators as operators_module
from jude_arch.archs import resunet as resunet_module
from jude_arch.restore.memory import meminfo

TOL = dict(rtol=0, atol=1e-5)


def twin(preset, switch, **common):
    """Two JUDEs with the same weights and options `common`, the second with `switch` (a dict) applied."""
    torch.manual_seed(0)
    reference = JUDE(preset, **common)
    net = JUDE(preset, **common, **switch)
    net.load_state_dict(reference.state_dict())
    return reference, net


def assert_same_restoration(a, b):
    """Outputs and every intermediate agree within 1e-5; the output also relative to its own scale
    (a randomly initialised JUDE outputs values of order 1e-2)."""
    torch.testing.assert_close(a['output'], b['output'], **TOL)
    scale = a['output'].abs().max()
    assert scale > 0 and (a['output'] - b['output']).abs().max() <= 1e-5 * scale
    for key in ('kernel', 'lambdas', 'gammas', 'L_hat', 'R_hat'):
        torch.testing.assert_close(a[key], b[key], **TOL)
    for key in ('I', 'R', 'L', 'P', 'Q', 'Z', 'Gamma', 'Omega', 'Delta'):
        for t, (x, y) in enumerate(zip(a[key], b[key])):
            torch.testing.assert_close(x, y, **TOL, msg=lambda m: f'{key}[{t}]: {m}')


def operator_inputs(net):
    """Record the input every proximal-operator network convolves, [point, γ] (ResUNet-padded to a multiple of 8),
    as (name, tensor), hooked on its first conv so that recomputations under checkpointing show too.
    The caller removes the hooks (.remove() on each handle)."""
    seen = []
    handles = [
        op.head.register_forward_pre_hook(lambda module, args, name=name: seen.append((name, args[0])))
        for name in ('prox_p', 'prox_q', 'prox_z') for op in getattr(net, name)
    ]
    return seen, handles


@pytest.mark.parametrize('preset,size', [('small', (37, 53)), ('full', (32, 24))])
def test_channels_last_matches_nchw(preset, size):
    channels_last, nchw = twin(preset, {'channels_last': False})
    assert channels_last.config['channels_last'] and not nchw.config['channels_last']
    x = 0.4 * torch.rand(2, 3, *size)
    seen, handles = operator_inputs(channels_last)
    with torch.no_grad():
        a, b = nchw(x, return_intermediates=True), channels_last(x, return_intermediates=True)
    for handle in handles:
        handle.remove()
    assert_same_restoration(a, b)
    # The operators really ran in channels_last, and the unrolled variables came back NCHW.
    assert seen and all(inp.is_contiguous(memory_format=torch.channels_last) for _, inp in seen)
    assert all(t.is_contiguous() for key in ('P', 'Q', 'Z', 'R', 'L') for t in b[key]) and b['output'].is_contiguous()


def test_operator_input_is_the_proximal_point_and_noise_level():
    torch.manual_seed(3)
    net = JUDE('small')
    seen, handles = operator_inputs(net)
    with torch.no_grad():
        x = 0.5 * torch.rand(2, 3, 20, 16)
        out = net(x, return_intermediates=True)
    for handle in handles:
        handle.remove()
    names = [name for name, _ in seen]
    assert names == ['prox_p', 'prox_q', 'prox_z'] * net.num_stages
    for t in range(net.num_stages):
        for j, name in enumerate(('prox_p', 'prox_q', 'prox_z')):
            inp = seen[3 * t + j][1]
            assert inp.shape == (2, 4, 24, 16)  # 20 rows replicate-padded to 24 by the ResUNet
            inp = inp[..., :20, :]
            gamma = out['gammas'][:, t, j].view(2, 1, 1).expand(2, 20, 16)
            torch.testing.assert_close(inp[:, 3], gamma, rtol=0, atol=0)
    # Step 1 of the first stage (Γ = 0, R = Q = Z = X): the proximal point (λ2·X² + λ3·X) / (λ2·X² + λ3).
    lam2, lam3 = (out['lambdas'][:, 0, i].view(2, 1, 1, 1) for i in (1, 2))
    torch.testing.assert_close(seen[0][1][:, :3, :20], (lam2 * x * x + lam3 * x) / (lam2 * x * x + lam3), **TOL)


def test_dead_last_stage_updates_are_skipped_without_changing_the_output():
    torch.manual_seed(4)
    net = JUDE('small')
    x = 0.4 * torch.rand(2, 3, 24, 40)
    seen, handles = operator_inputs(net)
    with torch.no_grad():
        full = net(x, return_intermediates=True)
        calls_full = len(seen)
        lean = net(x)
    for handle in handles:
        handle.remove()
    K = net.num_stages
    assert calls_full == 3 * K and len(seen) - calls_full == 3 * K - 1
    assert [name for name, _ in seen[calls_full:]][-2:] == ['prox_p', 'prox_q']  # no D_Z in the last stage
    torch.testing.assert_close(lean, full['output'], rtol=0, atol=0)


def test_training_gradients_do_not_depend_on_the_skip():
    """Training uses the lean path: its loss and gradients equal those of the complete stage loop."""
    torch.manual_seed(5)
    net = JUDE('small').train()
    x = 0.4 * torch.rand(2, 3, 24, 24)
    grads = []
    for intermediates in (False, True):
        out = net(x, return_intermediates=intermediates)
        (out['output'] if intermediates else out).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
        net.zero_grad(set_to_none=True)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], **TOL, msg=name)


@pytest.mark.parametrize('channels_last', [True, False])
def test_checkpointing_matches_and_recomputes(channels_last):
    plain, checkpointed = twin('small', {'checkpoint_stages': True}, channels_last=channels_last)
    x = 0.4 * torch.rand(2, 3, 28, 36)
    results = []
    for net in (plain, checkpointed):
        net.train()
        seen, handles = operator_inputs(net)
        loss = net(x).square().mean()
        forward_calls = len(seen)
        loss.backward()
        for handle in handles:
            handle.remove()
        grads = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads, forward_calls, len(seen) - forward_calls))
    (loss_a, grads_a, fwd_a, recomputed_a), (loss_b, grads_b, fwd_b, recomputed_b) = results
    torch.testing.assert_close(loss_a, loss_b, **TOL)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == len(list(plain.parameters()))
    for name, grad in grads_a.items():
        torch.testing.assert_close(grad, grads_b[name], **TOL, msg=name)
    # Checkpointing really happened: every operator call ran again in the backward pass.
    assert fwd_a == fwd_b == 3 * plain.num_stages - 1
    assert recomputed_a == 0 and recomputed_b == fwd_b


def test_checkpointing_is_skipped_without_gradients(monkeypatch):
    """Checkpointing pays only before a backward pass: under no_grad and inference_mode the operators run
    directly; with gradients every operator call goes through torch.utils.checkpoint."""
    calls = []
    real = operators_module.checkpoint
    monkeypatch.setattr(operators_module, 'checkpoint', lambda *args, **kw: calls.append(1) or real(*args, **kw))
    torch.manual_seed(6)
    net = JUDE('small', checkpoint_stages=True, unet_channels=[4, 4, 4, 4]).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        net(x)
    with torch.inference_mode():
        net(x)
    assert calls == []
    net(x).mean().backward()
    assert len(calls) == 3 * net.num_stages - 1  # every operator call of the lean path, the heads never


def test_autocast_keeps_the_unrolled_variables_in_float32():
    """Convolutions run in bf16; the operators hand back float32, the stage variables, the FFT step and the output
    stay float32."""
    torch.manual_seed(7)
    net = JUDE('small')
    convolved, returned = [], []
    handles = [net.prox_z[0].tail.register_forward_hook(lambda module, args, out: convolved.append(out.dtype)),
               net.prox_z[0].register_forward_hook(lambda module, args, out: returned.append(out.dtype))]
    x = 0.4 * torch.rand(1, 3, 32, 32)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = net(x, return_intermediates=True)
    for handle in handles:
        handle.remove()
    assert convolved and all(dtype == torch.bfloat16 for dtype in convolved)
    assert returned and all(dtype == torch.float32 for dtype in returned)
    for key in ('I', 'R', 'L', 'P', 'Q', 'Z', 'Delta'):
        assert all(t.dtype == torch.float32 for t in out[key]), key
    assert out['output'].dtype == torch.float32


def test_resunet_pads_only_unaligned_inputs(monkeypatch):
    torch.manual_seed(8)
    net = ResUNet(4, 3, (8, 8, 8, 8), 1).eval()
    pads = []
    real_pad = resunet_module.F.pad
    monkeypatch.setattr(resunet_module.F, 'pad', lambda *a, **k: pads.append(a[1]) or real_pad(*a, **k))
    with torch.no_grad():
        aligned = torch.rand(1, 4, 24, 16)
        y = net(aligned)
        assert pads == [] and y.shape == (1, 3, 24, 16)
        unaligned = torch.rand(1, 4, 21, 13)
        y = net(unaligned)
        assert pads == [(0, 3, 0, 3)] and y.shape == (1, 3, 21, 13)
        # Cropping back the padded result equals running on the explicitly padded input.
        padded = real_pad(unaligned, (0, 3, 0, 3), mode='replicate')
        torch.testing.assert_close(y, net(padded)[..., :21, :13], **TOL)


STEP = textwrap.dedent('''
    import json, sys, torch
    import jude_arch
    from jude_arch.archs import JUDE
    from jude_arch.restore.memory import peak_rss_bytes, rss_bytes
    torch.set_num_threads(2)
    checkpoint, grads_path = sys.argv[1] == '1', sys.argv[2]
    torch.manual_seed(0)
    net = JUDE('full', checkpoint_stages=checkpoint).train()
    x = 0.3 * torch.rand(2, 3, 256, 256)
    target = torch.rand(2, 3, 256, 256)
    before = rss_bytes()
    loss = torch.nn.functional.l1_loss(net(x), target)
    loss.backward()
    peak = peak_rss_bytes() - before
    torch.save({n: p.grad for n, p in net.named_parameters()}, grads_path)
    print(json.dumps({'loss': loss.item(), 'peak': peak}))
''')


@pytest.mark.slow
def test_checkpointing_cuts_full_preset_training_memory(tmp_path):
    """Full preset, CPU, 256×256, batch 2: ≥ 40% less peak memory, same loss and grads.

    One training step per mode, each in its own process so that its peak resident memory is its own.
    """
    needed = 14 * 2**30  # the unchecked step peaks near 10 GB; leave room for the other processes
    available = meminfo('MemAvailable')
    if available < needed:
        pytest.skip(f'needs {needed / 2**30:.0f} GiB of available memory, {available / 2**30:.1f} GiB free')
    runs = {}
    for checkpoint in (False, True):
        grads_path = tmp_path / f'grads_{checkpoint}.pt'
        done = subprocess.run([sys.executable, '-c', STEP, str(int(checkpoint)), str(grads_path)],
                              capture_output=True, text=True, check=True)
        runs[checkpoint] = json.loads(done.stdout.strip().splitlines()[-1])
        runs[checkpoint]['grads'] = torch.load(grads_path, weights_only=True)
        grads_path.unlink()
    plain, checkpointed = runs[False], runs[True]
    assert checkpointed['peak'] <= 0.6 * plain['peak'], (plain['peak'], checkpointed['peak'])
    assert abs(plain['loss'] - checkpointed['loss']) <= 1e-5
    assert plain['grads'].keys() == checkpointed['grads'].keys()
    for name, grad in plain['grads'].items():
        torch.testing.assert_close(checkpointed['grads'][name], grad, **TOL, msg=name)
