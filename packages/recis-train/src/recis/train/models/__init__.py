"""Example models to copy and adapt: DIN (target attention), DeepFM/DLRM, a Transformer sequence
ranker, and logistic regression as the baseline. Each returns `{head: logits}`.
"""

from .base import MLP, RankingModel
from .deepfm import DeepFM
from .din import DIN, TargetAttention
from .logistic import LogisticRegression
from .transformer import CausalBlock, TransformerRanker

__all__ = [
    "DIN",
    "MLP",
    "CausalBlock",
    "DeepFM",
    "LogisticRegression",
    "RankingModel",
    "TargetAttention",
    "TransformerRanker",
]
