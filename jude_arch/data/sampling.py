"""Training data that a resumed run draws exactly as the uninterrupted run would have.

BasicSR's resume restores the weights, the optimizer and the schedule, but not the data: a resumed run starts its
epoch again from the first batch, and the random crops, flips and noise come from random generators that were
not saved (and, with data-loader workers, re-seeded alike at every epoch). Here:
- `ResumableSampler` (installed over BasicSR's `EnlargedSampler` for training) keeps BasicSR's order (a
  permutation seeded by the epoch) and hands every item its draw: (epoch, position in the epoch, seed), the seed
  derived from `manual_seed`, the epoch and the position. A dataset that declares `seeded_draws` (LOLBlurDataset,
  ShakeBlurDataset, through `SeededDraws`) draws that item's crop, flips and noise from Python's, NumPy's and
  torch's generators seeded with it, so an item is the same whatever the worker, the number of workers or the
  resume; it also returns the draw, from which the model knows where in the epoch training is.
- The training state records that position; resuming from it (`resume_at`), the sampler skips the items of the
  epoch already trained on.
- `random_states` / `set_random_states`: the process's own generators (torch, CUDA, NumPy, Python), saved with
  the training state and restored on resume.
So a run interrupted and resumed trains on the same batches, in the same order, as one that was not, and ends
with the same weights bit for bit (on the same machine, with the same settings).
"""
import contextlib
import random
from collections import namedtuple

import numpy as np
import torch
from basicsr.data.data_sampler import EnlargedSampler

Draw = namedtuple('Draw', 'epoch position seed')
# What the training run being set up resumes from: set by the resume loader before the sampler is built.
_run = {'seed': 0, 'position': None}


def configure(seed, position=None):
    """Set the run's seed (`manual_seed`) and the data position it resumes at ({'epoch', 'next'} or None)."""
    _run.update(seed=int(seed or 0), position=position)


def draw_seed(seed, epoch, position):
    """A 64-bit seed for one item, from the run's seed, the epoch and the item's position in it."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1, np.uint64)[0])


@contextlib.contextmanager
def seeded_generators(seed):
    """Python's `random`, NumPy's global generator and torch's CPU generator seeded with `seed` inside, and put back
    as they were after (with no workers the items are drawn in the training process itself)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class SeededDraws:
    """A dataset whose item's random draws can be seeded: dataset[(index, Draw)] draws item `index` with the draw's
    seed and adds 'draw' = tensor([epoch, position]) to it; dataset[index] draws as usual. Subclasses implement
    `draw_item(index)`."""

    seeded_draws = True

    def __getitem__(self, index):
        if isinstance(index, tuple):
            index, draw = index
            with seeded_generators(draw.seed):
                item = self.draw_item(index)
            item['draw'] = torch.tensor([draw.epoch, draw.position])
            return item
        return self.draw_item(index)


class ResumableSampler(EnlargedSampler):
    """BasicSR's EnlargedSampler, same order, that hands out draws (`SeededDraws`) and skips, in the epoch being
    resumed, the items already trained on (see the module docstring)."""

    def __init__(self, dataset, num_replicas, rank, ratio=1):
        super().__init__(dataset, num_replicas, rank, ratio)
        self.seed = _run['seed']
        self.resume = _run['position']
        _run['position'] = None  # for this sampler only

    def _skip(self):
        return self.resume['next'] if self.resume and self.resume['epoch'] == self.epoch else 0

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.epoch)
        indices = torch.randperm(self.total_size, generator=g).tolist()
        size = len(self.dataset)
        seeded = getattr(self.dataset, 'seeded_draws', False)
        positions = range(self.rank, self.total_size, self.num_replicas)[self._skip():]
        for position in positions:
            index = indices[position] % size
            yield (index, Draw(self.epoch, position, draw_seed(self.seed, self.epoch, position))) if seeded else index

    def __len__(self):
        return self.num_samples - self._skip()


def data_position(draws, num_replicas):
    """Where training is in its epoch after a batch whose items carry `draws` (B×2: epoch, position): {'epoch',
    'next'}, 'next' counting the items of this process already taken (the same on every process)."""
    epoch, position = draws[-1].tolist()
    return {'epoch': int(epoch), 'next': int(position) // num_replicas + 1}


def random_states():
    """The process's random generators' states, as tensors and numbers (a training state loads weights only)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    states = {'torch': torch.get_rng_state(),
              'numpy': {'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': int(pos),
                        'has_gauss': int(has_gauss), 'gauss': float(gauss)},
              'python': {'version': version, 'state': torch.tensor(python_state, dtype=torch.int64),
                         'gauss': python_gauss}}
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states):
    """Restore what `random_states` returned (the CUDA states only where there are as many GPUs).

    BasicSR loads a resume state onto the GPU (`map_location` to the current device), so every tensor here may
    be a CUDA tensor: each is brought to the CPU before numpy or torch.set_rng_state reads it.
    """
    torch.set_rng_state(states['torch'].cpu())
    numpy = states['numpy']
    np.random.set_state(('MT19937', numpy['keys'].cpu().numpy().astype(np.uint32), numpy['pos'], numpy['has_gauss'],
                         numpy['gauss']))
    python = states['python']
    random.setstate((python['version'], tuple(python['state'].tolist()), python['gauss']))
    cuda = states.get('cuda')
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([state.cpu() for state in cuda])

