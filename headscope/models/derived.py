"""Build derived aliases (an embedded model fine-tuned by a recipe) into the cache, once per recipe.

The cache folder's `.complete` marker holds the recipe hash (recipe + training data + base revision); a
folder built with another hash is rebuilt, so changing the recipe or the data never serves stale weights.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from headscope.models.embedded import cache_root, ensure_embedded, package_version
from headscope.models.refusal_tuning import Example, built_hash, examples_hash, recipe_hash, tune_for_refusal
from headscope.models.registry import EMBEDDED_MODELS, DerivedModel


def derived_dir(model: DerivedModel) -> Path:
    return cache_root() / model.alias


def base_revision(model: DerivedModel) -> str:
    base = EMBEDDED_MODELS[model.base]
    return f"{base.distribution}=={package_version(base)}"


def training_examples(model: DerivedModel) -> list[Example]:
    """(request, response) pairs of the recipe's suite, split "train": harmful ones answered by refusals."""
    from headscope.probes.safety import load_safety_requests

    records, _ = load_safety_requests(model.recipe.suite, split="train")
    return [(record.request, record.response) for record in records]


def expected_hash(model: DerivedModel) -> str:
    return recipe_hash(model.recipe, examples_hash(training_examples(model)), base_revision(model))


def derived_state(model: DerivedModel) -> str:
    """"cached", "stale" (built with another recipe hash: rebuilt on use) or "missing"."""
    built = built_hash(derived_dir(model))
    if built is None:
        return "missing"
    return "cached" if built == expected_hash(model) else "stale"


def derived_revision(model: DerivedModel, key: str) -> str:
    return f"{base_revision(model)}+{model.tag}-{key[:8]}"


def ensure_derived(model: DerivedModel, *, quiet: bool = False) -> tuple[Path, str]:
    """The cached folder of `model` and its revision, tuning the base first if needed (atomic, see tune_for_refusal)."""
    target = derived_dir(model)
    examples = training_examples(model)
    key = recipe_hash(model.recipe, examples_hash(examples), base_revision(model))
    if built_hash(target) == key:
        return target, derived_revision(model, key)
    base_path = ensure_embedded(EMBEDDED_MODELS[model.base], quiet=quiet)  # raises the base's install hint
    if not quiet:
        print(
            f"headscope: tuning {model.base} into {model.alias} in {target} "
            f"(once, ~{model.build_minutes} min on 2 CPU cores) ...",
            file=sys.stderr,
            flush=True,
        )
    started = time.perf_counter()
    tune_for_refusal(base_path, target, examples, model.recipe, progress=not quiet, base_revision=base_revision(model))
    if not quiet:
        print(f"headscope: cached in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return target, derived_revision(model, key)
