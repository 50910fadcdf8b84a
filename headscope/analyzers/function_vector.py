"""Function-vector heads (Todd et al. 2024, "Function Vectors in Large Language Models"; ericwtodd/function_vectors).

For each in-context-learning task (word pairs in probes/function_vector_tasks, written by us):
- mean activation ā[l, h]: each head's output z (the output projection's input, per query head) at the last token,
  averaged over clean n-shot prompts `Q: x\\nA: y\\n\\n ... Q: xq\\nA:` (`extract_utils.get_mean_head_activations`);
- corrupted prompts: the same kind of prompt with the demonstrations' labels shuffled among themselves
  (`word_pairs_to_prompt_data(shuffle_labels=True)`);
- causal indirect effect CIE(l, h) = p(first token of " " + target) with head (l, h) set to ā[l, h] at the last
  token only, minus p without the patch (`compute_indirect_effect.activation_replacement_per_class_intervention`).
AIE = mean CIE over a task's corrupted prompts; `fv_aie` averages the tasks' AIEs (the paper's universal head set).
The function vector is FV = Σ over the top-k heads of ā[l, h] W_O[l, h] (`extract_utils.compute_universal_function_vector`).
A causal check patches the top-k heads together (and random sets of k) at the last token of the corrupted prompts
and of zero-shot prompts `Q: xq\\nA:`, and reports the target probability and top-1 accuracy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from headscope.analyzers.base import DrivingAnalyzer, HeadValue, ScanContext, head_rows
from headscope.analyzers.metrics import MetricDoc
from headscope.engine import Backend, Head, pad_sequences
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite
from headscope.probes.files import load_suite_records

DEFAULT_TASKS = "antonym,capitalize,country_capital,english_french,present_past,singular_plural"


@dataclass(frozen=True)
class FunctionVectorParams:
    source: str = "function_vector_tasks"  # shipped suite or a local folder of {"task", "input", "output"} records
    tasks: str = DEFAULT_TASKS  # comma list of tasks in the suite (official sweep: these six)
    n_shots: int = 5  # demonstrations per prompt (official: 10)
    n_mean_prompts: int = 12  # clean prompts per task for the mean head outputs (official: 25 to 100)
    n_cie_prompts: int = 6  # corrupted prompts per task for the indirect effect (official: 25)
    filter_correct: bool = True  # keep queries the unpatched model answers right in the clean prompt (official)
    train_fraction: float = 0.7  # demonstrations from this share of a task's pairs, queries from the rest (official)
    top_k: int = 10  # heads in the function vector and the causal check (paper: |A| = 10)
    check_random_sets: int = 3  # random k-head sets in the causal check (0: no check)
    rows_per_pass: int = 135  # single-head patches of one prompt per forward pass (one token per row)
    seed: int = 42


def prompt_text(demos: list[tuple[str, str]], query: str) -> str:
    """The official template: `Q: x\\nA: y\\n\\n` per demonstration, ending `Q: xq\\nA:`."""
    return "".join(f"Q: {x}\nA: {y}\n\n" for x, y in demos) + f"Q: {query}\nA:"


def prompt_ids(tokenizer: Any, text: str, bos_token_id: int | None) -> list[int]:
    """Tokens of `text` with the model's BOS prepended exactly once (no chat template)."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return [bos_token_id] + ids if bos_token_id is not None and (not ids or ids[0] != bos_token_id) else ids


def target_id(tokenizer: Any, target: str) -> int:
    """The first token of " " + target: the only answer token the paper scores."""
    return int(tokenizer(" " + target, add_special_tokens=False)["input_ids"][0])


class FunctionVectorAnalyzer(DrivingAnalyzer):
    name = "function-vector"
    Params = FunctionVectorParams
    metrics = ("fv_aie", "fv_cie_{task}", "fv_rank", "fv_in_top_k",
               "fv_check_{quantity}_{prompt}_{patch}", "fv_norm", "fv_n_prompts_{task}")
    description = "causal indirect effect of each head's mean ICL output on label-shuffled prompts (Todd et al. 2024)"
    metric_docs = {
        "fv_aie": MetricDoc("average indirect effect over tasks: rise of p(answer) when the head's mean ICL output is "
                            "patched into label-shuffled prompts (Todd et al.)"),
        "fv_cie_{task}": MetricDoc("mean indirect effect of the head on one task's label-shuffled prompts"),
        "fv_rank": MetricDoc("rank by fv_aie (1 = strongest function-vector head)", "lower"),
        "fv_in_top_k": MetricDoc("1 if the head is among the top-k heads that make the function vector", "flag"),
    }

    @property
    def edits(self) -> frozenset[str]:
        return frozenset({"z"})  # head means patched into the output projection's input

    # --- suite ------------------------------------------------------------------------------
    def build_suite(self, ctx: ScanContext) -> TokenSuite:
        p = self._checked_params()
        records, digest = load_suite_records(p.source, required=("task", "input", "output"))
        tasks = [t.strip() for t in p.tasks.split(",") if t.strip()]
        known = sorted({str(r["task"]) for r in records})
        missing = [t for t in tasks if t not in known]
        if not tasks or missing:
            raise HeadscopeError(f"unknown function-vector task(s) {missing or '(none)'}: use some of {', '.join(known)}")
        bos = ctx.spec.bos_token_id
        sequences: list[list[int]] = []
        samples: list[dict[str, Any]] = []
        for index, task in enumerate(tasks):
            pairs = [(str(r["input"]), str(r["output"])) for r in records if r["task"] == task]
            rng = random.Random(p.seed + index)
            rng.shuffle(pairs)
            cut = int(round(len(pairs) * p.train_fraction))
            train, queries = pairs[:cut], pairs[cut:]
            if len(train) < p.n_shots or not queries:
                raise HeadscopeError(f"task '{task}' has {len(pairs)} pairs: it needs more than n_shots / train_fraction")
            for _ in range(p.n_mean_prompts):  # clean prompts: queries from the train pairs too (official)
                demos = rng.sample(train, p.n_shots + 1)
                query = demos.pop()
                sequences.append(prompt_ids(ctx.tokenizer, prompt_text(demos, query[0]), bos))
                samples.append({"task": task, "role": "mean"})
            n_candidates = p.n_cie_prompts * (3 if p.filter_correct else 1)
            for _ in range(n_candidates):
                demos = rng.sample(train, p.n_shots)
                query = rng.choice(queries)
                labels = [y for _, y in demos]
                shuffled = labels[:]
                while len(set(labels)) > 1 and shuffled == labels:
                    rng.shuffle(shuffled)
                corrupted = list(zip([x for x, _ in demos], shuffled))
                target = target_id(ctx.tokenizer, query[1])
                sequences.append(prompt_ids(ctx.tokenizer, prompt_text(corrupted, query[0]), bos))
                samples.append({"task": task, "role": "corrupted", "target": target, "query": query[0], "answer": query[1],
                                "clean": prompt_ids(ctx.tokenizer, prompt_text(demos, query[0]), bos),
                                "zero_shot": prompt_ids(ctx.tokenizer, prompt_text([], query[0]), bos)})
        details = {"data_hash": digest, "tasks": tasks}
        return TokenSuite(f"{p.source}:{','.join(tasks)}:{p.n_shots}shot", sequences, samples, details)

    def _checked_params(self) -> FunctionVectorParams:
        p = self.params
        if p.n_shots < 1 or p.n_mean_prompts < 1 or p.n_cie_prompts < 1 or p.top_k < 1 or p.rows_per_pass < 1:
            raise HeadscopeError("n_shots, n_mean_prompts, n_cie_prompts, top_k and rows_per_pass must be >= 1")
        if not 0 < p.train_fraction < 1 or p.check_random_sets < 0:
            raise HeadscopeError("train_fraction must lie in (0, 1) and check_random_sets be >= 0")
        return p

    # --- run ------------------------------------------------------------------------------------
    def run(self, backend: Backend, suite: TokenSuite, ctx: ScanContext) -> None:
        from headscope.circuits.patching import mean_heads

        p = self._checked_params()
        spec = backend.spec
        if p.top_k > spec.n_layers * spec.n_heads:
            raise HeadscopeError(f"top_k {p.top_k} exceeds the model's {spec.n_layers * spec.n_heads} heads")
        self.tasks: list[str] = list(suite.details["tasks"])
        self.cie = {task: [] for task in self.tasks}  # task -> list of [layer, head] CIE tensors
        self.means: dict[str, torch.Tensor] = {}
        self.kept: dict[str, list[dict[str, Any]]] = {}
        heads = [(layer, head) for layer in range(spec.n_layers) for head in range(spec.n_heads)]
        total = len(self.tasks) * p.n_cie_prompts  # at most: filter_correct may keep fewer
        bar = tqdm(total=total * len(heads), desc="function-vector", unit="patch", disable=not ctx.progress)
        for task in self.tasks:
            clean = [seq for seq, s in zip(suite.sequences, suite.samples) if s["task"] == task and s["role"] == "mean"]
            batches = [pad_sequences(clean[i : i + ctx.batch_size], ctx.pad_token_id) for i in range(0, len(clean), ctx.batch_size)]
            self.means[task] = mean_heads(backend, batches)
            candidates = [{**s, "ids": seq} for seq, s in zip(suite.sequences, suite.samples)
                          if s["task"] == task and s["role"] == "corrupted"]
            kept = []
            for candidate in candidates:  # with filter_correct (official): queries answered right in the clean prompt
                if len(kept) == p.n_cie_prompts:
                    break
                if not p.filter_correct or self._clean_answer(backend, candidate) == candidate["target"]:
                    kept.append(candidate)
            for sample in kept:
                self.cie[task].append(self._cie(backend, sample["ids"], sample["target"], self.means[task], heads, bar))
            self.kept[task] = kept
        bar.close()
        if not any(self.cie.values()):
            raise HeadscopeError("no query was answered right by the clean prompts: set filter_correct=false or use easier tasks")
        self.aie = torch.stack([torch.stack(v).mean(0) for v in self.cie.values() if v]).mean(0)  # [layer, head]
        order = self.aie.flatten().argsort(descending=True)
        self.top = [(int(i) // spec.n_heads, int(i) % spec.n_heads) for i in order[: p.top_k]]
        self.fv = {task: self.function_vector(backend, self.means[task], self.top) for task in self.tasks}
        self.check = self._check(backend, spec) if p.check_random_sets else {}

    @staticmethod
    def _clean_answer(backend: Backend, sample: dict[str, Any]) -> int:
        """The unpatched model's top-1 token at the end of the sample's clean prompt."""
        return int(backend.last_token_rows(sample["clean"], 1).logits[0].argmax())

    def _cie(self, backend: Backend, prompt: list[int], target: int, means: torch.Tensor, heads: list[Head],
             bar: tqdm) -> torch.Tensor:
        """[layer, head]: p(target) with the head's mean patched at the last token, minus p unpatched.

        Row i of a pass patches heads[i]; the prompt's prefix runs once (`last_token_rows`: a patch at the last
        token cannot change earlier positions), so a pass costs one token per row."""
        from headscope.circuits.patching import HeadPatch, patch_heads

        spec = backend.spec
        base = torch.softmax(backend.last_token_rows(prompt, 1).logits[0].double(), -1)[target].cpu()
        out = torch.zeros(spec.n_layers, spec.n_heads, dtype=torch.float64)
        step = self.params.rows_per_pass
        for start in range(0, len(heads), step):
            chunk = heads[start : start + step]
            patches = [HeadPatch(l, h, means[l, h], rows=(i,)) for i, (l, h) in enumerate(chunk)]
            with patch_heads(backend, patches, positions=_only_position(len(chunk))):
                logits = backend.last_token_rows(prompt, len(chunk)).logits
            probs = torch.softmax(logits.double(), -1)[:, target].cpu()
            for i, (l, h) in enumerate(chunk):
                out[l, h] = probs[i] - base
            bar.update(len(chunk))
        return out

    @staticmethod
    def function_vector(backend: Backend, means: torch.Tensor, heads: list[Head]) -> torch.Tensor:
        """[d_model]: Σ over `heads` of the head's mean output through its slice of the output projection."""
        weights = backend.weights()
        fv = torch.zeros(backend.spec.d_model, dtype=torch.float64)
        for layer, head in heads:
            fv += (means[layer, head].double() @ weights.W_O(layer)[head].double().cpu())
        return fv.float()

    def _check(self, backend: Backend, spec: Any) -> dict[str, float]:
        """p(target) and top-1 accuracy with the top-k heads (or random k-head sets) patched together at the last
        token, on the corrupted and on zero-shot prompts."""
        from headscope.circuits.ablation import random_head_sets
        from headscope.circuits.patching import HeadPatch, patch_heads

        p = self.params
        randoms = random_head_sets(spec.n_layers, spec.n_heads, p.top_k, p.check_random_sets, seed=p.seed, exclude=self.top)
        sets = {"none": [], "top": self.top, **{f"random{i}": s for i, s in enumerate(randoms)}}
        results: dict[str, list[tuple[float, float]]] = {}
        for task, kept in self.kept.items():
            means = self.means[task]
            for sample in kept:
                for prompt_kind, ids in (("corrupted", sample["ids"]), ("zeroshot", sample["zero_shot"])):
                    patches = [HeadPatch(l, h, means[l, h], rows=(row,)) for row, chosen in enumerate(sets.values())
                               for l, h in chosen]
                    with patch_heads(backend, patches, positions=_only_position(len(sets))):
                        logits = backend.last_token_rows(ids, len(sets)).logits.double().cpu()
                    probs = torch.softmax(logits, -1)[:, sample["target"]]
                    correct = (logits.argmax(-1) == sample["target"]).double()
                    for row, name in enumerate(sets):
                        results.setdefault(f"{prompt_kind}|{name}", []).append((float(probs[row]), float(correct[row])))
        out: dict[str, float] = {}
        for prompt_kind in ("corrupted", "zeroshot"):
            for name in ("none", "top"):
                values = torch.tensor(results[f"{prompt_kind}|{name}"])
                out[f"fv_check_prob_{prompt_kind}_{name if name == 'none' else f'top{p.top_k}'}"] = float(values[:, 0].mean())
                out[f"fv_check_acc_{prompt_kind}_{name if name == 'none' else f'top{p.top_k}'}"] = float(values[:, 1].mean())
            rand = torch.tensor([results[f"{prompt_kind}|random{i}"] for i in range(len(randoms))])  # [set, prompt, 2]
            out[f"fv_check_prob_{prompt_kind}_random{p.top_k}"] = float(rand[..., 0].mean())
            out[f"fv_check_acc_{prompt_kind}_random{p.top_k}"] = float(rand[..., 1].mean())
        return out

    # --- rows -----------------------------------------------------------------------------------
    def results(self) -> list[HeadValue]:
        n_total = sum(len(v) for v in self.cie.values())
        rank = torch.empty_like(self.aie)
        rank.view(-1)[self.aie.flatten().argsort(descending=True)] = torch.arange(1, self.aie.numel() + 1, dtype=rank.dtype)
        member = torch.zeros_like(self.aie)
        for layer, head in self.top:
            member[layer, head] = 1.0
        tables = {"fv_aie": (self.aie, n_total), "fv_rank": (rank, n_total), "fv_in_top_k": (member, n_total)}
        for task, values in self.cie.items():
            if values:
                tables[f"fv_cie_{task}"] = (torch.stack(values).mean(0), len(values))
        rows = head_rows(tables)
        rows += [HeadValue(-1, -1, f"fv_n_prompts_{task}", float(len(v)), len(v)) for task, v in self.cie.items()]
        fv_norm = torch.stack(list(self.fv.values())).mean(0).norm()
        rows.append(HeadValue(-1, -1, "fv_norm", float(fv_norm), n_total))
        rows += [HeadValue(-1, -1, metric, value, n_total) for metric, value in self.check.items()]
        return rows

    def side_output(self) -> dict[str, Any]:
        return {
            "top_heads": [list(h) for h in self.top],
            "tasks": self.tasks,
            "n_prompts": {task: len(v) for task, v in self.cie.items()},
            "function_vectors": {task: [round(float(x), 6) for x in fv] for task, fv in self.fv.items()},
            "check": self.check,
        }


def _only_position(n_rows: int) -> torch.Tensor:
    """[rows, 1] zeros: under `last_token_rows` the patched pass holds the last token only (its position 0)."""
    return torch.zeros(n_rows, 1, dtype=torch.long)
