"""Metric names are a contract: analyzers declare them, scans enforce them, viewers ask only for declared ones.

Also: a user's own analyzers (defined here, registered with `register_analyzer`) run through `headscope.scan`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import headscope
from headscope.analyzers import (
    ANALYZERS,
    DrivingAnalyzer,
    HeadValue,
    ScanContext,
    StreamingAnalyzer,
    declares,
    head_rows,
    register_analyzer,
)
from headscope.analyzers.base import RunningMoments
from headscope.engine import Needs
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite
from headscope.viewers.roles import ROLES

ALL_DECLARED = [pattern for cls in ANALYZERS.values() for pattern in cls.metrics]
# metric names the viewers read by name (headscope/viewers/sinks.py and maps.py), beside the roles' table
VIEWER_METRICS = ["sink_score", "sink_rate", "massive_ratio", "massive_top_is_first", "hidden_sink_token[Ġthe]",
                  "maps_copying", "maps_copying_suppression"]


def test_patterns_match_whole_names():
    assert declares(["qk_accuracy_{shots}shot"], "qk_accuracy_3shot")
    assert not declares(["qk_accuracy_{shots}shot"], "qk_accuracy")
    assert not declares(["sink_score"], "sink_score_std")
    assert declares(["hidden_sink_token[{token}]"], "hidden_sink_token[Ġthe]")


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.name)
def test_every_role_asks_for_declared_metrics(role):
    for metric in role.metrics:
        assert declares(ALL_DECLARED, metric), f"role {role.name} asks for '{metric}', which no analyzer declares"


@pytest.mark.parametrize("metric", VIEWER_METRICS)
def test_every_viewer_metric_is_declared(metric):
    assert declares(ALL_DECLARED, metric)


# --- a user's own analyzers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BosParams:
    n_samples: int = 4
    seq_len: int = 12


class BosAttention(StreamingAnalyzer):
    """Mean attention every query puts on the first token: a streaming analyzer written outside the package."""

    name = "test-bos-attention"
    Params = BosParams
    metrics = ("bos_attention", "n_sequences")
    needs = Needs(pattern=True)
    shardable = True

    def build_suite(self, ctx: ScanContext) -> TokenSuite:
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(4, ctx.spec.d_vocab, (self.params.n_samples, self.params.seq_len), generator=gen)
        return TokenSuite("test-random", [[1, *row] for row in ids.tolist()])

    def start(self, ctx, suite):
        self._moments = RunningMoments(ctx.spec.n_layers, ctx.spec.n_heads)

    def observe(self, batch, acts):
        self._moments.add(acts.layer, acts.pattern[..., 0].mean(-1))  # [batch, head]

    def state(self):
        return self._moments.state()

    def merge_states(self, states):
        self._moments.load_states(states)

    def results(self):
        count = self._moments.count
        return [*head_rows({"bos_attention": (self._moments.mean(), count)}),
                HeadValue(-1, -1, "n_sequences", float(count[0]), int(count[0]))]


@dataclass(frozen=True)
class NormParams:
    undeclared: bool = False


class OutputWeightNorm(DrivingAnalyzer):
    """Frobenius norm of each head's W_O from the weights: a driving analyzer written outside the package."""

    name = "test-wo-norm"
    Params = NormParams
    metrics = ("wo_norm",)

    def build_suite(self, ctx):
        return TokenSuite("weights", [[0]])

    def run(self, backend, suite, ctx):
        weights = backend.weights()
        self._norms = torch.stack([weights.W_O(layer).flatten(1).norm(dim=1) for layer in range(backend.spec.n_layers)])

    def results(self):
        metric = "wo_norm_undeclared" if self.params.undeclared else "wo_norm"
        return head_rows({metric: (self._norms, 0)})

    def side_output(self):
        return {"max": float(self._norms.max())}


@pytest.fixture
def registered():
    for cls in (BosAttention, OutputWeightNorm):
        register_analyzer(cls)
    yield
    for cls in (BosAttention, OutputWeightNorm):
        ANALYZERS.pop(cls.name)


def test_own_analyzers_run_through_scan(registered, tiny_llama_dir, tmp_path):
    out = tmp_path / "atlas.parquet"
    atlas = headscope.scan(str(tiny_llama_dir), ["test-bos-attention", "test-wo-norm", "induction"], out=out,
                           n_samples=3, shard_size=2, progress=False)
    assert set(atlas.analyzers) == {"test-bos-attention", "test-wo-norm", "induction"}
    bos = atlas.head_rows()
    bos = bos[bos["metric"] == "bos_attention"]
    assert len(bos) == 2 * 4 and bos["value"].between(0, 1).all() and (bos["n_samples"] == 3).all()
    assert (tmp_path / "atlas.test-wo-norm.json").is_file()


def test_undeclared_metric_is_refused(registered, tiny_llama_dir):
    with pytest.raises(HeadscopeError, match="does not declare"):
        headscope.scan(str(tiny_llama_dir), ["test-wo-norm"], params={"test-wo-norm": {"undeclared": True}}, progress=False)


def test_register_refuses_non_analyzers_and_taken_names():
    with pytest.raises(HeadscopeError, match="not an analyzer"):
        register_analyzer(dict)  # type: ignore[arg-type]

    class Clash(BosAttention):
        name = "induction"

    with pytest.raises(HeadscopeError, match="already registered"):
        register_analyzer(Clash)


@pytest.mark.parametrize("name", sorted(ANALYZERS))
def test_metric_docs_describe_declared_metrics(name):
    """Every documented metric is a declared pattern, so a renamed metric cannot keep a stale meaning."""
    cls = ANALYZERS[name]
    assert set(cls.metric_docs) <= set(cls.metrics), set(cls.metric_docs) - set(cls.metrics)
    assert all(doc.meaning and doc.direction in ("higher", "lower", "flag", "neither") for doc in cls.metric_docs.values())


@pytest.mark.parametrize("name", ["induction", "previous-token", "duplicate-token", "sinks"])
def test_classic_and_sinks_document_every_metric(name):
    """The explorer's default scan (classic + sinks) shows a meaning for every metric it writes."""
    cls = ANALYZERS[name]
    assert set(cls.metric_docs) == set(cls.metrics)


def test_doc_for_matches_patterns():
    from headscope.analyzers.metrics import MetricDoc, doc_for

    declared = ("maps_{relation}", "maps_{relation}_k", "maps_{relation}_n_pairs")
    docs = {"maps_{relation}": MetricDoc("a"), "maps_{relation}_k": MetricDoc("b", "neither")}
    assert doc_for(declared, docs, "maps_copying").meaning == "a" and doc_for(declared, docs, "other") is None
    assert doc_for(declared, docs, "maps_copying_k").meaning == "b"  # the most specific pattern wins
    assert doc_for(declared, docs, "maps_copying_n_pairs") is None  # undocumented: no borrowed meaning
