"""Entity-alignment evaluation: tie-aware chunked ranking (cosine / CSLS) and protocol runner."""

from .evaluator import PROTOCOLS, evaluate_alignment
from .ranking import RankResult, rank_metrics, rank_targets

__all__ = ["PROTOCOLS", "RankResult", "evaluate_alignment", "rank_metrics", "rank_targets"]
