"""The offline install path: build a wheelhouse, install from it with --no-index into a fresh virtual environment
that already has torch & co (like a GPU image), without network, and import jude_arch.

The fresh environment sees the packages a GPU image provides (torch, torchvision, numpy, opencv-python,
scikit-image and everything they need), taken from this environment through symbolic links in one folder named
by a .pth file, and nothing else: basicsr, lmdb, tb-nightly, pytest, ... must come from the wheelhouse.
Building the wheelhouse uses the package index (or pip's cache); the install cannot reach any index.
"""
import importlib.metadata
import os
import subprocess
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from jude_arch.tools import wheelhouse
from training_helpers import PYTHON, run


def provided_closure(names):
    """The installed distributions `names` need, transitively, with the extras asked for (markers evaluated
    here)."""
    found, extras_seen, todo = {}, {}, [(canonicalize_name(n), frozenset()) for n in names]
    while todo:
        name, extras = todo.pop()
        if name in extras_seen and extras <= extras_seen[name]:
            continue
        try:
            dist = found.get(name) or importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional dependency that is not installed
        found[name] = dist
        extras_seen[name] = extras_seen.get(name, frozenset()) | extras
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or any(requirement.marker.evaluate({'extra': e}) for e in ('', *extras)):
                todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return found


def link_provided(folder, names):
    """Symbolic links to the top-level files of `names` and their dependencies: a site folder with exactly those."""
    folder.mkdir()
    site = Path(sysconfig.get_paths()['purelib'])
    for dist in provided_closure(names).values():
        for top in {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith('..')}:
            if (site / top).exists() and not (folder / top).exists():
                (folder / top).symlink_to(site / top)
    return folder


def offline(command, cwd):
    """Run a command that cannot reach a package index (no pip configuration, no index, dead proxies); return
    its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('PIP_') and 'proxy' not in k.lower()}
    dead = 'http://127.0.0.1:9'
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX='1', http_proxy=dead, https_proxy=dead, HTTP_PROXY=dead,
               HTTPS_PROXY=dead, OMP_NUM_THREADS='2')
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f'{command} failed:\n{(done.stdout + done.stderr)[-4000:]}'
    return done.stdout


@pytest.mark.slow
def test_install_from_the_wheelhouse_offline_next_to_an_installed_torch(tmp_path):
    house = tmp_path / 'wheelhouse'
    assert wheelhouse.main([str(house)]) == 0
    names = {canonicalize_name(p.name.split('-')[0]) for p in house.glob('*.whl')}
    assert {'jude-basicsr', 'basicsr', 'lmdb', 'addict', 'yapf', 'tb-nightly', 'pytest'} <= names
    assert not names & {canonicalize_name(n) for n in wheelhouse.PROVIDED}  # the image's own stay untouched
    with zipfile.ZipFile(next(house.glob('jude_basicsr-*.whl'))) as wheel:
        assert 'jude_basicsr_hook.pth' in wheel.namelist()

    provided = link_provided(tmp_path / 'provided', wheelhouse.PROVIDED)
    venv = tmp_path / 'venv'
    run([PYTHON, '-m', 'venv', venv], cwd=tmp_path)
    python = venv / 'bin' / 'python'
    site = Path(run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                    cwd=tmp_path).split()[-1])
    (site / 'gpu_image.pth').write_text(f'{provided}\n')

    out = offline([python, '-m', 'pip', 'install', '--no-index', '--find-links', house, 'jude-basicsr[test]'],
                  tmp_path)
    installed = next(line for line in out.splitlines() if line.startswith('Successfully installed'))
    assert 'jude-basicsr-' in installed and 'basicsr-1.4.2' in installed
    assert not any(f' {name}-' in installed for name in ('torch', 'torchvision', 'numpy', 'opencv-python'))
    assert not list(site.glob('torch*')) and not list(site.glob('numpy*'))  # nothing reinstalled into the venv

    code = ('import torch, basicsr, jude_arch, pytest; from basicsr.utils.registry import ARCH_REGISTRY; '
            'print(jude_arch.__file__, torch.__file__, "JUDE" in ARCH_REGISTRY)')
    jude_file, torch_file, registered = offline([python, '-c', code], tmp_path).split()[-3:]
    assert Path(jude_file).is_relative_to(site) and Path(torch_file).is_relative_to(provided)
    assert registered == 'True'
    offline([python, '-m', 'pip', 'check'], tmp_path)


def test_requirements_are_read_for_the_target(tmp_path):
    """Markers are evaluated for the target Python, not this one: setuptools is needed from Python 3.12 on."""
    wheel = tmp_path / 'demo-1.0-py3-none-any.whl'
    with zipfile.ZipFile(wheel, 'w') as archive:
        archive.writestr('demo-1.0.dist-info/METADATA', 'Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n'
                         'Requires-Dist: lmdb\nRequires-Dist: setuptools; python_version >= "3.12"\n'
                         'Requires-Dist: pytest>=7; extra == "test"\n')
    names = lambda version, extras=(): [r.name for r in wheelhouse.requirements_of(  # noqa: E731
        wheel, wheelhouse.target_environment(version, ['manylinux_2_28_x86_64']), extras)]
    assert names('3.11') == ['lmdb']
    assert names('3.12') == ['lmdb', 'setuptools']
    assert names('3.12', ['test']) == ['lmdb', 'setuptools', 'pytest']
    env = wheelhouse.target_environment('3.12', ['manylinux_2_28_aarch64'])
    assert (env['python_version'], env['sys_platform'], env['platform_machine']) == ('3.12', 'linux', 'aarch64')


def test_bad_python_version_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        wheelhouse.main([str(tmp_path / 'out'), '--python-version', '312'])
    assert exit_status.value.code == 2 and "--python-version '312': expected MAJOR.MINOR" in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()
