"""A diagnostic that ranks the *test* links at every validation check, to measure how much a test-selected epoch
(what some published code bases report) would add to a validation-selected one. It never chooses anything.

Why it exists: several public MMEA code bases evaluate the test links every few epochs and report the best check, so
their figures are a maximum over checks; this framework selects the tested checkpoint on validation links only. To
compare with such figures honestly, run once with ``callbacks=with_test_probe``: the run's ``metrics.json`` then
holds, under ``run.test_probe``, the test metrics of every check, the check a test-based selection would have picked
and its gap to the validation-selected checkpoint, all labelled as test-selected. The selected checkpoint, early
stopping and the reported ``test/*`` figures are those of the same run without the probe: the probe reads the model
in eval mode without gradients and draws no random numbers, and ``callbacks.test_probe`` is left out of the run
identity for that reason.
"""

from __future__ import annotations

import lightning as L
import torch

from mmea_lightning.eval.evaluator import evaluate_alignment

__all__ = ["TestProbe"]


class TestProbe(L.Callback):
    """Test metrics (one protocol) at every validation check, kept for ``metrics.json`` (``run.test_probe``) and
    logged as ``probe_test/*`` (``probe_test/hits@1`` ...). Saved in checkpoints, so a resumed run keeps its history.

    Args:
        protocol: an :data:`~mmea_lightning.eval.evaluator.PROTOCOLS` name (default ``standard``, the reported one).
        monitor: the probe metric a test-based selection maximises (default ``mrr``, as ``val/mrr`` selects).
    """

    __test__ = False  # not a pytest class

    def __init__(self, protocol: str = "standard", monitor: str = "mrr") -> None:
        self.protocol = protocol
        self.monitor = monitor
        self.checks: list[dict[str, float]] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        links = torch.as_tensor(trainer.datamodule.split.test, dtype=torch.long)
        with torch.no_grad():
            metrics = evaluate_alignment(pl_module.aligner(), links, pl_module.kg1_ids, pl_module.kg2_ids,
                                         prefix="probe", protocols=(self.protocol,), csls_k=pl_module.csls_k)
        values = {key.split("/", 1)[1]: float(v) for key, v in metrics.items() if not key.endswith("num_queries")}
        val = trainer.callback_metrics.get("val/mrr")
        self.checks.append({"epoch": int(trainer.current_epoch), **values,
                            "val_mrr": float(val) if val is not None else float("nan")})
        for key, value in values.items():
            pl_module.log(f"probe_test/{key}", value, on_epoch=True, prog_bar=False, logger=True)

    def state_dict(self) -> dict:
        return {"checks": [dict(c) for c in self.checks]}  # plain numbers: weights_only=True loads it

    def load_state_dict(self, state: dict) -> None:
        self.checks = [dict(c) for c in state.get("checks", [])]

    def summary(self, validation_selected: bool) -> dict:
        """The probe's record for ``metrics.json`` (call it before testing: testing from a checkpoint restores the
        callbacks' state of that checkpoint's epoch). ``validation_selected``: ``test/*`` comes from the best
        validation check (``test_checkpoint=best``), the first check with the highest ``val/mrr`` as
        ``ModelCheckpoint`` keeps it; the record then gives the gain a test-based selection would show."""
        if not self.checks:
            return {"protocol": self.protocol, "checks": []}
        best = max(self.checks, key=lambda c: (c[self.monitor], -c["epoch"]))
        tested = max(self.checks, key=lambda c: (c["val_mrr"], -c["epoch"])) if validation_selected else None
        out = {
            "protocol": self.protocol,
            "note": "test links ranked at every validation check; diagnostic only, never used for selection",
            "checks": self.checks,
            "test_selected": {"by": self.monitor, **best},
        }
        if tested is not None:
            out["validation_selected"] = tested
            out["test_selection_gain"] = {k: best[k] - tested[k] for k in best if k not in ("epoch", "val_mrr")}
        return out
