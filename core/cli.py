"""The ``psylens`` command line (Typer + rich).

Every command has ``--help``; a bad argument prints one line and exits non-zero.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any, Optional

import typer
from rich.console import Console

from psylens.model_options import DEVICE_MAP_OPTION, DEVICE_OPTION, DTYPE_OPTION, model_kwargs

__all__ = ["app", "main", "psylens_command"]

app = typer.Typer(
    name="psylens",
    help="Mechanistic interpretability of emotion and psychological reasoning in language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out_console = Console()


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    for noisy in ("httpx", "urllib3", "transformer_lens", "nnsight", "transformers", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    _setup_logging(verbose)


@app.command()
def models() -> None:
    """List the built-in model aliases and whether each is cached (any HF id, directory or .gguf also works)."""
    from rich.markup import escape
    from rich.padding import Padding
    from rich.text import Text

    from psylens.models import DEFAULT_MODEL, REGISTRY, cache_dir, cache_entries

    stale = [e for e in cache_entries() if e.status == "stale"]
    for alias, src in REGISTRY.items():
        cached = "[green]yes[/green]" if src.is_cached() else "no (the first load dequantizes it)"
        name = f"{alias} (default)" if alias == DEFAULT_MODEL else alias
        out_console.print(f"[bold]{escape(name)}[/bold]  cached: {cached}")
        out_console.print(Padding(Text(f"{src.description}; package {src.package}"), (0, 0, 0, 2)), highlight=False)
    out_console.print(f"cache: {escape(str(cache_dir()))}  (set $PSYLENS_CACHE to move it)", highlight=False)
    if stale:
        mb = sum(e.size_bytes for e in stale) / 1e6
        out_console.print(f"[yellow]{len(stale)} stale cache entries[/yellow] ({mb:,.0f} MB): "
                          "`psylens cache list` shows them, `psylens cache clean` removes them")


cache_app = typer.Typer(
    name="cache", help="The cache of dequantized GGUF checkpoints ($PSYLENS_CACHE/models).",
    no_args_is_help=True, add_completion=False,
)
app.add_typer(cache_app, name="cache")


@cache_app.command("list")
def cache_list() -> None:
    """List cached checkpoints: current (a load uses it) or stale (none will), with sizes."""
    from rich.markup import escape

    from psylens.models import cache_dir, cache_entries

    entries = cache_entries()
    out_console.print(f"cache: {escape(str(cache_dir() / 'models'))}", highlight=False)
    if not entries:
        out_console.print("empty")
        return
    colour = {"current": "green", "stale": "yellow", "unknown": "white"}
    for e in entries:
        out_console.print(f"[{colour[e.status]}]{e.status:<7}[/{colour[e.status]}] {e.size_bytes / 1e6:8,.0f} MB  "
                          f"{escape(e.path.name)}", highlight=False)
        out_console.print(f"         {escape(e.reason)}", highlight=False)
    n_stale = sum(e.status == "stale" for e in entries)
    total = sum(e.size_bytes for e in entries) / 1e6
    out_console.print(f"{len(entries)} entries, {total:,.0f} MB; {n_stale} stale"
                      + (" (`psylens cache clean` removes them)" if n_stale else ""))


@cache_app.command("clean")
def cache_clean(
    all_: bool = typer.Option(False, "--all", help="Remove every entry, current ones too (the next load dequantizes again)."),
) -> None:
    """Remove stale cached checkpoints (with --all, every one). Asks nothing; prints what it removed."""
    from rich.markup import escape

    from psylens.models import clean_cache

    removed = clean_cache(everything=all_)
    for e in removed:
        out_console.print(f"removed {escape(str(e.path))}  ({e.size_bytes / 1e6:,.0f} MB, {e.status}: {escape(e.reason)})",
                          highlight=False, soft_wrap=True)
    mb = sum(e.size_bytes for e in removed) / 1e6
    out_console.print(f"removed {len(removed)} entries, {mb:,.0f} MB" if removed else "nothing to remove")


def psylens_command() -> str:
    """How to call ``psylens`` from where the user stands.

    ``psylens`` when the running executable's environment is the one on ``PATH`` (an active venv,
    a global install); otherwise the path of this environment's script, relative to the working
    directory when it lies below it (``.venv/bin/psylens``), else absolute.
    """
    import shutil

    scripts = Path(sys.prefix) / ("Scripts" if os.name == "nt" else "bin")
    exe = scripts / ("psylens.exe" if os.name == "nt" else "psylens")
    found = shutil.which("psylens")
    if not exe.exists() or (found is not None and Path(found).resolve() == exe.resolve()):
        return "psylens"
    try:
        rel = exe.absolute().relative_to(Path.cwd().absolute())
    except ValueError:
        return str(exe.absolute())
    return str(rel) if len(rel.parts) <= 4 else str(exe.absolute())  # .venv/bin/psylens, proj/.venv/bin/psylens


def _split(values: list[str]) -> list[str]:
    return [v for item in values for v in item.replace(",", " ").split() if v]


def _layers(value: Optional[str]) -> Optional[list[int]]:
    if value is None or value.strip() in ("", "all"):
        return None
    out: list[int] = []
    for part in value.replace(" ", "").split(","):
        try:
            if "-" in part.lstrip("-") and not part.startswith("-"):
                a, b = part.split("-")
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(f"--layers {value!r}: use indices like '0,5,12', a range '10-20' or 'all'") from None
    return out


def _check_out(out: Path) -> None:
    """Fail fast when ``out`` cannot become a directory, without creating anything."""
    p = out.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK):
        raise ValueError(
            f"output directory {str(out)!r} is not writable ({str(p)!r} is not a writable directory); "
            "choose a directory you can write to, e.g. --out ./runs/my-run"
        )


@app.command()
def harvest(
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="Alias, HF id, directory or .gguf."),
    stimuli: str = typer.Option("emotions", "--stimuli", "-s", help="Built-in set name or a JSONL file."),
    sites: list[str] = typer.Option(["resid_post"], "--sites", help="Sites, comma-separated or repeated."),
    layers: Optional[str] = typer.Option(None, "--layers", help="e.g. '0,5,12', '10-20' or 'all' (default)."),
    positions: str = typer.Option("last", "--positions", help="last | mean | all"),
    format: str = typer.Option("auto", "--format", help="chat | raw | auto"),
    system_prompt: Optional[str] = typer.Option(None, "--system-prompt"),
    batch_size: int = typer.Option(16, "--batch-size"),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write (resumes if it exists)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="PEFT/LoRA adapter directory."),
    device: str = DEVICE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    device_map: Optional[str] = DEVICE_MAP_OPTION,
    backend: str = typer.Option("hooks", "--backend", help="hooks (default) | bridge | nnsight"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Harvest activations of a stimulus set into a run directory."""
    import time

    import torch

    from psylens.activations import POSITIONS
    from psylens import artifacts
    from psylens.harvest import BACKENDS, check_output
    from psylens.io import ensure_writable_dir
    from psylens.models import load_model
    from psylens.runs import create_run, now
    from psylens.sites import resolve_layers, validate_sites
    from psylens.stimuli import load
    from psylens.summary import layer_summary

    started, t_load = now(), time.perf_counter()  # the run records when the command started
    # Check every argument before anything is written (and what needs no model, before loading it).
    site_list = validate_sites(_split(sites))
    layer_list = _layers(layers)
    if positions not in POSITIONS:
        raise ValueError(f"--positions {positions!r}: use one of {', '.join(POSITIONS)}")
    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r}: use one of {', '.join(BACKENDS)}")
    stim = load(stimuli)
    _check_out(out)
    torch.manual_seed(seed)
    m = load_model(model, adapter=adapter, **model_kwargs(device, dtype, device_map))
    if layer_list is not None:
        layer_list = resolve_layers(layer_list, m.n_layers)
    m.resolve_format(format)
    load_seconds = round(time.perf_counter() - t_load, 2)
    # a refused re-run (a different harvest or another command's run in the same --out) is refused
    # here, before anything is written; run.json then records the command's start, not the harvest's end
    acts_dir = out / artifacts.ACTIVATIONS
    check_output(m, stim, acts_dir, sites=site_list, layers=layer_list, positions=positions, format=format,
                 system_prompt=system_prompt)
    ensure_writable_dir(out)
    config = {"stimuli": stimuli, "sites": site_list, "layers": layer_list, "positions": positions,
              "format": format, "system_prompt": system_prompt, "batch_size": batch_size, "backend": backend}
    run = create_run(out, command=" ".join(["psylens", *sys.argv[1:]]), model=m, config=config, seed=seed,
                     started=started)
    run.record_step("load", seconds=load_seconds, model=m.spec, adapter=m.adapter, device=str(m.device))
    with run.step("harvest", config) as step:
        acts = m.harvest(stim, sites=site_list, layers=layer_list, positions=positions, format=format,
                         system_prompt=system_prompt, batch_size=batch_size, out=acts_dir, backend=backend)
        step.output(artifacts.ACTIVATIONS)
        step.note(n=len(acts), sites=acts.sites, layers=acts.layers, output=artifacts.ACTIVATIONS)
    if positions != "all" and any(lab is not None for lab in acts.labels):
        with run.step("summary", {"seed": seed}) as step:
            run.write_json(artifacts.LAYER_SUMMARY, layer_summary(acts, seed=seed))
            step.output(artifacts.LAYER_SUMMARY)
            step.note(output=artifacts.LAYER_SUMMARY)
    out_console.print(f"[green]harvested[/green] {acts}")
    out_console.print(f"run: {out}\nexplore: {psylens_command()} explore {out}", highlight=False)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory."),
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m"),
    device: str = DEVICE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    device_map: Optional[str] = DEVICE_MAP_OPTION,
    seed: int = typer.Option(0, "--seed"),
    skip: list[str] = typer.Option([], "--skip", help="Steps to skip: summary, probes, steering, validation, compare."),
) -> None:
    """The main job: harvest, summarise, probe, steer, validate and compare with the RL-tuned organism, into one run."""
    import time

    from psylens.demo import DEMO_STEPS, headline_lines, headlines, run_demo

    skipped = _split(skip)
    bad = [s for s in skipped if s not in DEMO_STEPS[2:]]
    if bad:
        raise ValueError(f"--skip {bad}: only these steps can be skipped: {', '.join(DEMO_STEPS[2:])}")
    steps = tuple(s for s in DEMO_STEPS if s not in skipped)
    start = time.perf_counter()

    def on_step(name: str, seconds: float, info: dict[str, Any]) -> None:
        detail = ", ".join(f"{k}={_fmt(v)}" for k, v in info.items())
        out_console.print(f"[bold green]✓[/bold green] {name:<9} {seconds:7.1f}s  {detail}")

    out_console.print(f"[bold]psylens demo[/bold] → {out}  (steps: {', '.join(steps)})")
    run = run_demo(out, model=model, **model_kwargs(device, dtype, device_map), seed=seed, steps=steps, on_step=on_step)
    out_console.print(f"\n[bold]done[/bold] in {time.perf_counter() - start:.0f}s. Run: {out.resolve()}")
    for line in headline_lines(headlines(run)):  # each headline beside its controls, 95% intervals in brackets
        out_console.print(line, markup=False, highlight=False, soft_wrap=True)
    out_console.print(f"Open it in the explorer:  [cyan]{psylens_command()} explore {out}[/cyan]", highlight=False)


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, float) for x in v):
        return f"\\[{v[0]:.3f}, {v[1]:.3f}]"  # an interval; the backslash keeps rich from reading it as markup
    return f"{v:.3f}" if isinstance(v, float) else str(v)


@app.command()
def explore(
    run: Path = typer.Argument(..., help="Run directory (holds run.json), or a folder of runs to list them."),
    port: Optional[int] = typer.Option(
        None, "--port", help="TCP port to serve on (1-65535). Default: 8501 when free, else any free port."
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host",
        help="Interface to bind. The default answers this machine only; 0.0.0.0 lets any machine that "
             "reaches this one read the run.",
    ),
    root: Optional[Path] = typer.Option(
        None, "--root", help="Directory the explorer's run box may browse (default: the run directory itself)."
    ),
) -> None:
    """Serve a run in the Streamlit explorer at http://127.0.0.1:PORT (no browser tab opens: open the URL).

    Ctrl-C or SIGTERM stops the server. `psylens explore runs` lists the runs inside `runs`.
    """
    from psylens.apps import find_runs, is_local, launch, url
    from psylens.apps import _pick_port as pick_port
    from psylens.runs import RUN_FILE

    if port is not None and not 0 < port < 65536:
        raise ValueError(f"--port {port} is out of range: give a TCP port in 1-65535, or leave it out to pick a free one")
    if not (run / RUN_FILE).is_file():
        if run.is_dir():
            found = find_runs(run)
            if found:
                out_console.print(f"{run} is a folder of runs, not a run. Open one of them:", highlight=False)
                for r in found:
                    out_console.print(f"  {psylens_command()} explore {r}", highlight=False, soft_wrap=True)
                raise typer.Exit(0)
        from psylens.runs import open_run

        open_run(run)  # the ValueError that names what is missing and the fix
    if root is not None:
        r, rt = run.resolve(), root.resolve()
        if not (r == rt or rt in r.parents):
            raise ValueError(f"run {run} is not inside --root {root}: give a root that contains the run")
    if port is None:
        port = pick_port(host)
    address = url(host if host not in ("localhost",) else "127.0.0.1", port)
    out_console.print(f"serving the explorer for {run} at {address}", highlight=False)
    out_console.print("No browser tab opens: open that address yourself. Ctrl-C stops the server.", highlight=False)
    if not is_local(host):
        console.print(
            f"[yellow]warning:[/yellow] bound to {host}, not localhost: anyone who can reach this machine on port "
            f"{port} can read this run. Leave out --host to serve on 127.0.0.1 only.", highlight=False,
        )
    code = launch(run, port=port, block=True, host=host, root=root)
    raise typer.Exit(code if isinstance(code, int) else 0)


# (module, attribute, command name): one line a subcommand, added by the package that owns it.
_SUBCOMMANDS: tuple[tuple[str, str, str], ...] = (
    ("psylens.probes.cli", "probe", "probe"),
    ("psylens.steering.cli", "steer_app", "steer"),
    ("psylens.tasks_cli", "tasks_app", "tasks"),
    ("psylens.validation.cli", "validate_app", "validate"),
    ("psylens.saes.traces_cli", "traces_cmd", "traces"),
    ("psylens.circuits.cli", "circuits_app", "circuits"),
    ("psylens.compare.organism_cli", "organism_app", "organism"),
    ("psylens.saes.cli", "sae_app", "sae"),
    ("psylens.compare.cli", "compare_cmd", "compare"),
    ("psylens.devicecheck_cli", "doctor_cmd", "doctor"),
)


def _register_optional(
    target: typer.Typer | None = None, import_module: Callable[[str], Any] | None = None
) -> None:
    """Commands contributed by the analysis subpackages.

    An ``ImportError`` raised by psylens' own code (a bug, a missing psylens module) surfaces as is.
    Only a missing third-party package turns the command into one that says what to install.
    """
    import importlib

    target = app if target is None else target
    import_module = importlib.import_module if import_module is None else import_module
    for module, attr, name in _SUBCOMMANDS:
        try:
            obj = getattr(import_module(module), attr)
        except ModuleNotFoundError as e:
            missing = (e.name or "").split(".")[0]
            if not missing or missing == "psylens":
                raise
            _register_missing(target, name, missing)
            continue
        if isinstance(obj, typer.Typer):
            target.add_typer(obj, name=name)
        else:
            target.command(name=name, help=obj.__doc__)(obj)


def _register_missing(target: typer.Typer, name: str, package: str) -> None:
    def unavailable() -> None:
        raise ValueError(f"`psylens {name}` needs the package {package!r}, which is not installed: "
                         f"pip install {package} (or `make setup-full`)")

    target.command(name=name, help=f"(unavailable: needs the package {package!r})")(unavailable)


_register_optional()


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(exit, abort, usage-error) exception classes: typer >= 0.29 raises those of its own
    vendored click (``typer._click``), older typer those of ``click``."""
    exits: list[type] = []
    aborts: list[type] = []
    usage: list[type] = []
    try:
        import click

        exits.append(click.exceptions.Exit)
        aborts.append(click.exceptions.Abort)
        usage.append(click.ClickException)
    except ImportError:
        pass
    try:
        from typer._click.exceptions import ClickException
        from typer.exceptions import Abort, Exit

        exits.append(Exit)
        aborts.append(Abort)
        usage.append(ClickException)
    except ImportError:
        pass
    return tuple(exits), tuple(aborts), tuple(usage)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app and turns user errors into one line and a non-zero exit."""
    from rich.markup import escape

    exits, aborts, usage = _click_exceptions()
    try:
        rv = app(args=argv, standalone_mode=False)
    except exits as e:  # type: ignore[misc]
        return int(e.exit_code)  # type: ignore[attr-defined]
    except aborts:  # type: ignore[misc]
        console.print("aborted")
        return 130
    except usage as e:  # type: ignore[misc]
        if type(e).__name__ == "NoArgsIsHelpError":  # `psylens` alone: the help was printed
            return 2
        console.print(f"[red]error:[/red] {escape(e.format_message())}", highlight=False, soft_wrap=True)  # type: ignore[attr-defined]
        return 2
    except (ValueError, FileNotFoundError, PermissionError) as e:
        console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        return 1
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
