"""Successor heads: heads whose OV circuit maps an ordinal token to its successor, read from the weights.

Gould et al. 2024, "Successor Heads: Recurring, Interpretable Attention Heads In The Wild" (ICLR). The paper's
authors released no code; this matches the public re-implementation curt-tigges/circuits-over-time,
`test_successor_head.py`:

* tasks: numbers 1-200, number words one-twenty, ordinals first-tenth, days (Monday ... Sunday, Monday),
  months (January ... December, January), Mon-Sun, Jan-Dec, A-Z; every word with a leading space;
* each head's vocabulary map restricted to the task's tokens, M = X · W_V W_O · W_U (no biases, no final norm,
  `fold_ln=False` there), X the effective embedding of the source tokens;
* a pair (n, n+1) succeeds when M[n, n+1] is the largest entry of row n over the task's tokens (ties count, as
  the official `==` comparison does); the succession score is the share of successes over all pairs of all tasks
  pooled (not a mean of task means), and a head is a successor head when the score is > 0.4.

Departures: the official script raises on a multi-token word; here a word that is not one token is dropped from
its task (with the pairs it is part of) and the kept counts are written as model-level rows; a task whose bare words
(no leading space) keep more single-token pairs is scored on those (`space_fallback`; SmolLM2's " 7" is two tokens). The effective
embedding is a parameter and recorded in the side output: "first_mlp" (default) is MAPS' MLP_0(ln2_0(W_E)); the
re-implementation applies TransformerLens' `blocks[0].mlp` to raw W_E (no norm), which on RMS-normed models feeds
the MLP inputs far off its training scale. "first_mlp_residual" is W_E + MLP_0(ln2_0(W_E)) (the copy-suppression
W_EE) and "raw" is W_E. Under GQA each query head uses the W_V of its KV group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from headscope.analyzers.base import DrivingAnalyzer, HeadValue, ScanContext, chosen_layers, head_rows
from headscope.analyzers.metrics import MetricDoc
from headscope.engine import Backend, ModelSpec, ModelWeights
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite, load_suite_records

EFFECTIVE_EMBEDDINGS = ("first_mlp", "first_mlp_residual", "raw")


@dataclass(frozen=True)
class SuccessorParams:
    suite: str = "successor_sequences"  # shipped suite, or a folder with data.jsonl (task, sequence)
    tasks: tuple[str, ...] = ()  # empty: every task of the suite
    layers: tuple[int, ...] = ()  # empty: every layer
    effective_embedding: str = "first_mlp"  # first_mlp | first_mlp_residual | raw
    add_leading_space: bool = True
    space_fallback: bool = True  # a task keeps more pairs without the space (SmolLM2's " 1" is two tokens): use the bare words
    threshold: float = 0.4  # successor head: score > threshold (circuits-over-time)


def effective_embedding(weights: ModelWeights, token_ids: torch.Tensor, kind: str) -> torch.Tensor:
    """The rows of the chosen effective embedding [n, d_model] for `token_ids`."""
    raw = weights.W_E[token_ids.to(weights.W_E.device)]
    if kind == "raw":
        return raw
    mlp = weights.first_mlp(raw)
    return mlp if kind == "first_mlp" else raw + mlp


def task_pairs(tokenizer: Any, words: list[str], space: bool) -> tuple[bool, list[int | None], list[tuple[int, int]]]:
    """(space, each word's single token id or None, consecutive pairs of single-token words)."""
    prefix = " " if space else ""
    ids: list[int | None] = []
    for word in words:
        tokens = tokenizer.encode(prefix + word, add_special_tokens=False)
        ids.append(tokens[0] if len(tokens) == 1 else None)
    pairs = [(a, b) for a, b in zip(ids, ids[1:]) if a is not None and b is not None]
    return space, ids, pairs


def succession_hits(M: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """[pair] bool: is M[src, dst] the maximum of M[src, candidates]? (ids index the rows/columns of M)."""
    rows = M[src]  # [pair, columns]
    best = rows[:, candidates].max(dim=-1).values
    return rows[torch.arange(len(src)), dst] == best


class SuccessorAnalyzer(DrivingAnalyzer):
    """Succession score of every head's OV circuit on ordinal sequences (weights only)."""

    name = "successor"
    Params = SuccessorParams
    metrics = ("successor_score", "is_successor", "successor_{task}",
               "successor_{task}_n_pairs", "successor_chance")  # the last two: model-level
    description = "share of ordinal tokens whose successor is the top token of the head's OV map (Gould et al. 2024)"
    metric_docs = {
        "successor_score": MetricDoc("share of ordinal pairs (n, n+1) where the head's OV map ranks n+1 first among the task's tokens"),
        "is_successor": MetricDoc("1 if successor_score > 0.4 (circuits-over-time threshold)", "flag"),
        "successor_{task}": MetricDoc("succession score on one ordinal task"),
        "successor_chance": MetricDoc("expected successor_score of a map that ranks at random", "neither"),
    }

    def build_suite(self, ctx: ScanContext) -> TokenSuite:
        p = self.params
        if p.effective_embedding not in EFFECTIVE_EMBEDDINGS:
            raise HeadscopeError(f"unknown successor.effective_embedding '{p.effective_embedding}': "
                                 f"use one of {', '.join(EFFECTIVE_EMBEDDINGS)}")
        chosen_layers("successor.layers", p.layers, ctx.spec.n_layers)
        records, file_hash = load_suite_records(p.suite, required=("task", "sequence"))
        names = [str(r["task"]) for r in records]
        wanted = list(p.tasks) or names
        unknown = [t for t in wanted if t not in names]
        if unknown:
            raise HeadscopeError(f"task(s) {unknown} are not in suite '{p.suite}': use some of {', '.join(names)}")
        sequences, samples, tasks = [], [], []
        for record in records:
            if str(record["task"]) not in wanted:
                continue
            words = [str(word) for word in record["sequence"]]
            forms = [p.add_leading_space] + ([False] if p.add_leading_space and p.space_fallback else [])
            # the first form with the most kept pairs: the spaced one unless the bare words keep more
            space, ids, pairs = max((task_pairs(ctx.tokenizer, words, form) for form in forms), key=lambda t: len(t[2]))
            candidates = sorted({i for i in ids if i is not None})
            for a, b in pairs:
                sequences.append([a, b])
                samples.append({"task": str(record["task"])})
            tasks.append({"name": str(record["task"]), "candidates": candidates, "n_items": len(ids),
                          "n_pairs": len(pairs), "leading_space": space})
        if not sequences:
            raise HeadscopeError(f"no consecutive pair of suite '{p.suite}' is a single token pair for this tokenizer: "
                                 "add single-token sequences or set successor.add_leading_space=false")
        details = {"file_hash": file_hash, "tasks": tasks, "effective_embedding": p.effective_embedding}
        return TokenSuite(p.suite, sequences, samples, details)

    def layers(self, spec: ModelSpec) -> list[int]:
        chosen = {int(layer) for layer in self.params.layers}
        return sorted(chosen) if chosen else list(range(spec.n_layers))

    def run(self, backend: Backend, suite: TokenSuite, ctx: ScanContext) -> None:
        self.run_on_weights(backend.weights(), backend.spec, suite)

    def run_on_weights(self, weights: ModelWeights, spec: ModelSpec, suite: TokenSuite) -> None:
        """Every head's successes on every pair, through the OV map restricted to the suite's tokens."""
        self._spec, self._tasks = spec, suite.details["tasks"]
        vocab = torch.tensor(sorted({i for t in self._tasks for i in t["candidates"]}), dtype=torch.long)
        local = {int(token): index for index, token in enumerate(vocab.tolist())}  # token id -> row/column of M
        src = torch.tensor([local[s] for s, _ in suite.sequences], dtype=torch.long)
        dst = torch.tensor([local[d] for _, d in suite.sequences], dtype=torch.long)
        task_of = [sample["task"] for sample in suite.samples]
        X = effective_embedding(weights, vocab, self.params.effective_embedding)  # [n, d_model]
        U = weights.W_U[:, vocab.to(weights.W_U.device)]  # [d_model, n]
        layers = self.layers(spec)
        hits = torch.zeros(spec.n_layers, spec.n_heads, len(src), dtype=torch.bool)
        for layer in layers:
            W_V, W_O = weights.W_V(layer), weights.W_O(layer)  # [kv, d_model, d_head], [head, d_head, d_model]
            for head in range(spec.n_heads):
                M = ((X @ W_V[spec.kv_head(head)]) @ W_O[head] @ U).cpu()  # [n, n]
                for task in self._tasks:
                    chosen = torch.tensor([i for i, name in enumerate(task_of) if name == task["name"]], dtype=torch.long)
                    if not len(chosen):
                        continue
                    columns = torch.tensor([local[c] for c in task["candidates"]], dtype=torch.long)
                    hits[layer, head, chosen] = succession_hits(M, src[chosen], dst[chosen], columns)
        self._hits, self._task_of, self._layers = hits, task_of, layers

    def results(self) -> list[HeadValue]:
        hits, n = self._hits.double(), len(self._task_of)
        score = hits.mean(-1)
        tables = {"successor_score": (score, n), "is_successor": ((score > self.params.threshold).double(), n)}
        rows_extra = []
        chance = 0.0
        for task in self._tasks:
            chosen = [i for i, name in enumerate(self._task_of) if name == task["name"]]
            if chosen:
                tables[f"successor_{task['name']}"] = (hits[..., chosen].mean(-1), len(chosen))
                chance += len(chosen) / len(task["candidates"])
            rows_extra.append(HeadValue(-1, -1, f"successor_{task['name']}_n_pairs", float(task["n_pairs"]), task["n_items"] - 1))
        rows_extra.append(HeadValue(-1, -1, "successor_chance", chance / max(n, 1), n))
        return head_rows(tables, layers=self._layers) + rows_extra

    def side_output(self) -> dict[str, Any] | None:
        """Which effective embedding was used and the kept pairs per task: `<atlas>.successor.json`."""
        return {"analyzer": self.name, "effective_embedding": self.params.effective_embedding,
                "unembedding": "W_U (no final norm, no biases)",
                "tasks": [{k: t[k] for k in ("name", "n_items", "n_pairs", "leading_space")} for t in self._tasks]}
