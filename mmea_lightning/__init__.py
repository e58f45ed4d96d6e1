"""mmea-lightning: multi-modal entity alignment experiments on PyTorch Lightning + Hydra."""

from omegaconf import OmegaConf

__version__ = "0.1.0"

# `${mmea.if:${surface},a,b}` in the configs: `a` when the flag is true, else `b`.
if not OmegaConf.has_resolver("mmea.if"):
    OmegaConf.register_new_resolver("mmea.if", lambda flag, yes, no: yes if flag else no)
