"""docs/extending.md runs: its four files, written out as they are, register a block, a fidelity, an exporter and a
reader, and each passes its registry's conformance checks (and the CLI lists them through MOCA_PLUGINS)."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "extending.md"


def _files() -> dict[str, str]:
    blocks = re.findall(r"```python\n# file: (\S+)\n(.*?)```", DOC.read_text(), re.S)
    return {name: code for name, code in blocks}


@pytest.fixture()
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The doc's files on sys.path; every registry restored afterwards (the plug-ins do not leak into other tests)."""
    from nas_core.blocks import BLOCKS
    from nas_core.data.readers import READERS
    from nas_core.deploy.exporters import EXPORTERS
    from nas_core.fidelities import FIDELITIES

    for registry in (BLOCKS, READERS, EXPORTERS, FIDELITIES):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    for name, code in _files().items():
        (tmp_path / name).write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in _files():
        sys.modules.pop(Path(name).stem, None)


def test_the_doc_has_one_file_per_extension_point() -> None:
    assert sorted(_files()) == ["ghost_block.py", "json_reader.py", "npz_export.py", "width_only.py"]


def test_each_file_registers_a_part_that_passes_its_conformance_checks(plugins: Path, tmp_path: Path) -> None:
    import test_blocks
    import test_exporters
    import test_fidelities
    import test_readers

    from nas_core.data import load_dataset
    from nas_core.library import build_library

    for name in _files():
        importlib.import_module(Path(name).stem)

    test_blocks.test_every_block_forward_shape_and_finite("ghost", 1)
    test_blocks.test_every_block_forward_shape_and_finite("ghost", 2)
    test_blocks.test_every_block_declares_what_the_space_summary_and_library_read("ghost")

    ws = tmp_path / "ws"
    build_library(dataset="digits", workspace=ws, minutes=0.02, train_samples=300, donors=("conv-a",), min_steps=10)
    data = load_dataset("digits", seed=0, train_samples=200, val_samples=100)
    test_fidelities.test_declarations("width-only")
    test_fidelities.test_options_are_checked_where_they_enter("width-only")
    test_fidelities.test_prepare_and_evaluate_give_every_objective("width-only", ws, data)
    test_fidelities.test_a_stop_request_ends_evaluation("width-only", ws, data)

    test_exporters.test_declarations("npz")
    test_exporters.test_export_writes_a_file_that_loads_back("npz", tmp_path)

    test_readers.test_declarations("json")
    test_readers.test_the_example_reads_back_and_loads_end_to_end("json", tmp_path)
    test_readers.test_every_suffix_chooses_the_reader_and_garbage_is_one_clear_error("json", tmp_path)


def test_the_cli_offers_the_plugins_and_searches_with_the_new_fidelity(plugins: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugins), str(ROOT)]),
           "MOCA_PLUGINS": "ghost_block,width_only,npz_export,json_reader"}
    blocks = subprocess.run([sys.executable, "-m", "nas_core", "blocks"], env=env, capture_output=True, text=True, timeout=300)
    assert blocks.returncode == 0 and "ghost" in blocks.stdout, blocks.stderr
    ws = tmp_path / "ws"
    search = subprocess.run([sys.executable, "-m", "nas_core", "search", "--dataset", "digits", "--trials", "2", "--workspace", str(ws),
                             "--study", "plug", "--fidelity", "width-only", "--fidelity-option", "target_width=32", "--quiet"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert search.returncode == 0, search.stderr
    best = ws / "plug" / "best_config.json"
    assert best.is_file()
    out = tmp_path / "best.npz"
    export = subprocess.run([sys.executable, "-m", "nas_core", "export", "--config", str(best), "--format", "npz", "--out", str(out)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert export.returncode == 0 and out.is_file(), export.stderr
