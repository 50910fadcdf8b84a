"""Sharded scans on Ray: (analyzer group, probe shard) tasks fan out to workers, one model load per worker.

`headscope scan --ray` starts a local Ray with one worker per CPU core; `--ray ray://head:10001` (or any
`ray.init` address) uses an existing cluster, where each worker resolves and loads the model on its own node
(give a hub id or a path every node can read; with `--device cuda` each worker takes one GPU). Workers send
back analyzer states, the driver writes part files and merges them exactly as a local scan does, so the
atlas is the same.
"""

from __future__ import annotations

import os
from typing import Any

from headscope.errors import HeadscopeError


class _ShardWorker:
    """A Ray actor holding one loaded model."""

    def __init__(self, model: str, backend: str, device: str, dtype: str, batch_size: int, padding_side: str, threads: int) -> None:
        import torch

        from headscope.analyzers import ScanContext
        from headscope.engine import load_backend

        torch.set_num_threads(threads)
        self.backend = load_backend(model, backend=backend, device=device, dtype=dtype, quiet=True)
        self.ctx = ScanContext(self.backend.spec, self.backend.tokenizer, batch_size=batch_size, padding_side=padding_side)

    def _shard(self, spec: dict[str, Any]):
        from headscope.analyzers import analyzer_class
        from headscope.scanner import Shard

        members = [analyzer_class(name)(params) for name, params in spec["members"]]
        return Shard(spec["suite"], members, spec["index"], spec["count"], spec["start"], spec["stop"])

    def run_shard(self, spec: dict[str, Any]):
        from headscope.scanner import run_shard

        return run_shard(self.backend, self.ctx, self._shard(spec))

    def run_whole(self, spec: dict[str, Any]):
        from headscope.scanner import run_shard

        shard = self._shard(spec)
        run_shard(self.backend, self.ctx, shard)
        return {a.name: a.results() for a in shard.members}

    def run_driven(self, name: str, params: Any):
        from headscope.analyzers import analyzer_class

        analyzer = analyzer_class(name)(params)
        analyzer.start(self.backend.spec)
        analyzer.drive(self.backend, self.ctx)
        return analyzer.results()


def _spec(shard) -> dict[str, Any]:
    return {"members": [(a.name, a.params) for a in shard.members], "suite": shard.suite, "index": shard.index,
            "count": shard.count, "start": shard.start, "stop": shard.stop}


class RayExecutor:
    """Executor over Ray actors; `address="local"` starts a private local Ray."""

    def __init__(self, address: str, *, model: str, backend: str, device: str, dtype: str, workers: int | None,
                 batch_size: int, padding_side: str) -> None:
        try:
            import ray
        except ImportError:
            raise HeadscopeError("--ray needs Ray: pip install 'headscope[ray]'") from None
        self.ray = ray
        self._started_here = not ray.is_initialized()
        if self._started_here:
            if address in ("local", ""):
                cpus = workers or os.cpu_count() or 1
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
            else:
                try:
                    ray.init(address=address, log_to_driver=False)
                except Exception as err:
                    raise HeadscopeError(f"cannot connect to Ray at '{address}' ({type(err).__name__}): check the address or use --ray local") from None
        gpus = 1 if device.startswith("cuda") else 0
        n = workers or max(1, int(ray.cluster_resources().get("GPU" if gpus else "CPU", 1)))
        threads = max(1, (os.cpu_count() or 1) // n) if address in ("local", "") else 1
        actor = ray.remote(num_cpus=1, num_gpus=gpus)(_ShardWorker)
        self.actors = [actor.remote(model, backend, device, dtype, batch_size, padding_side, threads) for _ in range(n)]

    def run_shards(self, shards, progress):
        from ray.util import ActorPool
        from tqdm.auto import tqdm

        pool = ActorPool(self.actors)
        results = pool.map(lambda actor, shard: actor.run_shard.remote(_spec(shard)), shards)
        for shard, states in tqdm(zip(shards, results), total=len(shards), desc="ray shards", disable=not progress):
            yield shard, states

    def run_whole(self, shard, progress):
        return self.ray.get(self.actors[0].run_whole.remote(_spec(shard)))

    def run_driven(self, analyzer):
        return self.ray.get(self.actors[0].run_driven.remote(analyzer.name, analyzer.params))

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        if self._started_here:
            self.ray.shutdown()
