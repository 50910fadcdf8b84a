"""TransformerLens backend: the model runs inside a `TransformerBridge`, analyzers read its hook points.

Hook points used per layer (TransformerLens 4.x names):
  blocks.L.hook_resid_pre, blocks.L.attn.hook_rot_q / hook_rot_k (hook_q / hook_k without rotary),
  blocks.L.attn.hook_v, blocks.L.attn.hook_pattern, blocks.L.attn.hook_z, blocks.L.hook_resid_post;
  blocks.L.attn.hook_q / hook_k for the projections' outputs (q_proj / k_proj kinds: before a q/k norm).
Tensors of a layer are held only until that layer's hook_resid_post fires, where they are handed to
the callback and dropped: peak extra memory is one layer's requested tensors.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

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
from headscope.engine.intervention import Intervention
from headscope.engine.spec import ModelSpec
from headscope.engine.weights import ModelWeights, weights_from_hf
from headscope.engine.util import first_int, quiet_loading
from headscope.errors import HeadscopeError


class TransformerLensBackend:
    """Runs probes through `TransformerBridge.boot_transformers(local_path)`."""

    name = "transformer-lens"

    def __init__(
        self,
        path: Path,
        *,
        model_id: str,
        revision: str,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        loaded: Any = None,  # a TransformerBridge the user already booted (headscope.engine.adopt): used as is
    ) -> None:
        from transformer_lens.model_bridge import TransformerBridge

        self.model_id = model_id
        self.revision = revision
        self.dtype = dtype
        self.device = torch.device(device)
        try:
            with quiet_loading():
                self.bridge = loaded if loaded is not None else TransformerBridge.boot_transformers(str(path), device=device, dtype=dtype)
        except (ValueError, NotImplementedError, KeyError) as err:
            raise HeadscopeError(
                f"TransformerLens cannot adapt the model at {path} ({str(err).splitlines()[0][:160]}): "
                "try `--backend nnsight`"
            ) from None
        self.bridge.eval()
        hf_cache.alias_cache_for_bridge(self.bridge)
        self.tokenizer = self.bridge.tokenizer
        self.spec = _spec_from_bridge(self.bridge)
        hooks = self.bridge.hook_dict
        self._q_hook = "attn.hook_rot_q" if "blocks.0.attn.hook_rot_q" in hooks else "attn.hook_q"
        self._k_hook = "attn.hook_rot_k" if "blocks.0.attn.hook_rot_k" in hooks else "attn.hook_k"
        # q/k "before the rotary embedding" means what the rotary is applied to: after the q/k norm of
        # models that have one (Gemma-3, Qwen3, OLMo-2), as the nnsight backend reads it.
        self._q_raw_hook = "attn.hook_q_normed" if "blocks.0.attn.hook_q_normed" in hooks else "attn.hook_q"
        self._k_raw_hook = "attn.hook_k_normed" if "blocks.0.attn.hook_k_normed" in hooks else "attn.hook_k"
        # hook_q/hook_k are [batch, pos, head, d]; the *_normed hooks fire after HF's transpose: [batch, head, pos, d]
        heads_first_raw = (lambda t: t) if self._q_raw_hook.endswith("_normed") else (lambda t: t.transpose(1, 2))
        d_head = self.spec.d_head
        # OLMo-2 normalises q/k over all heads at once, before the split: its *_normed hooks fire [batch, pos, heads * d]
        self._raw_layout = lambda t: t.unflatten(-1, (-1, d_head)).transpose(1, 2) if t.dim() == 3 else heads_first_raw(t)
        self._interventions: list[Intervention] = []

    @contextlib.contextmanager
    def intervene(self, *interventions: Intervention) -> Iterator[None]:
        """Apply `interventions` to every `run`/`decode` inside the block; nothing persists after it."""
        for item in interventions:
            bad = [layer for layer in item.layers if not 0 <= layer < self.spec.n_layers]
            if bad:
                raise HeadscopeError(f"intervention layers {bad} are outside 0..{self.spec.n_layers - 1}: fix the head list")
        windows = attention_window.split_windows(interventions)[1]
        for window in windows:
            window.check(self.spec)
        attention_window.check_bridge_recomputes(self.bridge, windows)
        before = list(self._interventions)
        self._interventions = before + list(interventions)
        try:
            yield
        finally:
            self._interventions = before

    def _intervention_hooks(self, phase: str) -> list[tuple[str, Callable]]:
        """Forward hooks that apply the active interventions of `phase`, in the heads-first layout."""
        # q_raw/k_raw are edited where they are read: after a q/k norm (whose scale invariance would otherwise
        # undo e.g. a query scaling), before the rotary embedding.
        points = self._hook_points()
        heads_first_already = {"pattern"} | ({"q_raw", "k_raw"} if self._q_raw_hook.endswith("_normed") else set())
        tensor_items, windows = attention_window.split_windows(self._interventions)
        hooks: list[tuple[str, Callable]] = attention_window.score_hooks(windows, self.spec, phase)
        for item in tensor_items:
            if phase not in item.phases:
                continue

            def hook(tensor: torch.Tensor, hook: Any, item: Intervention = item) -> torch.Tensor:
                layer = int(hook.name.split(".")[1])
                if item.tensor in heads_first_already:  # [batch, head, pos, d] / [batch, head, query, key]
                    return item.edit(layer, tensor)
                return item.edit(layer, tensor.transpose(1, 2)).transpose(1, 2)  # [batch, pos, head, d] round trip

            hooks.extend((f"blocks.{layer}.{points[item.tensor]}", hook) for layer in item.layers)
        return hooks

    def _hook_points(self) -> dict[str, str]:
        """Where the bridge exposes each tensor kind of TENSOR_KINDS (per block)."""
        return {"pattern": "attn.hook_pattern", "q": self._q_hook, "k": self._k_hook, "q_raw": self._q_raw_hook,
                "k_raw": self._k_raw_hook, "v": "attn.hook_v", "z": "attn.hook_z", "resid_pre": "hook_resid_pre",
                # the projections' outputs, [batch, pos, head, d]: before a q/k norm (hook_q_normed) and the rotary
                "q_proj": "attn.hook_q", "k_proj": "attn.hook_k"}

    def _layer_hooks(
        self,
        needs: Needs,
        on_layer: LayerCallback,
        query_positions: torch.Tensor | None,
        step: list[int | None],
        n_keys: int | None = None,
    ) -> list[tuple[str, Callable]]:
        """Hooks that buffer one layer's requested tensors and hand them over at hook_resid_post.

        In decoding, `n_keys` is the number of keys at step 0 (the prompt's length): patterns are padded to
        `n_keys + step` keys where a sliding-window cache holds fewer.
        """
        pending: dict[int, dict[str, torch.Tensor]] = {}

        def keep(field: str, transform: Callable[[torch.Tensor], torch.Tensor]):
            def hook(tensor: torch.Tensor, hook: Any) -> None:
                layer = int(hook.name.split(".")[1])
                pending.setdefault(layer, {})[field] = transform(tensor.detach()).float()
                return None

            return hook

        def heads_first(t: torch.Tensor) -> torch.Tensor:  # [batch, pos, head, d] -> [batch, head, pos, d]
            return t.transpose(1, 2)

        def pattern_rows(t: torch.Tensor) -> torch.Tensor:
            if n_keys is not None and step[0] is not None:  # decoding: sliding-window layers see only the window
                t = pad_to_keys(t, n_keys + step[0])
            return select_rows(t, query_positions) if needs.rows_only and query_positions is not None else t

        def finish(tensor: torch.Tensor, hook: Any) -> None:
            layer = int(hook.name.split(".")[1])
            fields = pending.pop(layer, {})
            missing = [field for _, field, _ in wanted if field not in fields]
            if missing:  # a hook point the bridge declares but never fires (e.g. hook_rot_q of GPT-NeoX)
                raise HeadscopeError(
                    f"the TransformerLens bridge never fired the hooks for {', '.join(missing)} on "
                    f"{self.spec.architecture}: use `--backend nnsight`"
                )
            on_layer(LayerActivations(layer=layer, step=step[0], **fields))
            return None

        layouts = {"pattern": pattern_rows, "q_raw": self._raw_layout, "k_raw": self._raw_layout,
                   "resid_pre": lambda t: t}  # every other kind arrives [batch, pos, head, d]
        points = self._hook_points()
        wanted = [(points[kind], kind, layouts.get(kind, heads_first)) for kind in needs.kinds()]

        hooks: list[tuple[str, Callable]] = []
        for layer in range(self.spec.n_layers):
            for point, field, transform in wanted:
                hooks.append((f"blocks.{layer}.{point}", keep(field, transform)))
            hooks.append((f"blocks.{layer}.hook_resid_post", finish))
        return hooks

    def weights(self) -> ModelWeights:
        """The HF model's weights under the bridge (`original_model`), in TransformerLens' unfolded layout."""
        if getattr(self, "_weights", None) is None:
            spec = self.spec
            self._weights = weights_from_hf(
                self.bridge.original_model, n_heads=spec.n_heads, n_kv_heads=spec.n_kv_heads, d_head=spec.d_head
            )
        return self._weights

    def run(self, batch: ProbeBatch, needs: Needs, on_layer: LayerCallback) -> torch.Tensor | None:
        query_positions = batch.query_positions.to(self.device) if batch.query_positions is not None else None
        if needs.rows_only and query_positions is None:
            raise ValueError("Needs.rows_only requires ProbeBatch.query_positions")
        attention_window.refuse_padding(batch.attention_mask, attention_window.split_windows(self._interventions)[1])
        hooks = self._intervention_hooks("forward") + self._layer_hooks(needs, on_layer, query_positions, [None])
        with torch.inference_mode():
            logits = self.bridge.run_with_hooks(
                batch.input_ids.to(self.device),
                attention_mask=batch.attention_mask.to(self.device),
                fwd_hooks=hooks,
                return_type="logits" if needs.logits else None,
                **({} if needs.logits else hf_cache.last_logits_only(self.bridge.original_model)),
            )
        return logits.float() if needs.logits else None

    def last_token(self, batch: ProbeBatch, *, start_layer: int = 0, resid: torch.Tensor | None = None) -> LastTokenOutput:
        """Logits and final hidden state at each row's last real token; the unembedding sees only those rows.

        `start_layer` > 0 feeds `resid` into that block (the bridge's `start_at_layer`), skipping the ones before.
        """
        check_resume_inputs(batch, start_layer, resid, self.spec.n_layers)
        attention_window.refuse_padding(batch.attention_mask, attention_window.split_windows(self._interventions)[1])
        last = last_real_positions(batch.attention_mask).to(self.device)
        captured: dict[str, torch.Tensor] = {}

        def keep_last(resid: torch.Tensor, hook: Any) -> torch.Tensor:  # [batch, pos, d_model] -> [batch, 1, d_model]
            rows = resid[torch.arange(resid.shape[0], device=resid.device), last]
            captured["hidden"] = rows.detach().float()
            return rows[:, None, :]

        hooks = self._intervention_hooks("forward") + [("unembed.hook_in", keep_last)]
        with torch.inference_mode():
            if start_layer:
                with _skipping_blocks(self.bridge, start_layer):
                    logits = self.bridge.run_with_hooks(resid.to(self.device, self.dtype), start_at_layer=start_layer,
                                                        fwd_hooks=hooks, return_type="logits")
            else:
                logits = self.bridge.run_with_hooks(
                    batch.input_ids.to(self.device),
                    attention_mask=batch.attention_mask.to(self.device),
                    fwd_hooks=hooks,
                    return_type="logits",
                )
        return LastTokenOutput(logits[:, -1].float(), captured["hidden"])

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
        """Greedy decoding with the KV cache; each step's activations go to `on_layer` (with `step` set).

        The prompt minus its last token is prefilled without recording hooks, `prefill_chunk` tokens at a
        time through the KV cache, so the eager attention never holds more than [head, chunk, T] scores
        (O(chunk x T) instead of O(T^2); logits equal the one-shot prefill). Step 0 feeds the last prompt
        token, so its attention row is the prefill's last row. Each step's pattern is [1, head, 1, keys so far].
        `forced_tokens` (teacher forcing) replaces the argmax choice step by step.
        """
        if len(prompt_ids) < 2:
            raise HeadscopeError("decoding needs a prompt of at least 2 tokens")
        if prefill_chunk < 1:
            raise HeadscopeError("prefill_chunk must be at least 1 token")
        if len(prompt_ids) + max_new_tokens > self.spec.n_ctx:
            raise HeadscopeError(
                f"prompt of {len(prompt_ids)} tokens + {max_new_tokens} new exceeds the model's context of "
                f"{self.spec.n_ctx}: use a shorter context"
            )
        step: list[int | None] = [0]
        hooks = self._intervention_hooks("decode") + self._layer_hooks(needs, on_layer, None, step, n_keys=len(prompt_ids))
        ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)
        stops = set(int(t) for t in stop_token_ids)
        generated: list[int] = []
        step_logits: list[torch.Tensor] = []
        with torch.inference_mode():
            cache = self.prefill(ids[:, :-1], chunk=prefill_chunk)
            current = ids[:, -1:]
            with self.bridge.hooks(fwd_hooks=hooks):
                for index in range(max_new_tokens):
                    step[0] = index
                    logits = self._cached_forward(current, cache)
                    last = logits[0, -1].float()
                    step_logits.append(last)
                    choice = int(last.argmax()) if forced_tokens is None else int(forced_tokens[index])
                    generated.append(choice)
                    if choice in stops or (forced_tokens is not None and index + 1 >= len(forced_tokens)):
                        break
                    current = torch.tensor([[choice]], dtype=torch.long, device=self.device)
        return DecodeResult(list(prompt_ids), generated, torch.stack(step_logits))

    def prefill(self, ids: torch.Tensor, *, chunk: int = 512, return_logits: bool = False) -> Any:
        """Run `ids` [1, pos] through the model `chunk` tokens at a time, growing one KV cache.

        Returns the cache (and, with `return_logits`, the logits [1, pos, vocab] of every position).
        Interventions of phase "prefill" apply.
        """
        cache = hf_cache.new_cache(self.bridge.original_model.config)
        pieces: list[torch.Tensor] = []
        with torch.inference_mode(), self.bridge.hooks(fwd_hooks=self._intervention_hooks("prefill")):
            for start in range(0, ids.shape[1], chunk):
                logits = self._cached_forward(ids[:, start : start + chunk], cache, all_logits=return_logits)
                if return_logits:
                    pieces.append(logits.float())
                del logits
        return (cache, torch.cat(pieces, dim=1)) if return_logits else cache

    def _cached_forward(self, ids: torch.Tensor, cache: Any, *, all_logits: bool = True) -> torch.Tensor:
        """Logits of `ids` [1, pos] after the tokens in `cache`, which grows by `pos` (checked: see hf_cache);
        `all_logits=False`: the last position's only (where the model allows), for prefills that discard them."""
        before = hf_cache.cache_length(cache)
        hf_model = self.bridge.original_model
        fewer = {} if all_logits else hf_cache.last_logits_only(hf_model)
        logits = self.bridge(ids, return_type="logits", **hf_cache.cache_kwargs(hf_model, cache), **fewer)
        hf_cache.expect_cache_length(cache, before + ids.shape[1])
        return logits

    def last_token_rows(self, prompt_ids: Sequence[int], n_rows: int) -> LastTokenOutput:
        """`n_rows` copies of one prompt, computed once up to the last token: the prefix is prefilled once (phase
        "prefill"), its KV cache repeated per row, and only the last token runs as `n_rows` rows with the "forward"
        interventions (they see one position). Equals `last_token` on copies whose interventions touch only the
        last position (activation patching at the last token), at a fraction of the cost."""
        if len(prompt_ids) < 2 or n_rows < 1:
            raise HeadscopeError("last_token_rows needs a prompt of at least 2 tokens and n_rows >= 1")
        captured: dict[str, torch.Tensor] = {}

        def keep(resid: torch.Tensor, hook: Any) -> None:
            captured["hidden"] = resid[:, -1].detach().float()

        ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            cache = self.prefill(ids[:, :-1])
            cache.batch_repeat_interleave(n_rows)
            hooks = self._intervention_hooks("forward") + [("unembed.hook_in", keep)]
            with self.bridge.hooks(fwd_hooks=hooks):
                logits = self._cached_forward(ids[:, -1:].expand(n_rows, 1), cache)
        return LastTokenOutput(logits[:, -1].float(), captured["hidden"])


def _spec_from_bridge(bridge: Any) -> ModelSpec:
    cfg = bridge.cfg
    hf_config = bridge.original_model.config
    n_heads = int(cfg.n_heads)
    n_kv = int(getattr(cfg, "n_key_value_heads", None) or n_heads)
    tokenizer = bridge.tokenizer
    return ModelSpec(
        n_layers=int(cfg.n_layers),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_head=int(cfg.d_head),
        d_model=int(cfg.d_model),
        d_vocab=int(cfg.d_vocab),
        n_ctx=int(cfg.n_ctx),
        bos_token_id=first_int(getattr(hf_config, "bos_token_id", None), getattr(tokenizer, "bos_token_id", None)),
        pad_token_id=first_int(getattr(tokenizer, "pad_token_id", None), getattr(hf_config, "pad_token_id", None)),
        architecture=str((getattr(hf_config, "architectures", None) or [type(bridge.original_model).__name__])[0]),
    )


class _SkippedBlock(torch.nn.Module):
    """Stands in for a block below `start_at_layer`: hands its hidden states on unchanged."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


@contextlib.contextmanager
def _skipping_blocks(bridge: Any, start_layer: int) -> Iterator[None]:
    """Blocks before `start_layer` become pass-throughs in the Hugging Face layer list the bridge drives.

    The bridge's `start_at_layer` (TL 4.3) still runs blocks 0..k-1 and then discards their output (block k swaps
    the caller's residual back in), so without this a resumed pass costs a full forward. Restored on exit.
    """
    first = bridge.blocks[0]
    found = [(m, name) for m in bridge.original_model.modules() for name, child in m.named_children()
             if isinstance(child, torch.nn.ModuleList) and len(child) and child[0] is first]
    if len(found) != 1:  # unknown layout: run every block, as the bridge does
        yield
        return
    parent, name = found[0]
    original = getattr(parent, name)
    setattr(parent, name, torch.nn.ModuleList([_SkippedBlock() for _ in range(start_layer)] + list(original)[start_layer:]))
    try:
        yield
    finally:
        setattr(parent, name, original)
