"""Build a wheelhouse: this project and what a GPU machine without internet lacks, installable offline.

    python -m jude_arch.tools.wheelhouse wheelhouse/ --python-version 3.12 --platform manylinux_2_28_x86_64
    python wheelhouse/install.py        # on the GPU machine, offline, with the Python of its environment

GPU images come with their own PyTorch build (and usually numpy, OpenCV, scikit-image), which must stay as it
is: reinstalling torch would replace the image's CUDA build, and offline it cannot even be fetched. So the
wheelhouse holds this project's wheel and every dependency reachable from it *without passing through* the
packages the target provides (`--provided`, by default torch, torchvision, numpy, scikit-image): basicsr,
lmdb, addict, yapf, tb-nightly and theirs, and pytest for the test extra. Nothing in it asks for a newer torch
(this project needs torch >= 2.10 and torchvision >= 0.25, BasicSR torch >= 1.7).

OpenCV is never followed as a dependency: basicsr requires the distribution named opencv-python, while GPU
images ship opencv-python-headless (the same `cv2`, another name, which pip cannot take for it), so
`pip install --no-index ... 'jude-basicsr[test]'` fails there. The wheelhouse therefore carries
opencv-python-headless for targets without any OpenCV (unless `--provided` names an OpenCV distribution), and
`install.py` (a copy of `offline_install.py`, standard library only) installs on the target only what it
lacks, OpenCV only where `import cv2` fails, then checks the imports.

Wheels are fetched for the target interpreter and platform (`--python-version`, `--platform`; default: this
one) with `pip download --no-deps --prefer-binary`, one level of the dependency tree at a time, each package's
requirements read from its wheel's metadata with the target's environment markers. Packages published only
as source (BasicSR: its sdist declares torch as a build requirement, so pip's isolated build would try to
download torch) are built here into wheels with `--no-build-isolation`, against the torch of this environment;
only pure-Python wheels are accepted that way, since they must install on the target too. Run it from a clone
of the repository (it builds the project's wheel from its setup.py) in an environment where the project is
installed, with access to a package index.
"""
import argparse
import email.parser
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename

from .offline_install import OPENCV

ROOT = Path(__file__).resolve().parents[2]
PROJECT = 'jude-basicsr'
PROVIDED = ('torch', 'torchvision', 'numpy', 'scikit-image')
EXTRAS = ('test', )
INSTALLER = Path(__file__).with_name('offline_install.py')  # written into the wheelhouse as install.py


class WheelhouseError(RuntimeError):
    """The wheelhouse cannot be built; the message says which package and why."""


def target_environment(python_version=None, platforms=()):
    """Environment markers of the target: this interpreter's, with the Python version (and, from a manylinux
    or macOS platform tag, the OS and machine) of the target."""
    env = default_environment()
    if python_version:
        env.update(python_version=python_version, python_full_version=f'{python_version}.0',
                   implementation_version=f'{python_version}.0')
    for platform in platforms:
        system = 'linux' if 'linux' in platform else 'darwin' if platform.startswith('macosx') else 'win32'
        env.update(sys_platform=system, platform_system={'linux': 'Linux', 'darwin': 'Darwin'}.get(system, 'Windows'),
                   platform_machine=re.sub(r'^.*?_(x86_64|aarch64|arm64|i686|ppc64le|s390x|amd64)$', r'\1',
                                           platform.lower()))
    return env


def requirements_of(wheel, env, extras=()):
    """The requirements in a wheel's metadata that apply to the target environment (and extras)."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if re.fullmatch(r'[^/]+\.dist-info/METADATA', n))
        metadata = email.parser.Parser().parsestr(archive.read(name).decode('utf-8'))
    found = []
    for line in metadata.get_all('Requires-Dist') or []:
        requirement = Requirement(line)
        if requirement.marker is None or any(requirement.marker.evaluate(dict(env, extra=extra))
                                             for extra in ('', *extras)):
            found.append(requirement)
    return found


def opencv_to_carry(provided):
    """The OpenCV distribution the wheelhouse carries for targets without one (opencv-python-headless: no GUI
    libraries needed), or None when `provided` (canonical names) says the target has an OpenCV."""
    return None if set(provided) & set(OPENCV) else OPENCV[0]


def _pip(*args, cwd=None):
    command = [sys.executable, '-m', 'pip', *args]
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    if done.returncode:
        errors = [line for line in done.stderr.splitlines() if line.startswith('ERROR')] or done.stderr.splitlines()
        raise WheelhouseError(f'{" ".join(command[2:5])} ... failed: {(errors or ["no output"])[-1][:400]}')
    return done


def build_wheel(source, out):
    """A wheel of a source tree or sdist, built against this environment (no build isolation), put into `out`
    (replacing a wheel of the same name: a rebuild into the same wheelhouse takes the new one)."""
    with tempfile.TemporaryDirectory() as scratch:
        _pip('wheel', '--no-deps', '--no-build-isolation', '--quiet', '--wheel-dir', scratch, str(source))
        built = sorted(Path(scratch).glob('*.whl'))
        if len(built) != 1:
            raise WheelhouseError(f'{source}: pip wheel left {len(built)} wheels instead of one')
        return Path(shutil.move(str(built[0]), str(out / built[0].name)))


def _is_pure(wheel):
    return all(tag.abi == 'none' and tag.platform == 'any' for tag in parse_wheel_filename(wheel.name)[3])


# PEP 600: manylinux_2_N names the oldest glibc a wheel needs; the legacy aliases name glibc 2.17, 2.12, 2.5.
_LEGACY_MANYLINUX = {'manylinux2014': (2, 17), 'manylinux2010': (2, 12), 'manylinux1': (2, 5)}


def platform_tags(platform):
    """Every platform tag pip must accept for a target named by `platform`, newest first.

    pip's `download --platform manylinux_2_28_x86_64` matches that tag exactly (it widens only the legacy
    manylinux2014/2010 aliases), so a package whose newest wheel is tagged manylinux_2_17 only (grpcio, a
    dependency of tb-nightly, is one) would be fetched as source and built here. A glibc 2.N system runs every
    manylinux_2_M wheel with M <= N (PEP 600), so the tag is widened to all of them and to the legacy aliases
    they cover. Other tags (macosx, win, linux_x86_64) are returned as they are.
    """
    legacy = re.fullmatch(r'(manylinux2014|manylinux2010|manylinux1)_(\w+)', platform)
    modern = re.fullmatch(r'manylinux_(\d+)_(\d+)_(\w+)', platform)
    if legacy:
        (major, minor), arch = _LEGACY_MANYLINUX[legacy.group(1)], legacy.group(2)
    elif modern:
        major, minor, arch = int(modern.group(1)), int(modern.group(2)), modern.group(3)
    else:
        return [platform]
    if major != 2:
        return [platform]
    tags = [f'manylinux_2_{m}_{arch}' for m in range(minor, 4, -1)]
    tags += [f'{alias}_{arch}' for alias, (_, m) in _LEGACY_MANYLINUX.items() if m <= minor]
    return tags


def build(out, python_version=None, platforms=(), provided=PROVIDED, extras=EXTRAS, log=print):
    """Fill `out` with this project's wheel and the wheels of its dependencies the target lacks.

    Args:
        out (str | Path): the wheelhouse folder (created; existing wheels of other versions stay).
        python_version (str | None): target Python, e.g. '3.12'; None: this interpreter's.
        platforms (sequence[str]): target platform tags (pip's --platform), e.g. 'manylinux_2_28_x86_64';
            empty: this machine's.
        provided (sequence[str]): distributions the target already has; neither fetched nor followed. Naming
            an OpenCV distribution also leaves out the opencv-python-headless carried for targets without one.
        extras (sequence[str]): extras of this project to include ('test': pytest, for the GPU check).
        log (callable): progress messages.

    Returns:
        list[Path]: the wheels, sorted (install.py is written beside them).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (ROOT / 'setup.py').is_file():
        raise WheelhouseError(f'{ROOT}: no setup.py; build the wheelhouse from a clone of the repository')
    env = target_environment(python_version, platforms)
    provided = {canonicalize_name(name) for name in provided}
    carried_opencv = opencv_to_carry(provided)
    provided |= set(OPENCV) - {carried_opencv}  # never basicsr's opencv-python
    target = []
    if python_version:
        target += ['--python-version', python_version, '--implementation', 'cp']
    for platform in dict.fromkeys(tag for platform in platforms for tag in platform_tags(platform)):
        target += ['--platform', platform]

    project = build_wheel(ROOT, out)
    log(f'built {project.name}')
    chosen = {canonicalize_name(PROJECT): project}  # name → wheel
    specifiers = {}  # name → every specifier asked for
    extras_of = {}  # name → extras asked for (e.g. requests[socks])
    pending = requirements_of(project, env, extras) + ([Requirement(carried_opencv)] if carried_opencv else [])
    with tempfile.TemporaryDirectory() as scratch:
        for level in range(1, 100):
            if not pending:
                break
            wanted = {}
            for requirement in pending:
                name = canonicalize_name(requirement.name)
                if name in provided:
                    continue
                specifiers[name] = specifiers.get(name, SpecifierSet()) & requirement.specifier
                extras_of[name] = extras_of.get(name, set()) | requirement.extras
                if name in chosen and not specifiers[name].contains(_version(chosen[name]), prereleases=True):
                    log(f'{chosen[name].name} does not satisfy {name}{specifiers[name]}: fetching another version')
                    del chosen[name]
                if name not in chosen:
                    wanted[name] = f'{name}{specifiers[name]}'
            pending = []
            if not wanted:
                break
            download = Path(scratch) / f'level{level}'
            # --prefer-binary: an older release with a wheel for the target beats a newer one only as source.
            _pip('download', '--no-deps', '--no-build-isolation', '--prefer-binary', '--quiet', '--dest',
                 str(download), *target, *wanted.values())
            for path in sorted(download.iterdir()):
                if path.suffix == '.whl':
                    wheel = out / path.name
                    shutil.copyfile(path, wheel)
                else:  # source only: build it here, accept it only if it installs anywhere
                    wheel = build_wheel(path, out)
                    if not _is_pure(wheel):
                        wheel.unlink()
                        raise WheelhouseError(f'{path.name}: the index has no wheel of it for the target and its '
                                              'build here is not pure Python; build its wheel on a machine like '
                                              'the target into the wheelhouse, or, if the target has it, name it '
                                              'in --provided')
                    log(f'built {wheel.name} from {path.name}')
                name = canonicalize_name(parse_wheel_filename(wheel.name)[0])
                chosen[name] = wheel
                pending += requirements_of(wheel, env, extras_of.get(name, ()))
    wheels = sorted(chosen.values())
    for stale in set(out.glob('*.whl')) - set(wheels):
        name = canonicalize_name(parse_wheel_filename(stale.name)[0])
        if name in chosen:  # another version of a package chosen now
            stale.unlink()
    shutil.copyfile(INSTALLER, out / 'install.py')
    log(f'{len(wheels)} wheels in {out}: ' + ', '.join(w.name for w in wheels) + '; and install.py')
    return wheels


def _version(wheel):
    return parse_wheel_filename(wheel.name)[1]


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m jude_arch.tools.wheelhouse', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='Install on the target, offline: python <out>/install.py')
    parser.add_argument('out', type=Path, help='wheelhouse folder (created)')
    parser.add_argument('--python-version', help="target Python, e.g. 3.12 (default: this interpreter's, "
                        f'{sysconfig.get_python_version()})')
    parser.add_argument('--platform', action='append', default=[],
                        help="target platform tag, e.g. manylinux_2_28_x86_64 (repeatable; default: this machine's)")
    parser.add_argument('--provided', nargs='*', default=list(PROVIDED), metavar='NAME',
                        help=f'packages the target already has (default: {" ".join(PROVIDED)})')
    args = parser.parse_args(argv)
    if args.python_version and not re.fullmatch(r'3\.\d+', args.python_version):
        parser.error(f'--python-version {args.python_version!r}: expected MAJOR.MINOR, e.g. 3.12')
    try:
        build(args.out, args.python_version, args.platform, args.provided)
    except WheelhouseError as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    print(f'install on the target, offline, with the Python of its environment: python {args.out / "install.py"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
