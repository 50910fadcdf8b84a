"""Lookback Lens (Chuang et al. 2024, "Lookback Lens: Detecting and Mitigating Contextual Hallucinations in Large
Language Models Using Only Attention Maps"; official code voidism/Lookback-Lens).

`step01_extract_attns.py`: with greedy decoding, at each generated token t and for each head, take the attention row
of the query that predicts t (the first step's row is the prefill's last row) and compute
    a = mean A[row, :C]     (C = context length: the prompt minus the answer header)
    b = mean A[row, C:]     (the answer header plus the tokens generated so far)
    lookback_ratio = a / (a + b).
At the first step no token has been generated yet: b is the mean over the answer header alone (the official code
does the same, since its C is the prompt length minus the header's tokens); a prompt without a header would give
b = mean of nothing = NaN, so we require a header of at least one token.

`step03_lookback_lens.py`: features and the logistic-regression detector, see `lookback_detector.py`.

Only each step's single attention row per head is handed over by the engine ([1, head, 1, keys so far]) and it is
reduced to two means right away: O(T) per step and layer, never a full pattern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from headscope.analyzers.metrics import MetricDoc
from headscope.analyzers.base import DrivingAnalyzer, HeadValue, ScanContext, head_rows
from headscope.analyzers.lookback_detector import LookbackDetector, span_features, two_fold_evaluation
from headscope.engine import Backend, DecodeResult, LayerActivations, ModelSpec, Needs
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite
from headscope.probes.grounded_qa import GroundedItem, build_prompt, contains_gold, load_grounded_items
from headscope.probes.request_prompts import answer_stop_ids


def lookback_ratio(row: torch.Tensor, context_len: int) -> torch.Tensor:
    """[head, key] attention row -> [head] lookback ratio a / (a + b) (official `step01_extract_attns.py`)."""
    on_context = row[:, :context_len].mean(-1)  # a
    on_new = row[:, context_len:].mean(-1)  # b: answer header + generated tokens
    return on_context / (on_context + on_new)


class LookbackCollector:
    """`on_layer` callback of `Backend.decode`: fills ratios [layer, head, step] from each step's attention row."""

    def __init__(self, n_layers: int, n_heads: int, context_len: int, max_steps: int) -> None:
        self.context_len = context_len
        self.ratios = torch.full((n_layers, n_heads, max_steps), float("nan"), dtype=torch.float64)

    def __call__(self, acts: LayerActivations) -> None:
        pattern = acts.pattern  # [1, head, query (1 in decoding), keys so far]
        if pattern is None or acts.step is None:
            raise HeadscopeError("lookback needs decoding steps with attention patterns from the engine")
        self.ratios[acts.layer, :, acts.step] = lookback_ratio(pattern[0, :, -1, :], self.context_len).double()


def lookback_ratios(
    backend: Any,
    prompt_ids: Sequence[int],
    context_len: int,
    *,
    max_new_tokens: int,
    stop_token_ids: Sequence[int] = (),
    forced_tokens: Sequence[int] | None = None,
) -> tuple[np.ndarray, DecodeResult]:
    """Greedy-decode one prompt; return its lookback ratios [layer, head, generated token] and the decode result."""
    if not 0 < context_len < len(prompt_ids):
        raise HeadscopeError(
            f"context length {context_len} must be between 1 and the prompt length {len(prompt_ids)} minus 1: "
            "the prompt needs an answer header after the context"
        )
    spec = backend.spec
    collector = LookbackCollector(spec.n_layers, spec.n_heads, context_len, max_new_tokens)
    result = backend.decode(
        list(prompt_ids), max_new_tokens=max_new_tokens, needs=Needs(pattern=True), on_layer=collector,
        stop_token_ids=stop_token_ids, forced_tokens=forced_tokens,
    )
    return collector.ratios[:, :, : len(result.generated_ids)].numpy(), result


@dataclass(frozen=True)
class LookbackParams:
    suite: str = "grounded_qa"  # shipped suite, a folder with data.jsonl, or hub:<squad-like dataset>[:split]
    n_samples: int = 0  # 0: every item of the suite
    max_new_tokens: int = 32  # official 256; docs/analyzers/lookback.md measures the difference
    chat_template: bool = True  # wrap prompts in the tokenizer's chat template when it has one
    span: str = "predefined"  # "predefined" (whole answer) or "sliding_window"
    window: int = 8
    split_by: str = "span"  # "span": the official split; "item": keep an answer's windows on one side
    seed: int = 42  # train_test_split random_state, as the official code
    n_bootstrap: int = 1000
    detector_out: str = ""  # write the detector trained on all spans here (JSON)

    def __post_init__(self) -> None:  # fail before the model is loaded
        if self.span not in ("predefined", "sliding_window"):
            raise HeadscopeError(f"unknown lookback span '{self.span}': use 'predefined' or 'sliding_window'")
        if self.split_by not in ("span", "item"):
            raise HeadscopeError(f"unknown lookback split_by '{self.split_by}': use 'span' (official) or 'item'")
        if self.max_new_tokens < 1 or self.window < 1:
            raise HeadscopeError("lookback.max_new_tokens and lookback.window must be at least 1")


@dataclass
class GeneratedAnswer:
    """One item's generation, its label and its ratios [layer, head, token]."""

    item: GroundedItem
    answer: str
    generated_ids: list[int]
    faithful: bool
    ratios: np.ndarray


class LookbackLensAnalyzer(DrivingAnalyzer):
    """Decodes each grounded item greedily, records lookback ratios per head and trains the Lookback Lens detector."""

    name = "lookback"
    Params = LookbackParams
    metrics = (
        "lookback_ratio", "lookback_ratio_faithful", "lookback_ratio_hallucinated", "lookback_weight",
        "auroc", "auroc_ci_low", "auroc_ci_high", "train_auroc", "baseline_auroc",
        "n_items", "n_faithful", "n_hallucinated", "n_spans",
    )
    description = "per-head lookback ratio (context vs generated attention) and a hallucination detector's weights"
    metric_docs = {
        "lookback_ratio": MetricDoc("attention on the context over context + generated tokens while decoding"),
        "lookback_ratio_faithful": MetricDoc("lookback_ratio on faithful answers", "neither"),
        "lookback_ratio_hallucinated": MetricDoc("lookback_ratio on hallucinated answers", "neither"),
        "lookback_weight": MetricDoc("the hallucination detector's weight on this head (sign = direction)", "neither"),
        "auroc": MetricDoc("held-out AUROC of the lookback-lens detector"),
    }

    def build_suite(self, ctx: ScanContext) -> TokenSuite:
        p = self.params
        items, digest = load_grounded_items(p.suite, n_samples=p.n_samples)
        sequences, samples = [], []
        for item in items:
            ids, context_len = build_prompt(ctx.tokenizer, item, chat_template=p.chat_template)
            if len(ids) + p.max_new_tokens > ctx.spec.n_ctx:
                raise HeadscopeError(f"item {item.id} needs {len(ids) + p.max_new_tokens} tokens, more than the model's "
                                     f"{ctx.spec.n_ctx}: lower lookback.max_new_tokens or shorten the document")
            sequences.append(ids)
            samples.append({"item": item, "context_len": context_len})
        return TokenSuite(p.suite.split("/")[-1] or "grounded_qa", sequences, samples,
                          {"source": p.suite, "file_hash": digest, "chat_template": p.chat_template})

    def reset(self, spec: ModelSpec) -> None:
        """Empty accumulators (`run` starts with this)."""
        self._spec = spec
        self.answers: list[GeneratedAnswer] = []
        self.detector: LookbackDetector | None = None
        self.evaluation = None

    def run(self, backend: Backend, suite: TokenSuite, ctx: ScanContext) -> None:
        self.reset(backend.spec)
        stops = answer_stop_ids(ctx.tokenizer)
        pairs = list(zip(suite.sequences, suite.samples))
        if ctx.progress:
            from rich.progress import track

            pairs = track(pairs, description="lookback: decoding", transient=True)
        for ids, sample in pairs:
            ratios, result = lookback_ratios(backend, ids, sample["context_len"],
                                             max_new_tokens=self.params.max_new_tokens, stop_token_ids=stops)
            answer = ctx.tokenizer.decode(result.generated_ids, skip_special_tokens=True)
            item = sample["item"]
            self.answers.append(GeneratedAnswer(item, answer, result.generated_ids, contains_gold(answer, item.answers), ratios))
        self._fit()

    def _fit(self) -> None:
        p = self.params
        labels = [int(a.faithful) for a in self.answers]
        features, span_labels, owners = span_features([a.ratios for a in self.answers], labels, span=p.span, window=p.window)
        self._features, self._span_labels = features, span_labels
        if len(set(span_labels.tolist())) < 2:
            return  # one class only: no detector, AUROC rows are NaN
        self.evaluation = two_fold_evaluation(features, span_labels, seed=p.seed, owners=owners, split_by=p.split_by,
                                              n_bootstrap=p.n_bootstrap)
        self.detector = LookbackDetector.fit(
            features, span_labels, n_layers=self._spec.n_layers, n_heads=self._spec.n_heads, span=p.span, window=p.window,
            metadata={"suite": p.suite, "n_spans": int(len(span_labels)), "auroc": self.evaluation.auroc,
                      "auroc_ci": [self.evaluation.ci_low, self.evaluation.ci_high], "split_by": p.split_by,
                      "max_new_tokens": p.max_new_tokens, "chat_template": p.chat_template},
        )
        if p.detector_out:
            self.detector.save(p.detector_out)

    def results(self) -> list[HeadValue]:
        n_layers, n_heads = self._spec.n_layers, self._spec.n_heads
        per_item = np.stack([a.ratios.mean(-1) for a in self.answers]) if self.answers else np.zeros((0, n_layers, n_heads))
        faithful = np.array([a.faithful for a in self.answers], dtype=bool)
        n_items, n_good = len(self.answers), int(faithful.sum())

        def mean_over(mask: np.ndarray) -> np.ndarray:
            return per_item[mask].mean(0) if mask.any() else np.full((n_layers, n_heads), np.nan)

        head_metrics = {
            "lookback_ratio": (mean_over(np.ones(n_items, dtype=bool)), n_items),
            "lookback_ratio_faithful": (mean_over(faithful), n_good),
            "lookback_ratio_hallucinated": (mean_over(~faithful), n_items - n_good),
        }
        n_spans = len(getattr(self, "_span_labels", []))
        if self.detector is not None:
            head_metrics["lookback_weight"] = (self.detector.head_weights, n_spans)
        rows = head_rows(head_metrics)
        ev = self.evaluation
        nan = float("nan")
        model_level = {
            "auroc": ev.auroc if ev else nan,
            "auroc_ci_low": ev.ci_low if ev else nan,
            "auroc_ci_high": ev.ci_high if ev else nan,
            "train_auroc": ev.train_auroc if ev else nan,
            "baseline_auroc": ev.baseline_auroc if ev else nan,
            "n_items": float(n_items),
            "n_faithful": float(n_good),
            "n_hallucinated": float(n_items - n_good),
            "n_spans": float(n_spans),
        }
        rows += [HeadValue(-1, -1, metric, float(value), n_spans if metric.endswith(("auroc", "_low", "_high")) else n_items)
                 for metric, value in model_level.items()]
        return rows

    def side_output(self) -> dict[str, Any] | None:
        """Per-item answers and labels, and the detector (the same JSON `detector.save` writes; null with one label)."""
        import json

        from headscope.side_outputs import finite

        detector = json.loads(self.detector.to_json()) if self.detector is not None else None
        return finite({"generations": self.generations(), "detector": detector})

    def generations(self) -> list[dict[str, Any]]:
        """What the model answered on each item and the label the rule gave it (for notebooks and reports)."""
        return [{"id": a.item.id, "task": a.item.task, "answer": a.answer, "gold": list(a.item.answers),
                 "faithful": a.faithful, "n_tokens": len(a.generated_ids),
                 "mean_ratio": float(a.ratios.mean()) if a.ratios.size else math.nan} for a in self.answers]
