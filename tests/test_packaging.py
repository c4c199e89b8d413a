"""The package as pip installs it: every subpackage listed, the app shipped inside it, the `moca` console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_is_listed_in_pyproject() -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "nas_core").rglob("__init__.py")}
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_the_installed_wheel_serves_the_app_and_runs_moca(tmp_path: Path) -> None:
    """Build the wheel, unpack it as a site-packages far from the checkout: the app is found inside the package."""
    # Built from a copy of the tracked sources: an in-place build leaves build/ behind, whose stale files a later
    # build would package.
    src = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file() and not name.startswith(("benchmarks/", "tests/", "assets/screenshots/")):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("moca_nas-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
        entry_points = next(n for n in zf.namelist() if n.endswith("entry_points.txt"))
        assert "moca = nas_core.__main__:run" in zf.read(entry_points).decode()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import nas_core.tunnel as t; print(t.APP_PATH)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    app = Path(where)
    assert app == site / "nas_core" / "_app" / "app.py" and app.is_file()
    assert (app.parent / "app_pages" / "common.py").is_file() and (app.parent / "assets" / "favicon.png").is_file()
    assert (app.parent / ".streamlit" / "config.toml").is_file()  # start_server runs streamlit with cwd=app's folder
    moca = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['moca', '--version']; from nas_core.__main__ import run; run()"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert moca.returncode == 0 and "0." in moca.stdout + moca.stderr, moca


def test_a_checkout_serves_its_own_app() -> None:
    from nas_core.tunnel import APP_PATH

    assert APP_PATH == ROOT / "app.py"
