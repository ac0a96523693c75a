"""The explorer's pages ("views"), in sidebar order.

Why not ``apps/pages/``: Streamlit still treats a ``pages/`` folder beside the main script
as old-style page *scripts*. On a server's first run and on every ``AppTest`` run it would
register ``explorer`` and one page per file there, run a file as a blank page when its name
is requested (``/overview``), and answer "Page not found" for our own page URLs.

A page is a module with three names::

    TITLE: str                          # sidebar label; URL /<slug> ("Model comparison" -> /model-comparison)
    def available(run: Run) -> bool     # are the files this page reads in the run?
    def render(run: Run) -> None        # draw the page with streamlit calls

The explorer lists only the pages whose ``available(run)`` is true. To add a page, write
``apps/views/<name>.py`` and append its module to ``PAGES`` below. Read run files through
``psylens.apps.cache`` so reruns stay cheap.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Protocol

from psylens.apps.views import overview, probes, steering

if TYPE_CHECKING:
    from psylens.runs import Run

__all__ = ["PAGES", "Page", "check_page"]


class Page(Protocol):
    """What the explorer expects of a page module."""

    TITLE: str

    def available(self, run: Run) -> bool: ...

    def render(self, run: Run) -> None: ...


PAGES: list[ModuleType] = [
    overview,
    probes,
    steering,
]


def check_page(page: ModuleType) -> None:
    """``TypeError`` naming what a page module lacks (TITLE, available, render)."""
    missing = [n for n in ("TITLE", "available", "render") if not hasattr(page, n)]
    if missing:
        raise TypeError(f"page module {page.__name__} lacks {missing}; a page defines TITLE, available(run), render(run)")
    if not isinstance(page.TITLE, str) or not page.TITLE.strip():
        raise TypeError(f"page module {page.__name__}: TITLE must be a non-empty str, got {page.TITLE!r}")
