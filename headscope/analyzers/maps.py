"""MAPS: what each head does, read from its parameters alone (Elhelo & Geva 2024).

"Inferring Functionality of Attention Heads from their Parameters"; official code amitelhelo/MAPS,
`src/maps.py` (`MAPS.calc_relation_scores`, `ov_project`, `calc_relation_score`, `get_salient_operations`) and
`src/utils.py` (`get_w_vo`, `get_k`). Each head's vocabulary-to-vocabulary map is

    M = X · W_V W_O · W_U        X = W_E[src]                  (layer 0)
                                 X = MLP_0(ln2_0(W_E[src]))    (layers >= 1; no residual added)

with TransformerLens' unfolded weights (`from_pretrained_no_processing`): no final norm, no biases, and under
GQA the W_V of the head's KV group (`kv_head = head // group_size`). A relation given as (src, dst) pairs scores
the share of pairs whose dst is among the top-k entries of row M[src]; the suppression score applies the same
test to -M. k = 1 for copying relations and 10 otherwise (`get_k`; 3 and 25 for Llama-3).

M is |V| x |V| (49K x 49K for SmolLM2): only the rows of the sources are computed, in blocks, through the
rank-d_head factorisation (X W_V) (W_O W_U), and the top-k test needs only the target's rank in its row:
dst is in the top-k of a row iff fewer than k entries are strictly larger than M[src, dst].
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from headscope.analyzers.metrics import MetricDoc
from headscope.analyzers.base import DrivingAnalyzer, HeadValue, ScanContext, chosen_layers, head_rows
from headscope.engine import Backend, ModelSpec, ModelWeights
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite, load_suite_records


@dataclass(frozen=True)
class MapsParams:
    suite: str = "maps_relations"  # shipped suite in probes/, or a folder with data.jsonl (relation, src, dst)
    relations: tuple[str, ...] = ()  # empty: every relation in the suite
    layers: tuple[int, ...] = ()  # empty: every layer
    k: int = 10  # top-k of non-copying relations (get_k; 25 for Llama-3)
    k_copying: int = 1  # top-k of relations whose name contains "copying" (3 for Llama-3)
    apply_first_mlp: bool = True  # layers >= 1 read MLP_0(ln2_0(W_E)); the official code turns it off only for Llama-3.1-70B
    add_leading_space: bool = True
    min_pairs: int = 30  # the official code skips relations with fewer single-token pairs; we score and flag them
    block_size: int = 1024  # source rows of M computed at once
    n_salient: int = 10  # salient source tokens per head (get_salient_operations' k_salient_tokens); 0: none
    n_mappings: int = 5  # top mapped tokens per salient source (k_mappings)


@dataclass(frozen=True)
class Relation:
    """One relation's single-token pairs, as token ids."""

    name: str
    src: torch.Tensor  # [pair]
    dst: torch.Tensor  # [pair]
    k: int
    n_total: int  # pairs in the file, before the single-token filter


def relation_k(name: str, params: MapsParams) -> int:
    """`get_k`: copying relations use the stricter top-k."""
    return params.k_copying if "copying" in name else params.k


def tokenize_relations(records: list[dict], tokenizer: Any, params: MapsParams) -> list[Relation]:
    """`preprocess_dataset`: prepend a space, keep pairs where source and target are one token each."""
    grouped: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for record in records:
        grouped[str(record["relation"])].append((str(record["src"]), str(record["dst"])))
    wanted = list(params.relations) or list(grouped)
    unknown = [name for name in wanted if name not in grouped]
    if unknown:
        raise HeadscopeError(f"relation(s) {unknown} are not in suite '{params.suite}': use some of {', '.join(grouped)}")
    space = " " if params.add_leading_space else ""
    relations = []
    for name in wanted:
        src, dst = [], []
        for s, d in grouped[name]:
            s_ids = tokenizer.encode(space + s, add_special_tokens=False)
            d_ids = tokenizer.encode(space + d, add_special_tokens=False)
            if len(s_ids) == 1 and len(d_ids) == 1:
                src.append(s_ids[0])
                dst.append(d_ids[0])
        relations.append(Relation(name, torch.tensor(src, dtype=torch.long), torch.tensor(dst, dtype=torch.long),
                                  relation_k(name, params), len(grouped[name])))
    return relations


def relations_from_suite(suite: TokenSuite) -> list[Relation]:
    """The relations a MAPS suite was built from: its (src, dst) sequences grouped by the samples' relation."""
    relations = []
    for record in suite.details["relations"]:
        pairs = [seq for seq, sample in zip(suite.sequences, suite.samples) if sample["relation"] == record["name"]]
        src = torch.tensor([s for s, _ in pairs], dtype=torch.long)
        dst = torch.tensor([d for _, d in pairs], dtype=torch.long)
        relations.append(Relation(record["name"], src, dst, record["k"], record["n_total"]))
    return relations


def topk_hits(
    rows: torch.Tensor,
    unembed: torch.Tensor,
    pair_row: torch.Tensor,
    targets: torch.Tensor,
    k: torch.Tensor,
    *,
    block_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Is each pair's target in the top-k of its row of M (promotion), and in the top-k of -M (suppression)?

    rows [source, r] @ unembed [r, vocab] are the distinct source rows of M (a rank-r factorisation, e.g.
    X W_V and W_O W_U); pair i reads row pair_row[i], target targets[i] with its own k[i]. Rows are formed
    `block_size` at a time and never kept. dst is in the top-k iff M[src, dst] >= the row's k-th largest value
    (ties count as hits, where `torch.topk` in the official code would pick one arbitrarily).
    Returns two bool tensors [pair].
    """
    k_max = int(k.max())
    promote = torch.zeros(len(targets), dtype=torch.bool)
    suppress = torch.zeros(len(targets), dtype=torch.bool)
    order = torch.argsort(pair_row)
    sorted_rows = pair_row[order]
    for start in range(0, rows.shape[0], block_size):
        stop = min(start + block_size, rows.shape[0])
        lo, hi = torch.searchsorted(sorted_rows, torch.tensor([start, stop])).tolist()
        if lo == hi:
            continue
        pairs = order[lo:hi]
        logits = rows[start:stop] @ unembed  # [block, vocab]
        largest = logits.topk(k_max, dim=1).values  # [block, k_max], descending
        smallest = logits.topk(k_max, dim=1, largest=False).values  # ascending
        local = (pair_row[pairs] - start).to(logits.device)
        kth = (k[pairs] - 1).to(logits.device)
        value = logits[local, targets[pairs].to(logits.device)]
        promote[pairs] = (value >= largest[local, kth]).cpu()
        suppress[pairs] = (value <= smallest[local, kth]).cpu()
    return promote, suppress


class MapsAnalyzer(DrivingAnalyzer):
    """Static MAPS relation scores and salient mappings per head, from W_E, W_V, W_O, W_U (and MLP_0)."""

    name = "maps"
    Params = MapsParams
    metrics = ("maps_{relation}", "maps_{relation}_suppression",
               "maps_{relation}_n_pairs", "maps_{relation}_k", "maps_{relation}_enough_pairs")  # the last three: model-level
    description = "share of relation pairs (src, dst) whose dst is in the top-k of the head's vocabulary map row M[src]"
    metric_docs = {
        "maps_{relation}": MetricDoc("share of the relation's pairs the head's vocabulary map gets right (MAPS)"),
        "maps_{relation}_suppression": MetricDoc("share of the relation's pairs the head suppresses (MAPS)"),
    }

    def build_suite(self, ctx: ScanContext) -> TokenSuite:
        p = self.params
        if p.k < 1 or p.k_copying < 1:
            raise HeadscopeError("maps.k and maps.k_copying must be at least 1")
        if p.block_size < 1:
            raise HeadscopeError("maps.block_size must be at least 1")
        chosen_layers("maps.layers", p.layers, ctx.spec.n_layers)
        records, file_hash = load_suite_records(p.suite, required=("relation", "src", "dst"))
        relations = tokenize_relations(records, ctx.tokenizer, p)
        sequences, samples = [], []
        for relation in relations:
            for s, d in zip(relation.src.tolist(), relation.dst.tolist()):
                sequences.append([s, d])
                samples.append({"relation": relation.name})
        if not sequences:
            raise HeadscopeError(f"no relation pair of suite '{p.suite}' is a single token pair for this tokenizer: "
                                 "add single-word pairs or set maps.add_leading_space=false")
        details = {"file_hash": file_hash, "n_pairs": {r.name: len(r.src) for r in relations},
                   "relations": [{"name": r.name, "k": r.k, "n_total": r.n_total} for r in relations]}
        return TokenSuite(f"{p.suite}", sequences, samples, details)

    def reset(self, spec: ModelSpec) -> None:
        """Empty results (`run` starts with this)."""
        self._spec = spec
        self._promote: dict[str, torch.Tensor] = {}
        self._suppress: dict[str, torch.Tensor] = {}
        self.salient: list[dict[str, Any]] = []

    def layers(self) -> list[int]:
        chosen = {int(layer) for layer in self.params.layers}  # `--param maps.layers=0,3` arrives as strings
        return sorted(chosen) if chosen else list(range(self._spec.n_layers))

    def run(self, backend: Backend, suite: TokenSuite, ctx: ScanContext) -> None:
        """Compute every head's relation scores (and salient mappings) from the backend's weights."""
        self.reset(backend.spec)
        self._relations = relations_from_suite(suite)
        self._tokenizer = ctx.tokenizer
        self.run_on_weights(backend.weights(), progress=ctx.progress)

    def run_on_weights(self, weights: ModelWeights, *, progress: bool = False) -> None:
        spec, p = self._spec, self.params
        relations = self._relations
        W_E, W_U = weights.W_E, weights.W_U
        src = torch.cat([r.src for r in relations])
        dst = torch.cat([r.dst for r in relations])
        ks = torch.cat([torch.full((len(r.src),), r.k, dtype=torch.long) for r in relations])
        which = torch.cat([torch.full((len(r.src),), i, dtype=torch.long) for i, r in enumerate(relations)])
        n_rel = len(relations)
        promote = torch.zeros(spec.n_layers, spec.n_heads, n_rel, dtype=torch.float64)
        suppress = torch.zeros_like(promote)
        counts = torch.bincount(which, minlength=n_rel).clamp(min=1).to(torch.float64)

        sources, pair_row = torch.unique(src, return_inverse=True)  # each distinct source row of M is formed once
        raw = W_E[sources.to(W_E.device)]  # [source, d_model]
        mlp = weights.first_mlp(raw) if p.apply_first_mlp else raw
        layers = self.layers()
        d_model, vocab = W_U.shape
        for layer in tqdm(layers, desc="maps", disable=not progress, unit="layer"):
            X = raw if layer == 0 else mlp  # the official code keeps layer 0 on raw embeddings
            W_V, W_O = weights.W_V(layer), weights.W_O(layer)  # [kv, d_model, d_head], [head, d_head, d_model]
            XV = {g: X @ W_V[g] for g in range(W_V.shape[0])}  # [source, d_head] per KV group
            for head in range(spec.n_heads):
                xv = XV[spec.kv_head(head)]
                d_head = xv.shape[1]
                # cheapest association of (X W_V) W_O W_U for these many rows
                n = len(sources)
                if d_head * d_model * vocab + n * d_head * vocab < n * d_model * vocab:
                    left, right = xv, W_O[head] @ W_U  # [source, d_head], [d_head, vocab]
                else:
                    left, right = xv @ W_O[head], W_U  # [source, d_model], [d_model, vocab]
                hit, miss = topk_hits(left, right, pair_row, dst, ks, block_size=p.block_size)
                promote[layer, head] = torch.zeros(n_rel, dtype=torch.float64).index_add_(0, which, hit.double()) / counts
                suppress[layer, head] = torch.zeros(n_rel, dtype=torch.float64).index_add_(0, which, miss.double()) / counts
        self._scores = (promote, suppress)
        if p.n_salient > 0:
            self.salient = salient_mappings(weights, layers, spec, p, self._tokenizer, progress=progress)

    def results(self) -> list[HeadValue]:
        promote, suppress = self._scores
        rows = []
        for index, relation in enumerate(self._relations):
            n = len(relation.src)
            rows += head_rows({f"maps_{relation.name}": (promote[:, :, index], n),
                               f"maps_{relation.name}_suppression": (suppress[:, :, index], n)}, layers=self.layers())
            # model-level: single-token pairs kept (n_samples: pairs in the file); below min_pairs the paper would skip it
            rows.append(HeadValue(-1, -1, f"maps_{relation.name}_n_pairs", float(n), relation.n_total))
            rows.append(HeadValue(-1, -1, f"maps_{relation.name}_k", float(relation.k), n))
            rows.append(HeadValue(-1, -1, f"maps_{relation.name}_enough_pairs", float(n >= self.params.min_pairs), n))
        return rows

    def side_output(self) -> dict[str, Any] | None:
        """Each head's most salient mappings (readable tokens): written beside the atlas as `<atlas>.maps.json`."""
        if not self.salient:
            return None
        return {"analyzer": self.name, "params": json_params(self.params), "heads": self.salient}


def json_params(params: MapsParams) -> dict[str, Any]:
    import dataclasses

    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()}


def salient_mappings(
    weights: ModelWeights, layers: list[int], spec: ModelSpec, params: MapsParams, tokenizer: Any, *, progress: bool = False
) -> list[dict[str, Any]]:
    """`get_salient_operations`: the source tokens whose embedding the head's OV amplifies most, and their top maps.

    Amplification = ||x W_V W_O|| / ||x|| over the whole vocabulary (special tokens left out), with x the
    embedding (layer 0) or MLP_0 applied to it (layers >= 1), as in the relation scores. The norm uses the
    d_head x d_head Gram matrix of W_O, so no [vocab, d_model] product per head is formed.
    """
    W_E, W_U = weights.W_E, weights.W_U
    vocab = min(W_E.shape[0], W_U.shape[1])
    special = torch.tensor(sorted(i for i in (getattr(tokenizer, "all_special_ids", None) or []) if i < vocab), dtype=torch.long)
    raw = W_E[:vocab]
    mlp_all = None
    if params.apply_first_mlp and any(layer > 0 for layer in layers):
        mlp_all = torch.cat([weights.first_mlp(raw[i : i + 4096]) for i in range(0, vocab, 4096)])
    out = []
    for layer in tqdm(layers, desc="maps salient", disable=not progress, unit="layer"):
        X = raw if (layer == 0 or mlp_all is None) else mlp_all  # [vocab, d_model]
        norms = X.norm(dim=-1).clamp(min=1e-12)
        W_V, W_O = weights.W_V(layer), weights.W_O(layer)
        for g in range(W_V.shape[0]):
            xv = X @ W_V[g]  # [vocab, d_head]
            for head in range(spec.n_heads):
                if spec.kv_head(head) != g:
                    continue
                gram = W_O[head] @ W_O[head].T  # [d_head, d_head]
                out_norm = ((xv @ gram) * xv).sum(-1).clamp(min=0).sqrt()
                amplification = out_norm / norms
                if len(special):
                    amplification[special] = -math.inf
                top = amplification.topk(params.n_salient)
                mapped = (xv[top.indices] @ W_O[head]) @ W_U  # [n_salient, vocab]
                maps = mapped.topk(params.n_mappings, dim=-1)
                out.append({
                    "layer": layer,
                    "head": head,
                    "mappings": [
                        {
                            "src": tokenizer.decode([int(s)]),
                            "src_id": int(s),
                            "amplification": float(a),
                            "top": [tokenizer.decode([int(t)]) for t in row],
                            "top_ids": [int(t) for t in row],
                        }
                        for s, a, row in zip(top.indices, top.values, maps.indices)
                    ],
                })
    out.sort(key=lambda entry: (entry["layer"], entry["head"]))
    return out
