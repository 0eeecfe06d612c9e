"""Developer tools, apart from the runtime code (nothing in `jude_arch` imports them):

- `demo.py`: the whole workflow on the CPU with nothing to download (`python -m jude_arch.demo`).
- `benchmark.py` (its cases in `benchmark_case.py`, the data loader's in `benchmark_data.py`, GPU peaks in
  `device_peaks.py`): time, TFLOP/s and peak memory of JUDE's forward and training step, and of the data loader.
- `profile.py` (categories in `profile_categories.py`): where a forward pass and a phase-1 step spend their time.
- `gpu_check.py`: the CUDA tests and the GPU benchmark in one command.
- `boundary_study.py`: the FFT data step's boundary measurement of docs/boundary.md.
- `wheelhouse.py`: an offline install for GPU machines.
"""
