"""The divergence guard: a finite step that throws the model off its course changes nothing."""
import pytest
import torch

from jude_arch.models.step_guard import DIVERGENCE_DEFAULTS, divergence_options
from jude_arch.models.training_guards import TrainingStopped
from jude_arch.option_check import OptionError
from training_helpers import make_model, tiny_lolblur, train_batch


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_lolblur(tmp_path_factory)


def state_of(model):
    """Copies of everything a step may change: weights and buffers, EMA, the optimizer's state."""
    optimizer = {id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
                 for p, s in model.optimizer_g.state.items()}
    return ({k: v.clone() for k, v in model.net_g.state_dict().items()},
            {k: v.clone() for k, v in model.net_g_ema.state_dict().items()}, optimizer)


def assert_unchanged(model, before):
    net, ema, optimizer = state_of(model)
    for now, then in zip((net, ema), before[:2]):
        assert now.keys() == then.keys() and all(torch.equal(now[k], then[k]) for k in now)
    assert optimizer.keys() == before[2].keys()
    for key, state in optimizer.items():
        assert all(torch.equal(v, before[2][key][k]) if torch.is_tensor(v) else v == before[2][key][k]
                   for k, v in state.items())


def test_a_finite_step_that_throws_the_weights_off_changes_nothing(data, tmp_path, log):
    """lr = 1000: Adam's first step moves every weight by ~1000, far more than their norm; it is skipped like a
    non-finite step (the weights, the optimizer's state, the EMA and BatchNorm's statistics stay)."""
    model, _ = make_model(data, tmp_path, train={'max_nonfinite_steps': 5})
    model.optimizer_g.param_groups[0]['lr'] = 1000
    before = state_of(model)
    model.feed_data(train_batch(data))
    model.optimize_parameters(1)
    assert_unchanged(model, before)
    assert model.bad_streak == 1 and model.last_update[0] > 1000
    assert 'iter 1: diverging step skipped (it moved the weights by' in log.text
    assert 'limit train.divergence_guard.max_update = 1' in log.text


def test_a_damaged_optimizer_state_is_caught_by_its_first_update(data, tmp_path, log):
    """Adam moments of 1e34 (a training state damaged in a way no checksum sees): the update they make is
    skipped, the damaged state stays as it was, and training stops at the limit, suspecting the state resumed."""
    model, _ = make_model(data, tmp_path, train={'max_nonfinite_steps': 2})
    model.feed_data(train_batch(data))
    model.optimize_parameters(1)
    assert model.bad_streak == 0
    param = next(p for p in model.net_g.parameters() if p in model.optimizer_g.state)
    model.optimizer_g.state[param]['exp_avg'].view(-1)[:4] = 1e34
    model.resumed_from = ('experiments/x/training_states/1.state', 1)
    before = state_of(model)
    model.optimize_parameters(2)
    assert_unchanged(model, before)
    assert model.bad_streak == 1 and 'iter 2: diverging step skipped' in log.text
    with pytest.raises(TrainingStopped, match='They began with the first step after resuming from '
                                              'experiments/x/training_states/1.state: that training state may be '
                                              'damaged'):
        model.optimize_parameters(3)


def test_an_ordinary_step_goes_through_and_is_remembered(data, tmp_path):
    model, _ = make_model(data, tmp_path)
    before = state_of(model)
    model.feed_data(train_batch(data))
    model.optimize_parameters(1)
    update, lr, loss = model.last_update
    assert 0 < update < DIVERGENCE_DEFAULTS['max_update'] / 10 and lr == 1e-3
    assert list(model.step_history['update']) == [update / lr] and list(model.step_history['loss']) == [loss]
    assert not torch.equal(next(iter(model.net_g.state_dict().values())), next(iter(before[0].values())))


def test_the_median_rules_once_there_is_history(data, tmp_path):
    model, _ = make_model(data, tmp_path, train={'divergence_guard': {'min_history': 5, 'window': 10}})
    history = model.step_history
    assert model.divergence_reason(0.5, 1e-3, 100.0) is None  # no history: only the absolute rule
    for _ in range(5):
        history['update'].append(10.0)  # ‖Δw‖/‖w‖ per unit lr
        history['loss'].append(0.5)
    assert model.divergence_reason(0.9, 1e-3, 0.5) is None  # 90× the median
    assert 'times the recent median at this learning rate' in model.divergence_reason(0.5, 1e-4, 0.5)  # 500×
    assert model.divergence_reason(5e-3, 1e-3, 49.0) is None  # 98× the median loss
    assert 'its loss, 51, is 102 times the recent median' in model.divergence_reason(5e-3, 1e-3, 51.0)
    for _ in range(10):  # the window keeps the last 10 steps only
        history['update'].append(1000.0)
    assert model.divergence_reason(0.9, 1e-3, 0.5) is None


def test_the_guard_can_be_switched_off_and_its_keys_are_checked(data, tmp_path):
    assert divergence_options(False) is None and divergence_options(None) is None
    assert divergence_options({}) == DIVERGENCE_DEFAULTS
    with pytest.raises(OptionError, match='unknown key train.divergence_guard.max_updte; did you mean max_update?'):
        divergence_options({'max_updte': 2})
    with pytest.raises(ValueError, match='train.divergence_guard.loss_factor must be a positive number'):
        divergence_options({'loss_factor': 0})
    model, _ = make_model(data, tmp_path, train={'divergence_guard': False})
    model.optimizer_g.param_groups[0]['lr'] = 1000
    model.feed_data(train_batch(data))
    model.optimize_parameters(1)
    assert model.bad_streak == 0 and model.last_update is None
