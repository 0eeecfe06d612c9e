"""Install JUDE for BasicSR from a wheelhouse, offline, next to a GPU image's own PyTorch and OpenCV.

    python wheelhouse/install.py        # with the Python of the environment to install into

`python -m jude_arch.tools.wheelhouse` writes this file into the wheelhouse as install.py. It runs on the
target before jude_arch is installed there, so it uses the standard library only (and pip).

Why not `pip install --no-index --find-links wheelhouse/ 'jude-basicsr[test]'`: basicsr requires the
distributions named opencv-python and tb-nightly, and GPU images (NGC PyTorch containers, cloud deep-learning
images) ship opencv-python-headless and tensorboard instead: the same `cv2` and `tensorboard` modules under
other names, which pip cannot take for them. So this
1. reads which distributions the environment has and whether `import cv2` and `import tensorboard` work there;
2. installs with `pip install --no-index --no-deps` every wheel of the wheelhouse whose distribution the
   environment lacks (the image's torch, numpy, OpenCV, TensorBoard, ... stay as they are; the wheelhouse was
   built to complete them), then this project's wheel (reinstalled if there). Of the distributions that provide
   one module (ALTERNATIVES), none where the module imports, the wheelhouse's where none is installed;
3. runs `pip check`: a requirement of what it just installed that the image meets with an older version is
   settled from the wheelhouse; what is left is shown, but for the requirements of a distribution whose module
   another one provides (basicsr's opencv-python where opencv-python-headless is installed);
4. imports cv2, lmdb, basicsr and jude_arch in a fresh interpreter.
Exit status 0 when those imports work, 1 otherwise (the message says what to do).
"""
import argparse
import importlib.metadata
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = 'jude-basicsr'
# Distributions that install one module under different names, {module: names}; the first name is the one the
# wheelhouse carries for environments without the module.
ALTERNATIVES = {
    'cv2': ('opencv-python-headless', 'opencv-python', 'opencv-contrib-python-headless', 'opencv-contrib-python'),
    'tensorboard': ('tb-nightly', 'tensorboard'),
}
OPENCV = ALTERNATIVES['cv2']
IMPORTS = ('cv2', 'lmdb', 'basicsr', 'jude_arch')
# pip check's two complaints: "lpips 0.1.4 has requirement tqdm>=4.28.1, but you have tqdm 4.20.0." and
# "basicsr 1.4.2 requires addict, which is not installed."
NOT_MET = re.compile(r'^(\S+) \S+ has requirement (.+), but you have \S+ \S+?\.?$')
NOT_INSTALLED = re.compile(r'^(\S+) \S+ requires (.+), which is not installed\.?$')
LEADING_NAME = re.compile(r'[\w.-]+')


class InstallError(RuntimeError):
    """The install cannot go on; the message says why and what to do."""


def canonical(name):
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r'[-_.]+', '-', name).lower()


def wheel_names(folder):
    """Canonical names of the distributions with a wheel in `folder`."""
    return sorted({canonical(path.name.split('-')[0]) for path in Path(folder).glob('*.whl')})


def installed_names():
    """Canonical names of the distributions installed in this environment."""
    return {canonical(dist.metadata['Name']) for dist in importlib.metadata.distributions() if dist.metadata['Name']}


def plan_install(available, installed, import_errors):
    """What to install from the wheelhouse.

    Args:
        available (iterable[str]): canonical names of the wheelhouse's wheels.
        installed (set[str]): canonical names of the environment's distributions.
        import_errors (dict): for each module of ALTERNATIVES, why importing it fails there (None: it works).

    Returns:
        list[str]: names to install, this project's included.

    Raises:
        InstallError: a module's distribution is installed but the module does not import, or none is and the
            wheelhouse carries none.
    """
    available = set(available)
    if PROJECT not in available:
        raise InstallError(f'the wheelhouse has no {PROJECT} wheel; build it with python -m jude_arch.tools.wheelhouse')
    alternatives = {name for names in ALTERNATIVES.values() for name in names}
    wanted = {name for name in available - alternatives if name not in installed} | {PROJECT}
    for module, names in ALTERNATIVES.items():
        if import_errors[module] is None:
            continue
        broken = [name for name in names if name in installed]
        if broken:
            hint = ("opencv-python needs the system's libGL: apt-get install libgl1, or replace it by "
                    'opencv-python-headless' if module == 'cv2' else f'reinstall {broken[0]}')
            raise InstallError(f'{broken[0]} is installed but `import {module}` fails ({import_errors[module]}); '
                               f'repair it ({hint}), then run this again')
        carried = [name for name in names if name in available]
        if not carried:
            raise InstallError(f'this environment has no {module} and the wheelhouse carries none of '
                               f'{", ".join(names)}; rebuild the wheelhouse without naming them in --provided')
        wanted.add(carried[0])
    return sorted(wanted)


def import_errors():
    """{module of ALTERNATIVES: None when it imports in a fresh interpreter, else the error's last line}."""
    errors = {}
    for module in ALTERNATIVES:
        done = subprocess.run([sys.executable, '-c', f'import {module}'], capture_output=True, text=True,
                              cwd=tempfile.gettempdir())
        errors[module] = None if done.returncode == 0 else (done.stderr.strip().splitlines() or ['failed'])[-1]
    return errors


def unexplained(pip_check_lines, errors):
    """`pip check`'s complaints, but those about a missing distribution whose module another one provides
    (basicsr's opencv-python where opencv-python-headless is installed and `import cv2` works)."""
    provided = {canonical(name) for module, names in ALTERNATIVES.items() if errors[module] is None for name in names}
    lines = [line for line in pip_check_lines if line.strip() and not line.startswith('No broken')]
    return [line for line in lines if not ((found := NOT_INSTALLED.match(line))
                                          and canonical(LEADING_NAME.match(found.group(2)).group(0)) in provided)]


def settle(problems, installed_now, available):
    """Requirements that settle, from the wheelhouse, what pip check says the packages just installed lack
    (e.g. lpips's tqdm>=4.28.1 where the image has an older tqdm); complaints of the image's own packages about
    each other are left to the image."""
    wanted = []
    for line in problems:
        found = NOT_MET.match(line) or NOT_INSTALLED.match(line)
        if not found:
            continue
        requirer, requirement = canonical(found.group(1)), found.group(2)
        if requirer in installed_now and canonical(LEADING_NAME.match(requirement).group(0)) in available:
            wanted.append(requirement)
    return wanted


def pip_check():
    """The lines `pip check` prints for this environment."""
    return subprocess.run([sys.executable, '-m', 'pip', 'check'], capture_output=True, text=True).stdout.splitlines()


def check_imports():
    """Import IMPORTS in a fresh interpreter, away from any clone; returns (ok, its output)."""
    code = ('import importlib, sys\nfailed = []\nfor name in sys.argv[1:]:\n    try:\n'
            '        module = importlib.import_module(name)\n'
            '        print(f"  {name} {getattr(module, \'__version__\', \'\')} ({module.__file__})")\n'
            '    except Exception as error:\n        failed.append(name)\n'
            '        print(f"  {name}: {type(error).__name__}: {error}")\nsys.exit(1 if failed else 0)\n')
    done = subprocess.run([sys.executable, '-c', code, *IMPORTS], capture_output=True, text=True,
                          cwd=tempfile.gettempdir())
    return done.returncode == 0, done.stdout + done.stderr


def install(wheelhouse):
    """Steps 1–4 of the module docstring, for the environment of this interpreter; returns the exit status."""
    wheelhouse = Path(wheelhouse).resolve()
    names = plan_install(wheel_names(wheelhouse), installed_names(), import_errors())
    for module, alternatives in ALTERNATIVES.items():
        carried = [name for name in names if name in alternatives]
        print(f'{module}: ' + (f'none installed, taking {carried[0]} from the wheelhouse' if carried else
                               f'`import {module}` works here: kept as it is'), flush=True)
    pip = [sys.executable, '-m', 'pip', 'install', '--no-index', '--find-links', str(wheelhouse), '--no-deps']
    missing = [name for name in names if name != PROJECT]
    # The missing ones, then this project's wheel, reinstalled even at the same version number (a rebuilt
    # wheelhouse carries the clone's current code under an unchanged version).
    for command in ([[*pip, *missing]] if missing else []) + [[*pip, '--force-reinstall', PROJECT]]:
        print(f"$ {' '.join(command[1:])}", flush=True)
        done = subprocess.run(command)
        if done.returncode:
            raise InstallError(f'pip install failed (exit status {done.returncode}, see above); a wheelhouse built for '
                               'another Python or platform fails this way: build it with the --python-version and '
                               '--platform of this machine')
    errors = import_errors()
    problems = unexplained(pip_check(), errors)
    wanted = settle(problems, set(names), set(wheel_names(wheelhouse)))
    if wanted:  # a requirement of what was just installed, older in the image: the wheelhouse's version
        print(f"$ {' '.join([*pip[1:], *wanted])}", flush=True)
        if subprocess.run([*pip, *wanted]).returncode == 0:
            problems = unexplained(pip_check(), errors)
    for line in problems:
        print(f'pip check: {line}', flush=True)
    ok, report = check_imports()
    print('imports:\n' + report, end='', flush=True)
    if not ok:
        raise InstallError('an import failed (above)' + ('; pip check reported problems (above)' if problems else ''))
    print('installed: run the GPU check from the clone with python -m jude_arch.tools.gpu_check', flush=True)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--wheelhouse', default=str(Path(__file__).resolve().parent),
                        help='the wheelhouse folder (default: the folder of this file)')
    args = parser.parse_args(argv)
    try:
        return install(args.wheelhouse)
    except InstallError as error:
        print(f'error: {error}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
