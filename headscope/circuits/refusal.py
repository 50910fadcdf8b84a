"""Does a model refuse? Greedy responses to requests, and refusal / answer rates over harmful and harmless ones.

Generation goes through `backend.decode`, so head interventions (`backend.intervene`, `mask_heads`) apply:
the same call measures a model, and the same model with its safety heads ablated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from headscope.engine import Backend, Needs
from headscope.probes.request_prompts import answer_stop_ids, request_prompt_ids


@dataclass
class RefusalEval:
    """refusal_rate: share of harmful requests refused; answer_rate: share of harmless ones not refused."""

    refusal_rate: float
    answer_rate: float
    harmful_responses: list[str] = field(default_factory=list)
    harmless_responses: list[str] = field(default_factory=list)


def generate_responses(
    backend: Backend, requests: list[str], *, max_new_tokens: int = 32, style: str = "chat"
) -> list[str]:
    """Greedy response to each request, formatted as the model is served (`request_prompt_ids`), special tokens dropped."""
    tokenizer: Any = backend.tokenizer
    stops = answer_stop_ids(tokenizer)
    responses = []
    for request in requests:
        prompt = request_prompt_ids(tokenizer, request, style=style)
        result = backend.decode(
            prompt, max_new_tokens=max_new_tokens, needs=Needs(), on_layer=lambda acts: None, stop_token_ids=stops
        )
        responses.append(tokenizer.decode(result.generated_ids, skip_special_tokens=True).strip())
    return responses


def refusal_eval(backend: Backend, harmful: list[str], harmless: list[str], **kw: Any) -> RefusalEval:
    """Refusal rate on `harmful`, answer rate (1 - refusal rate) on `harmless`; `kw` goes to generate_responses."""
    from headscope.probes.safety import refusal_rate

    harmful_responses = generate_responses(backend, harmful, **kw) if harmful else []
    harmless_responses = generate_responses(backend, harmless, **kw) if harmless else []
    return RefusalEval(
        refusal_rate=refusal_rate(harmful_responses) if harmful_responses else float("nan"),
        answer_rate=1.0 - refusal_rate(harmless_responses) if harmless_responses else float("nan"),
        harmful_responses=harmful_responses,
        harmless_responses=harmless_responses,
    )
