"""Retrieval heads (Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context Factuality").

Official code: nightdessert/Retrieval_Head `retrieval_head_detection.py`. For each needle-in-a-haystack prompt
the model prefills the prompt minus its last token, then decodes greedily from the last prompt token (at most
50 steps, stopping at a newline). At every step each head's attention row is reduced to its argmax key; a head
copy-pastes the emitted token when that key lies in the answer span and holds the same token id, earning
1 / span length per copy. A sample counts when the response's ROUGE-1 recall against the answer is > 0.5;
a head's retrieval score is its mean over counted samples, and a retrieval head scores > 0.1.

This analyzer drives decoding itself (`run`), keeping only [step, layer, head] argmax indices: memory is the
KV cache plus one chunk of prefill scores, never a [layer, head, query, key] tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from headscope.analyzers.metrics import MetricDoc
from headscope.analyzers.base import DrivingAnalyzer, HeadValue, ScanContext, head_rows
from headscope.analyzers.retrieval_scoring import copy_paste_scores
from headscope.engine import Backend, LayerActivations, ModelSpec, Needs
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite
from headscope.probes.needle_haystack import SUITE, depth_grid, needle_haystack_suite, rouge1_recall
from headscope.probes.request_prompts import answer_stop_ids


@dataclass(frozen=True)
class RetrievalParams:
    context_lengths: tuple[int, ...] = (1000,)
    n_depths: int = 10  # depths round(linspace(0, 100, n_depths)) percent, as the official grid
    needles_per_cell: int = 1
    n_samples: int = 0  # 0: the whole grid; else the first n prompts
    seed: int = 0
    max_new_tokens: int = 50
    buffer: int = 200  # tokens left for question and answer (official final_context_length_buffer)
    chat_template: bool = True  # wrap in the tokenizer's chat template when it has one (official for chat models)
    rouge_threshold: float = 0.5  # keep a sample when ROUGE-1 recall > this
    threshold: float = 0.1  # is_retrieval: mean score > this
    stop_at_eos: bool = True  # also stop at EOS / end-of-turn (official stops only at a newline)
    teacher_forcing: bool = False  # DEVIATION from the paper: feed the answer tokens instead of greedy choices
    prefill_chunk: int = 512
    source: str = SUITE  # shipped suite name, local folder, or hf:owner/name[:split]
    mask_top_k: int = 0  # > 0: run the causal masking check with k heads after scoring
    mask_random_sets: int = 3
    mask_mode: str = "uniform"  # "uniform" (official: zero the query) or "zero" (zero the head output)


class RetrievalAnalyzer(DrivingAnalyzer):
    name = "retrieval"
    Params = RetrievalParams
    metrics = (
        "retrieval_score", "retrieval_score_std", "is_retrieval",
        # model-level rows
        "kept_samples", "total_samples", "rouge1_recall_mean", "n_retrieval_heads", "chat_template", "teacher_forced",
        "kept_samples_ctx{length}", "needle_recall_unmasked", "needle_accuracy_unmasked",
        "needle_recall_mask_top{k}", "needle_accuracy_mask_top{k}", "needle_recall_mask_random{k}",
        "needle_accuracy_mask_random{k}",
    )
    description = "copy-paste share of needle tokens while decoding a needle-in-a-haystack answer (Wu et al. 2024)"
    metric_docs = {
        "retrieval_score": MetricDoc("share of needle tokens the head copies while the answer is decoded (Wu et al.)"),
        "retrieval_score_std": MetricDoc("spread of retrieval_score over kept samples", "neither"),
        "is_retrieval": MetricDoc("1 = retrieval head: retrieval_score above the threshold (0.1)", "flag"),
    }

    # --- suite ------------------------------------------------------------------------------
    def build_suite(self, ctx: ScanContext) -> TokenSuite:
        p = self.params
        if p.n_depths < 1 or p.max_new_tokens < 1:
            raise HeadscopeError("retrieval needs n_depths >= 1 and max_new_tokens >= 1")
        if p.mask_mode not in ("uniform", "zero"):
            raise HeadscopeError(f"unknown mask_mode '{p.mask_mode}': use 'uniform' or 'zero'")
        too_long = [n for n in p.context_lengths if n + p.max_new_tokens > ctx.spec.n_ctx]
        if too_long:
            raise HeadscopeError(f"context lengths {too_long} exceed the model's context of {ctx.spec.n_ctx}: use shorter --context-lengths")
        suite = self._suite(ctx, p.seed)
        bad = [s for s in suite.samples if s["needle_start"] < 0]
        if bad:
            raise HeadscopeError(f"the answer of needle '{bad[0]['needle_id']}' was not found in its prompt: check the needle's real_needle")
        return suite

    def _suite(self, ctx: ScanContext, seed: int) -> TokenSuite:
        p = self.params
        suite = needle_haystack_suite(
            ctx.tokenizer, context_lengths=p.context_lengths, depths=depth_grid(p.n_depths),
            needles_per_cell=p.needles_per_cell, seed=seed, buffer=p.buffer, chat_template=p.chat_template,
            source=p.source,
        )
        if p.n_samples:
            suite = TokenSuite(suite.name, suite.sequences[: p.n_samples], suite.samples[: p.n_samples], suite.details)
        return suite

    # --- accumulation ---------------------------------------------------------------------------
    @property
    def edits(self) -> frozenset[str]:
        from headscope.circuits.ablation import HeadAblation

        return frozenset({HeadAblation(self.params.mask_mode).tensor}) if self.params.mask_top_k > 0 else frozenset()

    def reset(self, spec: ModelSpec) -> None:
        """Empty accumulators (`run` starts with this; tests scoring suites by hand call it themselves)."""
        self._spec = spec
        self._kept: list[torch.Tensor] = []  # [layer, head] per kept sample
        self.sample_log: list[dict[str, Any]] = []
        self.masking = None

    def run(self, backend: Backend, suite: TokenSuite, ctx: ScanContext) -> None:
        """Decode every prompt, score copy-paste heads, then (optionally) run the masking check."""
        p = self.params
        self.reset(backend.spec)
        self.score_suite(backend, suite, progress=ctx.progress)
        if p.mask_top_k > 0:
            from headscope.circuits import retrieval_masking_check

            check_suite = self._suite(ctx, p.seed + 1)  # held-out needle placement
            self.masking = retrieval_masking_check(
                backend, check_suite, self.mean_scores(), p.mask_top_k, random_sets=p.mask_random_sets,
                seed=p.seed, mode=p.mask_mode, max_new_tokens=p.max_new_tokens,
                stop_token_ids=answer_stop_ids(ctx.tokenizer, end_of_turn=p.stop_at_eos, newline=True), prefill_chunk=p.prefill_chunk,
                pass_threshold=p.rouge_threshold,
            )

    def score_suite(self, backend: Backend, suite: TokenSuite, *, progress: bool = False) -> None:
        """Decode each prompt of `suite` (samples carry needle_start, needle_end, real_needle) and accumulate."""
        p = self.params
        tokenizer = backend.tokenizer
        stops = answer_stop_ids(tokenizer, end_of_turn=p.stop_at_eos, newline=True)
        spec = backend.spec
        for prompt, sample in tqdm(list(zip(suite.sequences, suite.samples)), desc="retrieval", disable=not progress, unit="prompt"):
            argmax_keys = torch.full((p.max_new_tokens, spec.n_layers, spec.n_heads), -1, dtype=torch.long)

            def on_layer(acts: LayerActivations, out: torch.Tensor = argmax_keys) -> None:
                out[acts.step, acts.layer] = acts.pattern[0, :, -1].argmax(-1).cpu()  # [head]; ties -> first key

            start, end = sample["needle_start"], sample["needle_end"]
            forced = list(prompt[start:end]) if p.teacher_forcing else None
            result = backend.decode(prompt, max_new_tokens=p.max_new_tokens, needs=Needs(pattern=True),
                                    on_layer=on_layer, stop_token_ids=stops, forced_tokens=forced,
                                    prefill_chunk=p.prefill_chunk)
            generated = result.generated_ids
            response = tokenizer.decode(generated, skip_special_tokens=True).strip()
            recall = rouge1_recall(sample["real_needle"], response)
            scores = copy_paste_scores(argmax_keys[: len(generated)], generated, prompt, start, end)
            kept = recall > p.rouge_threshold
            if kept:
                self._kept.append(scores)
            self.sample_log.append({**sample, "response": response, "rouge1_recall": recall, "kept": kept,
                                    "generated_ids": list(generated), "prompt_tokens": len(prompt),
                                    "scores": scores, "argmax_keys": argmax_keys[: len(generated)]})

    def side_output(self) -> dict[str, Any] | None:
        """Per-sample log (needle, depth, answer, ROUGE-1 recall, kept) without the tensors, the mean scores and
        the masking check's results when it ran."""
        from headscope.side_outputs import finite

        log = [{k: v for k, v in s.items() if k not in ("scores", "argmax_keys")} for s in self.sample_log]
        out: dict[str, Any] = {"samples": log, "mean_scores": self.mean_scores().tolist()}
        if self.masking is not None:  # the causal check (mask_top_k > 0): (mean recall, accuracy) per condition
            m = self.masking
            out["masking"] = {"k": m.k, "top_heads": [list(h) for h in m.top_heads], "unmasked": list(m.unmasked),
                              "top": list(m.top), "random": [list(r) for r in m.random]}
        return finite(out)

    def mean_scores(self) -> torch.Tensor:
        """[layer, head] mean retrieval score over kept samples (NaN when none was kept)."""
        if not self._kept:
            return torch.full((self._spec.n_layers, self._spec.n_heads), math.nan, dtype=torch.float64)
        return torch.stack(self._kept).mean(0)

    def results(self) -> list[HeadValue]:
        p = self.params
        n_kept = len(self._kept)
        mean = self.mean_scores()
        if n_kept > 1:
            std = torch.stack(self._kept).std(0)
        else:
            std = torch.zeros_like(mean) if n_kept == 1 else torch.full_like(mean, math.nan)
        rows = head_rows({"retrieval_score": (mean, n_kept), "retrieval_score_std": (std, n_kept),
                          "is_retrieval": ((mean > p.threshold).double(), n_kept)})
        total = len(self.sample_log)
        recalls = [s["rouge1_recall"] for s in self.sample_log]
        model = {
            "kept_samples": n_kept,
            "total_samples": total,
            "rouge1_recall_mean": sum(recalls) / max(total, 1),
            "n_retrieval_heads": int((mean > p.threshold).sum()),
            "chat_template": float(any(s.get("chat_template", False) for s in self.sample_log)),
            "teacher_forced": float(p.teacher_forcing),
        }
        for length in p.context_lengths:
            cell = [s for s in self.sample_log if s.get("context_length") == length]
            model[f"kept_samples_ctx{length}"] = sum(s["kept"] for s in cell)
        if self.masking is not None:
            m = self.masking
            k = m.k
            model["needle_recall_unmasked"], model["needle_accuracy_unmasked"] = m.unmasked
            model[f"needle_recall_mask_top{k}"], model[f"needle_accuracy_mask_top{k}"] = m.top
            model[f"needle_recall_mask_random{k}"], model[f"needle_accuracy_mask_random{k}"] = m.random_mean
        rows += [HeadValue(-1, -1, name, float(value), total) for name, value in model.items()]
        return rows
