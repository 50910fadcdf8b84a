"""Circuits: interventions on named heads through the engine, and the measurements that test atlas claims."""

from headscope.circuits.masking import head_mask_interventions, mask_heads
from headscope.circuits.retrieval_masking import MaskingResult, needle_accuracy, retrieval_masking_check

__all__ = ["MaskingResult", "head_mask_interventions", "mask_heads", "needle_accuracy", "retrieval_masking_check"]
