"""BasicSR's own entry points see JUDE once the package is installed: the import hook, its off switch,
its laziness, and both kinds of installation (a wheel and an editable install)."""
import importlib.util
import os
import re
import shutil
import site
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from training_helpers import PYTHON, ROOT, eval_options, run, tiny_lolblur, tiny_options, write_yaml

HOOK_FILES = {'jude_basicsr_hook.pth', 'jude_arch/basicsr_glue/import_hook.py'}
HOOK_MODULE = '_jude_basicsr_hook'  # the name the .pth line loads jude_arch/basicsr_glue/import_hook.py under


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_lolblur(tmp_path_factory)


def python(code, cwd, **env):
    return run([PYTHON, '-c', code], cwd=cwd, env=env).strip().splitlines()[-1]


@pytest.fixture
def basicsr_root():
    """BasicSR's scripts write experiments/ and results/ under their own root (the folder holding the basicsr
    package): yield it, and remove what the test wrote there."""
    root = Path(importlib.util.find_spec('basicsr').origin).parents[1]
    name = f'jude_hook_test_{os.getpid()}'
    existed = {folder: (root / folder).exists() for folder in ('experiments', 'results')}
    yield root, name
    for folder, was_there in existed.items():
        for path in (root / folder).glob(f'{name}*'):
            shutil.rmtree(path)
        if not was_there and (root / folder).is_dir() and not any((root / folder).iterdir()):
            (root / folder).rmdir()


@pytest.mark.slow
def test_basicsr_train_and_test_modules_find_jude(data, tmp_path, basicsr_root):
    """`python -m basicsr.train` / `basicsr.test` of the installed package train and test JUDE with JUDEModel."""
    root, name = basicsr_root
    opt = tiny_options(data, name, total_iter=2, val={'save_img': False})
    run([PYTHON, '-m', 'basicsr.train', '-opt', write_yaml(opt, tmp_path / 'train.yml')], cwd=tmp_path)
    checkpoint = root / 'experiments' / name / 'models' / 'net_g_latest.pth'
    assert checkpoint.is_file()
    test = write_yaml(eval_options(opt, f'{name}_test', checkpoint), tmp_path / 'test.yml')
    out = run([PYTHON, '-m', 'basicsr.test', '-opt', test], cwd=tmp_path)
    assert re.search(r'# psnr: \d+\.\d+', out) and 'Model [JUDEModel] is created.' in out


@pytest.mark.slow
def test_the_hook_is_lazy(tmp_path):
    """Start-up puts the finder in place and imports nothing heavy; importing basicsr brings in JUDE."""
    code = (f'import sys; h = sys.modules["{HOOK_MODULE}"]; '
            'before = ("torch" in sys.modules, "jude_arch" in sys.modules, '
            'h.installed()); import basicsr; '
            'from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY, LOSS_REGISTRY, DATASET_REGISTRY; '
            'print(before, "jude_arch" in sys.modules, h.installed(), '
            '"JUDE" in ARCH_REGISTRY, "JUDEModel" in MODEL_REGISTRY, "JUDELoss" in LOSS_REGISTRY, '
            '"LOLBlurDataset" in DATASET_REGISTRY)')
    assert python(code, tmp_path) == '(False, False, True) True False True True True True'


@pytest.mark.slow
def test_the_hook_can_be_switched_off(tmp_path):
    # With the hook off nothing applies the torchvision shim either, so the test applies it by hand.
    code = ('import sys, torchvision.transforms.functional as F; '
            'sys.modules["torchvision.transforms.functional_tensor"] = F; import basicsr; '
            'from basicsr.utils.registry import ARCH_REGISTRY; '
            'print("jude_arch" in sys.modules, "JUDE" in ARCH_REGISTRY)')
    assert python(code, tmp_path, JUDE_BASICSR_HOOK='0') == 'False False'
    assert python(code, tmp_path, JUDE_BASICSR_HOOK='1') == 'True True'


def installed_check(site_dir, cwd):
    """In a fresh interpreter that sees only `site_dir` (its .pth files processed) and, as a plain path entry,
    this environment's site-packages (no .pth files: not the editable install of the working tree), import
    basicsr; print where jude_arch came from and whether JUDE is registered."""
    code = (f'import sys, site; site.addsitedir({str(site_dir)!r}); '
            f'sys.path += {site.getsitepackages()!r}; import basicsr; '
            'from basicsr.utils.registry import ARCH_REGISTRY; '
            'print(sys.modules["jude_arch"].__file__, "JUDE" in ARCH_REGISTRY)')
    return run([PYTHON, '-S', '-c', code], cwd=cwd).strip().splitlines()[-1]


@pytest.fixture(scope='module')
def wheels(tmp_path_factory):
    out = tmp_path_factory.mktemp('wheels')
    run([PYTHON, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', out / 'regular', ROOT],
        cwd=out)
    code = (f'import os; os.chdir({str(ROOT)!r}); from setuptools import build_meta; '
            f'print(build_meta.build_editable({str(out / "editable")!r}))')
    run([PYTHON, '-c', code], cwd=out)
    return {kind: next((out / kind).glob('*.whl')) for kind in ('regular', 'editable')}


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['regular', 'editable'])
def test_both_kinds_of_install_carry_the_hook(wheels, tmp_path, kind):
    with zipfile.ZipFile(wheels[kind]) as wheel:
        names = set(wheel.namelist())
        assert 'jude_basicsr_hook.pth' in names
        wheel.extractall(tmp_path / 'site')  # what pip does with a wheel's purelib files
    if kind == 'regular':
        assert HOOK_FILES <= names and 'jude_arch/models/jude_model.py' in names
    where, registered = installed_check(tmp_path / 'site', tmp_path).rsplit(' ', 1)
    expected = tmp_path / 'site' / 'jude_arch' if kind == 'regular' else ROOT / 'jude_arch'
    assert Path(where).parent == expected and registered == 'True'


def test_this_environment_has_the_hook_installed():
    purelib = Path(sysconfig.get_paths()['purelib'])
    if not (purelib / 'jude_basicsr_hook.pth').is_file():
        pytest.fail(f'{purelib}/jude_basicsr_hook.pth missing: reinstall the package (pip install -e .)')
    assert sys.modules.get(HOOK_MODULE) is not None


@pytest.mark.slow
def test_the_hook_is_installed_once_however_often_the_file_is_loaded(tmp_path):
    # site runs a venv's .pth files twice when lib64 links to lib, and jude_arch.basicsr_glue.import_hook is
    # one more copy.
    script = tmp_path / 'twice.py'
    script.write_text(
        'import importlib.util as u, sys\n'
        f'path = {str(ROOT / "jude_arch" / "basicsr_glue" / "import_hook.py")!r}\n'
        'sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "is_jude_basicsr_hook", False)]\n'
        'for name in ("copy_a", "copy_b"):\n'
        '    spec = u.spec_from_file_location(name, path)\n'
        '    module = u.module_from_spec(spec)\n'
        '    spec.loader.exec_module(module)\n'
        '    module.install()\n'
        'print(sum(getattr(f, "is_jude_basicsr_hook", False) for f in sys.meta_path), end=" ")\n'
        'import basicsr\n'
        'from basicsr.utils.registry import ARCH_REGISTRY\n'
        'print(sum(getattr(f, "is_jude_basicsr_hook", False) for f in sys.meta_path), "JUDE" in ARCH_REGISTRY)\n')
    assert run([PYTHON, str(script)], cwd=tmp_path).strip().splitlines()[-1] == '1 0 True'
