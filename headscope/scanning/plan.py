"""Planning a scan: build every suite once, group streaming analyzers that share one, cut it into tasks.

A task is the unit of work, of resume and of Ray: a shard of a suite for a group of shardable streaming
analyzers (it returns their states), a whole suite for a group with a non-shardable member (it returns rows),
or one driving analyzer's run (rows). Streaming groups come first, driving analyzers after, in the order given.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import torch

from headscope.analyzers import Analyzer, DrivingAnalyzer, HeadValue, ScanContext, StreamingAnalyzer
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite
from headscope.probes.user_texts import user_text_suite

Mode = Literal["states", "rows"]


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Group:
    """Analyzers run together on one suite: streaming ones sharing a forward pass, or one driving analyzer."""

    suite: TokenSuite
    members: list[Analyzer]
    tasks: list[Task] = field(default_factory=list)

    @property
    def driving(self) -> bool:
        return isinstance(self.members[0], DrivingAnalyzer)

    @property
    def mode(self) -> Mode:
        shardable = all(isinstance(a, StreamingAnalyzer) and a.shardable for a in self.members)
        return "states" if shardable else "rows"

    @property
    def label(self) -> str:
        return "+".join(sorted(a.name for a in self.members))

    @property
    def key(self) -> str:
        """Names the group's parts: the suite's content and every member's parameters."""
        params = "|".join(f"{a.name}:{a.params_json()}" for a in sorted(self.members, key=lambda a: a.name))
        return short_hash(f"{self.suite.content_hash}|{params}")


@dataclass
class Task:
    """Sequences start:stop of its group's suite (a driving analyzer's task spans the whole suite)."""

    group: Group
    index: int
    count: int
    start: int
    stop: int

    @property
    def mode(self) -> Mode:
        return self.group.mode

    @property
    def part_name(self) -> str:
        """One naming scheme for every part: <analyzers>.<key>.part<index>of<count>."""
        return f"{self.group.label}.{self.group.key}.part{self.index:04d}of{self.count:04d}"

    @property
    def part_meta(self) -> dict[str, Any]:
        return {"suite": self.group.suite.content_hash, "part": [self.index, self.count, self.start, self.stop],
                "params": {a.name: a.params_json() for a in self.group.members}}

    def probes(self) -> TokenSuite:
        """This task's slice of the suite (the suite itself when the task spans it)."""
        s = self.group.suite
        if (self.start, self.stop) == (0, len(s)):
            return s
        return TokenSuite(s.name, s.sequences[self.start : self.stop], s.samples[self.start : self.stop], s.details)


@dataclass
class TaskOutput:
    """What a task gives back: shard states per analyzer, or finished rows and side outputs per analyzer."""

    states: dict[str, dict[str, torch.Tensor]] | None = None
    rows: dict[str, list[HeadValue]] | None = None
    side: dict[str, dict[str, Any]] = field(default_factory=dict)


def prompt_suite(analyzer: Analyzer, ctx: ScanContext) -> TokenSuite:
    """The user's texts in place of `analyzer`'s built-in probes, cut at its `seq_len` (refused where not allowed)."""
    check_accepts_prompts([analyzer])
    return user_text_suite(ctx.tokenizer, ctx.prompts or (), seq_len=getattr(analyzer.params, "seq_len", None),
                           n_ctx=ctx.spec.n_ctx, bos_token_id=ctx.spec.bos_token_id,
                           prepend_bos=getattr(analyzer.params, "prepend_bos", True))


# why an analyzer's own probes cannot be swapped for arbitrary text (the refusal names it)
PROMPT_REFUSALS = {
    "induction": "its score needs sequences that repeat: random tokens, twice",
    "retrieval": "it needs needle-in-a-haystack probes whose needle it knows",
    "lookback": "it needs grounded questions with known answers",
    "select-and-copy": "it needs multiple-choice prompts with known answers",
    "safety": "it needs harmful/harmless request pairs",
    "maps": "it reads weights and relation data, not prompts",
}


def check_accepts_prompts(analyzers: Sequence[Analyzer]) -> None:
    """Refuse, before any work, prompts for an analyzer whose definition needs its own probes."""
    for analyzer in analyzers:
        if not analyzer.accepts_prompts:
            why = PROMPT_REFUSALS.get(analyzer.name, "its probes carry what it measures against")
            raise HeadscopeError(f"analyzer '{analyzer.name}' cannot run on your prompts ({why}): scan it without "
                                 "--prompts, or pick sinks, previous-token, duplicate-token")


def plan_scan(analyzers: Sequence[Analyzer], ctx: ScanContext, shard_size: int) -> list[Group]:
    """Build each analyzer's suite once, group and cut them into tasks."""
    if shard_size < 1:
        raise HeadscopeError("--shard-size must be at least 1")
    streaming: dict[tuple[str, str], Group] = {}
    driving: list[Group] = []
    for analyzer in analyzers:
        suite = analyzer.build_suite(ctx)  # also where an analyzer checks its parameters against the model
        if ctx.prompts is not None:
            suite = prompt_suite(analyzer, ctx)
        if len(suite) == 0:
            raise HeadscopeError(f"analyzer '{analyzer.name}' built an empty probe suite: check its parameters")
        if isinstance(analyzer, DrivingAnalyzer):
            driving.append(Group(suite, [analyzer]))
        elif isinstance(analyzer, StreamingAnalyzer):
            streaming.setdefault((suite.name, suite.content_hash), Group(suite, [])).members.append(analyzer)
        else:
            raise HeadscopeError(f"{type(analyzer).__name__} is neither a StreamingAnalyzer nor a DrivingAnalyzer")
    groups = [*streaming.values(), *driving]
    for group in groups:
        n = len(group.suite)
        size = shard_size if group.mode == "states" else n
        count = math.ceil(n / size)
        group.tasks = [Task(group, i, count, i * size, min((i + 1) * size, n)) for i in range(count)]
    return groups
