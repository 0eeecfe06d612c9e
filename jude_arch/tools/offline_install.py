"""Install JUDE for BasicSR from a wheelhouse, offline, next to a GPU image's own PyTorch and OpenCV.

    python wheelhouse/install.py        # with the Python of the environment to install into

`python -m jude_arch.tools.wheelhouse` writes this file into the wheelhouse as install.py. It runs on the
target before jude_arch is installed there, so it uses the standard library only (and pip).

Why not `pip install --no-index --find-links wheelhouse/ 'jude-basicsr[test]'`: basicsr requires the
distribution named opencv-python, and GPU images (NGC PyTorch containers, cloud deep-learning images) ship
opencv-python-headless instead, the same `cv2` under another name, which pip cannot take for it. So this
1. reads which distributions the environment has and whether `import cv2` works there;
2. installs with `pip install --no-index --no-deps` every wheel of the wheelhouse whose distribution the
   environment lacks (the image's torch, numpy, OpenCV, ... stay as they are; the wheelhouse was built to
   complete them), then this project's wheel (reinstalled if there). OpenCV: none where `import cv2` works;
   the wheelhouse's opencv-python-headless where no OpenCV is installed;
3. runs `pip check`: a requirement of what it just installed that the image meets with an older version is
   settled from the wheelhouse; what is left is shown, but for the opencv-python requirement where `cv2` comes
   from another OpenCV distribution;
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
# Distributions that provide the `cv2` module; the first is the one a wheelhouse carries for images without one.
OPENCV = ('opencv-python-headless', 'opencv-python', 'opencv-contrib-python-headless', 'opencv-contrib-python')
IMPORTS = ('cv2', 'lmdb', 'basicsr', 'jude_arch')
OPENCV_REQUIREMENT = re.compile(r'requires (%s)\b.*, which is not installed' % '|'.join(map(re.escape, OPENCV)))
# pip check's two complaints: "lpips 0.1.4 has requirement tqdm>=4.28.1, but you have tqdm 4.20.0." and
# "basicsr 1.4.2 requires addict, which is not installed."
NOT_MET = re.compile(r'^(\S+) \S+ has requirement (.+), but you have \S+ \S+?\.?$')
NOT_INSTALLED = re.compile(r'^(\S+) \S+ requires (.+), which is not installed\.?$')


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


def plan_install(available, installed, cv2_error):
    """What to install from the wheelhouse.

    Args:
        available (iterable[str]): canonical names of the wheelhouse's wheels.
        installed (set[str]): canonical names of the environment's distributions.
        cv2_error (str | None): why `import cv2` fails there, None when it works.

    Returns:
        list[str]: names to install, this project's included.

    Raises:
        InstallError: an OpenCV is installed but broken, or none is and the wheelhouse carries none.
    """
    available = set(available)
    if PROJECT not in available:
        raise InstallError(f'the wheelhouse has no {PROJECT} wheel; build it with python -m jude_arch.tools.wheelhouse')
    wanted = {name for name in available - set(OPENCV) if name not in installed} | {PROJECT}
    if cv2_error is not None:
        broken = [name for name in OPENCV if name in installed]
        if broken:
            raise InstallError(f'{broken[0]} is installed but `import cv2` fails ({cv2_error}); repair it '
                               '(opencv-python needs the system\'s libGL: apt-get install libgl1) or replace it by '
                               'opencv-python-headless, then run this again')
        carried = [name for name in OPENCV if name in available]
        if not carried:
            raise InstallError('this environment has no OpenCV and the wheelhouse carries none; rebuild the wheelhouse '
                               'without naming an OpenCV distribution in --provided')
        wanted.add(carried[0])
    return sorted(wanted)


def cv2_import_error():
    """None when `import cv2` works in a fresh interpreter, else its last line of error."""
    done = subprocess.run([sys.executable, '-c', 'import cv2'], capture_output=True, text=True,
                          cwd=tempfile.gettempdir())
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ['failed'])[-1]


def unexplained(pip_check_lines, cv2_works):
    """`pip check`'s complaints but the opencv-python requirement where another OpenCV provides cv2."""
    lines = [line for line in pip_check_lines if line.strip() and not line.startswith('No broken')]
    return [line for line in lines if not (cv2_works and OPENCV_REQUIREMENT.search(line))]


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
        if requirer in installed_now and canonical(re.match(r'[\w.-]+', requirement).group(0)) in available:
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
    cv2_error = cv2_import_error()
    names = plan_install(wheel_names(wheelhouse), installed_names(), cv2_error)
    carried = [name for name in names if name in OPENCV]
    print('OpenCV: ' + (f'none installed, taking {carried[0]} from the wheelhouse' if carried else
                        '`import cv2` works here: kept as it is'), flush=True)
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
    cv2_works = cv2_import_error() is None
    problems = unexplained(pip_check(), cv2_works)
    wanted = settle(problems, set(names), set(wheel_names(wheelhouse)))
    if wanted:  # a requirement of what was just installed, older in the image: the wheelhouse's version
        print(f"$ {' '.join([*pip[1:], *wanted])}", flush=True)
        if subprocess.run([*pip, *wanted]).returncode == 0:
            problems = unexplained(pip_check(), cv2_works)
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
