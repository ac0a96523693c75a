"""``psylens doctor``: does psylens give the same answers on this device as on the CPU?

    psylens doctor --model M [--device auto|cuda|cuda:1|mps|cpu] [--dtype float32|float16|bfloat16]
                   [--device-map auto] [--json FILE]

Runs :func:`psylens.devicecheck.check_device` and prints one row a check (pass, fail or skip, the value,
its bar, what was measured). Exit code 0 when every check that ran passed, 1 otherwise. Bad arguments
(an unavailable device, an unknown dtype, an unwritable --json) raise ``ValueError`` before any model
is loaded; the main CLI prints them as one line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

if TYPE_CHECKING:
    from rich.table import Table

    from psylens.devicecheck import Check, DeviceReport

__all__ = ["doctor_cmd", "report_table"]

_STATUS = {"pass": "[green]PASS[/green]", "fail": "[bold red]FAIL[/bold red]", "skip": "[yellow]skip[/yellow]"}


def _number(x: float | None) -> str:
    if x is None:
        return "—"
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4g}"


def _bar(c: Check) -> str:
    if c.tolerance is None:
        return "—"
    return f"{'≤' if c.bound == 'max' else '≥'} {_number(c.tolerance)}"


def report_table(report: DeviceReport) -> Table:
    """The report as a rich table: check, result, value, bar, detail."""
    from rich.markup import escape
    from rich.table import Table

    where = f"device_map={report.device_map}" if report.device_map else report.device
    table = Table(title=f"{escape(report.model)}: {escape(where)} {report.dtype} vs "
                        f"{report.reference_device} {report.reference_dtype}", title_justify="left")
    for col, kw in (("check", {}), ("result", {}), ("value", {"justify": "right"}), ("tolerance", {}),
                    ("detail", {"overflow": "fold"})):
        table.add_column(col, **kw)  # type: ignore[arg-type]
    for c in report.checks:
        table.add_row(c.name, _STATUS[c.status], _number(c.value), _bar(c), escape(c.detail))
    return table


def _check_json_out(path: Path) -> None:
    from psylens.io import ensure_writable_dir

    if path.exists() and path.is_dir():
        raise ValueError(f"--json {str(path)!r} is a directory; give a file name such as doctor.json")
    ensure_writable_dir(path.absolute().parent)


def doctor_cmd(
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="Alias, HF id, directory or .gguf."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:1 | mps (the target)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32 | float16 | bfloat16 (default: the device's)."),
    device_map: Optional[str] = typer.Option(None, "--device-map", help="e.g. auto: spread the target over GPUs."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON to this file."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar over loads and checks."),
) -> None:
    """Check that psylens gives the same answers on a device as on the CPU (logits, record, interventions,
    steering, attribution, fingerprint). Exit code 1 when a check fails."""
    from rich.console import Console
    from rich.markup import escape

    from psylens.devicecheck import check_device
    from psylens.io import write_json

    if json_out is not None:
        _check_json_out(json_out)
    report = check_device(model, device=device, dtype=dtype, device_map=device_map, progress=progress)
    out = Console()
    out.print(report_table(report))
    for note in report.notes:
        out.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    if report.passed:
        ran = sum(not c.skipped for c in report.checks)
        out.print(f"[green]all {ran} checks that ran passed[/green]", highlight=False)
    else:
        out.print(f"[bold red]failed:[/bold red] {', '.join(report.failed)}", highlight=False)
    if json_out is not None:
        write_json(json_out, report.to_dict(), nan="null")
        out.print(f"wrote {json_out}", highlight=False, soft_wrap=True)
    raise typer.Exit(0 if report.passed else 1)
