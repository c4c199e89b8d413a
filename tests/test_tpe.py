"""TPE with the split memo samples exactly what Optuna's TPE samples, and splits the study once per trial."""

from __future__ import annotations

import warnings

import optuna
from optuna.samplers._tpe import sampler as tpe_module

from nas_core.search import SAMPLERS, SearchConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _sample(n: int, sampler: optuna.samplers.BaseSampler | None = None) -> list[dict]:
    """n trials of the default space by the default (seeded) TPE, two objectives, one trial in seven pruned."""
    space = SearchConfig(dataset="digits").search_space()
    sampler = sampler or SAMPLERS.get("tpe")(seed=5, space=space, trials=n, n_objectives=2)
    study = optuna.create_study(sampler=sampler, directions=["maximize", "minimize"])
    for i in range(n):
        trial = study.ask()
        values = space.sample(trial)
        if i % 7 == 6:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, [((i * 37) % 100) / 100, float(len(values))])
    return [t.params for t in study.trials]


def test_the_memo_samples_what_optuna_samples_and_splits_once_per_trial(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    SAMPLERS.get("tpe")(seed=0, space=None, trials=1, n_objectives=1)  # installs the memo
    memo = tpe_module._split_trials
    original = memo.__wrapped__
    calls = {"n": 0}

    def counted(*args):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return original(*args)

    monkeypatch.setattr(tpe_module, "_split_trials", counted)
    plain = _sample(40)
    plain_splits = calls["n"]
    calls["n"] = 0
    monkeypatch.setattr(memo, "__wrapped__", counted)  # not used by the memo: it holds the original itself
    import nas_core.search.tpe as tpe

    monkeypatch.setattr(tpe, "_installed", False)
    monkeypatch.setattr(tpe_module, "_split_trials", counted)
    assert tpe.install()  # the memo around the counting split
    memoized = _sample(40)
    assert memoized == plain
    # after the 10 random start-up trials: one split for the shared parameters (constant liar: running trials too)
    # and one for all the conditional ones of a trial, where Optuna splits once per conditional parameter
    assert calls["n"] <= 2 * 30 < plain_splits


def test_the_cached_internal_representation_samples_what_optuna_samples(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from nas_core.search.tpe import CachedTPESampler

    default = SAMPLERS.get("tpe")(seed=5, space=None, trials=60, n_objectives=2)
    assert isinstance(default, CachedTPESampler)  # what the default search samples with
    conversions = {"n": 0}
    original = optuna.distributions.CategoricalDistribution.to_internal_repr

    def counted(self, value):  # type: ignore[no-untyped-def]
        conversions["n"] += 1
        return original(self, value)

    monkeypatch.setattr(optuna.distributions.CategoricalDistribution, "to_internal_repr", counted)
    plain = _sample(60, optuna.samplers.TPESampler(seed=5, multivariate=True, n_startup_trials=10))
    plain_conversions, conversions["n"] = conversions["n"], 0
    cached = _sample(60, CachedTPESampler(seed=5, multivariate=True, n_startup_trials=10))
    assert cached == plain
    assert conversions["n"] * 4 < plain_conversions  # each finished trial's categorical values converted once per space
