"""The psylens explorer: a Streamlit app that reads one run directory.

    >>> from psylens.apps import launch
    >>> launch("runs/demo")                                 # doctest: +SKIP  (blocks; Ctrl-C stops it)
    >>> server = launch("runs/demo", port=8765, block=False)  # doctest: +SKIP
    >>> server.terminate()                                  # doctest: +SKIP

The same from a shell: ``streamlit run apps/explorer.py -- runs/demo`` (or ``PSYLENS_RUN=runs/demo``).
Pages live in ``psylens.apps.views`` (``PAGES``, an ordered list of page modules).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

__all__ = ["EXPLORER", "DEFAULT_PORT", "launch", "explorer_command"]

EXPLORER = Path(__file__).resolve().with_name("explorer.py")
DEFAULT_PORT = 8501


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_port() -> int:
    """Streamlit's usual port when it is free, else one the OS hands out."""
    if _port_is_free(DEFAULT_PORT):
        return DEFAULT_PORT
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def explorer_command(run: str | os.PathLike[str], *, port: int, headless: bool = True) -> list[str]:
    """The ``python -m streamlit run`` command line that serves the explorer on ``run``."""
    return [
        sys.executable, "-m", "streamlit", "run", str(EXPLORER),
        "--server.headless", "true" if headless else "false",
        "--server.port", str(port),
        "--browser.gatherUsageStats", "false",
        "--", str(run),
    ]


def launch(
    run: str | os.PathLike[str],
    *,
    port: int | None = None,
    headless: bool = True,
    block: bool = True,
) -> subprocess.Popen[bytes] | int:
    """Serve the explorer on run directory ``run`` at ``http://localhost:PORT``.

    ``port=None`` takes 8501 when free, else any free port (read it back from
    ``server.args``). ``headless=False`` lets Streamlit open a browser tab.

    With ``block=True`` (the default) this waits for the server and returns its exit code;
    Ctrl-C stops it. With ``block=False`` it returns the running ``Popen`` at once:
    **the caller owns that process** and must ``terminate()`` it (e.g. in ``finally``).

    Raises ``ValueError`` when ``run`` is not a psylens run or ``port`` is out of range.
    """
    from psylens.runs import open_run

    path = open_run(run).path.resolve()  # ValueError, naming the fix, when there is no run.json
    if port is None:
        port = _pick_port()
    elif not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range: give a TCP port in 1-65535, or None to pick a free one")
    server = subprocess.Popen(explorer_command(path, port=port, headless=headless))
    if not block:
        return server
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        return server.wait()
    finally:
        if server.poll() is None:
            server.kill()
