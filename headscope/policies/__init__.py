"""Head-wise KV-cache policies from the atlas: rank KV heads, cut a budget, export (JSON and DuoAttention's
format), and check on needle retrieval that the policy keeps working (docs/policies.md)."""

from headscope.policies.evaluate import PolicyEvaluation, evaluate_policy, kv_cache_bytes
from headscope.policies.policy import KVPolicy, policy_from_ranking, read_policy
from headscope.policies.rank import Ranking, rank_kv_heads

__all__ = ["KVPolicy", "PolicyEvaluation", "Ranking", "evaluate_policy", "kv_cache_bytes", "policy_from_ranking",
           "rank_kv_heads", "read_policy"]
