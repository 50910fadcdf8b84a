"""Select-and-copy heads: heads whose query at the answer position picks the correct option of an MCQA prompt.

Tulchinskii et al. 2024, "Listening to the Wise Few: Select-and-Copy Attention Heads for Multiple-Choice QA"
(arXiv 2410.02343). The paper's code is not public; the one public code of this line of work (yhn112/QK-resoning,
`HLE_MCQA_qwen3_14b.ipynb`) reads the QK-score from forward hooks on `q_proj` / `k_proj`: the projections' outputs,
before any q/k norm and the rotary embedding, as a plain dot product (no 1/sqrt(d) scale). That is the primary
score here (docs/analyzers/select_and_copy.md says why and what each variant reads):

  qk         s_i(l, h) = q_proj_(l,h)[last] . k_proj_(l, kv(h))[t_i]          (kv(h) = h // group_size, GQA)
  qk_rope    the same with q and k as the attention sees them (after q/k norm and rotary), / sqrt(d_head)
  qk_norope  the same after the q/k norm, before the rotary, / sqrt(d_head) (= qk's argmax without a q/k norm)
  attn       a_i(l, h) = A_(l,h)[last, t_i]

with `last` the final prompt token (after "Answer:") and t_i the newline token ending option i's line. A head
predicts argmax_i of its score; its accuracy is the share of items where that is the correct option. Heads are
ranked on a validation split and the best head's accuracy is reported on the held-out split, next to the model's
own answer (argmax of the option-letter logits at the last position). `qk_rope` and `attn` share their argmax
(softmax is monotonic within a row), so their accuracies coincide; their margins differ.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from dataclasses import dataclass

import torch

from headscope.analyzers.metrics import MetricDoc
from headscope.analyzers.base import HeadValue, ScanContext, StreamingAnalyzer, head_rows
from headscope.engine import LayerActivations, Needs, ProbeBatch
from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite
from headscope.probes.mcqa import LETTERS, MCQAItem, build_prompt, load_mcqa

SCORES = ("qk", "qk_rope", "qk_norope", "attn")
# score -> (query kind, key kind, scaled by 1/sqrt(d_head))
QK_SCORES = {"qk": ("q_proj", "k_proj", False), "qk_rope": ("q", "k", True), "qk_norope": ("q_raw", "k_raw", True)}


@dataclass(frozen=True)
class SelectAndCopyParams:
    suite: str = "mcqa_synthetic"  # shipped suite, a folder, or hub:<dataset>[:<config>[:<split>]]
    n_samples: int = 0  # items used (0 = all)
    shots: tuple[int, ...] = (0, 3)  # zero- and few-shot variants, each scored separately
    val_fraction: float = 0.5  # items used to pick the best head; the rest is the held-out split
    seed: int = 0  # split and demonstration draw
    chat_template: bool = True  # wrap prompts in the tokenizer's chat template when it has one


def _suffix(shots: int) -> str:
    return f"_{shots}shot"


class SelectAndCopyAnalyzer(StreamingAnalyzer):
    """Per head: accuracy and margin of the QK-score (with / without rotary) and attention score on MCQA items."""

    name = "select-and-copy"
    Params = SelectAndCopyParams
    metrics = (
        *(f"{score}_{kind}_{{shots}}shot" for score in SCORES for kind in ("accuracy", "val_accuracy", "test_accuracy", "margin")),
        # model-level rows
        *(f"best_{score}_{kind}_{{shots}}shot" for score in SCORES for kind in ("layer", "head", "val_accuracy", "test_accuracy")),
        *(f"best_{score}_share_{{letter}}_{{shots}}shot" for score in SCORES),
        "baseline_accuracy_{shots}shot", "baseline_val_accuracy_{shots}shot", "baseline_test_accuracy_{shots}shot",
        "baseline_share_{letter}_{shots}shot", "answer_share_A_{shots}shot", "n_items",
    )
    description = "MCQA: share of items where the head's QK-score / attention at the answer token picks the right option"
    metric_docs = {
        "qk_accuracy_{shots}shot": MetricDoc("share of MCQA items where the head's QK score (q/k projection outputs, "
                                             "as the paper's code) picks the right option"),
        "qk_rope_accuracy_{shots}shot": MetricDoc("as qk_accuracy, with q and k as the attention sees them (after "
                                                  "q/k norm and rotary): equals attn_accuracy"),
        "qk_norope_accuracy_{shots}shot": MetricDoc("as qk_accuracy, with q and k after a q/k norm, before the rotary"),
        "attn_accuracy_{shots}shot": MetricDoc("share of MCQA items where the head's attention picks the right option"),
        "baseline_accuracy_{shots}shot": MetricDoc("the model's own MCQA accuracy"),
    }
    needs = Needs(pattern=True, rows_only=True, q=True, k=True, q_raw=True, k_raw=True, q_proj=True, k_proj=True, logits=True)

    # -- suite -----------------------------------------------------------------------------------------------
    def build_suite(self, ctx: ScanContext) -> TokenSuite:
        p = self.params
        if not 0.0 < p.val_fraction < 1.0:
            raise HeadscopeError(f"select-and-copy.val_fraction={p.val_fraction} must lie strictly between 0 and 1")
        if not p.shots or any(k < 0 for k in p.shots):
            raise HeadscopeError("select-and-copy.shots must list non-negative shot counts, e.g. 0,3")
        items, digest = load_mcqa(p.suite, limit=p.n_samples or None)
        if len(items) < 2:
            raise HeadscopeError(f"MCQA suite '{p.suite}' has {len(items)} item(s): use at least 2 (one per split)")
        if max(p.shots) >= len(items):
            raise HeadscopeError(f"{max(p.shots)} shots need more than {len(items)} items: lower select-and-copy.shots")
        self._option_letter_ids(ctx.tokenizer, max(len(i.choices) for i in items))  # fail before the model runs
        use_template = p.chat_template and bool(getattr(ctx.tokenizer, "chat_template", None))
        sequences, samples = [], []
        for shots in p.shots:
            for index, item in enumerate(items):
                demos = self._demos(items, index, shots)
                prompt = build_prompt(ctx.tokenizer, item, demos, chat_template=use_template, bos_token_id=ctx.spec.bos_token_id)
                if ctx.spec.n_ctx and len(prompt.input_ids) > ctx.spec.n_ctx:
                    raise HeadscopeError(f"an MCQA prompt has {len(prompt.input_ids)} tokens, over the model's {ctx.spec.n_ctx}: use fewer shots")
                sequences.append(prompt.input_ids)
                samples.append({"item": index, "shots": shots, "answer": item.answer,
                                "options": prompt.option_positions, "query_positions": [prompt.query_position]})
        details = {"suite": p.suite, "records_hash": digest, "n_items": len(items), "shots": list(p.shots),
                   "chat_template": use_template, "option_token": "newline ending the option line"}
        self.suite_details = details  # provenance for params_json on the driver only; workers never need it
        return TokenSuite(f"mcqa:{p.suite}", sequences, samples, details)

    def params_json(self) -> str:
        """The parameters plus what was applied (chat template used or not, records hash), for the atlas."""
        params = dataclasses.asdict(self.params)
        params["applied"] = getattr(self, "suite_details", None)
        return json.dumps(params, sort_keys=True, separators=(",", ":"))

    def _demos(self, items: list[MCQAItem], index: int, shots: int) -> list[MCQAItem]:
        """`shots` other items of the suite, drawn per item from the seed (never the item itself)."""
        if shots == 0:
            return []
        pool = [i for i in range(len(items)) if i != index]
        rng = random.Random(f"{self.params.seed}:{index}")
        return [items[i] for i in rng.sample(pool, shots)]

    @staticmethod
    def _option_letter_ids(tokenizer, n_letters: int) -> list[list[int]]:
        """Token ids that spell each option letter as the next token ("A" and " A" where single tokens)."""
        out = []
        for letter in LETTERS[:n_letters]:
            ids = {enc[0] for enc in (tokenizer.encode(v, add_special_tokens=False) for v in (letter, " " + letter)) if len(enc) == 1}
            if not ids:
                raise HeadscopeError(f"option letter '{letter}' is not a single token for this tokenizer: the baseline cannot be read")
            out.append(sorted(ids))
        return out

    # -- reduction -------------------------------------------------------------------------------------------
    def start(self, ctx: ScanContext, suite: TokenSuite) -> None:
        self._spec = ctx.spec
        answers = {s["item"]: s["answer"] for s in suite.samples}  # item index -> correct option
        self._answers = [answers[i] for i in range(len(answers))]
        self._letter_ids = self._option_letter_ids(ctx.tokenizer, max(len(s["options"]) for s in suite.samples))
        self._scores: dict[str, dict[tuple[int, int], torch.Tensor]] = {s: {} for s in SCORES}  # (shots, item) -> [L, H, opt]
        self._baseline: dict[tuple[int, int], torch.Tensor] = {}  # (shots, item) -> [opt] letter logits

    def observe(self, batch: ProbeBatch, acts: LayerActivations) -> None:
        spec = self._spec
        kv_of_head = torch.arange(spec.n_heads, device=acts.q.device) // spec.group_size  # GQA: kv = h // group_size
        first_real = batch.valid.float().argmax(dim=1).tolist()  # left-padding offset per row
        scale = 1.0 / math.sqrt(spec.d_head)
        for row, sample in enumerate(batch.samples):
            last = sample["query_positions"][0] + first_real[row]
            options = torch.tensor(sample["options"], device=acts.q.device) + first_real[row]
            key = (sample["shots"], sample["item"])
            for score, (q_kind, k_kind, scaled) in QK_SCORES.items():
                q_last = getattr(acts, q_kind)[row, :, last]  # [head, d_head]
                k_options = getattr(acts, k_kind)[row][kv_of_head][:, options]  # [head, option, d_head]
                values = torch.einsum("hd,hod->ho", q_last, k_options)
                self._store(score, key, acts.layer, values * scale if scaled else values)
            pattern_row = acts.pattern[row, :, 0]  # [head, key]: the engine kept only the last row
            self._store("attn", key, acts.layer, pattern_row[:, options])

    def _store(self, score: str, key: tuple[int, int], layer: int, values: torch.Tensor) -> None:
        table = self._scores[score]
        if key not in table:
            table[key] = torch.full((self._spec.n_layers, self._spec.n_heads, values.shape[-1]), float("nan"), dtype=torch.float64)
        table[key][layer] = values.detach().to(torch.float64).cpu()

    def observe_logits(self, batch: ProbeBatch, logits: torch.Tensor) -> None:
        first_real = batch.valid.float().argmax(dim=1).tolist()
        for row, sample in enumerate(batch.samples):
            last_logits = logits[row, sample["query_positions"][0] + first_real[row]]
            n_options = len(sample["options"])
            per_letter = [last_logits[ids].max() for ids in self._letter_ids[:n_options]]
            self._baseline[(sample["shots"], sample["item"])] = torch.stack(per_letter).detach().double().cpu()

    # -- rows ------------------------------------------------------------------------------------------------
    def item_scores(self, score: str, shots: int) -> list[torch.Tensor]:
        """Per item (suite order), the [layer, head, option] scores: what the tests compare with a reference."""
        return [self._scores[score][(shots, i)] for i in range(len(self._answers))]

    def split(self) -> tuple[list[int], list[int]]:
        """Validation and held-out item indices (seeded permutation; the same for every shot count)."""
        order = list(range(len(self._answers)))
        random.Random(self.params.seed).shuffle(order)
        n_val = min(max(1, round(self.params.val_fraction * len(order))), len(order) - 1)
        return sorted(order[:n_val]), sorted(order[n_val:])

    def results(self) -> list[HeadValue]:
        L, H = self._spec.n_layers, self._spec.n_heads
        val, test = self.split()
        answers = torch.tensor(self._answers)
        rows: list[HeadValue] = []
        for shots in self.params.shots:
            sfx = _suffix(shots)
            for score in SCORES:
                stacked = self.item_scores(score, shots)
                correct = torch.stack([s.argmax(-1) == a for s, a in zip(stacked, answers)]).double()  # [item, L, H]
                margin = torch.stack([_margin(s) for s in stacked])  # [item, L, H]
                acc, acc_val, acc_test = correct.mean(0), correct[val].mean(0), correct[test].mean(0)
                mean_margin = margin.mean(0)
                rows += head_rows({
                    f"{score}_accuracy{sfx}": (acc, len(answers)),
                    f"{score}_val_accuracy{sfx}": (acc_val, len(val)),
                    f"{score}_test_accuracy{sfx}": (acc_test, len(test)),
                    f"{score}_margin{sfx}": (mean_margin, len(answers)),
                })
                # best head: highest validation accuracy, ties broken by validation margin, then by index
                flat_val, flat_margin = acc_val.flatten(), margin[val].mean(0).flatten()
                best = max(range(L * H), key=lambda i: (float(flat_val[i]), float(flat_margin[i]), -i))
                bl, bh = divmod(best, H)
                preds = torch.stack([s[bl, bh].argmax(-1) for s in stacked])
                rows += [
                    HeadValue(-1, -1, f"best_{score}_layer{sfx}", float(bl), len(val)),
                    HeadValue(-1, -1, f"best_{score}_head{sfx}", float(bh), len(val)),
                    HeadValue(-1, -1, f"best_{score}_val_accuracy{sfx}", float(acc_val[bl, bh]), len(val)),
                    HeadValue(-1, -1, f"best_{score}_test_accuracy{sfx}", float(acc_test[bl, bh]), len(test)),
                ]
                rows += _letter_shares(f"best_{score}", preds, sfx)
            baseline = [self._baseline[(shots, i)] for i in range(len(self._answers))]
            base_pred = torch.stack([b.argmax() for b in baseline])
            base_correct = (base_pred == answers).double()
            rows += [
                HeadValue(-1, -1, f"baseline_accuracy{sfx}", float(base_correct.mean()), len(answers)),
                HeadValue(-1, -1, f"baseline_val_accuracy{sfx}", float(base_correct[val].mean()), len(val)),
                HeadValue(-1, -1, f"baseline_test_accuracy{sfx}", float(base_correct[test].mean()), len(test)),
            ]
            rows += _letter_shares("baseline", base_pred, sfx)
            rows.append(HeadValue(-1, -1, f"answer_share_A{sfx}", float((answers == 0).double().mean()), len(answers)))
        rows.append(HeadValue(-1, -1, "n_items", float(len(self._answers)), len(self._answers)))
        return rows


def _margin(scores: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 score over options: [..., option] -> [...]."""
    top = scores.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


def _letter_shares(prefix: str, predictions: torch.Tensor, sfx: str) -> list[HeadValue]:
    """Share of items predicted as each letter: the position bias of a predictor."""
    n = len(predictions)
    top = int(predictions.max()) + 1 if n else 0
    return [HeadValue(-1, -1, f"{prefix}_share_{LETTERS[i]}{sfx}", float((predictions == i).double().mean()), n)
            for i in range(max(top, 4))]
