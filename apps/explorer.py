"""psylens explorer — browse the runs under one root directory in the browser.

    psylens explore runs/demo                          # serves on http://127.0.0.1:8501 (no tab opens)
    streamlit run apps/explorer.py -- runs/demo [--root runs]
    PSYLENS_RUN=runs/demo [PSYLENS_ROOT=runs] streamlit run apps/explorer.py

The run comes from the script arguments (after ``--``), else ``$PSYLENS_RUN``, else the
sidebar's text box. Browsing is restricted to a **root** (``--root`` / ``$PSYLENS_ROOT``;
default: the directory given, else the working directory): the text box opens runs inside it
and says nothing about paths outside it. Pages are registered in ``psylens.apps.views.kit``;
a page shows up when its ``available(run)`` is true. The explorer reads run directories only.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import streamlit as st

from psylens.apps.views import kit
from psylens.apps.views.overview import format_time, model_spec
from psylens.runs import RUN_FILE, Run, open_run

ENV_VAR = "PSYLENS_RUN"
ROOT_ENV_VAR = "PSYLENS_ROOT"
HOW_TO_GIVE = (
    "Give the directory that holds `run.json`: `psylens explore RUN`, "
    f"`streamlit run apps/explorer.py -- RUN`, `{ENV_VAR}=RUN`, or type it in the sidebar. "
    "`psylens demo` writes a run to look at."
)


def _script_args() -> list[str]:
    # streamlit sets sys.argv = [this script, *args]; anywhere else (e.g. AppTest under pytest)
    # sys.argv belongs to another program, so read it only when argv[0] is this file.
    if len(sys.argv) > 1 and Path(sys.argv[0]).resolve() == Path(__file__).resolve():
        return sys.argv[1:]
    return []


def given_run_path() -> str:
    """The run named after ``--`` on the streamlit command line, else ``$PSYLENS_RUN``, else ``""``."""
    args = _script_args()
    rest = [a for i, a in enumerate(args) if a != "--root" and (i == 0 or args[i - 1] != "--root")]
    if rest:
        return rest[0]
    return os.environ.get(ENV_VAR, "")


def given_root() -> Path:
    """The browsing root: ``--root`` after ``--``, else ``$PSYLENS_ROOT``, else the run given, else the cwd."""
    args = _script_args()
    if "--root" in args and args.index("--root") + 1 < len(args):
        root = args[args.index("--root") + 1]
    else:
        root = os.environ.get(ROOT_ENV_VAR, "") or given_run_path() or "."
    return Path(root).expanduser().resolve()


def inside(path: Path, root: Path) -> bool:
    """Is ``path`` (symlinks resolved) ``root`` or below it?"""
    p = path.expanduser().resolve()
    return p == root or root in p.parents


def runs_inside(path: Path, limit: int = 50) -> list[Path]:
    """``path`` itself when it is a run, and the runs one or two levels below it, sorted."""
    found: list[Path] = []
    try:
        if (path / RUN_FILE).is_file():
            found.append(path)
        for pattern in (f"*/{RUN_FILE}", f"*/*/{RUN_FILE}"):
            found.extend(sorted(p.parent for p in path.glob(pattern)))
    except OSError:
        return found
    return found[:limit]


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (what a user would type)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def explain_bad_run(given: str, error: Exception, root: Path | None = None) -> str:
    """The error text for a path that is not a readable run: what was given, what is wrong, the fix.

    Callers must check :func:`inside` first: the details below are only for paths inside the root.
    """
    path = Path(given).expanduser()
    if not path.exists():
        what = f"`{given}` does not exist (looked in `{path.resolve()}`)."
    elif not path.is_dir():
        what = f"`{given}` is a file, not a run directory."
    elif not (path / RUN_FILE).exists():
        what = f"`{given}` is a directory but not a psylens run: it has no `{RUN_FILE}`."
    else:
        what = f"`{given}/{RUN_FILE}` cannot be read: {error}"
    hint = ""
    if path.is_dir() and not (path / RUN_FILE).exists():
        found = runs_inside(path)
        if found:
            hint = "\n\nRuns inside it: " + ", ".join(f"`{_shown(r)}`" for r in found[:8]) + "."
    return f"**Cannot open run.** {what}\n\n{HOW_TO_GIVE}{hint}"


def outside_root_message(given: str, root: Path) -> str:
    """Said for any path outside the root, whatever is there (nothing about the path itself)."""
    return (
        f"**Cannot open run.** `{given}` is not inside the explorer's root `{_shown(root)}`: give a run inside it "
        "(start `psylens explore` with `--root DIR` to browse another directory)."
    )


def open_or_explain(given: str, root: Path | None = None) -> Run | None:
    """Open the run at ``given`` inside ``root``; on failure show ``st.error`` (never raise) and return ``None``."""
    root = given_root() if root is None else root
    if not given:
        found = runs_inside(root)
        hint = (" Runs here: " + ", ".join(f"`{_shown(r)}`" for r in found[:8]) + ".") if found else ""
        st.info(f"**No run selected.** {HOW_TO_GIVE}{hint}")
        return None
    if not inside(Path(given), root):
        st.error(outside_root_message(given, root))
        return None
    try:
        run = open_run(Path(given).expanduser())
        kit.read(run, kit.RUN_META)  # a run.json that is not a JSON object is a bad run too
    except kit.ArtifactProblem as e:
        st.error(explain_bad_run(given, ValueError(e.message), root))
        return None
    except (ValueError, OSError) as e:
        st.error(explain_bad_run(given, e, root))
        return None
    return run


def sidebar_run_info(run: Run) -> None:
    meta = kit.as_dict(kit.load(run, kit.RUN_META, quiet=True))
    st.sidebar.caption(f"**Run** `{run.path.name}`")
    st.sidebar.caption(f"**Model** `{model_spec(meta)}`")
    st.sidebar.caption(f"**Created** {format_time(meta.get('created'))}")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "page"


def url_path(page: ModuleType) -> str:
    """The page's URL segment: its TITLE slugged ("Model comparison" -> ``model-comparison``)."""
    return _slug(page.TITLE)


def _renderer(page: ModuleType, run: Run, name: str) -> Callable[[], None]:
    def render() -> None:
        with kit.guard(f"The {page.TITLE} page"):
            page.render(run)

    render.__name__ = f"render_{name.replace('-', '_')}"
    return render


def available_pages(run: Run) -> list[ModuleType]:
    """The registered pages (``kit.PAGE_MODULES``) whose files are in ``run``, in order."""
    out = []
    for page in kit.pages():
        try:
            ok = bool(page.available(run))
        except Exception:  # noqa: BLE001 — a page that cannot tell is not shown
            ok = False
        if ok:
            out.append(page)
    return out


def _no_page() -> None:
    """The only page while no run is open (st.navigation must be called on every rerun)."""


def main() -> None:
    st.set_page_config(page_title="psylens explorer", page_icon="🔬", layout="wide")
    root = given_root()
    given = st.sidebar.text_input(
        "Run directory",
        value=given_run_path(),
        placeholder="runs/demo",
        help=f"A directory with run.json inside `{_shown(root)}`, written by `psylens demo` or `psylens harvest --out DIR`.",
    ).strip()
    run = open_or_explain(given, root)
    # st.navigation on every rerun, run or not: a bad path then clears the previous run's page list.
    if run is None:
        st.navigation([st.Page(_no_page, title="psylens", url_path="none")], position="hidden").run()
        return
    sidebar_run_info(run)
    pages = available_pages(run)
    entries = []
    for i, page in enumerate(pages):
        name = url_path(page)
        entries.append(st.Page(_renderer(page, run, name), title=page.TITLE, url_path=name, default=(i == 0)))
    nav = st.navigation(entries or [st.Page(_no_page, title="psylens", url_path="none")], position="sidebar")
    if not pages:
        st.warning("No page can show this run: none of the files the pages read are in it.")
    nav.run()


main()
