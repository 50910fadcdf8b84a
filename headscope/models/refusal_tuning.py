"""Refusal tuning: teach a small instruct model to refuse harmful requests and still answer harmless ones.

Safety-head attribution (Zhou et al. 2024, Ships/Sahara) needs a model that refuses; SmolLM2-135M-Instruct
does not. A short supervised fine-tune on (request, response) pairs, refusals for harmful requests and
short helpful answers for harmless ones, gives it that behaviour. The loss covers the response tokens only
(prompt tokens are labelled -100), so the model learns what to answer, not to model the requests.

Default recipe, chosen on SmolLM2-135M-Instruct among the variants listed in docs/models/refusal.md: 60 steps of 8,
lr 1e-4, decoder layers only (the tied embedding stays the base's). It refuses 90% of held-out harmful requests
and answers 60% of held-out harmless ones (base: 15% / 92.5%); more steps refuse more and answer less.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from headscope.atomic import atomic_folder
from headscope.errors import HeadscopeError
from headscope.probes.request_prompts import end_of_turn_id

TUNING_FORMAT = 1  # bump when the procedure below changes what a recipe produces: cached builds are redone

Example = tuple[str, str]  # (request, response)


@dataclass(frozen=True)
class TuningRecipe:
    """Everything that decides the tuned weights (besides the data and the base): hashed into the cache key."""

    base: str = "smollm2-135m-instruct"  # embedded alias tuned
    suite: str = "safety_requests"  # probe suite whose split "train" is the data
    steps: int = 60
    learning_rate: float = 1e-4
    batch_size: int = 8
    seed: int = 0
    max_tokens: int = 128  # prompt + response, right-truncated
    trainable: tuple[str, ...] = ("layers.",)  # substrings of parameter names that train; () = all
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    shuffle_unit: int = 1  # consecutive examples shuffled together: 2 keeps a matched harmful/harmless pair in a batch
    warmup_steps: int = 0  # linear warmup, then linear decay to 0 when `decay`
    decay: bool = False


@dataclass
class TuningResult:
    path: Path
    recipe_hash: str
    losses: list[float]  # per step, mean over the batch's response tokens
    seconds: float


def examples_hash(examples: Sequence[Example]) -> str:
    """Content hash of the training pairs, in order (the order changes the shuffling, hence the weights)."""
    payload = json.dumps([[request, response] for request, response in examples], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def recipe_hash(recipe: TuningRecipe, data_hash: str, base_revision: str = "") -> str:
    """Stable key of a build: the recipe, the data's content hash, the base's revision, the procedure's format."""
    payload = json.dumps(
        {"format": TUNING_FORMAT, "recipe": asdict(recipe), "data": data_hash, "base": base_revision}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def encode_example(tokenizer: Any, request: str, response: str, max_tokens: int) -> tuple[list[int], list[int]]:
    """(input ids, labels): the chat prompt, then the response and the end-of-turn token; prompt labels are -100."""
    from headscope.probes.request_prompts import request_prompt_ids

    prompt = request_prompt_ids(tokenizer, request, style="chat")
    answer = list(tokenizer(response, add_special_tokens=False)["input_ids"]) + [end_of_turn_id(tokenizer)]
    ids = (prompt + answer)[:max_tokens]
    labels = ([-100] * len(prompt) + answer)[:max_tokens]
    return ids, labels


def collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch; padding is masked out of attention and loss."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, row_labels) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(ids)] = torch.tensor(row_labels)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def _encode_all(tokenizer: Any, examples: Sequence[Example], max_tokens: int) -> list[tuple[list[int], list[int]]]:
    rows = [encode_example(tokenizer, request, response, max_tokens) for request, response in examples]
    rows = [row for row in rows if any(label != -100 for label in row[1])]  # prompt alone filled max_tokens
    if not rows:
        raise HeadscopeError(f"no training example keeps a response token within max_tokens={max_tokens}: raise it")
    return rows


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad if pad is not None else 0)


def response_loss(model: Any, tokenizer: Any, examples: Sequence[Example], *, max_tokens: int = 128) -> float:
    """Mean cross-entropy over the response tokens of `examples` (what tuning minimises), without gradients."""
    import torch

    rows = _encode_all(tokenizer, examples, max_tokens)
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            batch = collate([row], _pad_id(tokenizer))
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch).loss) * n
            count += n
    return total / count


def _batches(n_rows: int, recipe: TuningRecipe) -> list[list[int]]:
    """Row indices for each step: epochs of a seeded shuffle of units of `shuffle_unit` consecutive rows, cut
    into batches of `batch_size` rows."""
    rng = random.Random(recipe.seed)
    unit = max(1, recipe.shuffle_unit)
    units = [list(range(start, min(start + unit, n_rows))) for start in range(0, n_rows, unit)]
    order: list[int] = []
    while len(order) < recipe.steps * recipe.batch_size:
        rng.shuffle(units)
        order.extend(row for chunk in units for row in chunk)
    return [order[i * recipe.batch_size : (i + 1) * recipe.batch_size] for i in range(recipe.steps)]


def _lr_factor(step: int, recipe: TuningRecipe) -> float:
    if step < recipe.warmup_steps:
        return (step + 1) / recipe.warmup_steps
    if not recipe.decay:
        return 1.0
    return max(0.0, (recipe.steps - step) / max(1, recipe.steps - recipe.warmup_steps))


def _select_trainable(model: Any, patterns: tuple[str, ...]) -> list[Any]:
    params = []
    for name, param in model.named_parameters():
        param.requires_grad_(not patterns or any(pattern in name for pattern in patterns))
        if param.requires_grad:
            params.append(param)
    if not params:
        raise HeadscopeError(f"no parameter name contains any of {patterns}: fix the recipe's `trainable`")
    return params


def tune_for_refusal(
    base_path: str | Path,
    out_dir: str | Path,
    examples: Sequence[Example],
    recipe: TuningRecipe,
    *,
    progress: bool = True,
    base_revision: str = "",
) -> TuningResult:
    """Fine-tune the model in `base_path` on `examples` and save it (with its tokenizer) to `out_dir`.

    Atomic: the model is written to a staging folder next to `out_dir` and moved into place with its
    `.complete` marker (holding the recipe hash); an interruption leaves no partial `out_dir`.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if recipe.steps < 1 or recipe.batch_size < 1:
        raise HeadscopeError("a tuning recipe needs steps >= 1 and batch_size >= 1")
    if not examples:
        raise HeadscopeError("no training examples: refusal tuning needs (request, response) pairs")
    out_dir = Path(out_dir)
    key = recipe_hash(recipe, examples_hash(examples), base_revision)
    started = time.perf_counter()
    torch.manual_seed(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    rows = _encode_all(tokenizer, examples, recipe.max_tokens)
    params = _select_trainable(model, recipe.trainable)
    optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, recipe))
    model.train()
    losses: list[float] = []
    bar = tqdm(_batches(len(rows), recipe), desc="refusal tuning", unit="step", disable=not progress)
    for indices in bar:
        batch = collate([rows[i] for i in indices], _pad_id(tokenizer))
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, recipe.max_grad_norm)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    _save_atomically(model, tokenizer, out_dir, key)
    return TuningResult(out_dir, key, losses, time.perf_counter() - started)


def _save_atomically(model: Any, tokenizer: Any, out_dir: Path, key: str) -> None:
    def fill(staging: Path) -> None:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / ".complete").write_text(key + "\n")

    atomic_folder(out_dir, fill)


def built_hash(out_dir: str | Path) -> str | None:
    """The recipe hash a finished build in `out_dir` was made with, or None when there is none."""
    marker = Path(out_dir) / ".complete"
    if not (marker.is_file() and (Path(out_dir) / "config.json").is_file()):
        return None
    return marker.read_text().strip() or None
