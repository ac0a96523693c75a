"""The explorer's pages ("views"), in sidebar order; the registry lives in :mod:`psylens.apps.views.kit`.

Why not ``apps/pages/``: Streamlit still treats a ``pages/`` folder beside the main script
as old-style page *scripts*. On a server's first run and on every ``AppTest`` run it would
register ``explorer`` and one page per file there, run a file as a blank page when its name
is requested (``/overview``), and answer "Page not found" for our own page URLs.

A page is a module with three names::

    TITLE: str                          # sidebar label; URL /<slug> ("Model comparison" -> /model-comparison)
    def available(run: Run) -> bool     # are the files this page reads in the run?
    def render(run: Run) -> None        # draw the page with streamlit calls

The explorer lists only the pages whose ``available(run)`` is true. To add a page, write
``apps/views/<name>.py`` and append its name to ``kit.PAGE_MODULES``. Read every run file
through ``kit.load`` (load-or-explain) so a missing or corrupt file is one line, not a traceback.
"""

from __future__ import annotations

from psylens.apps.views.kit import PAGE_MODULES, Page, check_page, pages

__all__ = ["PAGES", "PAGE_MODULES", "Page", "check_page", "pages"]


def __getattr__(name: str):  # PAGES is computed on access, so kit.PAGE_MODULES stays the one registry
    if name == "PAGES":
        return pages()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
