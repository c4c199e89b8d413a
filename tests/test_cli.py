"""The command line contract: search/train/export/datasets, and bad input -> exit 2 with one `error:` line, studies untouched."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from nas_core.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "2", "--patience", "2", "--train-samples", "300", "--val-samples", "150", "--device", "cpu", "--quiet"]


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "nas_core", *args], capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=600)


@pytest.fixture(scope="module")
def cli_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    ws = tmp_path_factory.mktemp("cliws")
    proc = _run("search", "--dataset", "digits", "--trials", "2", "--seed", "0", "--workspace", str(ws), "--study", "cli", *TINY)
    assert proc.returncode == 0, proc.stderr
    best = Path(proc.stdout.strip().splitlines()[-1])
    assert best == ws / "cli" / "best_config.json" and best.is_file()
    return ws, best


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_rebuilds_the_same_parameter_count(cli_study: tuple[Path, Path]) -> None:
    ws, best = cli_study
    proc = _run("train", "--config", str(best), "--workspace", str(ws), "--epochs", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["params"] == json.loads(best.read_text())["metrics"]["params"] == out["config_params"]
    assert 0.0 <= out["test_accuracy"] <= 1.0 and out["epochs_trained"] == 1


@pytest.mark.parametrize("fmt, suffix", [("torchscript", ".pt"), ("onnx", ".onnx"), ("safetensors", ".safetensors")])
def test_export_formats(cli_study: tuple[Path, Path], tmp_path: Path, fmt: str, suffix: str, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    ws, best = cli_study
    out = tmp_path / f"model{suffix}"
    assert main(["export", "--config", str(best), "--format", fmt, "--out", str(out), "--weights", str(ws / "cli" / "best_weights.safetensors")]) == 0
    assert out.stat().st_size > 0
    if fmt == "torchscript":
        model = torch.jit.load(str(out))
        assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_datasets_lists_availability(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "--json"]) == 0
    infos = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert infos["digits"]["available"] is True
    assert all(d["available"] or d["reason"] for d in infos.values())


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _bad_cases(tmp: Path, best: Path) -> dict[str, tuple[list[str], str]]:
    cfg = json.loads(best.read_text())
    future = dict(cfg, schema_version=99)
    unknown_block = json.loads(best.read_text())
    unknown_block["architecture"]["stages"][0][0]["kind"] = "hyperconv"
    (tmp / "future.json").write_text(json.dumps(future))
    (tmp / "unknown_block.json").write_text(json.dumps(unknown_block))
    (tmp / "malformed.json").write_text('{"schema_version": 1, "dataset": ')
    _zip(tmp / "escape.zip", {"a/x.png": b"", "../../evil.png": b"x"})
    _zip(tmp / "notimage.zip", {"cat/1.png": b"this is text", "dog/1.png": b"also text"})
    (tmp / "one_class.csv").write_text("label,p0,p1\n" + "".join(f"cat,{i},{i}\n" for i in range(20)))
    (tmp / "empty.csv").write_text("label,p0,p1\n")
    search = ["search", "--workspace", str(tmp / "ws"), "--study", "kept"]
    return {
        "unknown-dataset": (search + ["--dataset", "imagenet-22k"], "dataset 'imagenet-22k' is unknown"),
        "zero-trials": (search + ["--trials", "0"], "--trials"),
        "negative-timeout": (search + ["--timeout", "-5"], "--timeout"),
        "unknown-objective": (search + ["--objectives", "accuracy,speed"], "unknown objective 'speed'"),
        "unknown-sampler": (search + ["--sampler", "bayes"], "unknown sampler 'bayes'"),
        "missing-space": (search + ["--space", str(tmp / "nope.yaml")], "does not exist"),
        "missing-dataset-file": (search + ["--dataset", str(tmp / "nope.zip")], "nope.zip"),
        "escaping-zip": (search + ["--dataset", str(tmp / "escape.zip")], "evil.png"),
        "not-an-image": (search + ["--dataset", str(tmp / "notimage.zip")], "not a valid image"),
        "one-class": (search + ["--dataset", str(tmp / "one_class.csv")], "at least 2 classes"),
        "empty-data": (search + ["--dataset", str(tmp / "empty.csv")], "no samples"),
        "unknown-fidelity-option": (search + ["--fidelity", "cached", "--fidelity-option", "cached_epoch=2"],
                                    "unknown option 'cached_epoch' for the cached fidelity"),
        "bad-cached-mode": (search + ["--fidelity", "cached", "--fidelity-option", "cached_train=everything"], "unknown cached_train 'everything'"),
        "bad-option-value": (search + ["--fidelity", "cached", "--fidelity-option", "finetune_top_k=0"],
                             "finetune_top_k must be a positive whole number"),
        "bad-finetune-share": (search + ["--fidelity", "cached", "--timeout", "60", "--fidelity-option", "finetune_share=1.5"],
                               "finetune_share must be a fraction of --timeout between 0 and 1"),
        "bad-proxy": (search + ["--fidelity", "zero-cost", "--fidelity-option", "proxy=magic"], "unknown zero-cost proxy 'magic'"),
        "option-for-train": (search + ["--fidelity-option", "cached_epochs=2"], "for the train fidelity; it takes screen"),
        "bad-screen": (search + ["--fidelity-option", "screen=maybe"], "screen must be on or off"),
        "option-not-key-value": (search + ["--fidelity-option", "cached_epochs"], "is not KEY=VALUE"),
        "future-schema": (["train", "--config", str(tmp / "future.json"), "--workspace", str(tmp / "ws")], "newer than this MoCA-NAS"),
        "unknown-block": (["train", "--config", str(tmp / "unknown_block.json"), "--workspace", str(tmp / "ws")], "unknown block 'hyperconv'"),
        "malformed-config": (["export", "--config", str(tmp / "malformed.json"), "--format", "onnx", "--out", str(tmp / "m.onnx")], "not valid JSON"),
        "missing-config": (["train", "--config", str(tmp / "absent.json")], "does not exist"),
        "bad-format": (["export", "--config", str(best), "--format", "tflite", "--out", str(tmp / "m")], "invalid choice"),
    }


def test_bad_input_exits_2_with_one_line_and_keeps_recorded_studies(cli_study: tuple[Path, Path], tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ws, best = cli_study
    # a recorded study in the workspace every bad command points at
    (tmp_path / "ws").mkdir()
    db = tmp_path / "ws" / "optuna.db"
    db.write_bytes((ws / "optuna.db").read_bytes())
    before = _digest(db)
    for name, (argv, expected) in _bad_cases(tmp_path, best).items():
        code = _exit_code(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2, name
        assert err.count("\n") == 0 and err.startswith("error: "), f"{name}: {err!r}"
        assert expected in err, f"{name}: {err!r}"
    assert _digest(db) == before


def _exit_code(argv: list[str]) -> int:
    """main()'s return code, or the code argparse exits with for malformed arguments."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_subprocess_error_has_no_traceback(tmp_path: Path) -> None:
    proc = _run("search", "--dataset", "nope", "--workspace", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: dataset 'nope' is unknown; use one of digits, mnist, fashion-mnist, cifar10 or a path to a .zip/.csv/.npz/folder."]
    assert not any(tmp_path.iterdir())


def test_help_on_every_command() -> None:
    for cmd in ("search", "worker", "train", "export", "datasets", "serve", "library"):
        proc = _run(cmd, "--help")
        assert proc.returncode == 0 and "usage:" in proc.stdout, cmd


def test_help_answers_without_importing_torch() -> None:
    """`moca --help` is a fraction of a second: torch (~1.5 s to import) is imported by the commands that train."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "nas_core", "search", "--help"], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0 and "usage:" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "nas_core.cli" in imported and "torch" not in imported


def test_fidelity_options_reach_the_search_config() -> None:
    from nas_core.cli import _search_config, build_parser

    args = build_parser().parse_args(["search", "--fidelity", "cached", "--fidelity-option", "cached_epochs=2",
                                      "--fidelity-option", "cached_train=adapters", "--fidelity-option", "finetune_seconds=1.5"])
    cfg = _search_config(args)
    assert cfg.fidelity_options == {"cached_epochs": 2, "cached_train": "adapters", "finetune_seconds": 1.5}
