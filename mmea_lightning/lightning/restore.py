"""Rebuild a trained :class:`~mmea_lightning.lightning.aligner_module.AlignerModule` and its data from a checkpoint.

Every checkpoint ``train`` writes carries the run's resolved config (plain containers) as the module's
hyperparameters (``checkpoint["hyper_parameters"]``). From it alone, :func:`restore_run`

1. reads the checkpoint with ``torch.load(weights_only=True)`` (tensors and plain values; nothing is unpickled),
2. re-instantiates the run's DataModule (``config["data"]``): the pair is read from the stored data root (or
   ``data_dir=``), the features rebuilt (or read from the feature cache), the split made again from the stored
   ``seed_ratio`` / ``val_ratio`` / ``split_seed`` -- so the test links are the ones the run was tested on; the
   checkpoint's own seed links are compared with the rebuilt ones and a difference is refused,
3. re-instantiates the module (``config["model"]["module"]``) on those features and loads the weights.

Nothing is written into the training run's directory (the rebuilt DataModule has no ``output_dir``).
"""

from __future__ import annotations

import copy
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate

from mmea_lightning.data.loader import DatasetSpec
from mmea_lightning.lightning.aligner_module import AlignerModule

__all__ = ["RestoredRun", "checkpoint_config", "read_checkpoint", "restore_run"]


@dataclass
class RestoredRun:
    """A checkpoint brought back to life.

    Attributes:
        module: the trained module, weights loaded, in eval mode.
        datamodule: the run's DataModule, set up (pair, features, split, seed links of the checkpoint).
        config: the run's resolved config as stored in the checkpoint (with the ``data_dir`` / ``cache_dir``
            overrides applied).
        checkpoint_path: the checkpoint it came from.
    """

    module: AlignerModule
    datamodule: object
    config: dict
    checkpoint_path: Path


def read_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict:
    """The checkpoint at ``path`` read with ``weights_only=True``; anything else is a ``ValueError`` /
    ``FileNotFoundError`` that says what the file is not."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found: pass ckpt_path=<run dir>/checkpoints/<name>.ckpt (a "
                                "run's metrics.json names its best one under run.best_checkpoint).")
    if not path.is_file():
        raise ValueError(f"ckpt_path={path} is a directory, not a checkpoint file: pass one of its .ckpt files.")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise ValueError(f"{path} is not a PyTorch checkpoint (not the zip archive torch.save writes): pass a .ckpt "
                         "file written by python -m mmea_lightning.train (<run dir>/checkpoints/).")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        detail = next((line.strip() for line in str(err).splitlines() if "Unsupported global" in line), "")
        raise ValueError(f"{path} holds objects other than tensors and plain values, so it is not read (checkpoints "
                         f"are loaded with weights_only=True, never unpickled). {detail.split('. Please')[0]}"
                         ) from None
    except Exception as err:  # torch raises RuntimeError / zip and EOF errors for anything that is not a checkpoint
        raise ValueError(f"{path} is not a PyTorch checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'unreadable'}).") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict): pass a .ckpt file written by "
                         "python -m mmea_lightning.train (<run dir>/checkpoints/).")
    return checkpoint


def checkpoint_config(checkpoint: dict, path: str | Path) -> dict:
    """The resolved run config stored in ``checkpoint`` (``ValueError`` when it is not an mmea-lightning run's)."""
    config = checkpoint.get("hyper_parameters")
    if not isinstance(config, dict) or not isinstance(config.get("data"), dict) \
            or not isinstance(config.get("model"), dict) or not isinstance(config["model"].get("module"), dict):
        raise ValueError(f"{path} is not a checkpoint of an mmea-lightning run: it carries no run config "
                         "(hyper_parameters with data and model.module). Checkpoints written before they carried "
                         "it can still be tested the old way: python -m mmea_lightning.train ckpt_path=<ckpt> "
                         "with the run's settings.")
    return copy.deepcopy(config)


def _check_data_root(spec: DatasetSpec, data_dir: str | None, stored: str | None, path: Path) -> None:
    """A clear error when the data root of a real dataset is gone (the toy pair is generated when missing)."""
    if spec.generator is not None:
        return
    root = Path(data_dir).expanduser() if data_dir else None
    if root is not None and (root / spec.folder).is_dir():
        return
    where = f"from {stored}" if stored else "with no data_dir recorded"
    missing = f"{root / spec.folder} is not there" if root is not None else "no data_dir is known"
    raise FileNotFoundError(f"checkpoint {path} was trained on dataset {spec.name} {where}; {missing}: pass "
                            f"data_dir=<the mmkg root that holds {spec.folder}>.")


def _check_seed_links(datamodule, state: dict, path: Path) -> None:
    """The rebuilt split must be the one the checkpoint was trained on: same data, same split, same seed links."""
    links = torch.as_tensor(state["seed_links"], dtype=torch.long).reshape(-1, 2)
    initial = int(state.get("initial_seed_links", len(links)))
    rebuilt = datamodule.seed_links
    if rebuilt is None or len(rebuilt) < initial or not torch.equal(links[:initial], rebuilt[:initial]):
        raise ValueError(f"the seed links rebuilt from the config in {path} differ from the ones it was trained on "
                         f"({initial} in the checkpoint, {0 if rebuilt is None else len(rebuilt)} rebuilt): the data "
                         "under data_dir, or the seed generator's inputs, are not the ones of training, so its test "
                         "links would not be either. Point data_dir at the data it was trained on.")


def restore_run(checkpoint_path: str | Path, *, data_dir: str | Path | None = None,
                cache_dir: str | Path | None = None, map_location: str | torch.device | None = "cpu",
                strict: bool = True) -> RestoredRun:
    """Rebuild the module and the data of the run that wrote ``checkpoint_path``.

    Args:
        checkpoint_path: a ``.ckpt`` written by ``python -m mmea_lightning.train``.
        data_dir: the data root to read the pair from instead of the stored one (the data must be the same).
        cache_dir: the feature cache to use instead of the stored one (features are rebuilt when not cached).
        map_location: where the weights are loaded (``torch.load``'s ``map_location``).
        strict: ``load_state_dict``'s ``strict``.

    Raises:
        FileNotFoundError: no such checkpoint, or the data root it was trained on is gone.
        ValueError: not a checkpoint of this project, or the rebuilt data or module do not fit its weights.
    """
    path = Path(checkpoint_path).expanduser()
    checkpoint = read_checkpoint(path, map_location)
    config = checkpoint_config(checkpoint, path)
    data_cfg = config["data"]
    stored_dir = data_cfg.get("data_dir")
    if data_dir is not None:
        data_cfg["data_dir"] = config["data_dir"] = str(Path(data_dir).expanduser())
    if cache_dir is not None:
        data_cfg["cache_dir"] = str(Path(cache_dir).expanduser())
        config.setdefault("paths", {})["cache_dir"] = data_cfg["cache_dir"]
    spec = DatasetSpec.from_config(data_cfg["dataset"])
    _check_data_root(spec, data_cfg.get("data_dir"), stored_dir, path)

    datamodule = instantiate({**data_cfg, "output_dir": None}, _convert_="object")  # writes nothing to the run dir
    datamodule.setup("test")
    state = checkpoint.get(type(datamodule).__qualname__) or {}
    if state.get("seed_links") is not None:
        _check_seed_links(datamodule, state, path)
        datamodule.load_state_dict(state)  # the seed links the run ended with (iterative training adds some)

    module = instantiate(config["model"]["module"], _partial_=True)(features=datamodule.features, config=config)
    module.on_load_checkpoint(checkpoint)
    try:
        module.load_state_dict(checkpoint["state_dict"], strict=strict)
    except RuntimeError as err:
        raise ValueError(f"the weights in {path} do not fit the module rebuilt from its config and the data under "
                         f"{data_cfg.get('data_dir') or data_cfg.get('cache_dir')} (different data or feature "
                         f"settings?): {str(err).splitlines()[0]}") from None
    device = next((t.device for t in checkpoint["state_dict"].values() if isinstance(t, torch.Tensor)), None)
    if device is not None:
        module.to(device)
    module.eval()
    return RestoredRun(module=module, datamodule=datamodule, config=config, checkpoint_path=path)
