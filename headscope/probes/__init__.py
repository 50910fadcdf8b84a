"""Probe suites: generated token probes and data suites shipped in `probes/`."""

from headscope.probes.files import available_suites, load_suite_records, probes_root
from headscope.probes.repeated_tokens import repeated_random_tokens
from headscope.probes.safety import REFUSAL_MARKERS, SafetyRequest, is_refusal, load_safety_requests, refusal_rate
from headscope.probes.suite import TokenSuite

__all__ = [
    "REFUSAL_MARKERS",
    "SafetyRequest",
    "TokenSuite",
    "available_suites",
    "is_refusal",
    "load_safety_requests",
    "load_suite_records",
    "probes_root",
    "refusal_rate",
    "repeated_random_tokens",
]
