"""Entity-alignment evaluation: tie-aware chunked ranking (cosine / CSLS), every protocol from shared similarity
blocks, and the protocol runner."""

from .evaluator import PROTOCOLS, evaluate_alignment
from .ranking import RankResult, rank_metrics, rank_targets
from .shared_ranking import protocol_ranks

__all__ = ["PROTOCOLS", "RankResult", "evaluate_alignment", "protocol_ranks", "rank_metrics", "rank_targets"]
