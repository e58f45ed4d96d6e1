"""mmea-lightning: multi-modal entity alignment experiments on PyTorch Lightning + Hydra."""

from omegaconf import OmegaConf

from mmea_lightning.run_group import run_group

__version__ = "0.1.0"

# `${mmea.if:${surface},a,b}` in the configs: `a` when the flag is true, else `b`.
if not OmegaConf.has_resolver("mmea.if"):
    OmegaConf.register_new_resolver("mmea.if", lambda flag, yes, no: yes if flag else no)
# `${mmea.run_group:}`: one name shared by every job of a Hydra multirun (W&B groups a sweep's runs by it).
if not OmegaConf.has_resolver("mmea.run_group"):
    OmegaConf.register_new_resolver("mmea.run_group", run_group)
