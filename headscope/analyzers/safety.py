"""Safety heads (Zhou et al. 2024, "On the Role of Attention Heads in Large Language Model Safety").

Official code: ydyjya/SafetyHeadAttribution.
- Ships (`lib/SHIPS/get_ships.py`): for one harmful query, ablate one head (its query scaled by eps = 1e-4
  before the rotary embedding, so its attention becomes near-uniform) and score the head by
  KL(p_base || p_ablated) of the next-token distribution at the last position. The repo keeps each query's
  top 10 heads; we report the mean KL over queries (`ships_score`), its rank, and each head's share of queries
  in whose top 10 it is (`ships_top10_share`).
- Sahara (`lib/Sahara/attribution.py`): H = the last-layer representation (after the final norm) at the last
  token of N queries, [N, d_model]. A head group's score is the angle between the top-1 left singular vectors
  of H and of H with the group ablated (eps = 1e-5). Greedy search: each step adds the head that most rotates
  it, given the heads already chosen. Step 1 gives every head's single-head angle (`sahara_angle`).
The query template is the tokenizer's chat template by default (`prompt_style`; the repo's options are the
bare query or "## Query:{q}\\n## Answer:").

Cost: the official scripts run one forward per (head, query). Here one prompt's ablations share a forward
pass: row i of the batch ablates head i (`circuits.ablation.row_ablations`), and only the last token goes
through the unembedding. A Ships pass is N x L x H rows; each Sahara step is N x (candidates) rows more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from headscope.analyzers.metrics import MetricDoc
from headscope.analyzers.base import DrivingAnalyzer, HeadValue, ScanContext, head_rows
from headscope.analyzers.safety_math import ships_kl, subspace_angle, top_left_singular_vector
from headscope.engine import Backend, Head, LayerActivations, ModelSpec, Needs, ProbeBatch, pad_sequences
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite
from headscope.probes.request_prompts import PROMPT_STYLES, request_prompt_ids
from headscope.probes import safety as safety_probes

SPLITS = ("train", "heldout", "all")


@dataclass(frozen=True)
class SafetyParams:
    source: str = "safety_requests"  # shipped suite, local folder, or hub:<dataset>[:split]
    split: str = "train"  # harmful requests attributed on: train, heldout or all
    n_samples: int = 16  # harmful requests used (0: all of the split)
    prompt_style: str = "chat"  # chat (tokenizer's template), query ("## Query:..."), plain
    ablation: str = "scale"  # scale (paper: query x eps), zero or mean (head output z)
    eps: float = 1e-4  # Ships' query scale (official get_ships.py)
    top_k: int = 10  # heads kept per query (official: 10)
    sahara_steps: int = 1  # size of the greedy Sahara group (official default search_step=1; 0: no Sahara)
    sahara_eps: float = 1e-5  # Sahara's query scale (official attribution.py)
    sahara_candidates: int = 0  # 0: every head at every step (official); k: only the k top Ships heads
    rows_per_pass: int = 64  # ablated copies of one prompt per forward pass (memory ~ rows x prompt length)
    reuse_prefix: bool = True  # start each pass at its first ablated layer from the intact residual stream
    share_prefix: bool = True  # prompts' common start (the chat template's system part) computed once per pass
    check_top_k: int = 0  # > 0: ablate the top-k Ships heads, and k random heads, on held-out harmful requests
    check_random_sets: int = 3
    check_n_samples: int = 0  # held-out harmful requests in the check (0: all)
    check_max_new_tokens: int = 32
    seed: int = 0


class SafetyHeadAnalyzer(DrivingAnalyzer):
    name = "safety"
    Params = SafetyParams
    metrics = ("ships_score", "ships_score_std", "ships_rank", "ships_top{k}_share", "sahara_angle", "sahara_member",
               "sahara_angle_step{step}", "refusal_rate_intact", "refusal_rate_ablate_top{k}",
               "refusal_rate_ablate_random{k}")  # model-level: Sahara's trace, the causal check
    description = "Ships KL and Sahara subspace angle of ablating each head on harmful requests (Zhou et al. 2024)"
    metric_docs = {
        "ships_score": MetricDoc("KL of the refusal distribution when the head is ablated (Ships, Zhou et al.)"),
        "ships_score_std": MetricDoc("spread of ships_score over harmful requests", "neither"),
        "ships_rank": MetricDoc("rank by ships_score (1 = strongest)", "lower"),
        "sahara_angle": MetricDoc("subspace angle moved by ablating this head alone (Sahara)"),
        "sahara_member": MetricDoc("greedy Sahara step at which the head joined the group (0 = not chosen)", "neither"),
    }

    # --- suite ------------------------------------------------------------------------------
    def build_suite(self, ctx: ScanContext) -> TokenSuite:
        p = self._checked_params(ctx.spec)
        # hub datasets (AdvBench-style) hold harmful requests only, all held out: the split does not apply there
        split = None if p.split == "all" or p.source.startswith("hub:") else p.split
        requests, digest = safety_probes.load_safety_requests(p.source, kind="harmful", split=split, n_samples=p.n_samples)
        if len(requests) < 2 and p.sahara_steps:
            raise HeadscopeError("Sahara needs at least 2 harmful requests (an SVD over queries): raise n_samples")
        sequences = [request_prompt_ids(ctx.tokenizer, r.request, style=p.prompt_style) for r in requests]
        samples = [{"id": r.id, "request": r.request} for r in requests]
        return TokenSuite(f"{p.source}:harmful:{p.split}", sequences, samples, {"data_hash": digest})

    def _checked_params(self, spec: ModelSpec) -> SafetyParams:
        p = self.params
        if p.split not in SPLITS:
            raise HeadscopeError(f"unknown split '{p.split}': use one of {', '.join(SPLITS)}")
        if p.prompt_style not in PROMPT_STYLES:
            raise HeadscopeError(f"unknown prompt_style '{p.prompt_style}': use one of {', '.join(PROMPT_STYLES)}")
        if not (p.eps > 0 and p.sahara_eps > 0):
            raise HeadscopeError("eps and sahara_eps must be positive (the paper scales queries by 1e-4 / 1e-5)")
        if p.rows_per_pass < 1 or p.top_k < 1 or p.sahara_steps < 0 or p.check_top_k < 0:
            raise HeadscopeError("rows_per_pass and top_k must be >= 1; sahara_steps and check_top_k >= 0")
        if p.sahara_steps > spec.n_layers * spec.n_heads:
            raise HeadscopeError(f"sahara_steps {p.sahara_steps} exceeds the model's {spec.n_layers * spec.n_heads} heads")
        return p

    # --- accumulation ---------------------------------------------------------------------------
    @property
    def edits(self) -> frozenset[str]:
        from headscope.circuits.ablation import HeadAblation

        return frozenset({HeadAblation(self.params.ablation).tensor})

    def reset(self, spec: ModelSpec) -> None:
        """Empty accumulators (`run` starts with this)."""
        self._spec = spec
        self.kl: torch.Tensor | None = None  # [query, layer, head]
        self.sahara_group: list[Head] = []
        self.sahara_trace: list[float] = []
        self.single_angles: torch.Tensor | None = None  # [layer, head]
        self.check: Any = None
        self.samples: list[dict[str, Any]] = []
        self._resid: dict[tuple[int, ...], torch.Tensor] = {}  # intact resid_pre per prompt, shared by all passes

    def run(self, backend: Backend, suite: TokenSuite, ctx: ScanContext) -> None:
        from headscope.circuits.ablation import HeadAblation, head_output_means

        p = self._checked_params(backend.spec)
        self.reset(backend.spec)
        self.samples = list(suite.samples)
        means = None
        if p.ablation == "mean":
            batches = [pad_sequences(suite.sequences[i : i + ctx.batch_size], ctx.pad_token_id)
                       for i in range(0, len(suite), ctx.batch_size)]
            means = head_output_means(backend, batches)
        ships_ablation = HeadAblation(p.ablation, p.eps, means)
        base, ablated_hidden = self.score_ships(backend, suite.sequences, ships_ablation, progress=ctx.progress)
        if p.sahara_steps:
            reuse = ablated_hidden if p.sahara_eps == p.eps else None
            self.search_sahara(backend, suite.sequences, HeadAblation(p.ablation, p.sahara_eps, means), base,
                               single_hidden=reuse, progress=ctx.progress)
        if p.check_top_k:
            self.run_check(backend, ships_ablation)

    # --- Ships ----------------------------------------------------------------------------------
    def score_ships(self, backend: Backend, prompts: list[list[int]], ablation: Any, *, progress: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fill `self.kl` [query, layer, head]; return the intact hidden [query, d_model] and every single-head
        ablated hidden [head index, query, d_model] (Sahara's first step when its eps equals Ships')."""
        spec = backend.spec
        heads = [(layer, head) for layer in range(spec.n_layers) for head in range(spec.n_heads)]
        self.kl = torch.zeros(len(prompts), spec.n_layers, spec.n_heads, dtype=torch.float64)
        base_hidden = torch.zeros(len(prompts), spec.d_model)
        ablated_hidden = torch.zeros(len(heads), len(prompts), spec.d_model)
        bar = tqdm(total=len(prompts) * len(heads), desc="ships", unit="ablation", disable=not progress)
        bases = [backend.last_token(_copies(prompt, 1)) for prompt in prompts]
        for index, base in enumerate(bases):
            base_hidden[index] = base.hidden[0].cpu()
        for index, rows, logits, hidden in self._ablated_rows(backend, prompts, [[h] for h in heads], ablation, bar):
            kl = ships_kl(bases[index].logits[0].cpu(), logits)
            for offset, row in enumerate(rows):
                layer, head = heads[row]
                self.kl[index, layer, head] = kl[offset]
            ablated_hidden[rows, index] = hidden
        bar.close()
        return base_hidden, ablated_hidden

    def _ablated_rows(self, backend: Backend, prompts: list[list[int]], head_sets: list[list[Head]], ablation: Any,
                      bar: tqdm):
        """Yield (prompt index, set indices, logits [rows, vocab], hidden [rows, d_model]) for every prompt under
        every head set. Where the prompts share a start (`shared_start`) and the backend can continue a cached
        prefix (`shared_prefix`), each pass computes that start once, ablated, and continues it with every prompt's
        own tokens: the same numbers (causal attention: the start never sees what follows), about half the work
        for chat prompts whose system part is half their length. Otherwise prompt by prompt (`_ablated_passes`)."""
        shared = shared_start(prompts) if self.params.share_prefix and self.params.reuse_prefix else 0
        if shared < MIN_SHARED_START or not hasattr(backend, "shared_prefix"):
            for index, prompt in enumerate(prompts):
                for rows, logits, hidden in self._ablated_passes(backend, prompt, head_sets, ablation, bar):
                    yield index, rows, logits, hidden
            return
        from headscope.circuits.ablation import row_ablations

        resids = [self._intact_resid(backend, prompt) for prompt in prompts]
        for indices in _passes(head_sets, self.params.rows_per_pass, by_layer=True):
            sets = [head_sets[i] for i in indices]
            first, n = _first_layer(sets), len(sets)
            with backend.intervene(*row_ablations(ablation, sets, backend.spec, phases=("forward",))):
                prefix = backend.shared_prefix(_copies(prompts[0][:shared], n),
                                               **_resume(resids[0], first, n, slice(0, shared)))
                for index, prompt in enumerate(prompts):
                    out = backend.last_token(_copies(prompt[shared:], n), prefix=prefix,
                                             **_resume(resids[index], first, n, slice(shared, None)))
                    bar.update(n)
                    yield index, indices, out.logits.cpu(), out.hidden.cpu()

    def _ablated_passes(self, backend: Backend, prompt: list[int], head_sets: list[list[Head]], ablation: Any,
                        bar: tqdm):
        """Yield (set indices, logits [rows, vocab], hidden [rows, d_model]) of `prompt` under each head set.

        With `reuse_prefix` a pass starts at the first layer its sets ablate, from the intact residual stream
        there (layers below are unchanged by it), so sets are grouped by that first layer, `rows_per_pass` at a
        time: a pass never carries a row through layers before its own ablation (mixing layers 0-6 in one
        64-row pass, as before, ran 5020 layer-rows per prompt on a 30x9 model instead of 4185). Each row's
        numbers do not depend on which rows share its pass. Without `reuse_prefix`: sets in order, full passes.
        """
        from headscope.circuits.ablation import row_ablations

        step = self.params.rows_per_pass
        resid = self._intact_resid(backend, prompt) if self.params.reuse_prefix else None
        for indices in _passes(head_sets, step, by_layer=resid is not None):
            sets = [head_sets[i] for i in indices]
            batch = _copies(prompt, len(sets))
            kwargs = _resume(resid, _first_layer(sets), len(sets)) if resid is not None else {}
            with backend.intervene(*row_ablations(ablation, sets, backend.spec, phases=("forward",))):
                out = backend.last_token(batch, **kwargs)
            bar.update(len(sets))
            yield indices, out.logits.cpu(), out.hidden.cpu()

    def _intact_resid(self, backend: Backend, prompt: list[int]) -> torch.Tensor:
        """[layer, 1, pos, d_model]: the residual stream entering every layer of the intact model on `prompt`
        (computed once per prompt: Ships and every Sahara step start their passes from it)."""
        key = tuple(prompt)
        if key not in self._resid:
            spec = backend.spec
            resid = torch.zeros(spec.n_layers, 1, len(prompt), spec.d_model)

            def keep(acts: LayerActivations) -> None:
                resid[acts.layer] = acts.resid_pre.cpu()

            backend.run(_copies(prompt, 1), Needs(resid_pre=True), keep)
            self._resid[key] = resid
        return self._resid[key]

    def mean_ships(self) -> torch.Tensor:
        return self.kl.mean(0)

    # --- Sahara ---------------------------------------------------------------------------------
    def search_sahara(self, backend: Backend, prompts: list[list[int]], ablation: Any, base_hidden: torch.Tensor,
                      *, single_hidden: torch.Tensor | None = None, progress: bool = False) -> None:
        """Greedy search for the head group that most rotates the top singular vector of the last-token
        representations; fills `sahara_group`, `sahara_trace` (angle after each step) and `single_angles`."""
        p = self.params
        spec = backend.spec
        every = [(layer, head) for layer in range(spec.n_layers) for head in range(spec.n_heads)]
        pool = self._ranked_heads()[: p.sahara_candidates] if p.sahara_candidates else every
        base_u = top_left_singular_vector(base_hidden)
        self.single_angles = torch.full((spec.n_layers, spec.n_heads), math.nan, dtype=torch.float64)
        for step in range(p.sahara_steps):
            candidates = [h for h in pool if h not in self.sahara_group]
            if not candidates:
                break
            if step == 0 and single_hidden is not None:
                hidden = single_hidden[[every.index(h) for h in candidates]]
            else:
                hidden = torch.zeros(len(candidates), len(prompts), spec.d_model)
                sets = [self.sahara_group + [h] for h in candidates]
                bar = tqdm(total=len(prompts) * len(sets), desc=f"sahara step {step + 1}", unit="ablation",
                           disable=not progress)
                for index, rows, _, ablated in self._ablated_rows(backend, prompts, sets, ablation, bar):
                    hidden[rows, index] = ablated
                bar.close()
            angles = [subspace_angle(base_u, hidden[i]) for i in range(len(candidates))]
            if step == 0:
                for (layer, head), angle in zip(candidates, angles):
                    self.single_angles[layer, head] = angle
            best = max(range(len(candidates)), key=lambda i: angles[i])  # ties: the first (lowest layer, head)
            self.sahara_group.append(candidates[best])
            self.sahara_trace.append(angles[best])

    def _ranked_heads(self) -> list[Head]:
        """Heads by mean Ships score, highest first (ties: lower layer, then head)."""
        mean = self.mean_ships()
        order = sorted(((-float(mean[l, h]), l, h) for l in range(mean.shape[0]) for h in range(mean.shape[1])))
        return [(l, h) for _, l, h in order]

    # --- causal check ---------------------------------------------------------------------------
    def run_check(self, backend: Backend, ablation: Any) -> None:
        from headscope.circuits.safety_check import refusal_ablation_check

        p = self.params
        held_out, _ = safety_probes.load_safety_requests(p.source, kind="harmful", split="heldout", n_samples=p.check_n_samples)
        if not held_out:
            raise HeadscopeError(f"suite {p.source} has no held-out harmful requests for the check: add split 'heldout' rows")
        ranked = self._ranked_heads()
        self.check = refusal_ablation_check(
            backend, [r.request for r in held_out], ranked[: p.check_top_k], ablation=ablation,
            random_sets=p.check_random_sets, seed=p.seed, exclude=ranked[: p.check_top_k],
            max_new_tokens=p.check_max_new_tokens, style=p.prompt_style,
        )

    # --- rows -----------------------------------------------------------------------------------
    def results(self) -> list[HeadValue]:
        if self.kl is None:
            raise HeadscopeError("the safety analyzer has not run: call run() first (headscope.scan does)")
        p = self.params
        n = self.kl.shape[0]
        mean = self.mean_ships()
        std = self.kl.std(0) if n > 1 else torch.zeros_like(mean)
        rank = {head: i + 1 for i, head in enumerate(self._ranked_heads())}
        flat = self.kl.flatten(1)  # [query, layer * head]
        k = min(p.top_k, flat.shape[1])
        in_top = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.topk(k, dim=1).indices, True)
        share = in_top.double().mean(0).reshape(mean.shape)
        member = {head: i + 1 for i, head in enumerate(self.sahara_group)}
        rank_table = torch.tensor([[rank[(l, h)] for h in range(mean.shape[1])] for l in range(mean.shape[0])],
                                  dtype=torch.float64)
        tables = {"ships_score": (mean, n), "ships_score_std": (std, n), "ships_rank": (rank_table, n),
                  f"ships_top{p.top_k}_share": (share, n)}
        if self.single_angles is not None:
            member_table = torch.zeros_like(rank_table)
            for (l, h), position in member.items():
                member_table[l, h] = position
            tables.update({"sahara_angle": (self.single_angles, n), "sahara_member": (member_table, n)})
        rows = head_rows(tables)
        model = {f"sahara_angle_step{i + 1}": angle for i, angle in enumerate(self.sahara_trace)}
        if self.check is not None:
            model.update(self.check.as_metrics())
        rows += [HeadValue(-1, -1, name, float(value), n) for name, value in model.items()]
        return rows

    def side_output(self) -> dict[str, Any] | None:
        if self.kl is None:
            return None
        p = self.params
        per_query = []
        for index, sample in enumerate(self.samples):
            flat = self.kl[index].flatten()
            top = flat.topk(min(p.top_k, flat.numel()))
            per_query.append({
                "id": sample.get("id"), "request": sample.get("request"),
                "top_heads": [{"head": f"{int(i) // self._spec.n_heads}-{int(i) % self._spec.n_heads}", "kl": float(v)}
                              for v, i in zip(top.values, top.indices)],
            })
        out: dict[str, Any] = {"ships_per_query": per_query,
                               "sahara": {"group": [f"{l}-{h}" for l, h in self.sahara_group],
                                          "angles": list(self.sahara_trace)}}
        if self.check is not None:
            out["check"] = self.check.as_dict()
        from headscope.side_outputs import finite

        return finite(out)


# Below this many shared tokens a separate prefix pass saves less than it costs.
MIN_SHARED_START = 8


def shared_start(prompts: list[list[int]]) -> int:
    """Length of the start every prompt shares (their longest common prefix), leaving each at least one token of
    its own; 0 for a single prompt."""
    if len(prompts) < 2:
        return 0
    length = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for prompt in prompts[1:]:
        length = next((i for i in range(length) if prompt[i] != first[i]), length)
    return max(length, 0)


def _first_layer(sets: list[list[Head]]) -> int:
    """The first layer a pass of `sets` ablates (0 when a set is empty: the intact row runs every layer)."""
    return min((layer for heads in sets for layer, _ in heads), default=0) if all(sets) else 0


def _resume(resid: torch.Tensor, first: int, rows: int, span: slice = slice(None)) -> dict[str, Any]:
    """`last_token` arguments that start `rows` rows at layer `first` from the intact residual stream `resid`
    [layer, 1, pos, d_model] at positions `span`; none for a pass that starts at layer 0."""
    return {"start_layer": first, "resid": resid[first][:, span].expand(rows, -1, -1)} if first else {}


def _passes(head_sets: list[list[Head]], step: int, *, by_layer: bool) -> list[list[int]]:
    """Indices of `head_sets` per forward pass: at most `step` each; with `by_layer`, one first-ablated layer per
    pass (an empty set counts as layer 0), in layer order; otherwise consecutive chunks."""
    if not by_layer:
        return [list(range(i, min(i + step, len(head_sets)))) for i in range(0, len(head_sets), step)]
    groups: dict[int, list[int]] = {}
    for index, heads in enumerate(head_sets):
        groups.setdefault(_first_layer([heads]), []).append(index)
    return [members[i : i + step] for _, members in sorted(groups.items()) for i in range(0, len(members), step)]


def _copies(prompt: list[int], n: int) -> ProbeBatch:
    """`n` identical rows of one prompt: no padding, so every row's last token is the prompt's last token."""
    ids = torch.tensor([list(prompt)] * n, dtype=torch.long)
    return ProbeBatch(ids, torch.ones_like(ids))

