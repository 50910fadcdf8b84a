"""Probe suites: generated token probes and data suites shipped in `probes/`."""

from headscope.probes.files import available_suites, load_suite_records, probes_root
from headscope.probes.repeated_tokens import repeated_random_tokens
from headscope.probes.suite import TokenSuite

__all__ = ["TokenSuite", "available_suites", "load_suite_records", "probes_root", "repeated_random_tokens"]
