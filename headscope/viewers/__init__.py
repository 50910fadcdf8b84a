"""Viewers: Plotly figures and a standalone HTML report, made from an atlas alone (no model, no torch)."""

from headscope.viewers.figures import (
    compare_map,
    head_card,
    head_map,
    layer_profile,
    metric_grid,
    metric_scatter,
    model_level_table,
    rank_plot,
    role_summary,
    score_metrics,
)
from headscope.viewers.report import render_report, write_report
from headscope.viewers.roles import ROLES, Role, role_table, roles_by_head

__all__ = [
    "ROLES",
    "Role",
    "compare_map",
    "head_card",
    "head_map",
    "layer_profile",
    "metric_grid",
    "metric_scatter",
    "model_level_table",
    "rank_plot",
    "render_report",
    "role_summary",
    "role_table",
    "roles_by_head",
    "score_metrics",
    "write_report",
]
