"""Peak arithmetic rates of known GPUs, so that the benchmark can say how far a case is from the hardware.

`peak_tflops(device_name, math)` is the vendor's *dense* peak (structured-sparsity figures halved away) for the
math the case runs: 'bf16' / 'fp16' (tensor cores), 'tf32' (fp32 convolutions and matmuls on tensor cores, which
PyTorch allows for cuDNN convolutions by default: `torch.backends.cudnn.allow_tf32`) or 'fp32' (CUDA cores).
None when the device is unknown (every CPU, GPUs not in the table): the benchmark then reports no fraction
rather than a guess. `measured_matmul_tflops` times a large matrix product instead: a ceiling measured on the
machine itself, labelled as such wherever it is shown.

Sources (NVIDIA datasheets; the sparse figures they headline are twice the dense ones listed here):
- H100 SXM5 and H200 SXM ("NVIDIA H100 Tensor Core GPU" datasheet; "NVIDIA H200 Tensor Core GPU" datasheet, which
  lists the same compute as the H100 SXM): FP32 67, TF32 494.5, BF16/FP16 989.5 TFLOP/s.
- H100 PCIe (same H100 datasheet): FP32 51, TF32 378, BF16/FP16 756.
- H100 NVL and H200 NVL (their datasheets): FP32 60, TF32 417.5, BF16/FP16 835.
- A100 SXM4 and PCIe, 40 and 80 GB ("NVIDIA A100 Tensor Core GPU" datasheet): FP32 19.5, TF32 156, BF16/FP16 312.
- L40S ("NVIDIA L40S" datasheet): FP32 91.6, TF32 183, BF16/FP16 362.
- L4 ("NVIDIA L4" datasheet): FP32 30.3, TF32 60, BF16/FP16 121.
- A10 ("NVIDIA A10" datasheet): FP32 31.2, TF32 62.5, BF16/FP16 125.
- V100 SXM2 ("NVIDIA V100" datasheet): FP32 15.7, FP16 125 (tensor cores); no bf16, no TF32.
"""
import time

# (substring of torch.cuda.get_device_name(), {math: dense TFLOP/s}); the first match wins, so the more specific
# names (NVL, PCIe) come before the bare model name.
_H100_SXM = {'fp32': 67.0, 'tf32': 494.5, 'bf16': 989.5, 'fp16': 989.5}
_NVL = {'fp32': 60.0, 'tf32': 417.5, 'bf16': 835.0, 'fp16': 835.0}
_A100 = {'fp32': 19.5, 'tf32': 156.0, 'bf16': 312.0, 'fp16': 312.0}
KNOWN_PEAKS = (
    ('H200 NVL', _NVL),
    ('H200', _H100_SXM),
    ('H100 NVL', _NVL),
    ('H100 PCIe', {'fp32': 51.0, 'tf32': 378.0, 'bf16': 756.0, 'fp16': 756.0}),
    ('H100', _H100_SXM),
    ('A100', _A100),
    ('L40S', {'fp32': 91.6, 'tf32': 183.0, 'bf16': 362.0, 'fp16': 362.0}),
    ('L4', {'fp32': 30.3, 'tf32': 60.0, 'bf16': 121.0, 'fp16': 121.0}),
    ('A10', {'fp32': 31.2, 'tf32': 62.5, 'bf16': 125.0, 'fp16': 125.0}),
    ('V100', {'fp32': 15.7, 'fp16': 125.0}),
)


def peak_tflops(device_name, math):
    """The dense peak TFLOP/s of `device_name` for `math` ('bf16', 'fp16', 'tf32', 'fp32'), or None if unknown."""
    for key, peaks in KNOWN_PEAKS:
        if key in (device_name or ''):
            return peaks.get(math)
    return None


def case_math(device, precision):
    """The math a case's convolutions run in: its autocast precision, else 'tf32' on CUDA when cuDNN may use TF32
    (PyTorch's default), else 'fp32'."""
    if precision:
        return precision
    if device.startswith('cuda'):
        import torch
        return 'tf32' if torch.backends.cudnn.allow_tf32 else 'fp32'
    return 'fp32'


def measured_matmul_tflops(device, math, size=None, repeats=10):
    """TFLOP/s of a size×size×size matrix product on `device` in `math`: a ceiling measured here, not a datasheet.

    Args:
        device (str): 'cpu' or 'cuda[:N]'.
        math (str): 'bf16', 'fp16', 'tf32' or 'fp32' (tf32: fp32 tensors with TF32 matmuls allowed).
        size (int | None): matrix side (default 8192 on CUDA, 2048 on CPU).
        repeats (int): timed products, after two untimed ones.
    """
    import torch
    cuda = device.startswith('cuda')
    size = size or (8192 if cuda else 2048)
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(math, torch.float32)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    allow = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = math == 'tf32'
    try:
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        for _ in range(2):
            a @ b
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync()
        seconds = (time.perf_counter() - start) / repeats
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow
    return 2 * size**3 / seconds / 1e12
