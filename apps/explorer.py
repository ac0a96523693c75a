"""psylens explorer — browse one run directory in the browser.

    streamlit run apps/explorer.py -- runs/demo        # or: PSYLENS_RUN=runs/demo streamlit run apps/explorer.py
    python -c "from psylens.apps import launch; launch('runs/demo')"

The run comes from the script arguments (after ``--``), else ``$PSYLENS_RUN``, else the
sidebar's text box. Pages are plugins listed in ``psylens.apps.views.PAGES``; a page shows
up when its ``available(run)`` is true. The explorer reads run directories only.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import streamlit as st

from psylens.apps.cache import run_meta
from psylens.apps.views import PAGES, check_page
from psylens.apps.views.overview import format_time
from psylens.runs import RUN_FILE, Run, open_run

ENV_VAR = "PSYLENS_RUN"
HOW_TO_GIVE = (
    "Give the directory that holds `run.json`: `streamlit run apps/explorer.py -- RUN`, "
    f"`{ENV_VAR}=RUN`, or type it in the sidebar. `psylens demo` writes a run to look at."
)


def given_run_path() -> str:
    """The run named after ``--`` on the streamlit command line, else ``$PSYLENS_RUN``, else ``""``."""
    # streamlit sets sys.argv = [this script, *args]; anywhere else (e.g. AppTest under pytest)
    # sys.argv belongs to another program, so read it only when argv[0] is this file.
    if len(sys.argv) > 1 and Path(sys.argv[0]).resolve() == Path(__file__).resolve():
        return sys.argv[1]
    return os.environ.get(ENV_VAR, "")


def _runs_inside(path: Path, limit: int = 8) -> list[str]:
    """Sub-directories of ``path`` that are runs (for the 'did you mean' hint)."""
    try:
        return sorted(str(p.parent) for p in path.glob(f"*/{RUN_FILE}"))[:limit]
    except OSError:
        return []


def explain_bad_run(given: str, error: Exception) -> str:
    """The error text for a path that is not a readable run: what was given, what is wrong, the fix."""
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
        inside = _runs_inside(path)
        if inside:
            hint = "\n\nRuns inside it: " + ", ".join(f"`{r}`" for r in inside) + "."
    return f"**Cannot open run.** {what}\n\n{HOW_TO_GIVE}{hint}"


def open_or_explain(given: str) -> Run | None:
    """Open the run at ``given``; on failure show ``st.error`` (never raise) and return ``None``."""
    if not given:
        st.info(f"**No run selected.** {HOW_TO_GIVE}")
        return None
    try:
        run = open_run(Path(given).expanduser())
        run_meta(run)  # a run.json that is not JSON is a bad run too
    except (ValueError, OSError) as e:  # json.JSONDecodeError is a ValueError
        st.error(explain_bad_run(given, e))
        return None
    return run


def sidebar_run_info(run: Run) -> None:
    meta = run_meta(run)
    model = meta.get("model") or {}
    spec = model.get("spec") if isinstance(model, dict) else model
    st.sidebar.caption(f"**Run** `{run.path.name}`")
    st.sidebar.caption(f"**Model** `{spec or 'unknown'}`")
    st.sidebar.caption(f"**Created** {format_time(meta.get('created'))}")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "page"


def url_path(page: ModuleType) -> str:
    """The page's URL segment: its TITLE slugged ("Model comparison" -> ``model-comparison``)."""
    return _slug(page.TITLE)


def _renderer(page: ModuleType, run: Run, name: str) -> Callable[[], None]:
    def render() -> None:
        page.render(run)

    render.__name__ = f"render_{name.replace('-', '_')}"
    return render


def available_pages(run: Run) -> list[ModuleType]:
    """The pages of ``PAGES`` whose files are in ``run``, in ``PAGES`` order."""
    out = []
    for page in PAGES:
        check_page(page)
        if page.available(run):
            out.append(page)
    return out


def _no_page() -> None:
    """The only page while no run is open (st.navigation must be called on every rerun)."""


def main() -> None:
    st.set_page_config(page_title="psylens explorer", page_icon="🔬", layout="wide")
    given = st.sidebar.text_input(
        "Run directory",
        value=given_run_path(),
        placeholder="runs/demo",
        help="A directory with run.json, written by `psylens demo` or `psylens harvest --out DIR`.",
    ).strip()
    run = open_or_explain(given)
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
