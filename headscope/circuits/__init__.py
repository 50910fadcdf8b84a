"""Circuits: interventions on named heads through the engine, and the measurements that test atlas claims."""

from headscope.circuits.masking import mask_heads
from headscope.circuits.retrieval_masking import MaskingResult, needle_accuracy, retrieval_masking_check

__all__ = ["MaskingResult", "mask_heads", "needle_accuracy", "retrieval_masking_check"]
