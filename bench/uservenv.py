"""A virtualenv holding gravity as a user installs it (`pip install .[etcd]`: no test or bench
extras), so whole-process timings do not pay for imports the bench's own packages would cause.

Why it matters: with Luigi installed, `import tenacity` imports tornado; with Prefect, `import
structlog` imports rich (structlog.dev) — a development venv's `gravity` starts slower than a
user's. The venv lives in bench/.venv-user; gravity itself is reinstalled from this checkout
(not editable, as a user has it) at each bench run, its dependencies only when pyproject.toml
changes.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(__file__).resolve().parent / ".venv-user"


def _pip(python: Path, *args: str) -> None:
    proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(args)} in {VENV} failed:\n"
                           f"{proc.stderr[-3000:]}")


def ensure() -> Path:
    """The user venv's directory, with this checkout's gravity installed in it."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
    stamp = VENV / ".deps"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    if not stamp.exists() or stamp.read_text() != digest:
        _pip(python, f"{ROOT}[etcd]")
        stamp.write_text(digest)
    _pip(python, "--no-deps", "--force-reinstall", str(ROOT))
    return VENV


def gravity(venv: Path) -> list[str]:
    return [str(venv / "bin" / "gravity")]


def python(venv: Path) -> str:
    return str(venv / "bin" / "python")
