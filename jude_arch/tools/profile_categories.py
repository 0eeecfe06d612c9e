"""Where a profiled JUDE step spends its time: torch.profiler's events sorted into JUDE's categories.

`annotate_jude()` marks JUDE's parts with `torch.profiler.record_function` ranges for the duration of a profile
(class attributes patched and restored: nothing changes outside it, and no range costs anything in normal runs):
the convolutional sub-networks ('jude.operator'), the FFT data step ('jude.data_step'), the unrolled stage updates
('jude.stage_updates'), the EMA of the weights ('jude.ema'); the profiling tool adds 'jude.data_loading' around
fetching a batch and 'jude.step' around each step. `categorize` then gives each operator event its own time (GPU:
the time of the kernels it launched; CPU: its self time) and the first category whose rule matches the event or
one of its enclosing ranges. Non-reentrant checkpointing recomputes an operator's forward inside the backward
pass, so operator ranges under an autograd node are the recompute.
"""
from contextlib import contextmanager

def _in_backward(names):
    return any(n.startswith('autograd::engine::evaluate_function') for n in names)


def _is_conv(name):
    lower = name.lower()
    return 'conv' in lower and (name.startswith('aten::') or name.startswith('autograd::') or 'Backward' in name)


IDLE = 'GPU idle (launch gaps, host waits)'
HOST_OTHER = 'host time outside operators (Python)'
# (category, rule over the names of an event and its enclosing ranges, innermost first); the first match wins.
CATEGORIES = (
    ('data loading', lambda names: 'jude.data_loading' in names),
    ('checkpoint recompute', lambda names: 'jude.operator' in names and _in_backward(names)),
    ('convolutions', lambda names: any(_is_conv(n) for n in names)),
    ('FFT data step', lambda names: 'jude.data_step' in names or any('fft' in n.lower() for n in names)),
    ('optimizer and EMA', lambda names: 'jude.ema' in names or any(n.startswith('Optimizer.') for n in names)),
    ('element-wise in operators', lambda names: 'jude.operator' in names),
    ('element-wise stage updates', lambda names: 'jude.stage_updates' in names),
    ('backward element-wise', _in_backward),
    ('other (kernel estimator, hyper-net, loss, norms)', lambda names: True),
)
CATEGORY_NAMES = tuple(name for name, _ in CATEGORIES)


def category_of(names):
    """The category of an event whose own name and enclosing ranges' names are `names` (innermost first)."""
    return next(category for category, rule in CATEGORIES if rule(names))


def categorize(events, wall_us, steps, cuda):
    """Per-step time by category from profiler events.

    Args:
        events: `torch.profiler.profile(...).events()`.
        wall_us (float): wall-clock time of the profiled steps, in microseconds.
        steps (int): how many steps were profiled.
        cuda (bool): attribute GPU kernel time (else the operators' own CPU time).

    Returns:
        dict: 'categories' {name: {'ms': per step, 'share': of the wall time, 'count': kernels (CUDA) or operators
        (CPU) per step}}, with every category of CATEGORIES plus the remainder (IDLE on CUDA, HOST_OTHER on CPU);
        'wall_ms', 'kernels' (launches per step on CUDA, operator calls on CPU), 'busy_ms'.
    """
    from torch.autograd import DeviceType

    totals = {name: [0.0, 0] for name in CATEGORY_NAMES}
    loading_us = 0.0
    for event in events:
        if event.name == 'jude.data_loading':
            loading_us += event.cpu_time_total  # the host's wait for a batch, which the GPU spends idle
        if event.device_type != DeviceType.CPU or getattr(event, 'is_async', False):
            continue
        if cuda:
            if not event.kernels:
                continue
            time_us, count = sum(k.duration for k in event.kernels), len(event.kernels)
        else:
            if event.is_user_annotation if hasattr(event, 'is_user_annotation') else event.name.startswith('jude.'):
                time_us, count = event.self_cpu_time_total, 0  # Python inside a range, between its operators
            else:
                time_us, count = event.self_cpu_time_total, 1
        names, parent = [event.name], event.cpu_parent
        while parent is not None:
            names.append(parent.name)
            parent = parent.cpu_parent
        entry = totals[category_of(names)]
        entry[0] += time_us
        entry[1] += count
    busy_us = sum(t for t, _ in totals.values())
    rest = IDLE if cuda else HOST_OTHER
    totals[rest] = [max(wall_us - busy_us, 0.0), 0]
    categories = {name: dict(ms=t / steps / 1e3, share=t / wall_us if wall_us else 0.0, count=c / steps)
                  for name, (t, c) in totals.items()}
    return dict(categories=categories, wall_ms=wall_us / steps / 1e3, busy_ms=busy_us / steps / 1e3,
                kernels=sum(c for _, c in totals.values()) / steps, data_loading_wall_ms=loading_us / steps / 1e3)


def format_profile(title, result):
    """A Markdown table of `categorize`'s result, headed by `title`."""
    unit = 'kernels' if IDLE in result['categories'] else 'operators'
    loading = result.get('data_loading_wall_ms')
    lines = [f'**{title}**: {result["wall_ms"]:.1f} ms per step, {result["kernels"]:,.0f} {unit} per step'
             + (f', {loading:.1f} ms per step waiting for and copying the batch' if loading else ''), '',
             f'| category | ms per step | share | {unit} per step |', '|---|---|---|---|']
    for name, entry in result['categories'].items():
        lines.append(f"| {name} | {entry['ms']:.2f} | {100 * entry['share']:.1f}% | {entry['count']:,.0f} |")
    return '\n'.join(lines)


@contextmanager
def annotate_jude():
    """Mark JUDE's parts with record_function ranges while the context is active (see the module docstring)."""
    from torch.profiler import record_function

    from ..archs.data_step import FFTDataStep
    from ..archs.jude_arch import JUDE
    from ..archs.resunet import ResUNet
    from ..archs.retinex_heads import IlluminationEnhancer, ReflectanceDenoiser
    from ..models.jude_model import JUDEModel

    targets = [(ResUNet, 'forward', 'jude.operator'), (IlluminationEnhancer, 'forward', 'jude.operator'),
               (ReflectanceDenoiser, 'forward', 'jude.operator'), (FFTDataStep, '__init__', 'jude.data_step'),
               (FFTDataStep, 'solve', 'jude.data_step'), (JUDE, 'retinex_updates', 'jude.stage_updates'),
               (JUDE, 'sharp_image_updates', 'jude.stage_updates'), (JUDEModel, 'model_ema', 'jude.ema')]
    saved = [(cls, attr, cls.__dict__[attr]) for cls, attr, _ in targets]

    def ranged(function, label):
        def wrapper(*args, **kwargs):
            with record_function(label):
                return function(*args, **kwargs)
        return wrapper

    try:
        for cls, attr, label in targets:
            setattr(cls, attr, ranged(cls.__dict__[attr], label))
        yield
    finally:
        for cls, attr, original in saved:
            setattr(cls, attr, original)
