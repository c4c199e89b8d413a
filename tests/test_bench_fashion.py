"""The Fashion-MNIST comparison of issue 16: its goals and file names (fashion_default.py), and fashion_mnist.py's default
arms, which run that driver. The hour itself is a benchmark, not a test."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _search_arm(arm: str, final: float | None, small: float | None, wall: float = 3500.0) -> dict[str, Any]:
    return {"arm": arm, "wall_s": wall, "n_complete": 2, "anytime": [(800.0, 0.93), (3400.0, final)] if final else [],
            "final": {"test_accuracy": final, "params": 468_010, "summary": "conv-32"} if final else None,
            "pareto_le_100k": {"number": 1, "test_accuracy": small, "params": 96_554} if small else None}


def _args(tmp_path: Path, stem: str = "fashion_default", tag: str | None = None) -> Any:
    return SimpleNamespace(budget_s=3600.0, seed=3, threads=1, out=str(tmp_path), tag=tag, stem=stem, reuse_baselines=None,
                           default_result=None)


def test_goals_compare_the_default_arm_with_the_best_baseline_of_the_same_run(tmp_path: Path) -> None:
    fd = _load("fashion_default")
    reference = {"arm": "reference", "wall_s": 900.0, "anytime": [(850.0, 0.9310)], "final": {"test_accuracy": 0.9310}}
    arms = {"default": _search_arm("default", 0.9455, 0.9420), "reference": reference, "plain": _search_arm("plain", 0.9360, None)}
    goals = fd.write_results(arms, _args(tmp_path, stem="fashion_mnist_default"))["goals"]
    assert goals == {"default_ge_0.945_within_budget": True, "default_ge_1pt_above_best_baseline": False,  # plain's 0.936 is the best
                     "pareto_le_100k_ge_0.935": True}
    out = json.loads((tmp_path / "fashion_mnist_default.json").read_text())
    assert out["anytime"]["reference"] == {"900": 0.9310, "1800": 0.9310, "3600": 0.9310}
    assert out["anytime"]["default"]["900"] == 0.93 and out["anytime"]["default"]["1800"] == 0.93
    assert "| default | 0.9300 | 0.9300 | 0.9455 |" in (tmp_path / "fashion_mnist_default.md").read_text()
    arms["plain"] = _search_arm("plain", None, None)  # plain search held nothing: the reference is the best baseline
    arms["default"] = _search_arm("default", 0.9455, 0.9340, wall=3900.0)  # past the budget, small point below 0.935
    goals = fd.write_results(arms, _args(tmp_path, tag="late"))["goals"]
    assert goals == {"default_ge_0.945_within_budget": False, "default_ge_1pt_above_best_baseline": True,
                     "pareto_le_100k_ge_0.935": False}
    assert (tmp_path / "fashion_default_late.json").is_file()


def test_fashion_mnist_runs_the_issue_arms_by_default(tmp_path: Path) -> None:
    fm = _load("fashion_mnist")
    args = SimpleNamespace(budget_s=600.0, seed=4, threads=2, reference_epochs=3, workspace=str(tmp_path / "ws"), out=str(tmp_path))
    cmd = fm.default_arms_command(args)
    assert cmd[0] == sys.executable and Path(cmd[1]) == BENCH / "fashion_default.py"
    flags = dict(zip(cmd[2::2], cmd[3::2]))
    assert flags == {"--budget-s": "600.0", "--seed": "4", "--threads": "2", "--reference-epochs": "3", "--workspace": str(tmp_path / "ws"),
                     "--out": str(tmp_path), "--stem": "fashion_mnist_default"}
