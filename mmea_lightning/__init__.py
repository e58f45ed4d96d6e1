"""mmea-lightning: multi-modal entity alignment experiments on PyTorch Lightning + Hydra."""

__version__ = "0.1.0"
