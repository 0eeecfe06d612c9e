"""Install JUDE for BasicSR: `pip install -e .` (install torch and torchvision first, see README)."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def version():
    for line in (ROOT / 'jude_arch' / '__init__.py').read_text().splitlines():
        if line.startswith('__version__'):
            return line.split('=')[1].strip().strip('\'"')
    raise RuntimeError('jude_arch/__init__.py has no __version__')


setup(
    name='jude-basicsr',
    version=version(),
    description='JUDE (Deep Joint Unrolling for Deblurring and Low-Light Image Enhancement, WACV 2025) for BasicSR',
    long_description=(ROOT / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['jude_arch', 'jude_arch.*']),
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
