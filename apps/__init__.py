"""The psylens explorer: a Streamlit app that reads one run directory.

    >>> from psylens.apps import launch
    >>> launch("runs/demo")                                 # doctest: +SKIP  (blocks; Ctrl-C stops it)
    >>> server = launch("runs/demo", port=8765, block=False)  # doctest: +SKIP
    >>> server.terminate()                                  # doctest: +SKIP

The same from a shell: ``streamlit run apps/explorer.py -- runs/demo`` (or ``PSYLENS_RUN=runs/demo``).
Pages live in ``psylens.apps.views`` (registered in ``psylens.apps.views.kit.PAGE_MODULES``).
The server binds 127.0.0.1 unless ``host=`` says otherwise, and browses only below its root.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

__all__ = ["EXPLORER", "DEFAULT_PORT", "DEFAULT_HOST", "launch", "explorer_command", "find_runs", "url", "is_local"]

EXPLORER = Path(__file__).resolve().with_name("explorer.py")
DEFAULT_PORT = 8501
DEFAULT_HOST = "127.0.0.1"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
STOP_TIMEOUT_S = 10.0


def is_local(host: str) -> bool:
    """Does ``host`` accept connections from this machine only?"""
    return host in LOCAL_HOSTS or host.startswith("127.")


def url(host: str, port: int) -> str:
    """The address to open: ``http://127.0.0.1:PORT`` (``0.0.0.0``/``::`` shown as this machine's name)."""
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def _port_is_free(port: int, host: str = DEFAULT_HOST) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _pick_port(host: str = DEFAULT_HOST) -> int:
    """Streamlit's usual port when it is free, else one the OS hands out."""
    if _port_is_free(DEFAULT_PORT, host):
        return DEFAULT_PORT
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def find_runs(path: str | os.PathLike[str], limit: int = 50) -> list[Path]:
    """Runs (directories with ``run.json``) one or two levels below ``path``, sorted."""
    from psylens.runs import RUN_FILE

    p = Path(path)
    found: list[Path] = []
    for pattern in (f"*/{RUN_FILE}", f"*/*/{RUN_FILE}"):
        try:
            found.extend(sorted(f.parent for f in p.glob(pattern)))
        except OSError:
            pass
    return found[:limit]


def explorer_command(run: str | os.PathLike[str], *, port: int, headless: bool = True, host: str = DEFAULT_HOST,
                     root: str | os.PathLike[str] | None = None) -> list[str]:
    """The ``python -m streamlit run`` command line that serves the explorer on ``run``.

    It binds ``host`` only (127.0.0.1 by default: reachable from this machine alone) and
    restricts the explorer's run box to ``root`` (default: ``run`` itself).
    """
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(EXPLORER),
        "--server.headless", "true" if headless else "false",
        "--server.address", host,
        "--server.port", str(port),
        "--browser.gatherUsageStats", "false",
        "--", str(run),
    ]
    if root is not None:
        cmd += ["--root", str(root)]
    return cmd


class _Signalled(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(server: subprocess.Popen[bytes]) -> None:
    """End ``server``: SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT_S`; always reaped."""
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.kill()
    server.wait()


def launch(
    run: str | os.PathLike[str],
    *,
    port: int | None = None,
    headless: bool = True,
    block: bool = True,
    host: str = DEFAULT_HOST,
    root: str | os.PathLike[str] | None = None,
) -> subprocess.Popen[bytes] | int:
    """Serve the explorer on run directory ``run`` at ``http://127.0.0.1:PORT``.

    ``host``: the interface to bind; ``127.0.0.1`` (default) answers this machine only. Anything
    else (``0.0.0.0``) lets every machine that reaches this one read the run: opt in knowingly.
    ``root``: the directory the explorer's run box may browse (default: ``run``); paths outside it
    are refused without saying what is there. ``port=None`` takes 8501 when free, else any free
    port (read it back from ``server.args``). ``headless=False`` lets Streamlit open a browser tab.

    With ``block=True`` (the default) this waits for the server and returns its exit code;
    Ctrl-C, SIGTERM and SIGHUP stop the Streamlit child too (forwarded; killed if it lingers), so no
    server outlives this call. With ``block=False`` it returns the running ``Popen`` at once:
    **the caller owns that process** and must ``terminate()`` it (e.g. in ``finally``).

    Raises ``ValueError`` when ``run`` is not a psylens run, ``run`` lies outside ``root``, or
    ``port`` is out of range.
    """
    from psylens.runs import open_run

    path = open_run(run).path.resolve()  # ValueError, naming the fix, when there is no run.json
    root_path = path if root is None else Path(root).expanduser().resolve()
    if root is not None and not (path == root_path or root_path in path.parents):
        raise ValueError(f"run {str(run)!r} is not inside --root {str(root)!r}; give a root that contains the run")
    if port is None:
        port = _pick_port(host)
    elif not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range: give a TCP port in 1-65535, or None to pick a free one")
    server = subprocess.Popen(explorer_command(path, port=port, headless=headless, host=host, root=root_path))
    if not block:
        return server
    handlers: dict[int, object] = {}

    def forward(signum: int, frame: object) -> None:
        raise _Signalled(signum)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                handlers[sig] = signal.signal(sig, forward)
        # A process started in the background by a non-interactive shell inherits SIGINT ignored;
        # `kill -INT` (or Ctrl-C after `fg`) must still stop the explorer.
        handlers[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return server.wait()
    except KeyboardInterrupt:
        _stop(server)
        return 130
    except _Signalled as s:
        _stop(server)
        return 128 + s.signum
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        _stop(server)
