"""Evaluate a trained checkpoint and write its predicted alignment (``docs/inference.md``)::

    python -m mmea_lightning.predict ckpt_path=<run dir>/checkpoints/best-epoch099.ckpt \\
        [top_k=10] [decoding=none|greedy|hungarian] [entities=test|unaligned|all] [data_dir=...]

Everything comes from the checkpoint (:func:`~mmea_lightning.lightning.restore.restore_run`): the data are read and
the split made again from its stored config (same ``split_seed``, so the same test links), the module rebuilt and
its weights loaded. Into its own run directory (``hydra.run.dir``, default ``outputs/predict/<date>/<time>``):

* ``metrics.json``: the checkpoint's test metrics, computed as ``train`` computes them (``trainer.test``: every
  ``test_protocols`` entry, the module's one-to-one decodings) -- plus ``test_1to1*`` of ``decoding`` -- and under
  ``predict`` what was predicted from what.
* ``predictions.tsv`` (tab-separated, with a header): :data:`PREDICTION_COLUMNS`, ``top_k`` rows per query entity
  (KG1), best first. ``score`` is the cosine similarity of the two embeddings; ``rank`` the candidate's place in the
  query's list (1 = best; ties in candidate id order); ``gold`` 1 when the pair is one of the dataset's reference
  links. With a ``decoding``, an ``aligned`` column marks each query's one-to-one partner; a partner outside the
  top ``top_k`` gets a row of its own (with its rank), so every aligned pair is in the file.
* ``alignment.tsv`` (with a ``decoding``): the one-to-one pairs alone, :data:`ALIGNMENT_COLUMNS`.

Which entities (``entities=``), queries from KG1 ranked against candidates from KG2:

* ``test`` (default): the KG1 entities of the test links against the KG2 entities of the test links -- the test
  protocol ``standard`` (``test/*`` metrics), so the top-1 rows agree with ``test/hits@1``.
* ``unaligned``: every KG1 entity outside the training and validation seed links (iterative training's added links
  included) against every KG2 entity outside them -- what is left to align.
* ``all``: every KG1 entity against every KG2 entity.

A bad ``ckpt_path`` (missing, not a checkpoint, not this project's) or a bad option ends with one error line and
exit status 2, as ``train`` does.
"""

from __future__ import annotations

import logging
import os
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from mmea_lightning.atomic_files import write_json_atomic, write_text_atomic
from mmea_lightning.config_source import CONFIG_PATH
from mmea_lightning.cpu_threads import set_threads
from mmea_lightning.eval.decoding import greedy_one_to_one, hungarian_one_to_one, one_to_one_metrics, similarity_matrix
from mmea_lightning.lightning.restore import RestoredRun, restore_run
from mmea_lightning.train import USER_ERRORS, metrics_table, report_user_error

log = logging.getLogger(__name__)

ENTITY_SETS: tuple[str, ...] = ("test", "unaligned", "all")
DECODINGS: tuple[str, ...] = ("none", "greedy", "hungarian")
PREDICTION_COLUMNS: tuple[str, ...] = ("kg1_uri", "kg2_uri", "score", "rank", "kg1_id", "kg2_id", "gold")
ALIGNMENT_COLUMNS: tuple[str, ...] = ("kg1_uri", "kg2_uri", "score", "rank", "kg1_id", "kg2_id", "gold")
_DECODERS = {"greedy": greedy_one_to_one, "hungarian": hungarian_one_to_one}


@dataclass
class Prediction:
    """What :func:`predict_checkpoint` returns.

    Attributes:
        metrics: the test metrics (empty when not evaluated).
        predictions: one row per (query, candidate), :data:`PREDICTION_COLUMNS` (+ ``aligned`` with a decoding).
        alignment: the one-to-one pairs (:data:`ALIGNMENT_COLUMNS`), or ``None`` without a decoding.
        info: what was predicted from what (checkpoint, dataset, model, options, counts).
    """

    metrics: dict[str, float]
    predictions: pd.DataFrame
    alignment: pd.DataFrame | None
    info: dict = field(default_factory=dict)


def check_options(top_k: object, decoding: object, entities: object) -> tuple[int, str | None, str]:
    """``(top_k, decoding or None, entities)`` checked; a ``ValueError`` naming the option and its choices."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k={top_k!r}: pass a positive integer, e.g. top_k=10.")
    decoding = "none" if decoding is None else str(decoding)
    if decoding not in DECODINGS:
        raise ValueError(f"decoding={decoding!r}: choose one of {', '.join(DECODINGS)}.")
    if entities not in ENTITY_SETS:
        raise ValueError(f"entities={entities!r}: choose one of {', '.join(ENTITY_SETS)}.")
    return top_k, (None if decoding == "none" else decoding), str(entities)


def entity_sets(datamodule, entities: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(queries (Q,), candidates (C,))`` sorted long entity ids of KG1 and KG2 for ``entities`` (module doc)."""
    if entities == "test":
        test = torch.as_tensor(np.asarray(datamodule.split.test), dtype=torch.long).reshape(-1, 2)
        queries, candidates = torch.unique(test[:, 0]), torch.unique(test[:, 1])
    else:
        queries = torch.as_tensor(datamodule.pair.kg1_ids, dtype=torch.long)
        candidates = torch.as_tensor(datamodule.pair.kg2_ids, dtype=torch.long)
        if entities == "unaligned":
            split = datamodule.split
            seeds = torch.cat([torch.as_tensor(np.asarray(links), dtype=torch.long).reshape(-1, 2)
                               for links in (split.train, split.valid, datamodule.seed_links)])
            queries = queries[~torch.isin(queries, seeds[:, 0])]
            candidates = candidates[~torch.isin(candidates, seeds[:, 1])]
    if not len(queries) or not len(candidates):
        raise ValueError(f"entities={entities}: no {'KG1' if not len(queries) else 'KG2'} entity is left to rank.")
    return queries, candidates


def query_batches(queries: torch.Tensor, candidates: torch.Tensor, top_k: int, batch_size: int = 1024) -> DataLoader:
    """Batches for :meth:`AlignerModule.predict_step`: ``{"queries": (B,), "candidates": (C,), "top_k": k}``."""

    def collate(rows: list[torch.Tensor]) -> dict:
        return {"queries": torch.stack(rows), "candidates": candidates, "top_k": int(top_k)}

    return DataLoader(queries, batch_size=batch_size, shuffle=False, collate_fn=collate)


def _rows(restored: RestoredRun, kg1: np.ndarray, kg2: np.ndarray, score: np.ndarray, rank: np.ndarray) -> pd.DataFrame:
    pair = restored.datamodule.pair
    uris = np.asarray(pair.uris, dtype=object)
    gold_links = np.asarray(pair.gold_links, dtype=np.int64).reshape(-1, 2)
    num = np.int64(pair.num_entities)
    gold = np.isin(kg1 * num + kg2, gold_links[:, 0] * num + gold_links[:, 1])
    return pd.DataFrame({"kg1_uri": uris[kg1], "kg2_uri": uris[kg2], "score": score.astype(np.float64),
                         "rank": rank.astype(np.int64), "kg1_id": kg1, "kg2_id": kg2, "gold": gold.astype(np.int64)})


def _alignment(restored: RestoredRun, embeddings: torch.Tensor, queries: torch.Tensor, candidates: torch.Tensor,
               decoding: str) -> pd.DataFrame:
    """The one-to-one pairs of ``decoding`` between ``queries`` and ``candidates`` (dense similarity matrix)."""
    sim = similarity_matrix(embeddings, queries, candidates, chunk_size=restored.module.eval_chunk_size).cpu()
    pairs = _DECODERS[decoding](sim).cpu()
    rows, cols = pairs[:, 0], pairs[:, 1]
    scores = sim[rows, cols]
    # the partner's place in its query's list: better scores, then equal scores of lower candidate ids
    before = (sim[rows] > scores[:, None]).sum(1)
    tied = ((sim[rows] == scores[:, None]) & (torch.arange(sim.size(1))[None, :] < cols[:, None])).sum(1)
    return _rows(restored, queries[rows].numpy(), candidates[cols].numpy(), scores.numpy(),
                 (before + tied + 1).numpy())


def predict_checkpoint(ckpt_path: str | Path, *, top_k: int = 10, decoding: str | None = None,
                       entities: str = "test", data_dir: str | Path | None = None,
                       cache_dir: str | Path | None = None, evaluate: bool = True,
                       accelerator: str = "cpu") -> Prediction:
    """Evaluate ``ckpt_path`` on its test links and rank ``top_k`` candidates per query entity (module doc)."""
    top_k, decoding, entities = check_options(top_k, decoding, entities)
    restored = restore_run(ckpt_path, data_dir=data_dir, cache_dir=cache_dir)
    module, datamodule = restored.module, restored.datamodule
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    metrics: dict[str, float] = {}
    if evaluate:
        metrics = {k: float(v) for k, v in trainer.test(module, datamodule=datamodule, verbose=False)[0].items()}

    queries, candidates = entity_sets(datamodule, entities)
    batches = trainer.predict(module, dataloaders=query_batches(queries, candidates, top_k,
                                                                 module.eval_chunk_size))
    best = torch.cat([b["candidates"].cpu() for b in batches])  # (Q, k)
    scores = torch.cat([b["scores"].cpu() for b in batches])
    k = best.size(1)
    predictions = _rows(restored, queries.repeat_interleave(k).numpy(), best.reshape(-1).numpy(),
                        scores.reshape(-1).numpy(), np.tile(np.arange(1, k + 1), len(queries)))

    alignment = None
    if decoding is not None:
        embeddings = module.embeddings().cpu()
        alignment = _alignment(restored, embeddings, queries, candidates, decoding)
        key = ["kg1_id", "kg2_id"]
        marked = predictions.merge(alignment[key].assign(aligned=1), on=key, how="left")
        predictions = marked.assign(aligned=marked["aligned"].fillna(0).astype(np.int64))
        outside = alignment.merge(predictions[key], on=key, how="left", indicator=True)
        outside = outside[outside["_merge"] == "left_only"].drop(columns="_merge").assign(aligned=1)
        predictions = pd.concat([predictions, outside], ignore_index=True)
        order = np.lexsort((predictions["rank"].to_numpy(), predictions["kg1_id"].to_numpy()))
        predictions = predictions.iloc[order].reset_index(drop=True)
        name = "test_1to1" if decoding == "hungarian" else f"test_1to1_{decoding}"
        if evaluate and f"{name}/hits@1" not in metrics:
            test = torch.as_tensor(np.asarray(datamodule.split.test), dtype=torch.long).reshape(-1, 2)
            metrics.update(one_to_one_metrics(embeddings, test, method=decoding, prefix=name,
                                              chunk_size=module.eval_chunk_size))

    config = restored.config
    info = {"checkpoint": str(restored.checkpoint_path), "trained_run": config.get("paths", {}).get("output_dir"),
            "dataset": config["dataset"]["name"], "model": config["model"]["name"], "entities": entities,
            "top_k": top_k, "decoding": decoding, "queries": int(len(queries)), "candidates": int(len(candidates)),
            "split_seed": config.get("split_seed"), "data_dir": config["data"].get("data_dir")}
    return Prediction(metrics=metrics, predictions=predictions, alignment=alignment, info=info)


def write_prediction(prediction: Prediction, output_dir: str | Path) -> dict[str, str]:
    """``predictions.tsv``, ``alignment.tsv`` (with a decoding) and ``metrics.json`` into ``output_dir``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = {"predictions": str(output_dir / "predictions.tsv")}
    write_text_atomic(output_dir / "predictions.tsv",
                      prediction.predictions.to_csv(sep="\t", index=False, float_format="%.6f"))
    if prediction.alignment is not None:
        files["alignment"] = str(output_dir / "alignment.tsv")
        write_text_atomic(output_dir / "alignment.tsv",
                          prediction.alignment.to_csv(sep="\t", index=False, float_format="%.6f"))
    files["metrics"] = str(output_dir / "metrics.json")
    write_json_atomic(output_dir / "metrics.json", {**prediction.metrics, "predict": {**prediction.info,
                                                                                       "files": files}})
    return files


def run(cfg: DictConfig | Mapping) -> dict:
    """Predict with the options of ``cfg`` (``conf/predict.yaml``), write the files, print the metrics table;
    returns what ``metrics.json`` holds."""
    if not cfg.get("ckpt_path"):
        raise ValueError("ckpt_path is required: pass ckpt_path=<run dir>/checkpoints/<name>.ckpt.")
    set_threads(cfg.get("threads"))
    prediction = predict_checkpoint(cfg["ckpt_path"], top_k=cfg.get("top_k", 10), decoding=cfg.get("decoding"),
                                    entities=cfg.get("entities", "test"), data_dir=cfg.get("data_dir"),
                                    cache_dir=cfg.get("cache_dir"), evaluate=bool(cfg.get("evaluate", True)),
                                    accelerator=str(cfg.get("accelerator", "cpu")))
    files = write_prediction(prediction, cfg["output_dir"])
    info = prediction.info
    if prediction.metrics:
        print(f"\n{info['dataset']} / {info['model']}: {info['checkpoint']} on its test links")
        print(metrics_table(prediction.metrics))
    print(f"{len(prediction.predictions)} predictions ({info['queries']} {info['entities']} KG1 entities x top "
          f"{min(info['top_k'], info['candidates'])} of {info['candidates']}) in {files['predictions']}"
          + (f"; {len(prediction.alignment)} one-to-one pairs in {files['alignment']}" if "alignment" in files
             else ""))
    return {**prediction.metrics, "predict": {**info, "files": files}}


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="predict")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except USER_ERRORS as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        report_user_error(err)


class _CallableModule(types.ModuleType):
    """``mmea_lightning.predict(...)`` is the Python API (:func:`mmea_lightning.api.predict`) even once this module
    -- which shares its name -- has been imported (an import sets the package attribute to the module)."""

    def __call__(self, *args, **kwargs):
        from mmea_lightning.api import predict

        return predict(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    main()
