"""`python -m jude_arch.tools.profile`: every category reported, and the categories add up to the profiled time."""
import json

import pytest

from jude_arch.tools import profile, profile_categories


@pytest.mark.slow
def test_quick_profile_reports_every_category_and_adds_up(tmp_path, capsys):
    out = tmp_path / 'profile.json'
    assert profile.main(['--quick', '--device', 'cpu', '--precision', 'fp32', '--steps', '1', '--warmup', '1',
                         '--json', str(out), '--markdown', str(tmp_path / 'profile.md')]) == 0
    results = json.loads(out.read_text())['results']
    assert [r['what'] for r in results] == ['forward', 'train']
    for result in results:
        categories = result['categories']
        assert list(categories) == [*profile_categories.CATEGORY_NAMES, profile_categories.HOST_OTHER]
        total = sum(c['ms'] for c in categories.values())
        assert total == pytest.approx(result['wall_ms'], rel=0.02)
        assert categories['convolutions']['ms'] > 0 and categories['FFT data step']['ms'] > 0
    train = results[1]['categories']
    assert train['checkpoint recompute']['ms'] > 0 and train['optimizer and EMA']['ms'] > 0  # phase 1 checkpoints
    assert train['data loading']['count'] > 0 and results[0]['categories']['data loading']['ms'] == 0
    table = (tmp_path / 'profile.md').read_text()
    assert '| checkpoint recompute |' in table and 'operators per step' in table


@pytest.mark.parametrize('names,category', [
    (['aten::mkldnn_convolution', 'aten::convolution', 'jude.operator', 'jude.stage_updates'], 'convolutions'),
    (['aten::cudnn_convolution', 'jude.operator', 'autograd::engine::evaluate_function: CheckpointFunctionBackward'],
     'checkpoint recompute'),
    (['aten::relu_', 'jude.operator'], 'element-wise in operators'),
    (['aten::mul', 'jude.stage_updates'], 'element-wise stage updates'),
    (['aten::_fft_r2c', 'aten::fft_rfft2', 'jude.data_step', 'jude.stage_updates'], 'FFT data step'),
    (['aten::mul', 'autograd::engine::evaluate_function: MulBackward0'], 'backward element-wise'),
    (['aten::_foreach_add_', 'Optimizer.step#Adam.step'], 'optimizer and EMA'),
    (['aten::copy_', 'aten::to', 'jude.data_loading'], 'data loading'),
    (['aten::l1_loss'], 'other (kernel estimator, hyper-net, loss, norms)'),
])
def test_categories(names, category):
    assert profile_categories.category_of(names) == category
