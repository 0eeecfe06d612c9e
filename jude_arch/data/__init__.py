"""LOL-Blur data for BasicSR: blur kernels, synthesis, LMDB packing and the registered dataset."""
