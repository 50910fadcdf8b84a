"""`headscope.scan`: settings and analyzers in, atlas out (and on disk, with its side outputs, when `out` is given)."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from headscope.analyzers import Analyzer
from headscope.atlas import Atlas
from headscope.atomic import atomic_write_json
from headscope.engine import Backend
from headscope.engine.adopt import adopt_model, is_model_object
from headscope.errors import HeadscopeError
from headscope.models import DEFAULT_MODEL
from headscope.scanning.cache import PartCache, locked, parts_folder
from headscope.scanning.checks import check_numbers, check_out
from headscope.scanning.execute import Executor, execute_scan
from headscope.scanning.params import build_analyzers
from headscope.scanning.plan import check_accepts_prompts
from headscope.probes.user_texts import texts_from
from headscope.scanning.settings import DEFAULT_SHARD_SIZE, RunSettings, prefers_bridge
from headscope.side_outputs import side_output_path  # noqa: F401  (re-exported: headscope.scanning.side_output_path)


def scan(
    model: str | Any = DEFAULT_MODEL,
    analyzers: Sequence[str] | str = "classic",
    *,
    out: str | Path | None = None,
    backend: str = "auto",
    remote: bool = False,
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 8,
    seq_len: int | None = None,
    n_samples: int | None = None,
    seed: int | None = None,
    padding_side: str = "right",
    params: dict[str, dict[str, Any]] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    resume: bool = False,
    force: bool = False,
    ray_address: str | None = None,
    ray_workers: int | None = None,
    progress: bool = True,
    context_lengths: Sequence[int] | None = None,
    tokenizer: Any = None,
    prompts: Any = None,
    prompt_column: str | None = None,
) -> Atlas:
    """Scan `model` (embedded alias, local folder or hub id) and return its head atlas.

    With `out`, the atlas is also written there (atomically) with each analyzer's side output beside it, and
    finished tasks are kept in `<out>.parts/` until the atlas is written; `resume=True` reuses them after an
    interruption. `ray_address` ("local" or a cluster address) runs the tasks on Ray workers. `backend` is auto,
    transformer-lens or nnsight; `remote` runs the model on NDIF through nnsight.

    Args:
        model: embedded alias (`headscope models`), local Hugging Face folder or hub id; or a model you already
            loaded: a transformers `PreTrainedModel` (pass `tokenizer=`), a TransformerLens `TransformerBridge` or an
            nnsight `LanguageModel` (run in place on its own device and dtype; not with `resume` or Ray).
        analyzers: names or groups (`"classic"`, `["induction", "sinks"]`, `"classic,sinks"`).
        out: where to write the atlas (its exemplars and side outputs go beside it); None keeps it in memory.
        backend, remote, device, dtype: how the model runs.
        batch_size, padding_side, shard_size: batching; a shard is the unit of resume and of Ray tasks.
        seq_len, n_samples, seed, context_lengths: shared probe knobs, applied to analyzers that take them.
        params: per-analyzer overrides, e.g. `{"induction": {"exclude_bos": False}}`.
        resume: continue an interrupted scan from `<out>.parts/`.
        force: with `resume`, discard parts of a scan with other parameters instead of refusing.
        ray_address, ray_workers: run the tasks on Ray.
        progress: show progress bars.
        tokenizer: the tokenizer of a loaded `PreTrainedModel`.
        prompts: your own texts (a list of strings or a `datasets.Dataset`) in place of the built-in probes, for
            the analyzers whose definition holds on any text (sinks, previous-token, duplicate-token); the others
            are refused. Every text is used, cut at the analyzer's `seq_len`; rows record a hash of the texts.
        prompt_column: which column of a Dataset holds the texts (default: `text`, or its only text column).
    Returns:
        the Atlas: long rows per (model, analyzer, metric, layer, head), the metrics' declared meanings
        (`Atlas.metric_docs`) and every head's pattern on two short texts (`Atlas.exemplars`).
    Raises:
        HeadscopeError: a user mistake (unknown analyzer or model, bad parameter), with the fix in the message.
    """
    check_numbers(seq_len=seq_len, n_samples=n_samples, seed=seed, ray_workers=ray_workers)
    shared = {"seq_len": seq_len, "n_samples": n_samples, "seed": seed,
              "context_lengths": tuple(context_lengths) if context_lengths else None}
    built = build_analyzers(analyzers, shared=shared, params=params)
    texts = None
    if prompts is not None:
        texts = tuple(texts_from(prompts, column=prompt_column))
        check_accepts_prompts(built)
    elif prompt_column is not None:
        raise HeadscopeError("prompt_column= names a column of prompts=: pass prompts too")
    in_memory = is_model_object(model)
    if in_memory:
        if resume or ray_address is not None or remote:
            what = "--resume" if resume else "--ray" if ray_address is not None else "--remote"
            raise HeadscopeError(f"{what} needs the model by name or folder (it is reloaded elsewhere or later, and a "
                                 "loaded object may have changed): pass its path, or save_pretrained it first")
        settings = RunSettings(batch_size=batch_size, padding_side=padding_side, shard_size=shard_size)
    else:
        if tokenizer is not None:
            raise HeadscopeError("tokenizer= goes with a loaded PreTrainedModel: a model by name brings its own")
        settings = RunSettings(model=model, backend=backend, device=device, dtype=dtype, remote=remote,
                               batch_size=batch_size, padding_side=padding_side, shard_size=shard_size)
    if resume and out is None:
        raise HeadscopeError("--resume needs --out: the parts of an interrupted scan live next to its atlas")
    if remote and ray_address is not None:
        raise HeadscopeError("--remote and --ray exclude each other: NDIF already runs the model remotely")
    if force and not resume:
        raise HeadscopeError("--force goes with --resume: it discards the parts of a scan with other parameters")
    if out is not None:
        check_out(Path(out), resume=resume)
    with contextlib.ExitStack() as stack:
        loaded = stack.enter_context(adopt_model(model, tokenizer=tokenizer)) if in_memory else None
        if loaded is not None:
            settings = RunSettings.of_backend(loaded, batch_size=batch_size, padding_side=padding_side,
                                              shard_size=shard_size)
        return _scan(settings, built, progress, out, force, ray_address, ray_workers, loaded, texts)


def _scan(settings: RunSettings, built: list[Analyzer], progress: bool, out: str | Path | None, force: bool,
          ray_address: str | None, ray_workers: int | None, loaded: Backend | None, texts: tuple[str, ...] | None) -> Atlas:
    """Run the scan; with `out`, under the parts lock, write the atlas and its side outputs."""
    if out is None:
        return _run(settings, built, progress, None, ray_address, ray_workers, loaded, texts).atlas
    with locked(parts_folder(Path(out))):  # a second scan writing the same parts is refused here
        result = _run(settings, built, progress, (parts_folder(Path(out)), force), ray_address, ray_workers, loaded, texts)
        result.atlas.save(out)
        for name, payload in result.side_outputs.items():
            atomic_write_json(side_output_path(out, name), payload)
        result.cache.remove()  # type: ignore[union-attr]
    return result.atlas


def _run(settings: RunSettings, built: list[Analyzer], progress: bool, parts: tuple[Path, bool] | None,
         ray_address: str | None, ray_workers: int | None, backend: Backend | None = None,
         texts: tuple[str, ...] | None = None) -> _Result:
    """Load the model (unless `backend` is one the user holds), run the scan here or on Ray, with finished tasks
    cached in `parts` (folder, force); `texts` replace the probes of analyzers that accept prompts."""
    loaded = backend if backend is not None else settings.load(
        quiet=not progress, prefers_bridge=lambda architecture: prefers_bridge(built, architecture))
    if settings.backend == "auto" and not settings.remote:  # Ray workers load the backend `auto` chose here
        settings = dataclasses.replace(settings, backend=loaded.name)
    cache = PartCache(parts[0], settings.fingerprint(loaded), force=parts[1]) if parts else None
    executor: Executor | None = None
    if ray_address is not None:
        from headscope.scanning.ray_executor import RayExecutor

        executor = RayExecutor(ray_address, settings, workers=ray_workers)
    try:
        result = execute_scan(loaded, built, settings, progress=progress, cache=cache, executor=executor, prompts=texts)
    finally:
        if executor is not None:
            executor.close()
    return _Result(result.atlas, result.side_outputs, cache)


@dataclass
class _Result:
    atlas: Atlas
    side_outputs: dict[str, Any]
    cache: PartCache | None
