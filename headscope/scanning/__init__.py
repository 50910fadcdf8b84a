"""Scan orchestration: settings, parameters, plan, execute (here or on Ray), part cache; wires the rooms together.

    params.py        what users type -> analyzers
    settings.py      RunSettings: model, backend, device, dtype, batching (frozen, travels to workers)
    plan.py          suites built once, groups, tasks (the unit of work, resume and Ray)
    cache.py         part files of finished tasks (`--resume`)
    execute.py       run tasks, merge states, assemble the atlas with side outputs
    ray_executor.py  the same tasks on Ray actors
    api.py           `headscope.scan`
"""

from headscope.scanning.api import scan, side_output_path
from headscope.scanning.cache import PartCache, parts_folder
from headscope.scanning.execute import LocalExecutor, ScanResult, execute_scan, run_task, scan_backend, scan_result
from headscope.scanning.params import SHARED_KNOBS, build_analyzers, parse_lengths, parse_param_overrides
from headscope.scanning.plan import Group, Task, TaskOutput, plan_scan
from headscope.scanning.settings import DEFAULT_SHARD_SIZE, RunSettings

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "SHARED_KNOBS",
    "Group",
    "LocalExecutor",
    "PartCache",
    "RunSettings",
    "ScanResult",
    "Task",
    "TaskOutput",
    "build_analyzers",
    "execute_scan",
    "parse_lengths",
    "parse_param_overrides",
    "parts_folder",
    "plan_scan",
    "run_task",
    "scan",
    "scan_backend",
    "scan_result",
    "side_output_path",
]
