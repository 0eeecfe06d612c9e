"""Developer tools, apart from the runtime code (nothing in `jude_arch` imports them):

- `demo.py`: the whole workflow on the CPU with nothing to download (`python -m jude_arch.demo`).
- `benchmark.py` (its cases in `benchmark_case.py`): time and peak memory of JUDE's forward and training step.
- `gpu_check.py`: the CUDA tests and the GPU benchmark in one command.
- `boundary_study.py`: the FFT data step's boundary measurement of docs/boundary.md.
- `wheelhouse.py`: an offline install for GPU machines.
"""
