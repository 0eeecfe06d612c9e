"""Install JUDE for BasicSR: `pip install -e .` (install torch and torchvision first, see README).

Besides the `jude_arch` package this installs `jude_basicsr_hook.py` and, at the root of site-packages,
`jude_basicsr_hook.pth`: at start-up it puts a tiny import hook in place that imports `jude_arch` as soon as
`basicsr` is imported, so BasicSR's own entry points (`python -m basicsr.train`) know JUDE. The .pth file goes
into the wheel for regular installs (build_py) and into the editable wheel for `pip install -e .`.
Switch the hook off with JUDE_BASICSR_HOOK=0.
"""
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

ROOT = Path(__file__).resolve().parent
HOOK_PTH = 'jude_basicsr_hook.pth'


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
            self.copy_file(str(ROOT / HOOK_PTH), str(Path(self.build_lib) / HOOK_PTH), preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        return outputs if self.editable_mode else outputs + [str(Path(self.build_lib) / HOOK_PTH)]


class EditableWheelWithHook(editable_wheel):
    """Editable installs (PEP 660): add the same .pth file to the editable wheel."""

    def _create_wheel_file(self, bdist_wheel):
        from wheel.wheelfile import WheelFile  # setuptools' vendored copy, the one editable_wheel writes with

        wheel_path = super()._create_wheel_file(bdist_wheel)
        with WheelFile(wheel_path, 'a') as wheel:
            wheel.write(str(ROOT / HOOK_PTH), arcname=HOOK_PTH)
        return wheel_path


setup(
    name='jude-basicsr',
    version=version(),
    description='JUDE (Deep Joint Unrolling for Deblurring and Low-Light Image Enhancement, WACV 2025) for BasicSR',
    long_description=(ROOT / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['jude_arch', 'jude_arch.*']),
    py_modules=['jude_basicsr_hook'],
    cmdclass={'build_py': BuildPyWithHook, 'editable_wheel': EditableWheelWithHook},
    install_requires=[
        'basicsr>=1.4.2',
        'torch>=2.1',
        'torchvision>=0.16',
        'lmdb',
        'pyyaml',
        'opencv-python',
        'tb-nightly',
        'addict',
        'numpy',
        'scikit-image',
        'tqdm',
        # basicsr imports distutils, which Python 3.12 dropped; setuptools provides it again.
        'setuptools; python_version >= "3.12"',
    ],
    extras_require={'test': ['pytest>=7']},
    entry_points={'console_scripts': ['jude-restore=jude_arch.inference:main']},
    classifiers=[
        'Programming Language :: Python :: 3',
        'License :: OSI Approved :: Apache Software License',
        'Topic :: Scientific/Engineering :: Image Processing',
    ],
)
