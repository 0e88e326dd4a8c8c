"""Example models to copy and adapt: DIN (target attention), SIM (search a very long history,
then attend), DeepFM/DLRM, DCN-v2, Wide & Deep, MMoE (several objectives), a Transformer sequence
ranker, and logistic regression as the baseline. Each returns `{head: logits}`.
"""

from .base import MLP, RankingModel
from .dcn import CrossLayer, DCNv2
from .deepfm import DeepFM
from .din import DIN, TargetAttention
from .logistic import LogisticRegression
from .mmoe import MMoE
from .sim import SIM
from .transformer import CausalBlock, TransformerRanker
from .wide_deep import WideDeep

__all__ = [
    "DIN",
    "MLP",
    "SIM",
    "CausalBlock",
    "CrossLayer",
    "DCNv2",
    "DeepFM",
    "LogisticRegression",
    "MMoE",
    "RankingModel",
    "TargetAttention",
    "TransformerRanker",
    "WideDeep",
]
