"""cnnbench: reproducible comparisons of convolutional networks."""

__version__ = "0.1.0"
