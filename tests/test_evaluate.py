"""Training and measurement helpers of nas_core.evaluate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nas_core.evaluate import classification_metrics, make_optimizer
from nas_core.genotype import TrainingRecipe


@pytest.mark.parametrize("seed", range(40))
def test_classification_metrics_match_scikit_learn(seed: int) -> None:
    from sklearn.metrics import confusion_matrix, f1_score

    rng = np.random.default_rng(seed)
    k, n = int(rng.integers(2, 12)), int(rng.integers(1, 80))
    y_true = rng.integers(0, k, n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, k, n))
    if seed % 4 == 0:  # classes with no support and never predicted count as F1 0, like zero_division=0
        y_true, y_pred = np.minimum(y_true, max(0, k - 3)), np.minimum(y_pred, max(0, k - 3))
    m = classification_metrics(y_true, y_pred, k)
    assert m["confusion"] == confusion_matrix(y_true, y_pred, labels=list(range(k))).tolist()
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", labels=list(range(k)), zero_division=0), abs=1e-12)
    assert m["accuracy"] == pytest.approx(float((y_true == y_pred).mean()))
    support = np.bincount(y_true, minlength=k)
    for c in range(k):
        if support[c]:
            assert m["per_class_accuracy"][c] == pytest.approx(float((y_pred[y_true == c] == c).mean()))
        else:
            assert np.isnan(m["per_class_accuracy"][c])


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizers_are_fused_on_cpu_and_match_the_reference_step(name: str) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    ref = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    ref.load_state_dict(net.state_dict())
    recipe = TrainingRecipe(optimizer=name, lr=0.05, weight_decay=1e-4)
    opt = make_optimizer(net.parameters(), recipe)
    assert opt.defaults.get("fused") is True
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    extra = {"momentum": 0.9, "nesterov": True} if name == "sgd" else {}
    ref_opt = cls(ref.parameters(), lr=0.05, weight_decay=1e-4, foreach=False, **extra)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for _ in range(5):
        for model, o in ((net, opt), (ref, ref_opt)):
            o.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            o.step()
    for a, b in zip(net.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_optimizer_refuses_no_parameters_and_fuses_double_precision() -> None:
    recipe = TrainingRecipe(optimizer="adam", lr=1e-3)
    with pytest.raises(ValueError):
        make_optimizer([], recipe)  # torch's own message: an optimizer needs parameters
    p = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    assert make_optimizer([p], recipe).defaults.get("fused") is True


def test_small_inputs_train_on_one_cpu_thread_unless_moca_threads_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from nas_core.errors import ConfigError
    from nas_core.evaluate import cpu_threads, threads

    cpu = torch.device("cpu")
    monkeypatch.delenv("MOCA_THREADS", raising=False)
    assert cpu_threads((1, 8, 8), cpu) == 1 and cpu_threads((1, 28, 28), cpu) is None
    assert cpu_threads((1, 8, 8), torch.device("cuda")) is None
    monkeypatch.setenv("MOCA_THREADS", "3")
    assert cpu_threads((1, 28, 28), cpu) == 3
    monkeypatch.setenv("MOCA_THREADS", "many")
    with pytest.raises(ConfigError, match="MOCA_THREADS must be a whole number"):
        cpu_threads((1, 8, 8), cpu)
    before = torch.get_num_threads()
    with threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_cpu_training_runs_channels_last_and_hands_back_the_usual_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Convolutions train channels-last on CPU (faster there); the model that leaves the loop is contiguous again, so its
    weights save and export, and the switch changes the arithmetic only by float rounding."""
    from types import SimpleNamespace

    import nas_core.training.loop as loop

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 8, 8, generator=gen)
    y = (x.mean((1, 2, 3)) > 0).long()
    data = SimpleNamespace(x_train=x[:64], y_train=y[:64], x_val=x[64:], y_val=y[64:])
    recipe = TrainingRecipe(epochs=2, batch_size=16, lr=1e-3, patience=5)
    layouts: list[bool] = []

    def trained(flag: bool) -> nn.Module:
        monkeypatch.setattr(loop, "CHANNELS_LAST", flag)
        torch.manual_seed(0)  # (no conv bias before batch norm: its gradient is rounding noise, which Adam scales up to lr)
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(512, 2))
        seen = model[0].register_forward_hook(lambda m, a, out: layouts.append(out.is_contiguous(memory_format=torch.channels_last)))
        loop.train_model(model, data, recipe, device=torch.device("cpu"), seed=0)
        seen.remove()
        return model

    plain = trained(False)
    assert not any(layouts)
    layouts.clear()
    fast = trained(True)
    assert all(layouts) and layouts  # every batch, training and validation, went channels-last
    for (name, a), b in zip(plain.state_dict().items(), fast.state_dict().values(), strict=True):
        assert b.is_contiguous(), name
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)
