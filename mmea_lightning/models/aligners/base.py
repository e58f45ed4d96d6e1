"""The aligner contract: what every aligner -- EVA, MCLEA, MEAformer, MPSEA, or one of your own -- provides.

An aligner is an ``nn.Module`` built from the pair's :class:`~mmea_lightning.data.features.FeatureSet` (Hydra calls
``aligner(features=...)`` through the ``_partial_`` ``model.module.aligner`` config); the
:class:`~mmea_lightning.lightning.aligner_module.AlignerModule` trains it on batches of seed links and evaluates the
embeddings it returns. See ``docs/extending.md`` for a complete example with its config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

__all__ = ["REQUIRED_DESCRIPTION_KEYS", "Aligner", "check_aligner"]

#: keys every :meth:`Aligner.describe` returns (``metrics.json``, the printed summary and ``report`` read them)
REQUIRED_DESCRIPTION_KEYS = ("modalities_used", "modalities_dropped")


class Aligner(nn.Module, ABC):
    """Base class of every aligner.

    Shapes: ``N = features.num_entities`` (the entities of both graphs, global ids ``0..N-1``: KG1 ids are
    ``features.kg1_ids``, KG2 ids ``features.kg2_ids``), ``D`` the aligner's embedding width, ``B`` the links of a
    training batch.

    A subclass's constructor takes the pair's ``features: FeatureSet`` as its first argument (further arguments are
    its hyperparameters, set in ``conf/model/<name>.yaml``), calls ``super().__init__()`` and implements:

    * :meth:`forward` -- ``() -> (N, D)`` float embeddings of every entity, row ``i`` = entity ``i``;
    * :meth:`training_loss` -- ``links (B, 2)`` -> the scalar loss to minimise and its named parts;
    * :meth:`describe` -- what the model used, recorded in ``metrics.json``.

    The trainer moves the module to its device; ``links`` arrive on that device.
    """

    @abstractmethod
    def forward(self) -> Tensor:
        """``(N, D)`` embeddings of every entity (row ``i`` = global id ``i``), used for evaluation, prediction and
        iterative seed expansion. Entities are compared by cosine similarity (the evaluator L2-normalises the rows)."""

    @abstractmethod
    def training_loss(self, links: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of a batch of seed links.

        Args:
            links: ``(B, 2)`` long, rows ``kg1_id, kg2_id`` (global ids) of aligned entities.

        Returns:
            ``(loss, parts)``: ``loss`` a scalar (``()``) tensor with gradients; ``parts`` maps a name to a scalar
            tensor, logged as ``train/loss_<name>`` (e.g. one term per modality; may be empty).
        """

    @abstractmethod
    def describe(self) -> dict:
        """What the model used, for the results: ``modalities_used`` (list of str) and ``modalities_dropped`` (list
        of str: asked for but absent from the data) at least; the built-in aligners add e.g. ``modality_weights`` or
        ``mean_modality_weights`` (modality -> float) and their components. JSON-serialisable values only."""


def check_aligner(aligner: object) -> Aligner:
    """``aligner`` if it is an :class:`Aligner`, else a ``TypeError`` naming its class and what it lacks."""
    if isinstance(aligner, Aligner):
        return aligner
    kind = type(aligner).__qualname__
    missing = [name for name in ("forward", "training_loss", "describe") if not callable(getattr(aligner, name, None))]
    lacks = (f"it lacks {', '.join(name + '()' for name in missing)}" if missing
             else "it has the methods but does not subclass Aligner")
    raise TypeError(f"{kind} is not an Aligner ({lacks}): subclass mmea_lightning.models.aligners.base.Aligner and "
                    "implement forward() -> (N, D) embeddings, training_loss(links (B, 2)) -> (loss, parts) and "
                    "describe() -> dict; see docs/extending.md")
