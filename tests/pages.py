"""The page tests' shared harness: render one explorer page on a run in Streamlit's ``AppTest``.

``AppTest.from_function`` runs the *source* of a function, so the page and the run travel in
environment variables (set through ``monkeypatch``, undone after each test).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from psylens.runs import Run


def _page_script() -> None:
    import importlib
    import os

    from psylens.runs import open_run

    page = importlib.import_module(f"psylens.apps.views.{os.environ['PSYLENS_TEST_PAGE']}")
    page.render(open_run(os.environ["PSYLENS_TEST_RUN"]))


def render_page(monkeypatch: pytest.MonkeyPatch, page: str, run: Run | Path, *, timeout: float = 60) -> AppTest:
    """Render ``psylens.apps.views.<page>`` on ``run`` (a :class:`Run` or its folder) and return the finished app."""
    monkeypatch.setenv("PSYLENS_TEST_PAGE", page)
    monkeypatch.setenv("PSYLENS_TEST_RUN", str(run.path if isinstance(run, Run) else run))
    return AppTest.from_function(_page_script, default_timeout=timeout).run()


def messages(at: AppTest) -> list[str]:
    """Every info, warning and error the page showed, as text."""
    return [str(e.value) for e in (*at.info, *at.warning, *at.error)]
