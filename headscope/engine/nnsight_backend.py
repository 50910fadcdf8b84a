"""nnsight backend: any Hugging Face causal LM, traced with nnsight's operation-level `.source` access.

Where the tensors come from (transformers 5.x attention modules, all architectures alike): every attention
module's `forward` calls an *attention interface* function `attention_interface(self, query, key, value,
mask, ...) -> (attn_output, attn_weights)`. nnsight's `.source` exposes that call's inputs and output
(operation `attention_interface_<n>`, the last binding of that name, i.e. the call), so per layer we read:

  q        = query argument   [batch, head, pos, d_head]     after the rotary embedding (and q-norm)
  k, v     = key/value args   [batch, kv_head, pos, d_head]  k after rotary; before GQA repetition
  pattern  = attn_weights     [batch, head, query, key]      post-softmax; eager attention only
  z        = attn_output      [batch, pos, head, d_head] -> [batch, head, pos, d_head]: reshaped, it is
             exactly the input of the output projection (o_proj / c_proj / dense)
  q_raw, k_raw = inputs of `apply_rotary_pos_emb` (equal to q/k when the model has no rotary embedding)
  q_proj, k_proj = outputs of the `self.q_proj` / `self.k_proj` calls, split into heads: before a q/k norm and the
             rotary (equal to q_raw/k_raw for fused qkv projections, which no q/k-norm model has)
  resid_pre = the decoder layer's first input

Only the eager attention function returns weights: sdpa and flash attention return `None`, so a model
loaded with them cannot serve attention patterns (we load with `attn_implementation="eager"`, and say so
when asked for a pattern otherwise).

The trace body runs interleaved with the forward pass (nnsight >= 0.5): `on_layer` is called inside the
body right after each layer's attention call, while the model waits, and the tensors are dropped before
the next layer runs. Nothing is cached across layers, as in the TransformerLens backend.

Remote execution (NDIF, `remote=True`): the body runs on the server, where our Python callbacks cannot;
the requested (row-selected) tensors of every layer are saved there and streamed back, then handed to
`on_layer` locally, layer by layer. That holds all layers' requested tensors in memory at once: use
`rows_only` analyzers remotely. The API key comes from `NDIF_API_KEY`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import torch

from headscope.engine.activations import LayerActivations, Needs
from headscope.engine.backend import (
    DecodeResult,
    LastTokenOutput,
    LayerCallback,
    check_resume_inputs,
    last_real_positions,
    pad_to_keys,
    select_rows,
)
from headscope.engine import hf_cache
from headscope.engine import attention_window
from headscope.engine.batch import ProbeBatch
from headscope.engine.hf_interventions import hooked_interventions, query_norm_is_heads_first
from headscope.engine.intervention import Intervention
from headscope.engine.spec import ModelSpec
from headscope.engine.util import first_int, quiet_loading
from headscope.errors import HeadscopeError

if TYPE_CHECKING:
    from headscope.engine.weights import ModelWeights

ATTENTION_CALL = "attention_interface_"
ROTARY_CALL = "apply_rotary_pos_emb_0"
PROJECTION_CALLS = ("self_q_proj_0", "self_k_proj_0")
NDIF_KEY_VARIABLE = "NDIF_API_KEY"


@dataclass(frozen=True)
class LayerSites:
    """Where one decoder layer's tensors are read: module paths and `.source` operation names."""

    layer_path: str  # e.g. "model.layers.3"
    attention_path: str  # e.g. "model.layers.3.self_attn"
    attention_call: str  # e.g. "attention_interface_1"
    rotary_call: str | None  # "apply_rotary_pos_emb_0", or None without rotary (GPT-2)
    # ("self_q_proj_0", "self_k_proj_0") where the attention has separate q/k projections, else None (fused qkv)
    projection_calls: tuple[str, str] | None = None
    head_dim: int = 0  # the attention's head_dim: projection outputs [batch, pos, heads * d] are split by it


# Where each tensor kind of TENSOR_KINDS is read: a call site of the layer and the tensor's index in that site's
# positional inputs (or outputs). Sites are listed in execution order, the order a trace must visit them in.
SITES_IN_ORDER = ("layer_input", "projection_output", "rotary_input", "attention_input", "attention_output")
KIND_READS: dict[str, tuple[str, int]] = {
    "resid_pre": ("layer_input", 0),
    "q_raw": ("rotary_input", 0),
    "k_raw": ("rotary_input", 1),
    "q": ("attention_input", 1),
    "k": ("attention_input", 2),
    "v": ("attention_input", 3),
    "z": ("attention_output", 0),  # [batch, pos, head, d_head]: transposed to the table's layout
    "pattern": ("attention_output", 1),
    "q_proj": ("projection_output", 0),  # [batch, pos, head * d_head]: split to the table's layout
    "k_proj": ("projection_output", 1),
}
# Per-key kinds: while decoding, the attention call sees the whole cache; only this step's positions are handed over.
PER_KEY_KINDS = frozenset({"k", "k_raw", "v", "k_proj"})


def read_plan(kinds: Sequence[str], has_rotary: bool, has_projections: bool = False) -> list[tuple[str, str, int]]:
    """(kind, site, index) for each kind, in execution order. Without a rotary call, the raw q/k are the
    attention call's q/k (nothing rotates them). Without separate q/k projections (fused qkv: GPT-2,
    GPT-NeoX, Phi-3; none of them has a q/k norm), the projected q/k are the raw q/k."""
    plan = []
    for kind in kinds:
        site, index = KIND_READS[kind]
        if site == "projection_output" and not has_projections:
            kind_read = kind.replace("_proj", "_raw")
            site, index = KIND_READS[kind_read]
        else:
            kind_read = kind
        if site == "rotary_input" and not has_rotary:
            site, index = KIND_READS[kind_read.removesuffix("_raw")]
        plan.append((kind, site, index))
    return sorted(plan, key=lambda item: SITES_IN_ORDER.index(item[1]))


class NNsightBackend:
    """Runs probes through an nnsight `TransformersModel` wrapping the Hugging Face model itself."""

    name = "nnsight"

    def __init__(
        self,
        path: Path | str,
        *,
        model_id: str,
        revision: str,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        remote: bool = False,
        attn_implementation: str = "eager",
        loaded: Any = None,  # an nnsight LanguageModel the user already holds (headscope.engine.adopt): used as is
    ) -> None:
        try:
            from nnsight import TransformersModel
        except ImportError:
            raise HeadscopeError("the nnsight backend needs nnsight 0.8: run `pip install 'nnsight>=0.8.1,<0.9'`") from None

        self.model_id = model_id
        self.revision = revision
        self.dtype = dtype
        self.device = torch.device(device)
        self.remote = remote
        self.attn_implementation = attn_implementation
        if remote:
            require_ndif_key()
        kwargs: dict[str, Any] = dict(task="text-generation", attn_implementation=attn_implementation, dtype=dtype)
        if not remote and self.device.type != "cpu":
            kwargs["device_map"] = str(self.device)
        if remote and revision not in ("", "main", "local"):
            kwargs["revision"] = revision  # the hub revision NDIF should run
        try:
            with quiet_loading():
                self.model = loaded if loaded is not None else TransformersModel(str(path), dispatch=not remote, **kwargs)
        except (ValueError, OSError, KeyError) as err:
            raise HeadscopeError(
                f"nnsight cannot load the model at {path} ({str(err).splitlines()[0][:160]}): "
                "is it a Hugging Face causal LM folder or hub id?"
            ) from None
        self.tokenizer = self.model.tokenizer
        config = self.model.config
        self.text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.spec = spec_from_config(config, self.text_config, self.tokenizer)
        self.sites = find_layer_sites(self.model, self.spec.n_layers)
        self._phase = "forward"  # which Intervention phase the running pass is in

    # -- interventions ---------------------------------------------------------

    @contextlib.contextmanager
    def intervene(self, *interventions: Intervention) -> Iterator[None]:
        """Apply `interventions` to every run/decode inside the block (torch hooks, removed on exit)."""
        if self.remote and interventions:
            raise HeadscopeError("interventions are not available with --remote: run them on a local copy of the model")
        bad = [layer for item in interventions for layer in item.layers if not 0 <= layer < self.spec.n_layers]
        if bad:
            raise HeadscopeError(f"intervention layers {bad} are outside 0..{self.spec.n_layers - 1}: fix the head list")
        interventions, windows = attention_window.split_windows(interventions)
        for window in windows:
            window.check(self.spec)
        modules = [self.model._module.get_submodule(site.attention_path) for site in self.sites]
        if getattr(self, "_query_norm_heads_first", None) is None:
            self._query_norm_heads_first = query_norm_is_heads_first(self.model._module, modules[0], self.spec.n_heads)
        with hooked_interventions(modules, self.spec, interventions, lambda: self._phase,
                                  query_norm_heads_first=self._query_norm_heads_first), \
                attention_window.mask_hooks(modules, self.spec, windows, lambda: self._phase):
            outer = list(getattr(self, "_windows", []))
            self._windows = outer + windows
            try:
                yield
            finally:
                self._windows = outer

    @contextlib.contextmanager
    def _in_phase(self, phase: str) -> Iterator[None]:
        before, self._phase = self._phase, phase
        try:
            yield
        finally:
            self._phase = before

    # -- one forward ---------------------------------------------------------

    def weights(self) -> "ModelWeights":
        """The wrapped HF model's weights (same reader as the TransformerLens backend; used by MAPS)."""
        if getattr(self, "_weights", None) is None:
            from headscope.engine.weights import weights_from_hf

            if self.remote:
                raise HeadscopeError("weights are not available with --remote: run MAPS on a local copy of the model")
            spec = self.spec
            self._weights = weights_from_hf(self.model._module, n_heads=spec.n_heads, n_kv_heads=spec.n_kv_heads,
                                            d_head=spec.d_head)
        return self._weights

    def run(self, batch: ProbeBatch, needs: Needs, on_layer: LayerCallback) -> torch.Tensor | None:
        query_positions = batch.query_positions.to(self.device) if batch.query_positions is not None else None
        if needs.rows_only and query_positions is None:
            raise ValueError("Needs.rows_only requires ProbeBatch.query_positions")
        self._check_pattern(needs)
        attention_window.refuse_padding(batch.attention_mask, getattr(self, "_windows", []))
        encoding = self._encoding(batch.input_ids, batch.attention_mask)
        if self.remote:
            return self._run_remote(encoding, needs, on_layer, query_positions)
        rows = query_positions if needs.rows_only else None
        if not needs.logits:  # [batch, pos, vocab] logits nobody reads: 6 GB at 32K tokens for a 49K vocabulary
            encoding.update(hf_cache.last_logits_only(self.model._module))
        with torch.inference_mode(), self._in_phase("forward"), self._attention_for(needs):
            return self._trace(encoding, needs, on_layer, rows, step=None)

    @contextlib.contextmanager
    def _attention_for(self, needs: Needs) -> Iterator[None]:
        """Run a pass that reads no attention weights with sdpa attention, restoring the loaded implementation after.

        Why: eager attention materialises [batch, head, T, T] scores in every layer; sdpa does not (faster, and O(T)
        memory). q/k/v are the attention call's inputs, computed before the call and identical either way (rotary,
        q/k norm included); z, the call's output, equals eager's up to float rounding on every real position (pad
        query rows, which attend to no key, may differ: analyzers ignore them). See `sdpa_serves`.
        """
        hf_model = self.model._module
        if needs.pattern or self.attn_implementation != "eager" or getattr(self, "_windows", None) \
                or not sdpa_serves(hf_model, [hf_model.get_submodule(s.attention_path) for s in self.sites[:1]]):
            yield
            return
        saved = _attention_settings(hf_model)
        hf_model.set_attn_implementation("sdpa")
        try:
            yield
        finally:
            for config, implementation in saved:
                config._attn_implementation_internal = implementation

    def last_token(self, batch: ProbeBatch, *, start_layer: int = 0, resid: torch.Tensor | None = None,
                   prefix: "SharedPrefix | None" = None) -> LastTokenOutput:
        """Logits and final hidden state at each row's last real token (an untraced Hugging Face forward).

        A pre-hook on the unembedding keeps only the last rows, so the [batch, pos, vocab] logits are never made.
        `start_layer` > 0: the decoder layers before it are swapped for pass-throughs and `resid` is fed into it.
        `prefix` (from `shared_prefix`, same rows and start layer): `batch` holds only the tokens after it.
        """
        if self.remote:
            raise HeadscopeError("last-token passes are not available with --remote: run the analyzer locally")
        check_resume_inputs(batch, start_layer, resid, self.spec.n_layers)
        attention_window.refuse_padding(batch.attention_mask, getattr(self, "_windows", []))
        if prefix is not None:
            prefix.check(batch, start_layer)
        with self._attention_for(Needs()), self._skipping_layers(start_layer, resid):  # no weights read: sdpa
            return self._last_token(batch, prefix)

    def shared_prefix(self, batch: ProbeBatch, *, start_layer: int = 0, resid: torch.Tensor | None = None) -> "SharedPrefix":
        """The KV cache of `batch` (rows of a prefix several prompts share) under the active "forward"
        interventions, for `last_token(suffix, prefix=...)` to continue from: prompts that start alike compute
        their common start once per set of ablations instead of once per prompt. Layers below `start_layer` are
        skipped as in `last_token` (the continuation skips them too, so their entries are placeholders)."""
        if self.remote:
            raise HeadscopeError("shared prefixes are not available with --remote: run the analyzer locally")
        check_resume_inputs(batch, start_layer, resid, self.spec.n_layers)
        if getattr(self, "_windows", None) or not bool(batch.attention_mask.bool().all()):
            raise HeadscopeError("a shared prefix needs unpadded rows and no attention window: run last_token instead")
        hf_model = self.model._module
        cache = hf_cache.new_cache(hf_model.config)
        encoding = {**self._encoding(batch.input_ids, batch.attention_mask), **hf_cache.cache_kwargs(hf_model, cache),
                    **hf_cache.last_logits_only(hf_model)}
        with torch.inference_mode(), self._in_phase("forward"), self._attention_for(Needs()), \
                self._skipping_layers(start_layer, resid):
            hf_model(**encoding)
        rows, length = batch.input_ids.shape
        spec = self.spec
        hf_cache.hold_skipped_layers(cache, range(start_layer), (rows, spec.n_kv_heads, length, spec.d_head), self.dtype)
        hf_cache.expect_cache_length(cache, length)
        return SharedPrefix(cache, length, rows, start_layer)

    @contextlib.contextmanager
    def _skipping_layers(self, start_layer: int, resid: torch.Tensor | None) -> Iterator[None]:
        """Layers before `start_layer` become pass-throughs (indices kept: models look up per-layer settings by
        index); layer `start_layer` receives `resid` as its hidden states. Restored on exit; 0: nothing skipped."""
        if not start_layer:
            yield
            return
        hf_model = self.model._module
        list_path, _, _ = self.sites[0].layer_path.rpartition(".")
        parent_path, _, attribute = list_path.rpartition(".")
        parent = hf_model.get_submodule(parent_path) if parent_path else hf_model
        original = getattr(parent, attribute)
        fed = resid.to(self.device, self.dtype)

        def feed(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if args:
                return (fed, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": fed}

        handle = original[start_layer].register_forward_pre_hook(feed, with_kwargs=True)
        setattr(parent, attribute, torch.nn.ModuleList([_PassThrough() for _ in range(start_layer)] + list(original)[start_layer:]))
        try:
            yield
        finally:
            setattr(parent, attribute, original)
            handle.remove()

    def _last_token(self, batch: ProbeBatch, prefix: "SharedPrefix | None" = None) -> LastTokenOutput:
        hf_model = self.model._module
        encoding = self._encoding(batch.input_ids, batch.attention_mask)
        if prefix is not None:  # the batch continues the cached prefix: positions and mask count it
            rows, length = batch.input_ids.shape
            encoding["attention_mask"] = torch.ones(rows, prefix.length + length, dtype=torch.long, device=self.device)
            encoding["position_ids"] = torch.arange(prefix.length, prefix.length + length, device=self.device).expand(rows, -1)
            encoding.update(hf_cache.cache_kwargs(hf_model, prefix.cache))
        last = last_real_positions(batch.attention_mask).to(self.device)
        captured: dict[str, torch.Tensor] = {}

        def keep_last(module: torch.nn.Module, args: tuple) -> tuple:
            resid = args[0]  # [batch, pos, d_model]
            rows = resid[torch.arange(resid.shape[0], device=resid.device), last]
            captured["hidden"] = rows.detach().float()
            return (rows[:, None, :], *args[1:])

        handle = hf_model.get_output_embeddings().register_forward_pre_hook(keep_last)
        try:
            with torch.inference_mode(), self._in_phase("forward"):
                logits = hf_model(**encoding).logits
        finally:
            handle.remove()
            if prefix is not None:  # back to the prefix for the next continuation
                rows, length = batch.input_ids.shape
                hf_cache.hold_skipped_layers(prefix.cache, range(prefix.start_layer),
                                             (rows, self.spec.n_kv_heads, length, self.spec.d_head), self.dtype)
                hf_cache.drop_last(prefix.cache, length)
                hf_cache.expect_cache_length(prefix.cache, prefix.length)
        return LastTokenOutput(logits[:, -1].float(), captured["hidden"])

    def _encoding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model inputs as an encoding, which nnsight passes through untouched.

        position_ids come from the mask (`cumsum - 1`, pads set to 1: the Hugging Face `generate` convention,
        and what the TransformerLens bridge derives), so a left-padded sequence's first real token is at
        position 0; with right padding this is 0..T-1 on real tokens.
        """
        ids = input_ids.to(self.device)
        mask = attention_mask.to(self.device)
        positions = mask.long().cumsum(-1) - 1
        positions = positions.masked_fill(mask == 0, 1)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "use_cache": False}

    def _trace(
        self,
        encoding: dict[str, Any],
        needs: Needs,
        on_layer: LayerCallback,
        rows: torch.Tensor | None,
        *,
        step: int | None,
        new_positions: int | None = None,
        n_keys: int | None = None,
    ) -> torch.Tensor | None:
        """One traced forward; `on_layer` runs inside the trace body, layer by layer, in execution order.

        `new_positions` (decoding): keys/values handed to the attention call include the cache; only the
        last `new_positions` (this step's) are handed over, as the TransformerLens hooks do; patterns are
        padded to `n_keys` (all keys so far) where a sliding-window cache holds fewer.
        """
        model = self.model
        logits = None
        kinds = needs.kinds()
        with model.trace(encoding):
            for layer, sites in enumerate(self.sites):
                acts: dict[str, torch.Tensor] = {}
                read = _site_reader(model, sites)
                for kind, site, index in read_plan(kinds, sites.rotary_call is not None, sites.projection_calls is not None):
                    tensor = read(site)[index].detach().float()
                    if site == "projection_output":
                        tensor = split_heads(tensor, sites.head_dim)
                    if kind in PER_KEY_KINDS:
                        tensor = _last(tensor, new_positions)
                    elif kind == "z":
                        tensor = tensor.transpose(1, 2)
                    elif kind == "pattern":
                        if n_keys is not None:  # decoding: sliding-window layers see only the window
                            tensor = pad_to_keys(tensor, n_keys)
                        if rows is not None:
                            tensor = select_rows(tensor, rows)
                    acts[kind] = tensor
                on_layer(LayerActivations(layer=layer, step=step, **acts))
                del acts
            if needs.logits:
                logits = model.output.logits.detach().float().save()
        return logits

    # -- decoding -------------------------------------------------------------

    def decode(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        needs: Needs,
        on_layer: LayerCallback,
        stop_token_ids: Sequence[int] = (),
        forced_tokens: Sequence[int] | None = None,
        prefill_chunk: int = 512,
    ) -> DecodeResult:
        """Greedy decoding with the Hugging Face KV cache; each step is one traced forward of one token.

        The prompt minus its last token is prefilled without tracing, `prefill_chunk` tokens at a time through
        the cache (eager attention then holds [head, chunk, T] scores, not [head, T, T]); step 0 feeds the
        last prompt token.
        Each step's pattern is [1, head, 1, keys so far] (zeros before a sliding window); k/v are this step's
        (one position).
        """
        if self.remote:
            raise HeadscopeError("decoding is not available with --remote: run the analyzer locally")
        if len(prompt_ids) < 2:
            raise HeadscopeError("decoding needs a prompt of at least 2 tokens")
        if len(prompt_ids) + max_new_tokens > self.spec.n_ctx:
            raise HeadscopeError(
                f"prompt of {len(prompt_ids)} tokens + {max_new_tokens} new exceeds the model's context of "
                f"{self.spec.n_ctx}: use a shorter context"
            )
        if prefill_chunk < 1:
            raise HeadscopeError("prefill_chunk must be at least 1 token")
        self._check_pattern(needs)
        hf_model = self.model._module
        ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)
        cache = hf_cache.new_cache(hf_model.config)
        stops = set(int(t) for t in stop_token_ids)
        generated: list[int] = []
        step_logits: list[torch.Tensor] = []
        step_needs = Needs(**{**vars(needs), "logits": True, "rows_only": False})
        with torch.inference_mode():
            with self._in_phase("prefill"), self._attention_for(Needs()):  # the prefill reads no weights
                for start in range(0, ids.shape[1] - 1, prefill_chunk):
                    end = min(start + prefill_chunk, ids.shape[1] - 1)
                    hf_model(input_ids=ids[:, start:end], **hf_cache.cache_kwargs(hf_model, cache),
                             **hf_cache.last_logits_only(hf_model))
                    hf_cache.expect_cache_length(cache, end)
            current = ids[:, -1:]
            position = ids.shape[1] - 1
            for index in range(max_new_tokens):
                encoding = {  # the mask spans the cached tokens too: nnsight would otherwise add one of width 1
                    "input_ids": current,
                    "attention_mask": torch.ones(1, position + 1, dtype=torch.long, device=self.device),
                    "position_ids": torch.tensor([[position]], device=self.device),
                    **hf_cache.cache_kwargs(hf_model, cache),
                }
                with self._in_phase("decode"), self._attention_for(step_needs):
                    logits = self._trace(
                        encoding, step_needs, on_layer, None, step=index, new_positions=1, n_keys=position + 1
                    )
                hf_cache.expect_cache_length(cache, position + 1)
                last = logits[0, -1].float()
                step_logits.append(last)
                choice = int(last.argmax()) if forced_tokens is None else int(forced_tokens[index])
                generated.append(choice)
                if choice in stops or (forced_tokens is not None and index + 1 >= len(forced_tokens)):
                    break
                current = torch.tensor([[choice]], dtype=torch.long, device=self.device)
                position += 1
        return DecodeResult(list(prompt_ids), generated, torch.stack(step_logits))

    # -- remote (NDIF) --------------------------------------------------------

    def _run_remote(
        self,
        encoding: dict[str, Any],
        needs: Needs,
        on_layer: LayerCallback,
        query_positions: torch.Tensor | None,
        *,
        backend: Any = None,
    ) -> torch.Tensor | None:
        """Ship the trace to NDIF (or to `backend`, e.g. a local simulation); hand layers over on return."""
        saved = remote_trace(
            self.model, encoding, needs, self.sites, query_positions if needs.rows_only else None,
            remote=True if backend is None else False, backend=backend,
        )
        for layer in range(self.spec.n_layers):
            fields = {name: tensor.to(self.device).float() for name, tensor in saved["layers"][layer].items()}
            on_layer(LayerActivations(layer=layer, step=None, **fields))
        return saved["logits"].float() if needs.logits else None

    def _check_pattern(self, needs: Needs) -> None:
        if needs.pattern and self.attn_implementation != "eager":
            raise HeadscopeError(
                f"attention patterns need eager attention, but the model was loaded with "
                f"'{self.attn_implementation}' (sdpa/flash attention return no weights): load it with "
                "attn_implementation='eager'"
            )

    def last_token_rows(self, prompt_ids: Sequence[int], n_rows: int) -> LastTokenOutput:
        """`n_rows` copies of one prompt, computed once up to the last token: the prefix is prefilled once (phase
        "prefill"), its KV cache repeated per row, and only the last token runs as `n_rows` rows with the "forward"
        interventions (they see one position). Equals `last_token` on copies whose interventions touch only the
        last position (activation patching at the last token), at a fraction of the cost."""
        if self.remote:
            raise HeadscopeError("last_token_rows is not available with --remote: run the analyzer locally")
        if len(prompt_ids) < 2 or n_rows < 1:
            raise HeadscopeError("last_token_rows needs a prompt of at least 2 tokens and n_rows >= 1")
        hf_model = self.model._module
        ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)
        cache = hf_cache.new_cache(hf_model.config)
        position = ids.shape[1] - 1
        with torch.inference_mode(), self._attention_for(Needs()):  # reads no attention weights
            with self._in_phase("prefill"):
                hf_model(input_ids=ids[:, :-1], **hf_cache.cache_kwargs(hf_model, cache), **hf_cache.last_logits_only(hf_model))
            cache.batch_repeat_interleave(n_rows)
            with self._in_phase("forward"):
                out = hf_model(input_ids=ids[:, -1:].expand(n_rows, 1),
                               attention_mask=torch.ones(n_rows, position + 1, dtype=torch.long, device=self.device),
                               position_ids=torch.full((n_rows, 1), position, device=self.device),
                               output_hidden_states=True, **hf_cache.cache_kwargs(hf_model, cache))
        return LastTokenOutput(out.logits[:, -1].float(), out.hidden_states[-1][:, -1].float())


def sdpa_serves(hf_model: torch.nn.Module, attention_modules: Sequence[torch.nn.Module]) -> bool:
    """Whether transformers' sdpa attention computes what eager does for this model (up to rounding).

    Refused (eager kept): models that do not support sdpa or cannot switch at run time, attention logit
    soft-capping (Gemma-2: sdpa has no softcap), learned attention sinks (gpt-oss: extra softmax column), and
    GPT-2's upcast/reordered path, which bypasses the attention interface.
    """
    if not getattr(hf_model, "_supports_sdpa", False):
        return False
    can_set = getattr(hf_model, "_can_set_attn_implementation", None)
    if can_set is None or not can_set():
        return False
    config = hf_model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "attn_logit_softcapping", None) or getattr(text, "reorder_and_upcast_attn", False):
        return False
    return not any(getattr(module, "sinks", None) is not None for module in attention_modules)


def _attention_settings(hf_model: torch.nn.Module) -> list[tuple[Any, Any]]:
    """Every config of the model (sub-configs and submodels' too) with its attention implementation, to restore
    exactly what `set_attn_implementation` changes."""
    configs: dict[int, Any] = {}
    pending = [module.config for module in hf_model.modules() if hasattr(module, "config")
               and hasattr(module.config, "_attn_implementation_internal")]
    while pending:
        config = pending.pop()
        if id(config) in configs:
            continue
        configs[id(config)] = config
        for key in getattr(config, "sub_configs", {}) or {}:
            sub = getattr(config, key, None)
            if sub is not None and hasattr(sub, "_attn_implementation_internal"):
                pending.append(sub)
    return [(config, config._attn_implementation_internal) for config in configs.values()]


@dataclass
class SharedPrefix:
    """A prefix's KV cache for `rows` rows, computed from `start_layer` on (`NNsightBackend.shared_prefix`)."""

    cache: Any
    length: int
    rows: int
    start_layer: int

    def check(self, batch: ProbeBatch, start_layer: int) -> None:
        if batch.input_ids.shape[0] != self.rows or start_layer != self.start_layer:
            raise HeadscopeError(f"this prefix was computed for {self.rows} rows from layer {self.start_layer}: "
                                 f"continue it with the same rows and start_layer")
        if not bool(batch.attention_mask.bool().all()):
            raise HeadscopeError("a prefix continues unpadded rows only")


class _PassThrough(torch.nn.Module):
    """Stands in for a skipped decoder layer: hands its hidden states on unchanged."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


def remote_trace(
    model: Any,
    encoding: dict[str, Any],
    needs: Needs,
    sites: Sequence[LayerSites],
    rows: torch.Tensor | None,
    *,
    remote: bool | str = True,
    backend: Any = None,
) -> dict[str, Any]:
    """The remote trace body: only torch, plain values and the model's envoys, so it serializes for NDIF.

    Every requested tensor is saved per layer (row-selected on the server when `rows` is given) and comes
    back in one result: {"layers": [ {field: tensor} per layer ], "logits": tensor | None}.
    """
    # plain data only inside the trace body: it is serialized for NDIF
    plans = [(s.layer_path, s.attention_path, s.attention_call, s.rotary_call,
              read_plan(needs.kinds(), s.rotary_call is not None, s.projection_calls is not None),
              s.projection_calls, s.head_dim) for s in sites]
    want_logits = needs.logits
    import nnsight

    kwargs: dict[str, Any] = {"backend": backend} if backend is not None else {"remote": remote}
    with model.trace(encoding, **kwargs):
        layers = nnsight.save(list())
        for layer_path, attention_path, attention_call, rotary_call, plan, projection_calls, head_dim in plans:
            fields = dict()
            values = dict()
            for kind, site, index in plan:
                if site not in values:
                    if site == "layer_input":
                        values[site] = (model.get(layer_path).input,)
                    elif site == "projection_output":
                        values[site] = [model.get(attention_path).source.node(call).output for call in projection_calls]
                    elif site == "rotary_input":
                        values[site] = model.get(attention_path).source.node(rotary_call).inputs[0]
                    elif site == "attention_input":
                        values[site] = model.get(attention_path).source.node(attention_call).inputs[0]
                    else:
                        values[site] = model.get(attention_path).source.node(attention_call).output
                tensor = values[site][index].detach()
                if site == "projection_output":
                    tensor = tensor.unflatten(-1, (-1, head_dim)).transpose(1, 2)
                if kind == "z":
                    tensor = tensor.transpose(1, 2)
                if kind == "pattern" and rows is not None:
                    index_rows = rows.to(tensor.device)[:, None, :, None].expand(
                        tensor.shape[0], tensor.shape[1], rows.shape[1], tensor.shape[3]
                    )
                    tensor = tensor.gather(2, index_rows)
                fields[kind] = tensor.cpu()
            layers.append(fields)
        logits = model.output.logits.detach().cpu().save() if want_logits else None
    return {"layers": layers, "logits": logits}


def require_ndif_key() -> str:
    """The NDIF API key from the environment, or one line saying how to set it."""
    key = os.environ.get(NDIF_KEY_VARIABLE, "").strip()
    if not key:
        raise HeadscopeError(
            f"--remote needs an NDIF API key: set {NDIF_KEY_VARIABLE} (an NDIF account key; see https://nnsight.net)"
        )
    return key


def build_remote_request(
    backend: NNsightBackend, batch: ProbeBatch, needs: Needs, *, model_key: str | None = None
) -> dict[str, Any]:
    """Build (serialize) the NDIF request a remote `run` would send, without sending it.

    Returns the routing envelope (model key, metadata, api key, host) and the serialized payload; used
    by tests. `model_key` defaults to nnsight's key for the model (which asks the hub to canonicalise
    the repo id, so tests on local folders pass their own).
    """
    from nnsight.intervention.backends.remote import RemoteBackend

    captured: dict[str, Any] = {}

    class _Capture(RemoteBackend):
        def request(self, request: Any, tracer: Any) -> dict[str, Any]:  # noqa: D401 - nnsight hook
            captured["blob"] = self._serialize(tracer)
            captured["metadata"] = request.metadata()
            captured["model_key"] = self.model_key
            captured["api_key"] = self.api_key
            captured["host"] = self.host
            raise _Captured

    capture = _Capture(model_key or backend.model.to_model_key(), api_key=require_ndif_key())
    encoding = backend._encoding(batch.input_ids, batch.attention_mask)
    rows = batch.query_positions if needs.rows_only else None
    try:
        remote_trace(backend.model, encoding, needs, backend.sites, rows, backend=capture)
    except _Captured:
        pass
    if "blob" not in captured:
        raise RuntimeError("nnsight did not build a remote request")
    return captured


class _Captured(Exception):
    """Stops a remote trace once its request is built."""


# -- model discovery -----------------------------------------------------------


def spec_from_config(config: Any, text: Any, tokenizer: Any) -> ModelSpec:
    """Head layout from the Hugging Face config (the text config of a multimodal model)."""
    n_heads = int(text.num_attention_heads)
    d_model = int(text.hidden_size)
    head_dim = getattr(text, "head_dim", None)
    n_ctx = getattr(text, "max_position_embeddings", None) or getattr(text, "n_positions", None) or 2048
    return ModelSpec(
        n_layers=int(text.num_hidden_layers),
        n_heads=n_heads,
        n_kv_heads=int(getattr(text, "num_key_value_heads", None) or n_heads),
        d_head=int(head_dim) if head_dim else d_model // n_heads,
        d_model=d_model,
        d_vocab=int(text.vocab_size),
        n_ctx=int(n_ctx),
        bos_token_id=first_int(getattr(text, "bos_token_id", None), getattr(tokenizer, "bos_token_id", None)),
        pad_token_id=first_int(getattr(tokenizer, "pad_token_id", None), getattr(text, "pad_token_id", None)),
        architecture=str((getattr(config, "architectures", None) or [type(config).__name__])[0]),
    )


def find_layer_sites(model: Any, n_layers: int) -> list[LayerSites]:
    """Find each decoder layer and its attention module's interface call, for any HF architecture.

    The decoder layers are the `ModuleList` of `n_layers` blocks; the attention module is the layer's
    child whose instrumented forward calls the attention interface.
    """
    module = model._module
    layer_lists = [
        name for name, child in module.named_modules()
        if isinstance(child, torch.nn.ModuleList) and len(child) == n_layers
    ]
    for list_path in layer_lists:
        sites = []
        for index in range(n_layers):
            layer_path = f"{list_path}.{index}"
            site = _attention_site(model, layer_path)
            if site is None:
                break
            sites.append(site)
        if len(sites) == n_layers:
            return sites
    raise HeadscopeError(
        f"the nnsight backend found no attention module calling transformers' attention interface in "
        f"{type(module).__name__}: headscope reads q/k/v, patterns and z there (transformers >= 4.48 models)"
    )


def _attention_site(model: Any, layer_path: str) -> LayerSites | None:
    layer = model.get(layer_path)
    for name, _ in layer._module.named_children():
        child = model.get(f"{layer_path}.{name}")
        if not name or not _might_be_attention(child._module):
            continue
        try:
            names = child.source.names
        except Exception:  # modules whose forward nnsight cannot instrument (C extensions, ...)
            continue
        calls = sorted((n for n in names if n.startswith(ATTENTION_CALL) and n[len(ATTENTION_CALL):].isdigit()),
                       key=lambda n: int(n[len(ATTENTION_CALL):]))
        if not calls:
            continue
        _refuse_unread_paths(child._module)
        return LayerSites(
            layer_path=layer_path,
            attention_path=f"{layer_path}.{name}",
            attention_call=calls[-1],
            rotary_call=ROTARY_CALL if ROTARY_CALL in names else None,
            projection_calls=_projection_calls(child._module, names),
            head_dim=int(getattr(child._module, "head_dim", 0) or 0),
        )
    return None


def _projection_calls(module: torch.nn.Module, names: Sequence[str]) -> tuple[str, str] | None:
    """The q/k projection calls of an attention forward, or None for a fused qkv projection (GPT-2, GPT-NeoX,
    Phi-3), whose q/k reach the rotary unnormalised, so the raw q/k are the projected ones. (Every q/k-norm family
    in transformers today, Qwen3, Gemma-3, OLMo-2, Cohere, StableLM, Chameleon, has separate q/k projections.)"""
    if PROJECTION_CALLS[0] in names and PROJECTION_CALLS[1] in names and int(getattr(module, "head_dim", 0) or 0) > 0:
        return PROJECTION_CALLS
    return None


def split_heads(tensor: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[batch, pos, heads * d] (a projection's output) -> [batch, heads, pos, d]."""
    return tensor.unflatten(-1, (-1, head_dim)).transpose(1, 2)


def _might_be_attention(module: torch.nn.Module) -> bool:
    return "attention" in type(module).__name__.lower() or "attn" in type(module).__name__.lower()


def _refuse_unread_paths(module: torch.nn.Module) -> None:
    """GPT-2's `reorder_and_upcast_attn` bypasses the attention interface: its tensors would never arrive."""
    if getattr(module, "reorder_and_upcast_attn", False):
        raise HeadscopeError(
            "this GPT-2 config sets reorder_and_upcast_attn, which bypasses the attention interface the "
            "nnsight backend reads: set it to false in config.json or use `--backend transformer-lens`"
        )


def _site_reader(model: Any, sites: LayerSites) -> Callable[[str], Sequence[Any]]:
    """Reads each call site of one layer once (a traced value may be requested only once), as a sequence
    indexed as in KIND_READS."""
    attention = model.get(sites.attention_path)
    seen: dict[str, Sequence[Any]] = {}

    def read(site: str) -> Sequence[Any]:
        if site not in seen:
            if site == "layer_input":
                seen[site] = (model.get(sites.layer_path).input,)
            elif site == "projection_output":
                seen[site] = [attention.source.node(call).output for call in sites.projection_calls]
            elif site == "rotary_input":
                seen[site] = attention.source.node(sites.rotary_call).inputs[0]
            elif site == "attention_input":
                seen[site] = attention.source.node(sites.attention_call).inputs[0]
            else:
                seen[site] = attention.source.node(sites.attention_call).output
        return seen[site]

    return read


def _last(tensor: torch.Tensor, n: int | None) -> torch.Tensor:
    """The last `n` positions of [batch, head, pos, d] (all when n is None)."""
    return tensor if n is None else tensor[:, :, -n:, :]
