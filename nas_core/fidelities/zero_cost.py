"""Zero-cost proxies (score an untrained network on one minibatch) and the ``zero-cost`` fidelity.

:data:`PROXIES` maps a name to ``fn(model, x, y) -> float`` (higher is better):

- ``synflow``: sum of |theta * dR/dtheta| for R = sum of the output of the |theta|-linearised network
  on an all-ones input (Tanaka et al. 2020), in float64; reported as log10.
- ``naswot``: log-determinant of the Hamming-similarity kernel of the minibatch's ReLU-family
  activation patterns (Mellor et al. 2021).
- ``grad_norm``: L2 norm of the loss gradient over all weights.
- ``snip``: sum of |theta * dL/dtheta| (Lee et al. 2019).

Example::

    from nas_core.proxies import PROXIES, score
    value = score("naswot", model, x[:64], y[:64])
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nas_core.errors import ConfigError
from nas_core.fidelities.base import FINETUNE_OPTIONS, FINETUNE_TOP_K, EvalContext, EvalResult, Fidelity, FidelityOption, register_fidelity
from nas_core.fidelities.cached import check_cached_options, finalize_top_k
from nas_core.model.assembly import assemble
from nas_core.registry import Registry
from nas_core.training.loop import set_seed
from nas_core.training.measure import measure_model

__all__ = ["PROXIES", "register_proxy", "list_proxies", "score", "zero_cost_fidelity"]

ProxyFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], float]
PROXIES: Registry[ProxyFn] = Registry("zero-cost proxy")


def register_proxy(name: str) -> Callable[[ProxyFn], ProxyFn]:
    return PROXIES.register(name)


def list_proxies() -> list[str]:
    return PROXIES.names()


def score(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Score a (copy of an) untrained network with proxy ``name``; the model itself is not modified."""
    value = float(PROXIES.get(name)(copy.deepcopy(model), x, y))
    return value if math.isfinite(value) else -1e30


def _weights(model: nn.Module) -> list[torch.Tensor]:
    """Weights of the layers the proxies read: convolutions and linear layers (not norms or biases)."""
    out = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            out.append(m.weight)
        elif isinstance(m, nn.MultiheadAttention):
            out += [p for p in (m.in_proj_weight, m.out_proj.weight) if isinstance(p, nn.Parameter)]
    return out


@register_proxy("synflow")
def synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model = model.double().eval()  # eval: batch norm uses its (initial) running statistics, no batch dependence
    signs = {}
    with torch.no_grad():
        for name, p in model.state_dict().items():
            signs[name] = torch.sign(p)
            p.abs_()
    model.zero_grad()
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    model(ones).sum().backward()
    total = 0.0
    with torch.no_grad():
        for w in _weights(model):
            if w.grad is not None:
                total += float((w * w.grad).abs().sum())
    return math.log10(total) if total > 0 else -300.0


_ACTS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU)


@register_proxy("naswot")
def naswot(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    n = len(x)
    kernel = torch.zeros(n, n, dtype=torch.float64, device=x.device)

    def hook(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        codes = (out.detach().reshape(n, -1) > 0).double()
        kernel.add_(codes @ codes.t() + (1 - codes) @ (1 - codes).t())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _ACTS)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    if not handles:
        return 0.0
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) > 0 else -1e30


def _loss_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    model.train()
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    return [(w, w.grad) for w in _weights(model) if w.grad is not None]


@register_proxy("grad_norm")
def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(math.sqrt(sum(float(g.pow(2).sum()) for _, g in _loss_grads(model, x, y))))


@register_proxy("snip")
def snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    grads = _loss_grads(model, x, y)
    with torch.no_grad():
        return float(sum(float((w * g).abs().sum()) for w, g in grads))


def _minibatch(data: Any, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(data.x_train)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(size, n)]
    return data.x_train[idx], data.y_train[idx]


def zero_cost_fidelity(ctx: EvalContext) -> EvalResult:
    """Score the untrained candidate with one proxy on one minibatch (no training).

    Options: ``proxy`` (``naswot``; any name in :data:`PROXIES`), ``proxy_batch`` (64). The score
    is recorded under its own name, ``proxy_score`` (with ``extra["proxy"]`` naming the proxy), and
    ranks the candidates in the accuracy objective's place (``extra["ranked_by"]``, read by the
    search loop); ``val_accuracy``/``test_accuracy`` stay what they say, the untrained network's
    measured accuracies (also in ``val_accuracy_untrained``). After the search the ``zero-cost``
    finalizer trains the top-k from scratch for their final accuracy.
    """
    _check_zero_cost_options(ctx.options)
    name = str(ctx.options.get("proxy", "naswot"))
    set_seed(ctx.seed)
    model = assemble(ctx.arch).to(ctx.device)
    x, y = _minibatch(ctx.data, int(ctx.options.get("proxy_batch", 64)), ctx.seed)
    t0 = time.perf_counter()
    value = score(name, model, x.to(ctx.device), y.to(ctx.device))
    proxy_s = time.perf_counter() - t0
    measured = measure_model(model, ctx.data, ctx.device, should_stop=ctx.should_stop)
    metrics = dict(measured["metrics"])
    metrics["val_accuracy_untrained"] = metrics["val_accuracy"]
    metrics["proxy_score"] = value  # a ranking signal (NASWOT scores run in the hundreds), never called an accuracy
    metrics["train_seconds"] = proxy_s
    metrics["epochs_trained"] = 0
    return EvalResult(metrics=metrics, history=[], confusion=measured["confusion"], per_class_accuracy=measured["per_class_accuracy"],
                      latency=measured["latency"], state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
                      extra={"proxy": name, "proxy_score": value, "proxy_seconds": proxy_s,
                             "ranked_by": {"val_accuracy": "proxy_score"}})


def _check_zero_cost_options(opts: dict[str, Any]) -> None:
    name = opts.get("proxy", "naswot")
    if name not in PROXIES:
        raise ConfigError(f"unknown zero-cost proxy {name!r}; use one of {', '.join(PROXIES.names())}.")
    check_cached_options({k: v for k, v in opts.items() if k in FINETUNE_OPTIONS})


@register_fidelity("zero-cost")
class ZeroCost(Fidelity):
    summary = "proxy scores on one batch, then the top-k trained"
    options = ("proxy", "proxy_batch", *FINETUNE_OPTIONS)
    page_options = (
        FidelityOption("proxy", "Proxy", "naswot", choices=tuple(PROXIES.names()), key="zc_proxy",
                       help="The zero-cost score each candidate is ranked by."),
        FINETUNE_TOP_K,
    )

    def check(self, options: dict[str, Any]) -> None:
        _check_zero_cost_options(options)

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        return zero_cost_fidelity(ctx)

    def finalize(self, *, study: Any, config: Any, data: Any, device: torch.device, workspace: Any, emit: Any = None,
                 stop_event: Any = None, deadline: float = math.inf) -> None:
        finalize_top_k(study=study, config=config, data=data, device=device, workspace=workspace, emit=emit,
                       stop_event=stop_event, init="scratch", proxy=str(self.proxy(dict(getattr(config, "fidelity_options", {}) or {}))),
                       deadline=deadline)

    def proxy(self, options: dict[str, Any]) -> str | None:
        return str(options.get("proxy", "naswot"))
