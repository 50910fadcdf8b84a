"""Truthfulness heads (Li et al. 2023, "Inference-Time Intervention"; likenneth/honest_llama).

Each (question, answer) of probes/truthfulness_statements (written by us) becomes the statement `Q: {q} A: {a}`
with label 1 (true) or 0 (false) (`utils.format_truthfulqa`). A head's feature is its output z (the output
projection's input, per query head) at the last token (`interveners.Collector` on o_proj's input). Per head, a
scikit-learn `LogisticRegression(max_iter=1000)` separates true from false (`utils.train_probes`); the score is its
held-out accuracy, with statements split by question so a question's true and false answers never straddle the
split (`validate_2fold.py`), seed 42. Baselines: the same probe trained on shuffled labels (per head) and the
majority class of the training labels (one model-level row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from headscope.analyzers.base import HeadValue, ScanContext, StreamingAnalyzer, head_rows
from headscope.analyzers.function_vector import prompt_ids
from headscope.analyzers.metrics import MetricDoc
from headscope.engine import LayerActivations, Needs, ProbeBatch
from headscope.engine.backend import last_real_positions
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite
from headscope.probes.files import load_suite_records


@dataclass(frozen=True)
class TruthfulnessParams:
    source: str = "truthfulness_statements"  # shipped suite or a folder of {"qid", "question", "answer", "label"}
    n_folds: int = 5  # question-grouped folds; every statement is scored once, held out
    n_samples: int = 0  # questions used (0: all), the first ones of the file
    max_iter: int = 1000  # LogisticRegression(max_iter=1000), as the official train_probes
    seed: int = 42


def question_folds(qids: list[Any], n_folds: int, seed: int) -> np.ndarray:
    """[statement] fold of each statement: questions are shuffled (seeded) and dealt round-robin into folds."""
    unique = sorted(set(qids), key=str)
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[q]: i % n_folds for i, q in enumerate(order)}
    return np.array([fold_of[q] for q in qids])


def probe_accuracy(features: np.ndarray, labels: np.ndarray, folds: np.ndarray, *, max_iter: int = 1000,
                   seed: int = 42, fit_labels: np.ndarray | None = None) -> float:
    """Pooled held-out accuracy (against `labels`) of a logistic-regression probe over question-grouped folds,
    trained on `fit_labels` (default `labels`; shuffled labels give the chance baseline)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    fit = labels if fit_labels is None else fit_labels
    correct = 0
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        if len(np.unique(fit[train])) < 2:  # one class only: the probe predicts it
            correct += int((labels[test] == fit[train][0]).sum())
            continue
        with threadpool_limits(limits=1):  # tiny fits: BLAS threads only contend (100x slower on a busy CPU)
            probe = LogisticRegression(max_iter=max_iter, random_state=seed).fit(features[train], fit[train])
        correct += int((probe.predict(features[test]) == labels[test]).sum())
    return correct / len(labels)


def majority_accuracy(labels: np.ndarray, folds: np.ndarray) -> float:
    """Pooled held-out accuracy of predicting each fold's training majority class."""
    correct = 0
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        majority = int(labels[train].mean() >= 0.5)
        correct += int((labels[test] == majority).sum())
    return correct / len(labels)


class TruthfulnessAnalyzer(StreamingAnalyzer):
    name = "truthfulness"
    Params = TruthfulnessParams
    metrics = ("truth_probe_acc", "truth_probe_acc_shuffled", "truth_rank", "truth_majority_baseline", "truth_n_statements")
    description = "held-out accuracy of a per-head linear probe separating true from false statements (Li et al. 2023)"
    metric_docs = {
        "truth_probe_acc": MetricDoc("held-out accuracy of a logistic probe on the head's last-token output, true vs "
                                     "false statements, split by question (ITI, Li et al.)"),
        "truth_probe_acc_shuffled": MetricDoc("the same probe trained on shuffled labels: the chance level to beat",
                                              "neither"),
        "truth_rank": MetricDoc("rank by truth_probe_acc (1 = best probe)", "lower"),
    }

    @property
    def needs(self) -> Needs:
        return Needs(z=True)

    def build_suite(self, ctx: ScanContext) -> TokenSuite:
        p = self.params
        if p.n_folds < 2 or p.max_iter < 1 or p.n_samples < 0:
            raise HeadscopeError("n_folds must be >= 2, max_iter >= 1 and n_samples >= 0")
        records, digest = load_suite_records(p.source, required=("qid", "question", "answer", "label"))
        qids = list(dict.fromkeys(r["qid"] for r in records))
        if p.n_samples:
            keep = set(qids[: p.n_samples])
            records = [r for r in records if r["qid"] in keep]
            qids = qids[: p.n_samples]
        labels = {int(r["label"]) for r in records}
        if not labels <= {0, 1} or len(labels) < 2 or len(qids) < p.n_folds:
            raise HeadscopeError(f"the truthfulness suite needs labels 0 and 1 and at least n_folds={p.n_folds} questions")
        bos = ctx.spec.bos_token_id
        sequences = [prompt_ids(ctx.tokenizer, f"Q: {r['question']} A: {r['answer']}", bos) for r in records]
        samples = [{"qid": str(r["qid"]), "label": int(r["label"])} for r in records]
        return TokenSuite(f"{p.source}:statements", sequences, samples, {"data_hash": digest})

    def start(self, ctx: ScanContext, suite: TokenSuite) -> None:
        self.spec = ctx.spec
        self.features: dict[int, list[torch.Tensor]] = {layer: [] for layer in range(ctx.spec.n_layers)}
        self.labels: list[int] = []
        self.qids: list[str] = []

    def observe(self, batch: ProbeBatch, acts: LayerActivations) -> None:
        z = acts.z  # [batch, head, pos, d_head]
        last = last_real_positions(batch.attention_mask).to(z.device)
        self.features[acts.layer].append(z[torch.arange(z.shape[0], device=z.device), :, last].float().cpu())
        if acts.layer == 0:
            self.labels += [int(s["label"]) for s in batch.samples]
            self.qids += [str(s["qid"]) for s in batch.samples]

    def results(self) -> list[HeadValue]:
        p = self.params
        labels = np.array(self.labels)
        folds = question_folds(self.qids, p.n_folds, p.seed)
        shuffled = np.random.default_rng(p.seed).permutation(labels)
        spec = self.spec
        acc = torch.zeros(spec.n_layers, spec.n_heads)
        base = torch.zeros(spec.n_layers, spec.n_heads)
        for layer in range(spec.n_layers):
            feats = torch.cat(self.features[layer]).numpy()  # [statement, head, d_head]
            for head in range(spec.n_heads):
                acc[layer, head] = probe_accuracy(feats[:, head], labels, folds, max_iter=p.max_iter, seed=p.seed)
                base[layer, head] = probe_accuracy(feats[:, head], labels, folds, max_iter=p.max_iter, seed=p.seed,
                                                   fit_labels=shuffled)
        rank = torch.empty_like(acc)
        rank.view(-1)[acc.flatten().argsort(descending=True, stable=True)] = torch.arange(1, acc.numel() + 1, dtype=acc.dtype)
        n = len(labels)
        rows = head_rows({"truth_probe_acc": (acc, n), "truth_probe_acc_shuffled": (base, n), "truth_rank": (rank, n)})
        rows.append(HeadValue(-1, -1, "truth_majority_baseline", majority_accuracy(labels, folds), n))
        rows.append(HeadValue(-1, -1, "truth_n_statements", float(n), n))
        self.accuracy = acc
        return rows

