"""Install JUDE for BasicSR: `pip install -e .` (install torch and torchvision first, see README).

Besides the `jude_arch` package this installs, at the root of site-packages, `jude_basicsr_hook.pth`: at
start-up it puts the tiny import hook of `jude_arch/basicsr_glue/import_hook.py` in place, which imports
`jude_arch` as soon as `basicsr` is imported, so BasicSR's own entry points (`python -m basicsr.train`) know JUDE. The .pth file is
written here (HOOK_LINE) into the wheel for regular installs (build_py) and into the editable wheel for
`pip install -e .`. Switch the hook off with JUDE_BASICSR_HOOK=0.
"""
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

ROOT = Path(__file__).resolve().parent
HOOK_PTH = 'jude_basicsr_hook.pth'
# The .pth line (site runs lines that start with `import`): find the installed jude_arch folder without
# importing the package (that would import torch at every start-up), load basicsr_glue/import_hook.py from it by
# path and install the hook. It does nothing where jude_arch is gone (e.g. a half-uninstalled package).
HOOK_LINE = ("import importlib.util as u, os, sys; s = u.find_spec('jude_arch'); "
             "f = s and s.submodule_search_locations and "
             "os.path.join(list(s.submodule_search_locations)[0], 'basicsr_glue', 'import_hook.py'); "
             "h = f and os.path.isfile(f) and u.spec_from_file_location('_jude_basicsr_hook', f); "
             "m = h and u.module_from_spec(h); "
             "m and (h.loader.exec_module(m), sys.modules.setdefault('_jude_basicsr_hook', m).install())\n")


def version():
    for line in (ROOT / 'jude_arch' / '__init__.py').read_text().splitlines():
        if line.startswith('__version__'):
            return line.split('=')[1].strip().strip('\'"')
    raise RuntimeError('jude_arch/__init__.py has no __version__')


class BuildPyWithHook(build_py):
    """Regular installs: put the hook's .pth file at the root of the wheel, i.e. of site-packages."""

    def run(self):
        super().run()
        if not self.editable_mode:
            (Path(self.build_lib) / HOOK_PTH).write_text(HOOK_LINE)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        return outputs if self.editable_mode else outputs + [str(Path(self.build_lib) / HOOK_PTH)]


class EditableWheelWithHook(editable_wheel):
    """Editable installs (PEP 660): add the same .pth file to the editable wheel."""

    def _create_wheel_file(self, bdist_wheel):
        from wheel.wheelfile import WheelFile  # setuptools' vendored copy, the one editable_wheel writes with

        wheel_path = super()._create_wheel_file(bdist_wheel)
        with WheelFile(wheel_path, 'a') as wheel:
            wheel.writestr(HOOK_PTH, HOOK_LINE)
        return wheel_path


setup(
    name='jude-basicsr',
    version=version(),
    description='JUDE (Deep Joint Unrolling for Deblurring and Low-Light Image Enhancement, WACV 2025) for BasicSR',
    long_description=(ROOT / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',  # torch 2.10, the floor below, needs Python 3.10
    packages=find_packages(include=['jude_arch', 'jude_arch.*']),
    cmdclass={'build_py': BuildPyWithHook, 'editable_wheel': EditableWheelWithHook},
    install_requires=[
        'basicsr>=1.4.2',
        'torch>=2.10',  # weights_only loading is safe from 2.10 on (CVE-2025-32434, CVE-2026-24747)
        'torchvision>=0.25',
        'lmdb',
        'pyyaml',
        # OpenCV (cv2) is not named here: basicsr requires opencv-python, and GPU images carry
        # opencv-python-headless, the same cv2 under a name pip cannot take for it; the offline installer
        # (jude_arch/tools/offline_install.py) checks that cv2 imports, whichever provides it.
        'tb-nightly',
        'addict',
        'numpy',
        'Pillow',
        'scikit-image',
        'tqdm',
        'lpips>=0.1.4',  # LPIPS' reference implementation (BSD-2), its linear-layer weights in the wheel
        # basicsr imports distutils, which Python 3.12 dropped; setuptools provides it again.
        'setuptools; python_version >= "3.12"',
    ],
    extras_require={
        'test': ['pytest>=7', 'pytest-timeout'],
        # No-reference metrics (MUSIQ, NIQE, LIQE, ...) through calculate_pyiqa; pyiqa is non-commercial only.
        'iqa': ['pyiqa'],
        # The web app (jude-app, jude-restore --web); Gradio 6 takes the theme in launch().
        'app': ['gradio>=6.0'],
        # The web app's page test: selenium drives the system's Chromium (kept out of [test], which the GPU
        # wheelhouse carries, so that GPU machines need no browser tooling).
        'app-test': ['selenium>=4.11'],
    },
    entry_points={'console_scripts': ['jude-restore=jude_arch.restore.cli:main', 'jude-app=jude_arch.restore.app:main']},
    classifiers=[
        'Programming Language :: Python :: 3',
        'License :: OSI Approved :: Apache Software License',
        'Topic :: Scientific/Engineering :: Image Processing',
    ],
)
