"""JUDE's training loss (MAE + FFT), registered in BasicSR's LOSS_REGISTRY."""
