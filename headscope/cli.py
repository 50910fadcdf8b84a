"""`headscope` command line: wires models, engine, analyzers and atlas together; errors are one line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from headscope.errors import HeadscopeError, os_error_line
from headscope.terminal import safe

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help="Head atlases for transformer language models.")
console = Console()
err_console = Console(stderr=True)


NOTHING_KEPT = "interrupted: nothing was written"  # Ctrl-C before a finished part, or outside a scan (atomic writes)


class Interrupted(Exception):
    """Ctrl-C, carrying the one line that says what was kept (typer would turn a bare Ctrl-C into a silent 130)."""


def _print_version(value: bool) -> None:
    if value:
        from headscope._version import version_line

        console.print(version_line(), highlight=False, soft_wrap=True)
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True,
        help="print headscope's version and those of the libraries it drives, then exit",
    ),
) -> None:
    """Head atlases for transformer language models."""
    if ctx.invoked_subcommand is None:  # `headscope` alone: the help, as a successful answer
        console.print(ctx.get_help(), highlight=False)
        raise typer.Exit()


@app.command()
def scan(
    model: str = typer.Argument("smollm2-135m-instruct", help="embedded alias, local HF folder, or hub id"),
    analyzers: str = typer.Option("classic", "--analyzers", "-a", help="comma list of analyzers or groups (classic)"),
    out: Path = typer.Option(Path("atlas.parquet"), "--out", "-o", help="where to write the atlas"),
    backend: str = typer.Option("auto", help="auto, transformer-lens or nnsight (auto: nnsight unless a streaming analyzer reads attention patterns and the TL bridge adapts the model; docs/engine/backends.md)"),
    remote: bool = typer.Option(False, "--remote", help="run on NDIF through nnsight (hub id; key from $NDIF_API_KEY)"),
    batch_size: int = typer.Option(8, help="probe sequences per forward pass"),
    seq_len: Optional[int] = typer.Option(None, help="probe length in tokens (analyzers that take one)"),
    n_samples: Optional[int] = typer.Option(None, help="number of probe sequences"),
    seed: Optional[int] = typer.Option(None, help="probe seed"),
    context_lengths: Optional[str] = typer.Option(None, "--context-lengths", help="needle-in-a-haystack context lengths, e.g. 1k,2k,4k (retrieval)"),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, mps"),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16"),
    param: list[str] = typer.Option([], "--param", "-p", help="analyzer parameter, e.g. induction.exclude_bos=false (repeatable)"),
    top: int = typer.Option(5, min=1, help="heads per metric in the summary"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted scan from the parts next to --out"),
    force: bool = typer.Option(False, "--force", help="with --resume: discard parts of a scan with other parameters"),
    shard_size: int = typer.Option(64, help="probe sequences per shard (unit of resume and of Ray tasks)"),
    ray: Optional[str] = typer.Option(
        None, "--ray", metavar="[ADDRESS]", help="run shards on Ray: alone = a local Ray, or a cluster address (needs headscope[ray])"
    ),
    ray_workers: Optional[int] = typer.Option(None, help="Ray workers (default: one per CPU, or per GPU with --device cuda)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="your own texts instead of the built-in probes "
                                           "(sinks, previous-token, duplicate-token): .txt one per line, .jsonl or .parquet"),
    prompt_column: Optional[str] = typer.Option(None, "--prompt-column", help="the text field of a .jsonl/.parquet --prompts file (default: text)"),
) -> None:
    """Scan MODEL with the chosen analyzers and write a head atlas."""
    from headscope.scanning import parse_lengths, parse_param_overrides
    from headscope.scanning import scan as run_scan
    from headscope.summary import print_summary

    before = _side_outputs(out)
    texts = None
    if prompts is not None:
        from headscope.probes.user_texts import read_prompt_file

        texts = read_prompt_file(prompts, column=prompt_column)
    elif prompt_column is not None:
        raise HeadscopeError("--prompt-column names the text field of --prompts: pass --prompts FILE too")
    try:
        atlas = run_scan(
            model,
            analyzers,
            out=out,
            backend=backend,
            remote=remote,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            seq_len=seq_len,
            n_samples=n_samples,
            seed=seed,
            params=parse_param_overrides(param),
            shard_size=shard_size,
            resume=resume,
            force=force,
            ray_address=ray,
            ray_workers=ray_workers,
            progress=not quiet,
            context_lengths=parse_lengths(context_lengths) if context_lengths else None,
            prompts=texts,
        )
    except KeyboardInterrupt:
        raise Interrupted(_what_was_kept(out)) from None
    print_summary(atlas, k=top, console=console)
    console.print(f"wrote {len(atlas)} rows to {safe(out)}")
    from headscope.scanning import side_output_path

    for name in atlas.analyzers:
        extra = side_output_path(out, name)
        if extra.is_file() and _identity(extra) != before.get(extra):  # written by this run, not a stale one
            console.print(f"wrote {safe(name)} extras to {safe(extra)}")
    from headscope.atlas.exemplars import exemplar_path

    exemplars = exemplar_path(out)
    if exemplars.is_file() and _identity(exemplars) != before.get(exemplars):
        console.print(f"wrote each head's pattern on two short texts to {safe(exemplars)} (headscope view shows them)")


@app.command()
def show(
    atlas_path: Path = typer.Argument(..., metavar="ATLAS", help="an atlas .parquet file"),
    top: int = typer.Option(5, min=1, help="heads per metric"),
    full: bool = typer.Option(False, "--all", help="every model-level row instead of sparklines and top entries"),
) -> None:
    """Print the top heads of an existing atlas, one block per analyzer."""
    from headscope.atlas import read_atlas
    from headscope.summary import print_summary

    atlas = read_atlas(atlas_path)
    meta = atlas.metadata
    console.print(f"{safe(atlas_path)}: {len(atlas)} rows, analyzers {safe(', '.join(atlas.analyzers))}, "
                  f"schema {meta.get('schema_version')}")
    print_summary(atlas, k=top, console=console, full=full)


@app.command()
def view(
    atlas_path: Path = typer.Argument(..., metavar="ATLAS", help="an atlas .parquet file"),
    compare: Optional[Path] = typer.Option(None, "--compare", help="a second atlas to compare with"),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="where to write the HTML report"),
) -> None:
    """Write the atlas explorer: one self-contained HTML page (plotly.js embedded; opens with no network)."""
    from headscope.atlas import read_atlas
    from headscope.paths import check_output_path
    from headscope.viewers import write_report

    check_output_path(out, what="--out")
    names = None
    if compare is not None:  # label the panels by file: two scans of one model would otherwise look alike
        names = (atlas_path.name, compare.name) if atlas_path.name != compare.name else (str(atlas_path), str(compare))
    written = write_report(read_atlas(atlas_path), out, compare=read_atlas(compare) if compare else None, names=names)
    console.print(f"wrote {safe(written)} ({written.stat().st_size / 2**20:.1f} MB)")


@app.command()
def merge(
    atlases: list[Path] = typer.Argument(..., metavar="ATLAS...", help="atlases to merge (same or different models)"),
    out: Path = typer.Option(..., "--out", "-o", help="where to write the merged atlas"),
) -> None:
    """Merge atlases; identical rows collapse, conflicting rows are reported and nothing is written."""
    from headscope.atlas import merge_atlases, read_atlas
    from headscope.paths import check_output_path

    check_output_path(out, what="--out")
    merged = merge_atlases([read_atlas(path) for path in atlases])
    merged.save(out)
    console.print(f"wrote {len(merged)} rows ({safe(', '.join(merged.models))}) to {safe(out)}")


@app.command()
def diff(
    after: Path = typer.Argument(..., metavar="AFTER", help="atlas of the changed model (e.g. the refusal-tuned one)"),
    before: Path = typer.Argument(..., metavar="BEFORE", help="atlas of the reference model"),
    metric: str = typer.Option("ships_score", "--metric", "-m", help="metric to compare head by head"),
    top: int = typer.Option(10, min=1, help="heads to print (largest change first)"),
) -> None:
    """Print the heads whose METRIC changed most between two atlases (after - before)."""
    from headscope.atlas import diff_atlases, read_atlas

    table_rows = diff_atlases(read_atlas(after), read_atlas(before), metric).head(top)
    table = Table(title=safe(f"{metric}: {after.name} - {before.name}"))
    for column in ("head", "before", "after", "delta", "rank before", "rank after"):
        table.add_column(column, justify="right")
    for row in table_rows.itertuples():
        table.add_row(f"L{row.layer}H{row.head}", f"{row.before:.4g}", f"{row.after:.4g}", f"{row.delta:+.4g}",
                      f"{row.rank_before:.0f}", f"{row.rank_after:.0f}")
    console.print(table)


@app.command()
def models() -> None:
    """List the embedded models (and those derived from them) and whether each is installed and cached."""
    from headscope.models import DERIVED_MODELS, EMBEDDED_MODELS, cache_root, is_cached, package_dir
    from headscope.models.derived import derived_state

    table = Table(title=f"embedded models (cache: {cache_root()})")
    table.add_column("alias", no_wrap=True)
    for column in ("installed", "cached", "licence", "description"):
        table.add_column(column)
    for alias, spec in EMBEDDED_MODELS.items():
        installed = package_dir(spec) is not None
        table.add_row(
            alias,
            "yes" if installed else f"no: {spec.install_hint}",
            "yes" if is_cached(spec) else "no (converted on first use)",
            f"{spec.licence} ({spec.licence_url})" if spec.licence_url else spec.licence,
            spec.description,
        )
    for alias, derived in DERIVED_MODELS.items():
        base = EMBEDDED_MODELS[derived.base]
        state = derived_state(derived)
        table.add_row(
            alias,
            f"yes (tuned from {derived.base})" if package_dir(base) is not None else f"no: {base.install_hint}",
            {"cached": "yes", "stale": "stale (retuned on next use)"}.get(
                state, f"no (tuned on first use, ~{derived.build_minutes} min)"
            ),
            derived.licence,
            derived.description,
        )
    console.print(table)


@app.command()
def analyzers() -> None:
    """List the analyzers and the metrics each writes."""
    from headscope.analyzers import ANALYZERS

    table = Table(title="analyzers")
    table.add_column("name", no_wrap=True)
    table.add_column("metrics")
    table.add_column("what it measures")
    for name, cls in ANALYZERS.items():
        table.add_row(name, ", ".join(cls.metrics), cls.description)
    console.print(table)


@app.command("policy")
def policy_command(
    atlas_path: Path = typer.Argument(..., metavar="ATLAS", help="an atlas with the scores the rule reads"),
    out: Path = typer.Option(Path("kv_policy"), "--out", "-o", help="folder for policy.json, full_attention_heads.tsv, config.json"),
    rule: str = typer.Option("retrieval", help="retrieval, razor (echo + induction), sinks, or metric"),
    metric: Optional[str] = typer.Option(None, help="with --rule metric: the per-head metric to rank by"),
    direction: str = typer.Option("higher", help="with --rule metric: 'higher' or 'lower' values keep a head full"),
    aggregate: str = typer.Option("max", help="query heads -> KV head: max (golden-stick) or mean (kvpress)"),
    budget: float = typer.Option(0.25, help="fraction of KV heads kept full (0-1)"),
    sink: int = typer.Option(4, help="first tokens a streaming head keeps"),
    window: int = typer.Option(128, help="most recent tokens a streaming head keeps (DuoAttention's recent_size)"),
    model: Optional[str] = typer.Option(None, help="the model, when the atlas holds several"),
) -> None:
    """Rank KV heads from an atlas and write a KV-cache policy (JSON + DuoAttention's format)."""
    from headscope.paths import check_output_path
    from headscope.policies.api import make_policy
    from headscope.policies.policy import describe

    check_output_path(out / "policy.json", what="--out")
    made = make_policy(atlas_path, out=out, rule=rule, aggregation=aggregate, budget=budget, sink=sink,
                       window=window, model=model, metric=metric, direction=direction)
    console.print(safe(describe(made)))
    console.print(f"wrote {safe(out / 'policy.json')}, {safe(out / 'full_attention_heads.tsv')} and {safe(out / 'config.json')}")


@app.command("evaluate-policy")
def evaluate_policy_command(
    model: str = typer.Argument(..., help="the model the policy was made for (embedded alias, folder, hub id)"),
    policy_path: Path = typer.Argument(..., metavar="POLICY", help="policy.json (or its folder) from `headscope policy`"),
    out: Path = typer.Option(Path("kv_policy_eval.parquet"), "--out", "-o", help="atlas with the model-level rows; the curve goes beside it (.html)"),
    context_lengths: str = typer.Option("2k", "--context-lengths", help="needle context lengths, e.g. 2k,4k"),
    budgets: str = typer.Option("0.1,0.25,0.5", help="fractions of KV heads kept full"),
    needles: int = typer.Option(4, help="needles per context length"),
    seeds: int = typer.Option(3, help="random policies per budget"),
    max_new_tokens: int = typer.Option(32, help="answer tokens decoded"),
    backend: str = typer.Option("auto", help="auto, transformer-lens or nnsight"),
    device: str = typer.Option("cpu", help="cpu, cuda, mps"),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Needle accuracy and KV bytes with POLICY applied, vs full cache, random and lowest-ranked policies."""
    from headscope.paths import check_output_path
    from headscope.policies.api import evaluate
    from headscope.scanning import parse_lengths

    check_output_path(out, what="--out")
    try:
        fractions = [float(b) for b in budgets.split(",") if b.strip()]
    except ValueError:
        raise HeadscopeError(f"--budgets '{budgets}' is not a comma list of fractions, e.g. 0.1,0.25,0.5") from None
    _, evaluation = evaluate(model, policy_path, out=out, context_lengths=parse_lengths(context_lengths),
                             budgets=fractions, n_needles=needles, random_seeds=seeds, max_new_tokens=max_new_tokens,
                             backend=backend, device=device, dtype=dtype, progress=not quiet)
    table = Table(title="needle accuracy under KV-cache policies")
    for column in ("context", "condition", "budget", "accuracy", "spread", "recall", "KV MiB", "full KV heads"):
        table.add_column(column)
    for row in evaluation.table().to_dict("records"):
        spread = f"{row['accuracy_std']:.2f} ({row['seeds']} seeds)" if row["condition"] == "random" else ""
        table.add_row(str(row["context_length"]), row["condition"], f"{row['budget']:.2f}", f"{row['accuracy']:.2f}",
                      spread, f"{row['recall']:.2f}", f"{row['kv_bytes'] / 2**20:.1f}", f"{row['full_kv_heads']:.0f}")
    console.print(table)
    curve = out.with_suffix(".html")
    from headscope.atomic import atomic_write_text

    atomic_write_text(curve, evaluation.figure().to_html(include_plotlyjs=True, full_html=True))
    console.print(f"wrote {safe(out)} (model-level rows) and the curve {safe(curve)}")


def _optional_ray_address(argv: list[str]) -> list[str]:
    """`--ray` may stand alone (a local Ray): give it the value "local" when no address follows."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--ray" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out.insert(i + 1, "local")
            break
    return out


def _side_outputs(out: Path) -> dict[Path, tuple[int, int]]:
    """Identity (inode, mtime) of the files already beside `out` (side outputs, exemplars): the atomic writer gives
    a new file a new one."""
    return {path: _identity(path) for path in out.parent.glob(f"{out.stem}.*") if path.is_file()} \
        if out.parent.is_dir() else {}


def _identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_ino, info.st_mtime_ns


def _what_was_kept(out: Path) -> str:
    """The line printed on Ctrl-C during a scan: finished parts stay next to --out for --resume."""
    from headscope.scanning.cache import is_part_file, parts_folder

    folder = parts_folder(Path(out))
    kept = [p for p in folder.iterdir() if is_part_file(p)] if folder.is_dir() else []
    if not kept:
        return NOTHING_KEPT
    return (
        f"interrupted: {len(kept)} finished part file(s) kept in {folder}; "
        "run the same command with --resume to continue"
    )


def main() -> None:
    """Entry point with click's own standalone handling: usage errors print the usage line, a "Try ... --help"
    hint and close matches, exit 2. User mistakes (HeadscopeError) print one line, exit 2; Ctrl-C says what
    was kept, exit 130; anything unexpected one line, exit 1 (HEADSCOPE_DEBUG=1 for the traceback)."""
    try:
        app(args=_optional_ray_address(sys.argv[1:]), prog_name="headscope", standalone_mode=True)
    except HeadscopeError as err:
        err_console.print(f"[bold red]error:[/] {safe(err)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as err:  # the disk, not headscope: say which and what to do
        err_console.print(f"[bold red]error:[/] {safe(os_error_line(err))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Interrupted as err:
        err_console.print(str(err), highlight=False, soft_wrap=True, markup=False)
        sys.exit(130)
    except SystemExit as done:
        if done.code == 130:  # typer's answer to Ctrl-C outside a scan: nothing is half-written (atomic writes)
            err_console.print(NOTHING_KEPT, highlight=False)
        raise
    except KeyboardInterrupt:
        err_console.print(NOTHING_KEPT, highlight=False)
        sys.exit(130)
    except Exception as err:
        if os.environ.get("HEADSCOPE_DEBUG"):
            raise
        err_console.print(f"[bold red]error:[/] unexpected {type(err).__name__}: {safe(err)} (set HEADSCOPE_DEBUG=1 for the traceback)", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
