"""The offline install path: build a wheelhouse, install from it with the documented command (`python
wheelhouse/install.py`) into a fresh virtual environment that already has torch & co and opencv-python-headless
(like a GPU image), or no OpenCV at all, without network; import jude_arch, basicsr, lmdb, cv2 and run a forward.

The fresh environment sees the packages a GPU image provides (torch, torchvision, numpy, scikit-image and
everything they need), taken from this environment through symbolic links in one folder named by a .pth file,
and nothing else: basicsr, lmdb, tb-nightly, pytest, ... must come from the wheelhouse. Building the
wheelhouse uses the package index (or pip's cache); the install cannot reach any index. Where the image has
opencv-python instead, the installer's decision is tested without an install (`plan_install`).
"""
import ast
import importlib.metadata
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from jude_arch.tools import offline_install, wheelhouse
from jude_arch.tools.offline_install import InstallError, plan_install
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


# What GPU images have besides an OpenCV (the wheelhouse's default --provided).
IMAGE = ('torch', 'torchvision', 'numpy', 'scikit-image')
# Exactly the documented command (docs/installation.md), run with the environment's Python.
DOCUMENTED = 'install.py'
DOCUMENTED_COMMAND = 'python wheelhouse/install.py'


def test_the_docs_install_with_the_command_these_tests_run():
    page = (Path(__file__).resolve().parents[1] / 'docs' / 'installation.md').read_text(encoding='utf-8')
    assert f'\n{DOCUMENTED_COMMAND}\n' in page
    assert 'pip install --no-index --find-links' not in page  # the command that fails on GPU images
FORWARD = (
    'import cv2, lmdb, basicsr, jude_arch, torch\n'
    'from jude_arch.archs import JUDE\n'
    'torch.manual_seed(0)\n'
    'with torch.inference_mode():\n'
    '    y = JUDE("small").eval()(0.3 * torch.rand(1, 3, 32, 40))\n'
    'shape = "x".join(map(str, y.shape))\n'
    'print(cv2.__file__, jude_arch.__file__, torch.__file__, shape, bool(torch.isfinite(y).all()))\n')


@pytest.fixture(scope='module')
def house(tmp_path_factory):
    """The wheelhouse, built once (from the package index or pip's cache)."""
    house = tmp_path_factory.mktemp('wheelhouse')
    assert wheelhouse.main([str(house)]) == 0
    return house


def gpu_image(tmp_path, house, opencv):
    """A fresh virtual environment like a GPU image: this environment's torch & co seen through one folder of
    symbolic links named by a .pth file, and opencv-python-headless installed from its wheel (opencv='headless',
    offline) or no OpenCV at all (opencv=None). Returns (python, site-packages, the linked folder)."""
    provided = link_provided(tmp_path / 'provided', IMAGE)
    venv = tmp_path / 'venv'
    run([PYTHON, '-m', 'venv', venv], cwd=tmp_path)
    python = venv / 'bin' / 'python'
    site = Path(run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                    cwd=tmp_path).split()[-1])
    (site / 'gpu_image.pth').write_text(f'{provided}\n')
    # ensurepip's setuptools would shadow the linked one that torch asks for (>= 77): an image has one.
    offline([python, '-m', 'pip', 'uninstall', '--yes', 'setuptools'], tmp_path)
    if opencv == 'headless':
        offline([python, '-m', 'pip', 'install', '--no-index', '--no-deps',
                 next(house.glob('opencv_python_headless-*.whl'))], tmp_path)
    has_cv2 = subprocess.run([python, '-c', 'import cv2'], cwd=tmp_path, capture_output=True).returncode == 0
    assert has_cv2 == (opencv == 'headless')
    return python, site, provided


def installed_by(output):
    return ' '.join(line for line in output.splitlines() if line.startswith('Successfully installed'))


@pytest.mark.slow
def test_offline_install_on_an_image_with_headless_opencv(tmp_path, house):
    names = {canonicalize_name(p.name.split('-')[0]) for p in house.glob('*.whl')}
    assert {'jude-basicsr', 'basicsr', 'lmdb', 'addict', 'yapf', 'tb-nightly', 'pytest',
            'opencv-python-headless'} <= names
    assert not names & {'torch', 'torchvision', 'numpy', 'scikit-image', 'opencv-python'}  # the image's own stay
    assert (house / DOCUMENTED).read_text() == wheelhouse.INSTALLER.read_text()
    with zipfile.ZipFile(next(house.glob('jude_basicsr-*.whl'))) as wheel:
        assert 'jude_basicsr_hook.pth' in wheel.namelist()

    python, site, provided = gpu_image(tmp_path, house, 'headless')
    out = offline([python, house / DOCUMENTED], tmp_path)
    assert 'cv2: `import cv2` works here: kept as it is' in out
    installed = installed_by(out)
    assert 'jude-basicsr-' in installed and 'basicsr-1.4.2' in installed and 'lmdb-' in installed
    assert not any(f' {name}-' in installed for name in ('torch', 'torchvision', 'numpy', 'opencv'))
    assert not list(site.glob('torch*')) and not list(site.glob('numpy*'))  # nothing reinstalled into the venv
    assert 'pip check:' not in out  # its one complaint, basicsr's opencv-python, is what headless provides

    cv2_file, jude_file, torch_file, shape, finite = offline([python, '-c', FORWARD], tmp_path).split()[-5:]
    assert Path(cv2_file).is_relative_to(site) and Path(jude_file).is_relative_to(site)
    assert Path(torch_file).is_relative_to(provided)
    assert shape == '1x3x32x40' and finite == 'True'
    registered = offline([python, '-c', 'from basicsr.utils.registry import ARCH_REGISTRY; import basicsr; '
                          'print("JUDE" in ARCH_REGISTRY)'], tmp_path)  # the import hook came with the wheel
    assert registered.split()[-1] == 'True'


@pytest.mark.slow
def test_offline_install_on_an_image_without_opencv_takes_the_carried_one(tmp_path, house):
    python, site, _ = gpu_image(tmp_path, house, None)
    out = offline([python, house / DOCUMENTED], tmp_path)
    assert 'cv2: none installed, taking opencv-python-headless from the wheelhouse' in out
    assert 'opencv-python-headless-' in installed_by(out) and 'jude-basicsr-' in installed_by(out)
    cv2_line = next(line for line in out.split('imports:')[1].splitlines() if line.startswith('  cv2 '))
    assert str(site) in cv2_line  # install.py's own import check, from the carried wheel


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


WHEELS = ['addict', 'basicsr', 'jude-basicsr', 'lmdb', 'opencv-python-headless', 'pytest', 'tb-nightly']
BOTH_IMPORT = {'cv2': None, 'tensorboard': None}
NO_CV2 = {'cv2': "ModuleNotFoundError: No module named 'cv2'", 'tensorboard': None}


@pytest.mark.parametrize('image', [{'opencv-python-headless'}, {'opencv-python'}, {'opencv-contrib-python'}])
def test_where_cv2_imports_the_images_opencv_stays(image):
    assert plan_install(WHEELS, {'torch', 'numpy', 'pytest', 'tb-nightly', *image}, BOTH_IMPORT) == \
        ['addict', 'basicsr', 'jude-basicsr', 'lmdb']  # what it lacks; pytest and tb-nightly were there


def test_without_any_opencv_the_carried_one_is_installed():
    assert plan_install(WHEELS, {'torch', 'numpy', 'tb-nightly'}, NO_CV2) == \
        ['addict', 'basicsr', 'jude-basicsr', 'lmdb', 'opencv-python-headless', 'pytest']


def test_the_images_tensorboard_stays_and_tb_nightly_comes_where_there_is_none():
    image = {'torch', 'opencv-python-headless', 'pytest'}
    assert 'tb-nightly' not in plan_install(WHEELS, image | {'tensorboard'}, BOTH_IMPORT)
    assert 'tb-nightly' in plan_install(WHEELS, image, {'cv2': None, 'tensorboard': 'ModuleNotFoundError'})


def test_this_project_is_reinstalled_and_a_broken_or_missing_opencv_is_named():
    assert 'jude-basicsr' in plan_install(WHEELS, {'jude-basicsr', 'opencv-python', 'tb-nightly'}, BOTH_IMPORT)
    with pytest.raises(InstallError, match=r'opencv-python is installed but `import cv2` fails \(ImportError: '
                       r'libGL.so.1: .*apt-get install libgl1'):
        plan_install(WHEELS, {'opencv-python', 'tb-nightly'},
                     dict(BOTH_IMPORT, cv2='ImportError: libGL.so.1: cannot open shared object file'))
    with pytest.raises(InstallError, match='no cv2 and the wheelhouse carries none of opencv-python-headless, '):
        plan_install([w for w in WHEELS if 'opencv' not in w], {'tb-nightly'}, NO_CV2)


def test_pip_checks_complaint_is_dropped_only_where_another_distribution_provides_the_module():
    lines = ['basicsr 1.4.2 requires opencv-python, which is not installed.',
             'basicsr 1.4.2 requires tb-nightly, which is not installed.',
             'lpips 0.1.4 requires tqdm, which is not installed.']
    assert offline_install.unexplained(lines, BOTH_IMPORT) == lines[2:]
    assert offline_install.unexplained(lines, NO_CV2) == [lines[0], lines[2]]
    assert offline_install.unexplained(['No broken requirements found.'], BOTH_IMPORT) == []


def test_what_the_new_packages_lack_is_settled_from_the_wheelhouse_and_the_images_own_quarrels_are_not():
    problems = ['lpips 0.1.4 has requirement tqdm>=4.28.1, but you have tqdm 4.20.0.',
                'tb-nightly 2.21.0a0 requires Markdown>=2.6.8, which is not installed.',
                'torch 2.11.0 has requirement setuptools>=77.0.3, but you have setuptools 65.5.0.',  # the image's own
                'lpips 0.1.4 has requirement scipy>=1.0.1, but you have scipy 0.19.']  # not in the wheelhouse
    assert offline_install.settle(problems, {'lpips', 'tb-nightly'}, {'tqdm', 'markdown', 'setuptools'}) == [
        'tqdm>=4.28.1', 'Markdown>=2.6.8']


def test_the_wheelhouse_carries_headless_opencv_unless_the_target_has_an_opencv():
    assert wheelhouse.opencv_to_carry(['torch', 'numpy']) == 'opencv-python-headless'
    assert wheelhouse.opencv_to_carry(['torch', 'opencv-python']) is None
    assert wheelhouse.opencv_to_carry(['opencv-python-headless']) is None


def test_the_installer_needs_nothing_but_the_standard_library():
    """install.py runs on the target before anything of this project is installed there."""
    tree = ast.parse(wheelhouse.INSTALLER.read_text())
    modules = {alias.name.split('.')[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split('.')[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert modules and modules <= set(sys.stdlib_module_names)


def test_a_manylinux_target_accepts_every_older_manylinux_wheel():
    """pip matches --platform manylinux_2_28_x86_64 exactly: grpcio (tb-nightly's), tagged manylinux_2_17 only,
    was fetched as source and built for minutes here before the tags were widened (PEP 600)."""
    tags = wheelhouse.platform_tags('manylinux_2_28_x86_64')
    assert tags[0] == 'manylinux_2_28_x86_64' and 'manylinux_2_17_x86_64' in tags and 'manylinux_2_5_x86_64' in tags
    assert {'manylinux2014_x86_64', 'manylinux2010_x86_64', 'manylinux1_x86_64'} <= set(tags)
    assert 'manylinux_2_29_x86_64' not in tags and not any('aarch64' in tag for tag in tags)
    assert wheelhouse.platform_tags('manylinux2014_aarch64')[0] == 'manylinux_2_17_aarch64'
    assert 'manylinux2010_aarch64' in wheelhouse.platform_tags('manylinux2014_aarch64')
    assert wheelhouse.platform_tags('macosx_11_0_arm64') == ['macosx_11_0_arm64']


def test_the_download_asks_pip_for_the_widened_tags(tmp_path, monkeypatch):
    project = tmp_path / 'jude_basicsr-0.1.0-py3-none-any.whl'
    with zipfile.ZipFile(project, 'w') as archive:
        archive.writestr('jude_basicsr-0.1.0.dist-info/METADATA',
                         'Metadata-Version: 2.1\nName: jude-basicsr\nVersion: 0.1.0\nRequires-Dist: grpcio\n')
    downloads = []

    def fake_pip(*args, cwd=None):
        downloads.append(args)
        dest = Path(args[args.index('--dest') + 1])
        dest.mkdir(parents=True)
        with zipfile.ZipFile(dest / 'grpcio-1.0-cp312-cp312-manylinux_2_17_x86_64.whl', 'w') as archive:
            archive.writestr('grpcio-1.0.dist-info/METADATA', 'Metadata-Version: 2.1\nName: grpcio\nVersion: 1.0\n')

    monkeypatch.setattr(wheelhouse, 'build_wheel', lambda source, out: project)
    monkeypatch.setattr(wheelhouse, '_pip', fake_pip)
    wheels = wheelhouse.build(tmp_path / 'house', '3.12', ['manylinux_2_28_x86_64'], provided=(), log=lambda m: None)
    platforms = [a for a, flag in zip(downloads[0][1:], downloads[0]) if flag == '--platform']
    assert platforms == wheelhouse.platform_tags('manylinux_2_28_x86_64')
    assert [w.name for w in wheels] == ['grpcio-1.0-cp312-cp312-manylinux_2_17_x86_64.whl', project.name]


def test_a_rebuild_into_the_same_wheelhouse_takes_the_new_wheel(tmp_path):
    """Rebuilding into a wheelhouse that holds the same file name (the project's version unchanged) replaces it;
    it used to end in `max() arg is an empty sequence` (the source folder's name is not the project's)."""
    source = tmp_path / 'checkout'
    source.mkdir()
    (source / 'setup.py').write_text("from setuptools import setup\nsetup(name='demo-project', version='1.0', "
                                     "py_modules=['demo_module'])\n")
    house = tmp_path / 'house'
    house.mkdir()
    for text in ('FIRST = 1\n', 'SECOND = 2\n'):
        (source / 'demo_module.py').write_text(text)
        wheel = wheelhouse.build_wheel(source, house)
        assert wheel.parent == house and wheel.name.startswith('demo_project-1.0-')
        with zipfile.ZipFile(wheel) as archive:
            assert archive.read('demo_module.py').decode() == text
    assert [w.name for w in house.glob('*.whl')] == [wheel.name]
