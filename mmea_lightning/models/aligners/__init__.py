"""Aligners: :class:`~mmea_lightning.models.aligners.base.Aligner` subclasses mapping a FeatureSet to entity
embeddings and a seed-link loss (EVA, MCLEA, MEAformer, MPSEA; your own: docs/extending.md)."""
