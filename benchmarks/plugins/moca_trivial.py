"""A `trivial` fidelity for engine benchmarks: metrics from the architecture's size, no training (it builds the network once to count its parameters).

Load it into any `python -m nas_core` process with `MOCA_PLUGINS=moca_trivial` and this folder on PYTHONPATH.
"""

from __future__ import annotations

from nas_core.evaluate import FIDELITIES, EvalContext, EvalResult


def trivial(ctx: EvalContext) -> EvalResult:
    from nas_core.assemble import assemble
    from nas_core.evaluate import count_params

    n_blocks = len(ctx.arch.blocks())
    width = sum(int(b.params.get("out_channels", 0)) for b in ctx.arch.blocks())
    metrics = {
        "val_accuracy": 0.5 + 0.4 * (1 - 1 / (1 + width / 200)), "test_accuracy": 0.5, "macro_f1": 0.5, "val_macro_f1": 0.5,
        # the real parameter count: the best config is checked against its rebuilt network
        "params": float(count_params(assemble(ctx.arch))), "flops": float(width * 1000), "latency_ms": 0.01 * n_blocks + width / 1e4,
        "size_mb": width * 4e-4, "train_seconds": 0.0, "epochs_trained": 1,
    }
    if ctx.on_epoch:
        ctx.on_epoch(1, 1, {"epoch": 1, "val_accuracy": metrics["val_accuracy"], "train_loss": 0.0})
    return EvalResult(metrics=metrics, history=[{"epoch": 1, "val_accuracy": metrics["val_accuracy"]}],
                      latency={"latency_ms": metrics["latency_ms"], "how": "trivial evaluator (no measurement)"})


if "trivial" not in FIDELITIES:
    FIDELITIES.add("trivial", trivial)
