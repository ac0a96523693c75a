"""``psylens explore`` as a user runs it: validation before serving, listing a folder of runs,
localhost-only binding, and no Streamlit child left serving after SIGTERM or Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from psylens.runs import create_run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

PSYLENS = [sys.executable, "-m", "psylens.cli"]
STARTUP_S = 90


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Can a new server bind the port? (SO_REUSEADDR, as servers set it: closed connections left in
    TIME_WAIT by the health checks do not count, a listener does.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PSYLENS, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def wait_healthy(proc: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"psylens explore exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:  # noqa: S310
                if r.read().strip() == b"ok":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"the explorer did not answer on port {port} within {STARTUP_S} s")


def serve(run: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*PSYLENS, "explore", str(run), "--port", str(port), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _kill_tree(proc: subprocess.Popen[str], children: list[psutil.Process]) -> None:
    for c in children:
        if c.is_running():
            c.kill()
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def test_a_missing_run_fails_before_serving(tmp_path: Path) -> None:
    r = cli("explore", str(tmp_path / "nope"))
    assert r.returncode != 0
    assert "serving" not in r.stdout + r.stderr
    assert "not a psylens run" in r.stderr


def test_a_folder_of_runs_is_listed(tmp_path: Path) -> None:
    for name in ("demo", "other"):
        create_run(tmp_path / "runs" / name, command="psylens demo")
    r = cli("explore", "runs", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "serving" not in r.stdout
    assert "explore runs/demo" in r.stdout and "explore runs/other" in r.stdout


def test_port_has_help_and_no_tab_is_promised() -> None:
    r = cli("explore", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "TCP port" in text and "--host" in text and "no browser tab opens" in text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_the_streamlit_child_and_frees_the_port(tmp_path: Path, sig: signal.Signals) -> None:
    run = create_run(tmp_path / "run", command="psylens demo", model={"spec": "tiny"})
    port = free_port()
    proc = serve(run.path, port)
    children: list[psutil.Process] = []
    try:
        wait_healthy(proc, port)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the explorer runs Streamlit as a child process"
        listening = [c for c in psutil.net_connections(kind="tcp") if c.laddr and c.laddr.port == port
                     and c.status == psutil.CONN_LISTEN]
        assert listening and all(c.laddr.ip in ("127.0.0.1", "::1") for c in listening), listening  # localhost only
        os.kill(proc.pid, sig)  # to psylens only, as `kill PID` or a supervisor would send it
        proc.wait(timeout=60)
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"still running after {sig.name}: {alive}"
        deadline = time.monotonic() + 10
        while not port_is_free(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert port_is_free(port)
        assert not [c for c in psutil.net_connections(kind="tcp") if c.laddr and c.laddr.port == port
                    and c.status == psutil.CONN_LISTEN]
        out = proc.stdout.read() if proc.stdout else ""
        assert f"http://127.0.0.1:{port}" in out and "No browser tab opens" in out
    finally:
        _kill_tree(proc, children)


def test_a_non_local_host_is_announced(tmp_path: Path) -> None:
    run = create_run(tmp_path / "run", command="psylens demo")
    port = free_port()
    proc = serve(run.path, port, "--host", "0.0.0.0")
    children: list[psutil.Process] = []
    try:
        wait_healthy(proc, port)
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
        assert "not localhost" in " ".join(out.split())
    finally:
        _kill_tree(proc, children)
