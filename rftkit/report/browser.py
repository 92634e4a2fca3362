"""Headless Chromium on a local HTML file: a screenshot, or the DOM after scripts ran.

Used by `rftkit report RUN_DIR --screenshot PNG` and by the browser test of the report. Needs
a Chromium binary on PATH (Debian: `apt-get install chromium`); nothing is fetched from the
network (the report is self-contained, and background networking is switched off).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from rftkit.errors import RftkitError

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--disable-dev-shm-usage"]


def find_chromium() -> str | None:
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args: list[str], html: Path, timeout: float) -> str:
    exe = find_chromium()
    if exe is None:
        raise RftkitError("no Chromium found on PATH (tried " + ", ".join(BINARIES) + "); install it, e.g. "
                          "`apt-get install chromium` on Debian")
    with tempfile.TemporaryDirectory(prefix="rftkit-chromium-") as profile:
        cmd = [exe, *FLAGS, f"--user-data-dir={profile}", *args, Path(html).resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RftkitError(f"chromium failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 2000, timeout: float = 120) -> Path:
    """Render `html` at width x height CSS pixels and save the PNG to `png`."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--screenshot={png}", f"--window-size={width},{height}"], html, timeout)
    if not png.is_file():
        raise RftkitError(f"chromium did not write {png}")
    return png


def dump_dom(html: Path, timeout: float = 120, budget_ms: int = 5000) -> str:
    """The serialized DOM of `html` once loaded and its scripts ran (virtual time budget)."""
    return _run(["--dump-dom", f"--virtual-time-budget={budget_ms}"], html, timeout)
