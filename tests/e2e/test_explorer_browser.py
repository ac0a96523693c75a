"""The explorer served by ``psylens.apps.launch`` and opened in real headless Chromium.

Needs Debian's chromium at /usr/bin/chromium (``.ci/chromium.sh`` installs it) and playwright
in the venv; it skips, naming the fix, when either is missing. No ``playwright install``.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from psylens.activations import Activations
from psylens.apps import launch
from psylens.runs import Run, create_run

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
HOW_TO_ENABLE = (
    "install Debian's chromium (apt-get install -y chromium) and `pip install playwright` to enable"
)
STARTUP_S = 90
RENDER_MS = 90_000

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _sync_playwright():  # type: ignore[no-untyped-def]
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM}: {HOW_TO_ENABLE}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(f"playwright is not installed: {HOW_TO_ENABLE}")
    return sync_playwright


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(server: subprocess.Popen[bytes], port: int, timeout: float = STARTUP_S) -> None:
    """Poll Streamlit's health endpoint until it answers ``ok``; fail if the server dies first."""
    url = f"http://127.0.0.1:{port}/_stcore/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the explorer exited with code {server.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (localhost)
                if r.read().strip() == b"ok":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"the explorer did not answer {url} within {timeout:.0f} s")


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


def make_run(root: Path) -> Run:
    """A run with synthetic activations (no model) and a per-layer summary."""
    run = create_run(
        root,
        command=f"psylens demo --out {root}",
        model={"spec": "tiny-random-llama", "n_layers": 6, "d_model": 16},
        config={"sites": ["resid_post"], "positions": "last", "stimuli": "explicit"},
        seed=0,
    )
    labels = ["joy", "sadness", "anger", "fear"]
    n, layers = 24, list(range(6))
    g = torch.Generator().manual_seed(0)
    lab = [labels[i % 4] for i in range(n)]
    Activations(
        tensors={"resid_post": torch.randn(n, len(layers), 16, generator=g)},
        layers=layers,
        labels=lab,
        groups=["first-person" if i % 2 else "third-person" for i in range(n)],
        ids=[f"s{i:02d}" for i in range(n)],
        texts=[f"Example {i}: a sentence that expresses {lab[i]}." for i in range(n)],
    ).save(run.path / "activations")
    run.record_step("harvest", n=n)
    run.write_json(
        "summary/layers.json",
        {
            "n": n,
            "label_counts": {x: lab.count(x) for x in labels},
            "sites": {
                "resid_post": {
                    "layers": layers,
                    "mean_norm": [2.0, 3.1, 4.0, 5.2, 6.9, 9.5],
                    "fisher_ratio": [0.1, 0.5, 1.4, 2.2, 1.8, 1.2],
                    "shuffled_fisher_ratio": [0.08, 0.1, 0.12, 0.1, 0.11, 0.09],
                }
            },
        },
    )
    run.record_step("summary", out="summary/layers.json")
    return run


def test_explorer_in_chromium(tmp_path: Path) -> None:
    sync_playwright = _sync_playwright()
    run = make_run(tmp_path / "run")
    port = free_port()
    server = launch(run.path, port=port, block=False)
    assert isinstance(server, subprocess.Popen)
    try:
        wait_healthy(server, port)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 3200})
                page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded", timeout=RENDER_MS)
                page.get_by_role("heading", name="Overview").first.wait_for(timeout=RENDER_MS)
                page.get_by_role("heading", name="Per-layer summary").first.wait_for(timeout=RENDER_MS)
                page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
                    timeout=RENDER_MS
                )
                page.locator(".js-plotly-plot").nth(2).wait_for(timeout=RENDER_MS)  # three charts drawn
                # the viewport is tall because the app scrolls inside its own container
                page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
                assert page.locator('[data-testid="stException"]').count() == 0
                assert page.locator('[data-testid="stAlertContentError"]').count() == 0
                assert page.get_by_text("tiny-random-llama").count() > 0
            finally:
                browser.close()
    finally:
        stop(server)
    assert (tmp_path / "explorer.png").stat().st_size > 0
