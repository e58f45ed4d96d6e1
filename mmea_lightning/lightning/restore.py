"""Rebuild a trained :class:`~mmea_lightning.lightning.aligner_module.AlignerModule` and its data from a checkpoint.

Every checkpoint ``train`` writes carries the run's resolved config (plain containers) as the module's
hyperparameters (``checkpoint["hyper_parameters"]``). From it alone, :func:`restore_run`

1. reads the checkpoint with ``torch.load(weights_only=True)`` (tensors and plain values; nothing is unpickled),
2. re-instantiates the run's DataModule (``config["data"]``): the pair is read from the stored data root -- a
   relative one taken from the directory training ran in -- or from ``data_dir=`` (for a TSV pair: its folder), the
   features rebuilt (or read from the feature cache), the split made again from the stored
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
    if not str(path).strip():
        raise ValueError("ckpt_path is empty: pass ckpt_path=<run dir>/checkpoints/<name>.ckpt (a run without a "
                         "validation check has no best checkpoint; its checkpoints/last.ckpt holds the final weights).")
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


def _absolute(value: str | None, root_dir: str | None) -> str | None:
    """A path the training run recorded relative to the directory it ran in, made absolute with that directory."""
    if not value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() or not root_dir else Path(root_dir) / path)


def _locate_data(config: dict, data_dir: str | Path | None, path: Path) -> None:
    """Point the config at the data (in place): ``data_dir`` overrides the stored root (``data_dir``, or a TSV pair's
    ``dataset.path``); stored relative paths are taken relative to the directory training ran in. A clear error
    when the data are not there (the generated toy pair is regenerated when missing)."""
    data_cfg, root_dir = config["data"], (config.get("paths") or {}).get("root_dir")
    dataset = data_cfg["dataset"]
    spec = DatasetSpec.from_config(dataset)
    if dataset.get("format") == "tsv":
        stored = dataset.get("path")
        folder = str(Path(data_dir).expanduser()) if data_dir is not None else _absolute(stored, root_dir)
        dataset["path"] = config.setdefault("dataset", {})["path"] = folder
        if folder and Path(folder).is_dir():
            return
        what, fix = f"{folder} is not there", "the folder holding its triples_1.tsv, triples_2.tsv and links.tsv"
    else:
        stored = data_cfg.get("data_dir")
        if data_dir is not None:
            data_cfg["data_dir"] = config["data_dir"] = str(Path(data_dir).expanduser())
        else:
            data_cfg["data_dir"] = _absolute(stored, root_dir)
        if getattr(spec, "generator", None) is not None:
            return
        root = data_cfg["data_dir"]
        if root and (Path(root) / spec.folder).is_dir():
            return
        what = f"{Path(root) / spec.folder} is not there" if root else "no data_dir is known"
        fix = f"the mmkg root that holds {spec.folder}"
    where = f"from {stored}" if stored else "with no data location recorded"
    raise FileNotFoundError(f"checkpoint {path} was trained on dataset {spec.name} {where}; {what}: pass "
                            f"data_dir=<{fix}>.")


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
    checkpoint = read_checkpoint(checkpoint_path, map_location)
    path = Path(checkpoint_path).expanduser().resolve()
    config = checkpoint_config(checkpoint, path)
    data_cfg = config["data"]
    _locate_data(config, data_dir, path)
    if cache_dir is not None:
        data_cfg["cache_dir"] = str(Path(cache_dir).expanduser())
        config.setdefault("paths", {})["cache_dir"] = data_cfg["cache_dir"]
    else:
        data_cfg["cache_dir"] = _absolute(data_cfg.get("cache_dir"), (config.get("paths") or {}).get("root_dir"))

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
        where = data_cfg.get("data_dir") or data_cfg["dataset"].get("path") or data_cfg.get("cache_dir")
        raise ValueError(f"the weights in {path} do not fit the module rebuilt from its config and the data under "
                         f"{where} (different data or feature settings?): {str(err).splitlines()[0]}") from None
    device = next((t.device for t in checkpoint["state_dict"].values() if isinstance(t, torch.Tensor)), None)
    if device is not None:
        module.to(device)
    module.eval()
    return RestoredRun(module=module, datamodule=datamodule, config=config, checkpoint_path=path)
