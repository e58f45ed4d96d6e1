"""The LightningModule every aligner runs in: seed-link training steps, evaluation through the evaluator."""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable, Mapping, Sequence

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from mmea_lightning.data.features import FeatureSet
from mmea_lightning.eval.decoding import DECODERS, one_to_one_metrics
from mmea_lightning.eval.evaluator import PROTOCOLS, evaluate_alignment
from mmea_lightning.models.aligners.base import Aligner, check_aligner
from mmea_lightning.similarity import cosine_similarity, sorted_topk


class AlignerModule(L.LightningModule):
    """Wraps an :class:`~mmea_lightning.models.aligners.base.Aligner`: ``training_loss(links)``,
    ``forward() -> (N, D)`` embeddings of every entity, and ``describe()``.

    Args:
        aligner: ``features -> Aligner`` (a Hydra ``_partial_`` of the aligner class); what it returns must be an
            :class:`Aligner`, else a ``TypeError`` names its class and the missing method.
        features: the pair's :class:`FeatureSet`.
        optimizer: ``params -> Optimizer`` (Hydra ``_partial_``).
        scheduler: ``optimizer -> LRScheduler`` or ``None`` (given ``num_training_steps`` when it takes it).
        scheduler_interval: ``"epoch"`` or ``"step"``.
        name: the aligner's name, for the results.
        val_protocol: the evaluator protocol of validation, reported as ``val/*`` (``val/mrr`` selects checkpoints
            and stops early). Default ``all``: the validation links' KG1 entities ranked against *every* KG2 entity
            -- a finer signal than the few validation links alone, and no gold link of the test set is involved.
        test_protocols: evaluator protocols reported at test time.
        csls_k: neighbours of CSLS; eval_chunk_size: queries per similarity chunk.
        one_to_one: one-to-one decodings reported apart at test time: ``hungarian`` -> ``test_1to1/*``,
            ``greedy`` -> ``test_1to1_greedy/*``.
        config: the run's resolved config (plain containers, ``OmegaConf.to_container(cfg, resolve=True)``), saved
            as the module's hyperparameters: every checkpoint carries it (readable with
            ``torch.load(weights_only=True)``), so :meth:`load_from_checkpoint` rebuilds the data and the module from
            the checkpoint alone, and Lightning gives it to every logger (W&B config, CSV ``hparams.yaml``).
    """

    def __init__(
        self,
        aligner: Callable[[FeatureSet], Aligner],
        features: FeatureSet,
        optimizer: Callable,
        scheduler: Callable | None = None,
        scheduler_interval: str = "epoch",
        name: str = "aligner",
        val_protocol: str = "all",
        test_protocols: Sequence[str] = PROTOCOLS,
        csls_k: int = 3,
        eval_chunk_size: int = 4096,
        one_to_one: Sequence[str] = (),
        config: Mapping | None = None,
    ):
        super().__init__()
        if config is not None:
            if isinstance(config, DictConfig):
                config = OmegaConf.to_container(config, resolve=True)
            # plain values only (never the partials or the features); Lightning logs them to every logger when a
            # stage starts, in the process that runs it (a spawned DDP worker too): mmea_lightning.loggers
            self.save_hyperparameters(config)
        self.aligner = check_aligner(aligner(features=features))
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.name = name
        if val_protocol not in PROTOCOLS:
            raise ValueError(f"unknown val_protocol {val_protocol!r}; choose among {list(PROTOCOLS)}")
        self.val_protocol = val_protocol
        unknown = [p for p in test_protocols if p not in PROTOCOLS]
        if unknown:  # refused when the module is built, not after training
            raise ValueError(f"unknown test_protocols {unknown}; choose among {list(PROTOCOLS)}")
        self.test_protocols = tuple(test_protocols)
        self.csls_k = csls_k
        self.eval_chunk_size = eval_chunk_size
        unknown = sorted(set(one_to_one) - set(DECODERS))
        if unknown:
            raise ValueError(f"unknown one_to_one decoder(s) {unknown}; choose among {list(DECODERS)}")
        self.one_to_one = tuple(one_to_one)
        # The epoch at which a re-sizable per-step schedule ends (None: max_epochs). IterativeSeedExpansion sets
        # it at each epoch start: its start epoch before it restarts the schedule there (``restart_lr_scale``).
        self.schedule_end_epoch: int | None = None
        # the global random states of a checkpoint being resumed, applied when its next training epoch starts
        self._rng_to_restore: dict | None = None
        self.register_buffer("kg1_ids", features.kg1_ids.clone(), persistent=False)
        self.register_buffer("kg2_ids", features.kg2_ids.clone(), persistent=False)
        # Buffers here are the pair's constant feature tables and ids, identical on every rank: DDP must not
        # broadcast them at start-up and before every forward (costly, and impossible for sparse CSR tables).
        # Normalisation statistics (``running_*``), should an aligner have them, stay synchronised.
        constant = [name for name, _ in self.named_buffers() if "running_" not in name
                    and not name.endswith("num_batches_tracked")]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self, constant)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss, parts = self.aligner.training_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log_dict({f"train/loss_{k}": v for k, v in parts.items()}, batch_size=len(batch))
        return loss

    def _gather_links(self, links: torch.Tensor) -> torch.Tensor:
        """Every rank's evaluation links, once each (DDP splits an evaluation loader across ranks and pads the
        shares with repeated links; gold links are unique, so the union de-duplicated is the whole split)."""
        size = torch.tensor([len(links)], device=links.device)
        largest = int(self.all_gather(size).max())
        padded = torch.full((largest, 2), -1, dtype=torch.long, device=links.device)
        padded[: len(links)] = links
        gathered = self.all_gather(padded).reshape(-1, 2)
        return torch.unique(gathered[gathered[:, 0] >= 0], dim=0)

    def _evaluate(self, links: torch.Tensor, prefix: str, protocols: Sequence[str],
                  one_to_one: Sequence[str] = ()) -> dict[str, float]:
        """Metrics of ``links``; under DDP the ranks' links are gathered, rank 0 computes the metrics once over
        all of them and broadcasts them, so every rank logs, checkpoints and stops on the same numbers."""
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return self._metrics(links, prefix, protocols, one_to_one)
        links = self._gather_links(links)
        metrics = self._metrics(links, prefix, protocols, one_to_one) if trainer.is_global_zero else None
        return trainer.strategy.broadcast(metrics, src=0)

    def _metrics(self, links: torch.Tensor, prefix: str, protocols: Sequence[str],
                 one_to_one: Sequence[str] = ()) -> dict[str, float]:
        embeddings = self.aligner()
        metrics = evaluate_alignment(embeddings, links, self.kg1_ids, self.kg2_ids, prefix=prefix,
                                     protocols=protocols, csls_k=self.csls_k, chunk_size=self.eval_chunk_size)
        for method in one_to_one:
            name = f"{prefix}_1to1" if method == "hungarian" else f"{prefix}_1to1_{method}"
            metrics.update(one_to_one_metrics(embeddings, links, method=method, prefix=name,
                                              chunk_size=self.eval_chunk_size))
        return metrics

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        metrics = self._evaluate(batch, "val", (self.val_protocol,))
        metrics = {"val/" + key.partition("/")[2]: value for key, value in metrics.items()}  # one protocol: val/*
        sync = self._distributed  # identical values on every rank; syncing them only silences Lightning's warning
        self.log("val/mrr", metrics.pop("val/mrr"), prog_bar=True, batch_size=len(batch), sync_dist=sync)
        self.log_dict(metrics, batch_size=len(batch), sync_dist=sync)

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        metrics = self._evaluate(batch, "test", self.test_protocols, self.one_to_one)
        self.log_dict(metrics, batch_size=len(batch), sync_dist=self._distributed)

    @torch.no_grad()
    def embeddings(self) -> torch.Tensor:
        """``(N, D)`` embeddings of every entity (rows: global entity ids), computed in eval mode (no dropout);
        the module's mode is left as it was."""
        was_training = self.training
        self.eval()
        try:
            return self.aligner()
        finally:
            self.train(was_training)

    def on_predict_epoch_start(self) -> None:
        self._predict_embeddings = self.aligner()  # one forward pass serves every batch of queries

    def on_predict_epoch_end(self) -> None:
        self._predict_embeddings = None

    def predict_step(self, batch: Mapping, batch_idx: int) -> dict[str, torch.Tensor]:
        """The ``top_k`` best candidates of a batch of queries, by cosine similarity of the embeddings.

        Args:
            batch: ``queries`` ``(B,)`` long entity ids, ``candidates`` ``(C,)`` long entity ids, ``top_k`` int
                (``mmea_lightning.predict.query_batches`` serves such batches to ``trainer.predict``).

        Returns:
            ``queries`` ``(B,)``; ``candidates`` ``(B, k)`` entity ids and ``scores`` ``(B, k)`` cosines, best first
            (ties in candidate order), ``k = min(top_k, C)``.
        """
        embeddings = getattr(self, "_predict_embeddings", None)
        if embeddings is None:
            embeddings = self.aligner()
        queries, candidates = batch["queries"], batch["candidates"]
        candidates = candidates.to(embeddings.device)
        sim = cosine_similarity(embeddings[queries.to(embeddings.device)], embeddings[candidates],
                                chunk_size=self.eval_chunk_size)  # (B, C)
        scores, order = sorted_topk(sim, min(int(batch["top_k"]), sim.size(1)))
        return {"queries": queries, "candidates": candidates[order], "scores": scores}

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location="cpu", data_dir=None, cache_dir=None,
                             strict: bool = True, **kwargs) -> AlignerModule:
        """The trained module of a checkpoint written by ``train``, from the checkpoint alone.

        The checkpoint carries the run's resolved config (``config``, saved as hyperparameters): the pair is read
        again from the stored data root (``data_dir=`` points elsewhere, e.g. on another machine), its features
        rebuilt (or read from the cache, ``cache_dir=``), the module re-instantiated on them and the weights
        loaded; returned in eval mode. :func:`mmea_lightning.lightning.restore.restore_run` also returns the
        DataModule (the split, the test links). Read with ``torch.load(weights_only=True)``.

        Raises:
            FileNotFoundError: no such checkpoint, or its data root is gone (the message says what to pass).
            ValueError: not a checkpoint of this project, or the data rebuilt do not fit its weights.
        """
        from mmea_lightning.lightning.restore import restore_run  # restore builds this class: imported on use

        if kwargs:
            raise TypeError(f"load_from_checkpoint: unexpected arguments {sorted(kwargs)}; the module is rebuilt "
                            "from the config in the checkpoint (data_dir=, cache_dir=, map_location=, strict=)")
        return restore_run(checkpoint_path, data_dir=data_dir, cache_dir=cache_dir, map_location=map_location,
                           strict=strict).module

    @property
    def _distributed(self) -> bool:
        return self._trainer is not None and self._trainer.world_size > 1

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        kwargs = {"optimizer": optimizer}
        if "num_training_steps" in inspect.signature(self.scheduler_factory).parameters:
            kwargs["num_training_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(**kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}

    def _resizable_schedulers(self) -> list:
        """The per-step schedulers that can follow a change of epoch length (``set_horizon``), if the run's
        length is counted in epochs of known length."""
        trainer = self._trainer
        if (self.scheduler_interval != "step" or trainer is None or trainer.max_steps != -1
                or trainer.max_epochs is None or trainer.max_epochs < 0 or math.isinf(trainer.num_training_batches)):
            return []
        return [config.scheduler for config in trainer.lr_scheduler_configs
                if hasattr(config.scheduler, "set_horizon")]

    def _horizon(self, scheduler) -> int:
        """The step at which the schedule should end: the steps done plus this epoch's steps times the epochs
        left until ``schedule_end_epoch`` (``max_epochs`` by default)."""
        trainer = self.trainer
        end_epoch = trainer.max_epochs if self.schedule_end_epoch is None else self.schedule_end_epoch
        per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
        return scheduler.last_epoch + per_epoch * max(end_epoch - trainer.current_epoch, 1)

    def restart_schedule(self, lr_scale: float = 1.0) -> None:
        """Start every re-sizable per-step schedule afresh (warm-up, then decay to ``max_epochs``) at
        ``lr_scale`` times its base rates -- the public MEAformer code's switch to its iterative stage."""
        schedulers = self._resizable_schedulers()
        if not schedulers:
            raise ValueError(f"{self.name}: restarting the learning-rate schedule needs a per-step schedule that "
                             "can restart (schedules.CosineWithWarmup, as model=meaformer has) and a run counted "
                             "in epochs (max_steps unset); set training.expansion.restart_lr_scale=null otherwise")
        self.schedule_end_epoch = None
        for scheduler in schedulers:
            scheduler.restart(self._horizon(scheduler), lr_scale)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The global random states (torch, numpy, python; CUDA when in use) travel in the checkpoint: dropout and
        any sampling in a loss draw from them, and a resumed run must draw what the uninterrupted one draws.

        With ``checkpoints/last.ckpt`` written at the end of a training epoch (``conf/callbacks/default.yaml``) a
        resumed run is bit-identical to an uninterrupted one (``tests/test_resume_exact.py``). One known exception,
        unused by this project's configs: a ``ReduceLROnPlateau`` stepped per epoch, whose step Lightning takes
        after the epoch-end checkpoint and skips on a resume (the metric it needs is not in the checkpoint)."""
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Kept until the next training epoch starts (:meth:`on_train_epoch_start`): between here and there a
        resumed run builds data loaders and runs hooks that an uninterrupted run does not, and some of them draw
        from the global generators (every ``DataLoader`` iterator draws a seed)."""
        fitting = self._trainer is None or self._trainer.state.fn == "fit"
        self._rng_to_restore = checkpoint.get("rng_states") if fitting else None

    def on_train_epoch_start(self) -> None:
        """Restore the random states of the checkpoint a run resumes from (first epoch after a resume only).
        Re-size a per-step schedule that can (:class:`~mmea_lightning.lightning.schedules.CosineWithWarmup`)
        to end at ``max_epochs`` (or ``schedule_end_epoch``) when the epochs change length: iterative training
        adds seed links, and the total from ``estimated_stepping_batches`` counts every epoch at the first one's
        length. Before the first step the warm-up is re-sized too."""
        if self._rng_to_restore is not None:
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
        for scheduler in self._resizable_schedulers():
            horizon = self._horizon(scheduler)
            if horizon == scheduler.num_training_steps:
                continue
            if scheduler.last_epoch == 0:
                scheduler.restart(horizon)
            else:
                scheduler.set_horizon(horizon)

    def describe(self) -> Mapping:
        return {"model": self.name, **self.aligner.describe()}


def rng_states() -> dict:
    """The global random states as tensors and plain Python values (``torch.load(weights_only=True)`` reads them)."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping) -> None:
    """Restore what :func:`rng_states` returned (a missing entry leaves that generator alone)."""
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "numpy" in states:
        state = states["numpy"]
        keys = torch.as_tensor(state["keys"]).numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, state["pos"], state["has_gauss"], state["cached_gaussian"]))
    if "python" in states:
        state = states["python"]
        random.setstate((state["version"], tuple(state["internal"]), state["gauss_next"]))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
