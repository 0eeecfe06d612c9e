"""Training data drawn per item: the same batches whatever the workers, and a resumed epoch continues exactly."""
import pytest
import torch
from basicsr.data import build_dataloader, build_dataset

from jude_arch.data import sampling
from training_helpers import tiny_lolblur, tiny_options


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_lolblur(tmp_path_factory)


def batches(data, workers, epoch, position=None, seed=0):
    """The training batches of one epoch (random crops, flips and noise), as BasicSR's training loop gets them."""
    opt = tiny_options(data, 'sampling')['datasets']['train']
    opt.update(phase='train', scale=1, num_worker_per_gpu=workers, dataset_enlarge_ratio=2, lq_noise={})
    dataset = build_dataset(opt)
    sampling.configure(seed, position)
    sampler = sampling.ResumableSampler(dataset, 1, 0, 2)
    sampler.set_epoch(epoch)
    loader = build_dataloader(dataset, opt, num_gpu=0, dist=False, sampler=sampler, seed=seed)
    return [{k: batch[k] for k in ('lq', 'gt', 'draw')} for batch in loader]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_every_item_is_drawn_alike_whatever_the_workers(data):
    alone = batches(data, workers=0, epoch=3)
    assert len(alone) == 6 and same(alone, batches(data, workers=2, epoch=3))
    assert [batch['draw'][:, 1].tolist() for batch in alone] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]
    assert not same(alone, batches(data, workers=0, epoch=4))  # another epoch: other order and draws
    assert not same(alone, batches(data, workers=0, epoch=3, seed=1))  # another manual_seed: other draws


def test_a_resumed_epoch_continues_with_the_next_batch(data):
    whole = batches(data, workers=0, epoch=2)
    position = sampling.data_position(whole[2]['draw'], num_replicas=1)
    assert position == {'epoch': 2, 'next': 6}
    assert same(batches(data, workers=1, epoch=2, position=position), whole[3:])
    assert same(batches(data, workers=0, epoch=2, position={'epoch': 1, 'next': 6}), whole)  # another epoch's


def test_random_states_come_back(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    path = tmp_path / 'states.pt'
    torch.save(sampling.random_states(), path)
    expected = torch.rand(3), np.random.rand(3), random.random(), np.random.randn()
    torch.manual_seed(4), np.random.seed(4), random.seed(4)
    sampling.set_random_states(torch.load(path, weights_only=True))
    again = torch.rand(3), np.random.rand(3), random.random(), np.random.randn()
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2:] == again[2:]


class _GPUTensor:
    """Stands in for a CUDA tensor on a machine without one: numpy refuses it, .cpu() and .tolist() work."""

    def __init__(self, tensor):
        self.tensor = tensor

    def numpy(self):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to "
                        'host memory first.')

    def cpu(self):
        return self.tensor

    def tolist(self):
        return self.tensor.tolist()


def test_random_states_come_back_from_a_state_basicsr_loaded_onto_the_gpu():
    """BasicSR's resume loads the state with map_location to the GPU: the states' tensors arrive as CUDA tensors
    (the first H200 run of the training tests failed here, in numpy's conversion)."""
    import numpy as np

    def to_gpu(value):
        if isinstance(value, dict):
            return {key: to_gpu(item) for key, item in value.items()}
        return _GPUTensor(value) if isinstance(value, torch.Tensor) else value

    np.random.seed(5)
    states = to_gpu(sampling.random_states())
    expected = np.random.rand(3)
    np.random.seed(6)
    sampling.set_random_states(states)
    assert np.array_equal(np.random.rand(3), expected)
