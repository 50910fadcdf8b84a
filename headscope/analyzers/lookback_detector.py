"""Lookback Lens detector (Chuang et al. 2024, official `step03_lookback_lens.py`): spans, features, training.

A span's feature vector is its per-head lookback ratios averaged over the span's tokens, flattened with index
`layer * n_heads + head`; a `LogisticRegression(max_iter=1000)` predicts label 1 = faithful. Spans are either
predefined (here: the whole answer, since our labels are per answer) or sliding windows of `window` tokens whose
label is the minimum token label in the window. Evaluation is the official two-fold 50/50 split (seed 42): train on
one half, AUROC on the other, both ways, averaged; the confidence interval is ours (bootstrap of the held-out
predictions). The saved detector is plain JSON (the official one is a pickle): loading it reads numbers only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from headscope.errors import HeadscopeError
from headscope.strict_json import MAX_BYTES, load_json

FORMAT = "headscope-lookback-detector"
FORMAT_VERSION = 1


def span_features(
    ratios: Sequence[np.ndarray], labels: Sequence[int], *, span: str = "predefined", window: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature rows [span, layer * head], labels [span] and the item index of each span.

    ratios[i]: [layer, head, token] of item i; labels[i]: that item's label (applied to each of its tokens).
    """
    rows, ys, owners = [], [], []
    for item, (r, label) in enumerate(zip(ratios, labels)):
        n_layers, n_heads, n_tokens = r.shape
        if span == "predefined":
            pieces = [r] if n_tokens else []
        elif span == "sliding_window":
            if window < 1:
                raise HeadscopeError("lookback window must be at least 1 token")
            pieces = [r[:, :, j - window + 1 : j + 1] for j in range(window - 1, n_tokens)]
        else:
            raise HeadscopeError(f"unknown lookback span '{span}': use 'predefined' or 'sliding_window'")
        for piece in pieces:
            rows.append(piece.reshape(n_layers * n_heads, -1).mean(-1))  # index l * H + h
            ys.append(int(label))  # min over the window of per-token labels, all equal to the item's label
            owners.append(item)
    if not rows:
        return np.zeros((0, 0)), np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    features = np.stack(rows).astype(np.float64)
    if np.isnan(features).any():
        raise HeadscopeError("NaN lookback ratio in the features: every prompt needs a non-empty answer header")
    return features, np.asarray(ys, dtype=int), np.asarray(owners, dtype=int)


@dataclass
class LookbackDetector:
    """A fitted logistic regression over lookback-ratio features, for models of one head layout."""

    n_layers: int
    n_heads: int
    coef: np.ndarray  # [n_layers * n_heads], feature index layer * n_heads + head
    intercept: float
    span: str = "predefined"
    window: int = 8
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, features: np.ndarray, labels: np.ndarray, *, n_layers: int, n_heads: int, span: str = "predefined",
        window: int = 8, metadata: dict[str, Any] | None = None,
    ) -> "LookbackDetector":
        from sklearn.linear_model import LogisticRegression

        if len(set(labels.tolist())) < 2:
            raise HeadscopeError("the detector needs both faithful and hallucinated spans: use more or harder items")
        classifier = LogisticRegression(max_iter=1000).fit(features, labels)
        if list(classifier.classes_) != [0, 1]:
            raise HeadscopeError("labels must be 0 (hallucinated) and 1 (faithful)")
        return cls(n_layers, n_heads, classifier.coef_[0].astype(np.float64), float(classifier.intercept_[0]), span,
                   window, dict(metadata or {}))

    @property
    def head_weights(self) -> np.ndarray:
        """[layer, head]: the weight of each head's mean lookback ratio (positive: more lookback, more faithful)."""
        return self.coef.reshape(self.n_layers, self.n_heads)

    def check_layout(self, n_layers: int, n_heads: int) -> None:
        if (n_layers, n_heads) != (self.n_layers, self.n_heads):
            raise HeadscopeError(
                f"detector was trained for {self.n_layers} layers x {self.n_heads} heads, the model has "
                f"{n_layers} x {n_heads}: train a detector on this model (headscope scan --analyzers lookback)"
            )

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.coef.shape[0]:
            raise HeadscopeError(f"features must be [span, {self.coef.shape[0]}]: got {list(features.shape)}")
        return features @ self.coef + self.intercept

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """P(faithful) per span."""
        return 1.0 / (1.0 + np.exp(-self.decision_function(features)))

    def score_ratios(self, ratios: np.ndarray) -> np.ndarray:
        """P(faithful) of the detector's spans of one answer, from its ratios [layer, head, token]."""
        self.check_layout(ratios.shape[0], ratios.shape[1])
        features, _, _ = span_features([ratios], [1], span=self.span, window=self.window)
        return self.predict_proba(features) if len(features) else np.zeros(0)

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "feature_index": "layer * n_heads + head",
            "label_1": "faithful",
            "span": self.span,
            "window": self.window,
            "coef": [float(x) for x in self.coef],
            "intercept": self.intercept,
            "metadata": self.metadata,
        }, indent=1)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    @classmethod
    def from_json(cls, text: str, *, origin: str = "detector") -> "LookbackDetector":
        fix = "train one with --param lookback.detector_out=PATH"
        data = load_json(text, origin=origin, fix=fix, what="a headscope lookback detector JSON")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise HeadscopeError(f"{origin} is not a headscope lookback detector JSON: {fix}")
        if not _exact(data.get("version"), int) or data["version"] != FORMAT_VERSION:
            raise HeadscopeError(f"{origin} has detector format version {data.get('version')!r}: this headscope reads {FORMAT_VERSION}")
        n_layers, n_heads = data.get("n_layers"), data.get("n_heads")
        window, span = data.get("window", 8), data.get("span", "predefined")
        coef, intercept = data.get("coef"), data.get("intercept")
        if not (_exact(n_layers, int) and _exact(n_heads, int) and n_layers > 0 and n_heads > 0
                and _exact(window, int) and window > 0 and isinstance(span, str)
                and isinstance(coef, list) and all(_exact(x, (int, float)) for x in coef)
                and _exact(intercept, (int, float)) and isinstance(data.get("metadata", {}), dict)):
            raise HeadscopeError(f"{origin} is a damaged detector file (missing fields or fields of the wrong type): retrain it")
        coef = np.asarray(coef, dtype=np.float64)
        intercept = float(intercept)
        if coef.shape != (n_layers * n_heads,):
            raise HeadscopeError(f"{origin} has {coef.size} weights for {n_layers} x {n_heads} heads: retrain it")
        metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
        return cls(n_layers, n_heads, coef, intercept, span, window, metadata)

    @classmethod
    def load(cls, path: str | Path) -> "LookbackDetector":
        """Read a detector saved by `save` (JSON only: nothing in the file is executed)."""
        path = Path(path)
        if not path.is_file():
            raise HeadscopeError(f"detector file {path} does not exist: pass the path written by lookback.detector_out")
        if path.stat().st_size > MAX_BYTES:  # refused before it is read into memory
            raise HeadscopeError(f"detector file {path} is larger than {MAX_BYTES} bytes: it is not a detector; retrain it")
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        return cls.from_json(text, origin=str(path))


@dataclass
class Evaluation:
    """Held-out AUROC of the official two-fold protocol, with a bootstrap interval."""

    auroc: float
    ci_low: float
    ci_high: float
    train_auroc: float
    baseline_auroc: float  # official trivial baseline: mean ratio over all heads as the score
    fold_aurocs: tuple[float, ...]
    n_spans: int
    held_out: list[tuple[np.ndarray, np.ndarray]]  # (labels, P(faithful)) of each fold's test half


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else float("nan")


def two_fold_evaluation(
    features: np.ndarray, labels: np.ndarray, *, seed: int = 42, owners: np.ndarray | None = None,
    split_by: str = "span", n_bootstrap: int = 1000, confidence: float = 0.95,
) -> Evaluation:
    """Official protocol: `train_test_split(test_size=0.5, random_state=seed)`, train on each half, test on the other.

    split_by="item" keeps all spans of one item on the same side (ours: sliding windows of one answer otherwise
    leak between the halves).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    if split_by not in ("span", "item"):
        raise HeadscopeError(f"unknown lookback split_by '{split_by}': use 'span' (official) or 'item'")
    index = np.arange(len(labels))
    if split_by == "span":
        first, second = train_test_split(index, test_size=0.5, random_state=seed)
    else:
        groups = np.unique(owners if owners is not None else index)
        g1, _ = train_test_split(groups, test_size=0.5, random_state=seed)
        in_first = np.isin(owners if owners is not None else index, g1)
        first, second = index[in_first], index[~in_first]
    folds, trains, held_out = [], [], []
    for train, test in ((first, second), (second, first)):
        if len(set(labels[train].tolist())) < 2:
            folds.append(float("nan"))
            continue
        classifier = LogisticRegression(max_iter=1000).fit(features[train], labels[train])
        trains.append(_auroc(labels[train], classifier.predict_proba(features[train])[:, 1]))
        proba = classifier.predict_proba(features[test])[:, 1]
        folds.append(_auroc(labels[test], proba))
        held_out.append((labels[test], proba))
    auroc = float(np.mean(folds)) if folds else float("nan")
    low, high = bootstrap_interval(held_out, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    baseline = _auroc(labels, features.mean(1)) if len(features) else float("nan")
    return Evaluation(auroc, low, high, float(np.mean(trains)) if trains else float("nan"), baseline, tuple(folds),
                      int(len(labels)), held_out)


def bootstrap_interval(
    held_out: list[tuple[np.ndarray, np.ndarray]], *, n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 42
) -> tuple[float, float]:
    """Percentile interval of the fold-averaged AUROC, resampling each fold's held-out spans with replacement."""
    if not held_out or n_bootstrap < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_bootstrap):
        per_fold = []
        for labels, proba in held_out:
            pick = rng.integers(0, len(labels), len(labels))
            per_fold.append(_auroc(labels[pick], proba[pick]))
        if not any(math.isnan(v) for v in per_fold):
            values.append(float(np.mean(per_fold)))
    if len(values) < max(10, n_bootstrap // 10):
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def _exact(value: object, kinds: type | tuple[type, ...]) -> bool:
    """isinstance without bool passing for int (JSON true is not a count or a weight)."""
    return isinstance(value, kinds) and not isinstance(value, bool)
