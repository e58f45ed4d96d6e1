"""Seed links the aligners train on: gold seeds from the split (``seeds=gold``), or pseudo seeds built from the
features alone -- visual/name pivots (``seeds=pivot``) and PSQE's three stages (``seeds=psqe``)."""
