"""netspec: write a neural network down once, have it checked before it runs, get PyTorch out."""

__version__ = "0.1.0"
