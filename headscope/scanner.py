"""Former home of the scan pipeline, kept so existing imports work: everything lives in `headscope.scanning`."""

from headscope.scanning import (  # noqa: F401
    build_analyzers,
    parse_lengths,
    parse_param_overrides,
    scan,
    scan_backend,
    scan_result,
    side_output_path,
)
