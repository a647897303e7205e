"""The docs' screenshots of a sweep, taken in headless Chromium: TensorBoard's HPARAMS tab and summary.md as HTML.

    make sweep SWEEP=spiral_grid && make confirm && make compare
    .venv/bin/python experiments/screenshots.py runs/sweeps/<time>

Needs chromium on PATH (Debian: apt-get install chromium). Serves the sweep with make tensorboard's
own command (python -m nnlab.board) on a free port of 127.0.0.1, renders summary.md with Python-Markdown
(TensorBoard's own dependency) beside the sweep's figures, and writes docs/images/hparams.png and
docs/images/summary.png.
"""
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import markdown

DOCS = Path(__file__).resolve().parents[1] / "docs" / "images"
STYLE = """<style>body{font:14px/1.45 -apple-system,'DejaVu Sans',sans-serif;margin:24px;color:#1f2328}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #d0d7de;padding:3px 8px}
th{background:#f6f8fa}code{background:#f6f8fa;padding:1px 4px}img{max-width:100%}</style>"""


def shoot(url: str, out: Path, size: str) -> None:
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={size}", "--virtual-time-budget=20000", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=120)
    print(f"written: {out}")


def main(sweep: Path) -> None:
    if shutil.which("chromium") is None:
        sys.exit("experiments/screenshots.py: no chromium on PATH (apt-get install chromium)")
    if not (sweep / "summary.md").is_file():
        sys.exit(f"experiments/screenshots.py: no {sweep}/summary.md: run make compare DIR={sweep} first")
    DOCS.mkdir(parents=True, exist_ok=True)
    page = sweep / "summary.html"  # beside the figures summary.md links to
    page.write_text(STYLE + markdown.markdown((sweep / "summary.md").read_text(), extensions=["tables"]))
    shoot(page.resolve().as_uri(), DOCS / "summary.png", "1300,1400")
    page.unlink()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    board = subprocess.Popen([sys.executable, "-m", "nnlab.board", str(sweep), "--port", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until TensorBoard lists the sweep's runs
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5) as r:
                    if json.loads(r.read()):
                        break
            except OSError:
                pass
            time.sleep(0.5)
        shoot(f"http://127.0.0.1:{port}/?darkMode=false#hparams", DOCS / "hparams.png", "1600,1000")
    finally:
        board.terminate()
        board.wait(timeout=30)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
