"""Scans on Ray: tasks fan out to actors, one model load per actor, outputs come back to the driver.

`headscope scan --ray` starts a local Ray with one worker per CPU core; `--ray ray://head:10001` (or any
`ray.init` address) uses an existing cluster, where each worker resolves and loads the model on its own node
(give a hub id or a path every node can read; with `--device cuda` each worker takes one GPU). A task carries
its slice of the suite the driver built and fresh analyzers (class and parameters); workers send back states,
rows and side outputs, and the driver caches and merges them exactly as a local scan does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

from headscope.errors import HeadscopeError
from headscope.probes import TokenSuite
from headscope.scanning.plan import Mode, Task, TaskOutput
from headscope.scanning.settings import RunSettings


@dataclass(frozen=True)
class Work:
    """What a worker needs for one task: analyzer classes with their parameters, the probes, the mode."""

    analyzers: tuple[tuple[type, Any], ...]
    probes: TokenSuite
    mode: Mode

    @classmethod
    def of(cls, task: Task) -> Work:
        return cls(tuple((type(a), a.params) for a in task.group.members), task.probes(), task.mode)


class _Worker:
    """A Ray actor holding one loaded model."""

    def __init__(self, settings: RunSettings, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.backend = settings.load(quiet=True)
        self.ctx = settings.context(self.backend)

    def run(self, work: Work) -> TaskOutput:
        from headscope.scanning.execute import run_task

        members = [cls(params) for cls, params in work.analyzers]
        return run_task(self.backend, self.ctx, members, work.probes, work.mode)


class RayExecutor:
    """Executor over Ray actors; `address="local"` starts a private local Ray."""

    def __init__(self, address: str, settings: RunSettings, *, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise HeadscopeError("--ray needs Ray: pip install 'headscope[ray]'") from None
        self.ray = ray
        self._started_here = not ray.is_initialized()
        local = address in ("local", "")
        if self._started_here:
            if local:
                ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            else:
                try:
                    ray.init(address=address, log_to_driver=False)
                except Exception as err:
                    raise HeadscopeError(f"cannot connect to Ray at '{address}' ({type(err).__name__}): check the address or use --ray local") from None
        gpus = 1 if settings.device.startswith("cuda") else 0
        n = workers or max(1, int(ray.cluster_resources().get("GPU" if gpus else "CPU", 1)))
        threads = max(1, (os.cpu_count() or 1) // n) if local else 1
        actor = ray.remote(num_cpus=1, num_gpus=gpus)(_Worker)
        self.actors = [actor.remote(settings, threads) for _ in range(n)]

    def run(self, tasks: list[Task], progress: bool) -> Iterator[tuple[Task, TaskOutput]]:
        from ray.util import ActorPool
        from tqdm.auto import tqdm

        pool = ActorPool(self.actors)
        outputs = pool.map(lambda actor, task: actor.run.remote(Work.of(task)), tasks)
        for task, output in tqdm(zip(tasks, outputs), total=len(tasks), desc="ray tasks", disable=not progress):
            yield task, output

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        if self._started_here:
            self.ray.shutdown()
