"""Iterative (bootstrapped) training for every aligner: mutual nearest neighbours become new seed links."""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import torch

from mmea_lightning import similarity

log = logging.getLogger(__name__)


@torch.no_grad()
def mutual_nearest_neighbours(embeddings: torch.Tensor, left: torch.Tensor, right: torch.Tensor,
                              chunk_size: int = 4096) -> set[tuple[int, int]]:
    """Pairs ``(l, r)`` of ``left x right`` entity ids that are each other's nearest neighbour by cosine.

    ``embeddings (N, d)``; ``left (L,)``, ``right (R,)`` ids. Memory ``O(chunk_size * R)``; ties go to the lowest
    index (:func:`mmea_lightning.similarity.mutual_nearest_neighbours`), so the result is deterministic.
    """
    if len(left) == 0 or len(right) == 0:
        return set()
    pairs = similarity.mutual_nearest_neighbours(embeddings[left], embeddings[right], chunk_size)
    return set(zip(left[pairs[:, 0]].tolist(), right[pairs[:, 1]].tolist()))


class IterativeSeedExpansion(L.Callback):
    """Bootstrapped seed expansion as EVA / MCLEA / MEAformer do it (``--il``), usable by every aligner.

    From ``start_epoch`` on (default: half of ``max_epochs``), every ``every`` epochs the aligner embeds every
    entity and the mutual nearest neighbours among the *unlabelled* entities are proposed -- entities in neither
    the seed links nor the validation links (the validation links stay a clean selection set). A pair survives
    only if it is proposed at every check of a window of ``window`` checks; at the end of each window the survivors
    join the seed links (a window that would end at the last epoch is not checked: nothing would train on its
    pairs). The gold links are read only to log the precision of what was added (``iterative/*``),
    never to choose it. Needs ``trainer.reload_dataloaders_every_n_epochs=1`` so that new seeds are served.

    ``restart_lr_scale`` (default off) switches stages as the public MEAformer code (``--il``) does: the per-step
    schedule first ends at ``start_epoch`` (so the first stage is the non-iterative run), and at ``start_epoch`` a
    new warm-up + cosine to ``max_epochs`` begins at ``restart_lr_scale`` times the base rate (MEAformer: 1/5),
    with fresh optimiser moments; ``reload_best`` first loads the best checkpoint so far (by validation MRR). The
    public code sizes its second schedule at three times the remaining epochs' steps, a margin for the growing
    seed links; here the schedule is re-sized at every epoch to end at ``max_epochs`` instead.
    """

    def __init__(self, start_epoch: int | None = None, every: int = 5, window: int = 10, chunk_size: int = 4096,
                 restart_lr_scale: float | None = None, reload_best: bool = False):
        self.start_epoch = start_epoch
        self.every = every
        self.window = window
        self.chunk_size = chunk_size
        if reload_best and restart_lr_scale is None:
            raise ValueError("training.expansion.reload_best=true belongs to the stage switch: set "
                             "training.expansion.restart_lr_scale too (1.0 keeps the base rate)")
        self.restart_lr_scale = restart_lr_scale
        self.reload_best = reload_best
        self.history: list[dict] = []
        self._survivors: set[tuple[int, int]] | None = None
        self._checks = 0

    def state_dict(self) -> dict:
        """Saved in checkpoints, so that a resumed run goes on with the same stability window and round history
        (the links already added travel with the DataModule's state). Tensors and plain Python values only: the
        checkpoint loads with ``torch.load(weights_only=True)``."""
        survivors = (None if self._survivors is None else
                     torch.tensor(sorted(self._survivors), dtype=torch.long).reshape(-1, 2))
        return {"history": [dict(record) for record in self.history], "survivors": survivors,
                "checks": int(self._checks)}

    def load_state_dict(self, state: dict) -> None:
        self.history = [dict(record) for record in state.get("history", [])]
        survivors = state.get("survivors")
        self._survivors = None if survivors is None else {tuple(pair) for pair in survivors.tolist()}
        self._checks = int(state.get("checks", 0))

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and trainer.reload_dataloaders_every_n_epochs != 1:
            raise ValueError("iterative training adds seed links during training: set "
                             "trainer.reload_dataloaders_every_n_epochs=1 (training.iterative=true does it).")

    def start(self, trainer) -> int:
        return self.start_epoch if self.start_epoch is not None else trainer.max_epochs // 2

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.restart_lr_scale is None:
            return
        # Decided at every epoch start (before the module's own hook re-sizes the schedule), not once at fit start:
        # a run resumed from a checkpoint learns its epoch only after on_fit_start.
        start = self.start(trainer)
        if trainer.current_epoch != start:
            pl_module.schedule_end_epoch = start if trainer.current_epoch < start else None
            return
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if self.reload_best else ""
        if best:
            state = torch.load(best, map_location=pl_module.device, weights_only=True)["state_dict"]
            pl_module.load_state_dict(state)
            log.info("iterative training, epoch %d: best checkpoint so far reloaded (%s)", trainer.current_epoch,
                     best)
        elif self.reload_best:
            log.warning("iterative training, epoch %d: no best checkpoint yet to reload; the current weights go on",
                        trainer.current_epoch)
        for optimizer in trainer.optimizers:
            optimizer.state.clear()
        pl_module.restart_schedule(self.restart_lr_scale)

    def unlabelled(self, datamodule) -> tuple[torch.Tensor, torch.Tensor]:
        """KG1 and KG2 ids in neither the current seed links nor the validation links."""
        used = set(datamodule.seed_links.flatten().tolist()) | set(datamodule.split.valid.flatten().tolist())
        kg1 = [e for e in datamodule.features.kg1_ids.tolist() if e not in used]
        kg2 = [e for e in datamodule.features.kg2_ids.tolist() if e not in used]
        return torch.tensor(kg1, dtype=torch.long), torch.tensor(kg2, dtype=torch.long)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        start = self.start(trainer)
        if epoch < start or (epoch + 1 - start) % self.every != 0:
            return
        window_end = epoch + (self.window - self._checks - 1) * self.every
        if trainer.max_epochs is not None and 0 <= trainer.max_epochs - 1 <= window_end:
            return  # this window's pairs would join after the last epoch: nothing would train on them
        datamodule = trainer.datamodule
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            embeddings = pl_module.aligner()
        pl_module.train(was_training)
        left, right = self.unlabelled(datamodule)
        proposed = mutual_nearest_neighbours(embeddings, left.to(embeddings.device), right.to(embeddings.device),
                                             self.chunk_size)
        self._survivors = proposed if self._survivors is None else self._survivors & proposed
        self._checks += 1
        if self._checks < self.window:
            return
        added = np.asarray(sorted(self._survivors), dtype=np.int64).reshape(-1, 2)
        self._survivors, self._checks = None, 0
        if len(added) == 0:
            return
        datamodule.add_seed_links(added)
        gold = {tuple(link) for link in datamodule.pair.gold_links.tolist()}  # logging only
        correct = int(sum(tuple(pair) in gold for pair in added.tolist()))
        record = {"epoch": int(epoch), "added": len(added), "correct": correct, "precision": correct / len(added),
                  "seed_links": len(datamodule.seed_links)}
        self.history.append(record)
        datamodule.expansion_history.append(record)
        pl_module.log_dict({f"iterative/{k}": float(v) for k, v in record.items() if k != "epoch"})
        log.info("iterative training, epoch %d: %d pairs added (precision %.3f), %d seed links", epoch,
                 len(added), record["precision"], record["seed_links"])
