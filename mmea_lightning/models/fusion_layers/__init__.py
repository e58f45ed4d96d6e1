"""Layers MPSEA's fusion is built from: graph-structure transformer, pre-synergistic fusion (MMPF), the
OutlookerAttention feed-forward of the visual modality, cross-modal weights."""
