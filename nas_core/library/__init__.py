"""The module library: pretrained blocks stored as safetensors weights + JSON metadata, never pickled.

``build_library`` trains a few donor networks from the block registry (varied kinds and widths),
splits them into blocks and stores each block as ``<id>.safetensors`` + ``<id>.json`` under
``<workspace>/library/``. Loading reads only safetensors and JSON; a block whose file does not match
its recorded sha256, or whose metadata is malformed, is refused with a :class:`LibraryError`.

Example::

    from nas_core.library import build_library, open_library

    lib = build_library(dataset="digits", workspace="moca_runs", minutes=0.5)
    meta = lib.blocks()[0]
    block = lib.load_block(meta.id)  # an nn.Module with the donor's weights, checksum verified
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas_core.blocks import IMAGE, TOKENS, Shape, get_block
from nas_core.errors import ConfigError, LibraryError, RegistryError

__all__ = [
    "LIBRARY_VERSION",
    "BlockMeta",
    "Library",
    "library_dir",
    "open_library",
    "library_rows",
    "save_block",
    "donor_architectures",
    "build_library",
    "load_library_weights",
]

LIBRARY_VERSION = 1
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_MAX_META_BYTES = 1_000_000


def _shape_to_dict(s: Shape) -> dict[str, Any]:
    return {"layout": s.layout, "c": s.c, "h": s.h, "w": s.w}


def _shape_from_dict(d: Any, where: str) -> Shape:
    if not isinstance(d, dict) or set(d) != {"layout", "c", "h", "w"}:
        raise LibraryError(f"{where} must be an object with layout, c, h, w, but got {d!r}.")
    if d["layout"] not in (IMAGE, TOKENS) or not all(isinstance(d[k], int) and d[k] >= 1 for k in ("c", "h", "w")):
        raise LibraryError(f"{where} must have layout image|tokens and positive integer c, h, w, but got {d!r}.")
    return Shape(d["layout"], d["c"], d["h"], d["w"])


@dataclass(frozen=True)
class BlockMeta:
    """Metadata of one library block (the JSON file beside its safetensors weights)."""

    id: str
    kind: str
    block_params: dict[str, Any]
    input_shape: Shape
    output_shape: Shape
    params: int
    flops: int
    latency_ms: float
    source_dataset: str
    dataset_fingerprint: str
    donor: str
    donor_accuracy: float
    sha256: str
    library_version: int = LIBRARY_VERSION
    position: int = 0
    created: str = ""
    latency_measurement: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return self.input_shape.c

    @property
    def out_channels(self) -> int:
        return self.output_shape.c

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "block_params": dict(sorted(self.block_params.items())),
            "input_shape": _shape_to_dict(self.input_shape),
            "output_shape": _shape_to_dict(self.output_shape),
            "params": self.params,
            "flops": self.flops,
            "latency_ms": self.latency_ms,
            "latency_measurement": self.latency_measurement,
            "source_dataset": self.source_dataset,
            "dataset_fingerprint": self.dataset_fingerprint,
            "donor": self.donor,
            "donor_accuracy": self.donor_accuracy,
            "position": self.position,
            "sha256": self.sha256,
            "library_version": self.library_version,
            "created": self.created,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "block metadata") -> BlockMeta:
        """Validate and read metadata; every problem is a :class:`LibraryError` naming the key and the fix."""
        if not isinstance(data, dict):
            raise LibraryError(f"{where} must be a JSON object, but got {type(data).__name__}.")
        required = {"id", "kind", "block_params", "input_shape", "output_shape", "params", "flops", "latency_ms",
                    "source_dataset", "donor_accuracy", "sha256", "library_version"}
        missing = sorted(required - set(data))
        if missing:
            raise LibraryError(f"{where} is missing key(s) {', '.join(missing)}; rebuild the library with `library build`.")
        version = data["library_version"]
        if not isinstance(version, int) or version < 1:
            raise LibraryError(f"{where}: library_version must be a positive integer, but got {version!r}.")
        if version > LIBRARY_VERSION:
            raise LibraryError(f"{where} has library_version {version}, newer than this MoCA-NAS reads ({LIBRARY_VERSION}); upgrade moca-nas.")
        bid = data["id"]
        if not isinstance(bid, str) or not _ID.match(bid):
            raise LibraryError(f"{where}: id must be 1-128 letters, digits, '_', '-' or '.', but got {bid!r}.")
        sha = data["sha256"]
        if not isinstance(sha, str) or not _SHA.match(sha):
            raise LibraryError(f"{where}: sha256 must be 64 lowercase hex digits, but got {sha!r}.")
        kind = data["kind"]
        try:
            block_cls = get_block(str(kind))
        except RegistryError as exc:
            raise LibraryError(f"{where}: {exc}") from None
        params = data["block_params"]
        if not isinstance(params, dict):
            raise LibraryError(f"{where}: block_params must be an object, but got {params!r}.")
        try:
            block_cls.resolve(params)
        except ConfigError as exc:
            raise LibraryError(f"{where}: {exc}") from None
        for key in ("params", "flops"):
            if not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 0:
                raise LibraryError(f"{where}: {key} must be a non-negative integer, but got {data[key]!r}.")
        for key in ("latency_ms", "donor_accuracy"):
            value = data[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise LibraryError(f"{where}: {key} must be a non-negative number, but got {value!r}.")
        extra = data.get("extra", {})
        if not isinstance(extra, dict):
            raise LibraryError(f"{where}: extra must be an object.")
        return cls(
            id=bid,
            kind=str(kind),
            block_params=dict(params),
            input_shape=_shape_from_dict(data["input_shape"], f"{where}: input_shape"),
            output_shape=_shape_from_dict(data["output_shape"], f"{where}: output_shape"),
            params=int(data["params"]),
            flops=int(data["flops"]),
            latency_ms=float(data["latency_ms"]),
            source_dataset=str(data["source_dataset"]),
            dataset_fingerprint=str(data.get("dataset_fingerprint", "")),
            donor=str(data.get("donor", "")),
            donor_accuracy=float(data["donor_accuracy"]),
            sha256=sha,
            library_version=version,
            position=int(data.get("position", 0)),
            created=str(data.get("created", "")),
            latency_measurement=str(data.get("latency_measurement", "")),
            extra=dict(extra),
        )

    def build_empty(self) -> nn.Module:
        """The block with freshly initialised weights and this block's structure."""
        return get_block(self.kind)(self.input_shape, **self.block_params)

    def label(self) -> str:
        return f"{self.kind} {self.in_channels}->{self.out_channels} s{self.block_params.get('stride', 1)} k{self.block_params.get('kernel', '-')}"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_dir(workspace: str | Path) -> Path:
    """Where a workspace keeps its module library."""
    return Path(workspace) / "library"


class Library:
    """A folder of blocks. Metadata is read (and validated) on open; weights are read, checksummed, on use.

    Malformed metadata files do not break the rest of the library: they are listed in ``problems``
    and asking for them by id raises the reason.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._meta: dict[str, BlockMeta] = {}
        self.problems: dict[str, str] = {}
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("*.json")):
            try:
                meta = self._read_meta(path)
            except LibraryError as exc:
                self.problems[path.stem] = str(exc)
                continue
            self._meta[meta.id] = meta

    @staticmethod
    def _read_meta(path: Path) -> BlockMeta:
        if path.stat().st_size > _MAX_META_BYTES:
            raise LibraryError(f"library metadata {path.name} is {path.stat().st_size} bytes; a block's metadata is a few KB, refusing it.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LibraryError(f"library metadata {path.name} is not valid JSON ({exc}); delete it or rebuild the library.") from None
        meta = BlockMeta.from_dict(data, where=f"library metadata {path.name}")
        if meta.id != path.stem:
            raise LibraryError(f"library metadata {path.name} says id {meta.id!r}, which does not match its file name; rebuild the library.")
        return meta

    def __len__(self) -> int:
        return len(self._meta)

    def __contains__(self, block_id: object) -> bool:
        return block_id in self._meta

    def blocks(self, *, kind: str | None = None) -> list[BlockMeta]:
        return [m for m in self._meta.values() if kind is None or m.kind == kind]

    def get(self, block_id: str) -> BlockMeta:
        if block_id in self._meta:
            return self._meta[block_id]
        if block_id in self.problems:
            raise LibraryError(f"library block {block_id!r} is refused: {self.problems[block_id]}")
        raise LibraryError(
            f"library block {block_id!r} is not in {self.root} ({len(self)} blocks); "
            "run `python -m nas_core library list` to see the ids, or rebuild with `library build`."
        )

    def load_state(self, block_id: str, *, sha256: str | None = None) -> dict[str, torch.Tensor]:
        """The block's tensors, after checking the file's sha256 against its metadata (and ``sha256`` when given)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        meta = self.get(block_id)
        if sha256 is not None and sha256 != meta.sha256:
            raise LibraryError(
                f"library block {block_id!r} has sha256 {meta.sha256[:12]}..., but the config asks for {sha256[:12]}...; "
                "the library was rebuilt since the config was written: use the library it was found with, or retrain from scratch."
            )
        path = self.root / f"{block_id}.safetensors"
        if not path.is_file():
            raise LibraryError(f"library block {block_id!r} has metadata but no weights file {path.name}; rebuild the library.")
        actual = _sha256_file(path)
        if actual != meta.sha256:
            raise LibraryError(
                f"library block {block_id!r}: weights file sha256 {actual[:12]}... does not match its metadata "
                f"({meta.sha256[:12]}...); the file was modified or corrupted, refusing it (rebuild the library)."
            )
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise LibraryError(f"library block {block_id!r}: weights are not readable safetensors ({exc}).") from None

    def load_into(self, module: nn.Module, block_id: str, *, sha256: str | None = None) -> nn.Module:
        """Copy the block's weights into ``module`` (which must have the block's structure)."""
        state = self.load_state(block_id, sha256=sha256)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise LibraryError(f"library block {block_id!r} does not fit the module it is loaded into: {str(exc).splitlines()[0]}") from None
        return module

    def load_block(self, block_id: str, *, sha256: str | None = None) -> nn.Module:
        """A new module with the block's structure and its verified weights, in eval mode."""
        meta = self.get(block_id)
        return self.load_into(meta.build_empty(), block_id, sha256=sha256).eval()


def open_library(workspace: str | Path | None = None, *, path: str | Path | None = None) -> Library:
    """The library of a workspace (``<workspace>/library``) or of an explicit folder."""
    if path is None:
        if workspace is None:
            from nas_core.workspace import default_workspace

            workspace = default_workspace()
        path = library_dir(workspace)
    return Library(path)


def library_rows(workspace: str | Path | None = None, *, path: str | Path | None = None) -> list[dict[str, Any]]:
    """One flat dict per block (for the dashboard's table), plus a ``refused`` row per malformed block."""
    lib = open_library(workspace, path=path)
    rows: list[dict[str, Any]] = []
    for m in sorted(lib.blocks(), key=lambda m: (m.kind, m.in_channels, m.out_channels, m.id)):
        rows.append({"id": m.id, "kind": m.kind, "input": str(m.input_shape), "output": str(m.output_shape),
                     "params": m.params, "mflops": m.flops / 1e6, "latency_ms": m.latency_ms,
                     "kernel": m.block_params.get("kernel"), "stride": m.block_params.get("stride", 1),
                     "source_dataset": m.source_dataset, "donor_accuracy": m.donor_accuracy, "sha256": m.sha256[:12],
                     "library_version": m.library_version, "status": "ok"})
    for name, why in sorted(lib.problems.items()):
        rows.append({"id": name, "status": f"refused: {why}"})
    return rows


def save_block(
    root: str | Path,
    module: nn.Module,
    *,
    kind: str,
    block_params: dict[str, Any],
    input_shape: Shape,
    output_shape: Shape,
    source_dataset: str,
    dataset_fingerprint: str = "",
    donor: str = "",
    donor_accuracy: float = 0.0,
    position: int = 0,
    measure: bool = True,
) -> BlockMeta:
    """Store one block: weights as safetensors, then metadata with the file's sha256 (written last, atomically)."""
    from safetensors.torch import save_file

    from nas_core.training.measure import count_flops, measure_latency

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    tmp = root / f".tmp-{time.time_ns()}.safetensors"
    save_file(state, str(tmp))
    sha = _sha256_file(tmp)
    cin, cout = input_shape.c, output_shape.c
    p = block_params
    bid = f"{kind}-{cin}-{cout}-s{p.get('stride', 1)}-k{p.get('kernel', 0)}-{sha[:10]}"
    (root / f"{bid}.safetensors").unlink(missing_ok=True)
    tmp.replace(root / f"{bid}.safetensors")
    flops, latency_ms, how = 0, 0.0, ""
    if measure:
        shape = input_shape.as_tuple()
        flops = count_flops(module, shape)
        lat = measure_latency(module, shape, warmup=2, repeats=10, budget_s=0.3)
        latency_ms, how = float(lat["latency_ms"]), str(lat["how"])
    meta = BlockMeta(
        id=bid, kind=kind, block_params=dict(block_params), input_shape=input_shape, output_shape=output_shape,
        params=sum(t.numel() for t in module.parameters()), flops=int(flops), latency_ms=latency_ms,
        source_dataset=source_dataset, dataset_fingerprint=dataset_fingerprint, donor=donor,
        donor_accuracy=float(donor_accuracy), sha256=sha, position=position,
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), latency_measurement=how,
    )
    tmp_json = root / f".{bid}.json.tmp"
    tmp_json.write_text(json.dumps(meta.to_dict(), indent=2))
    tmp_json.replace(root / f"{bid}.json")
    return meta


# --- donors ----------------------------------------------------------------------------------

# Each donor: (name, stage kind, stem width, stem stride, extra block params). The stems cover every
# (width, stride) the modular space samples; the chains cover widths 16-96 with both strides.
_DONORS: tuple[tuple[str, str, int, int, dict[str, Any]], ...] = (
    ("conv-a", "conv", 32, 1, {}),
    ("residual-a", "residual", 32, 2, {}),
    ("sepconv-a", "sepconv", 24, 1, {}),
    ("mbconv-a", "mbconv", 24, 2, {"expansion": 4, "se": False}),
    ("dilated-a", "dilated", 16, 1, {}),
    ("conv-k5", "conv", 16, 2, {"kernel": 5}),
    ("residual-k5", "residual", 24, 1, {"kernel": 5}),
    ("mbconv-se", "mbconv", 32, 2, {"expansion": 6, "se": True}),
)
# (out_channels, stride) along a donor's chain: every width as a stage's first block and as a repeat.
_CHAIN = ((16, 1), (16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (96, 1), (96, 1), (32, 1), (64, 2))


def donor_architectures(input_shape: tuple[int, int, int], num_classes: int, *, activation: str = "relu") -> list[tuple[str, Any]]:
    """The donor networks (name, Architecture) that ``build_library`` trains."""
    from nas_core.schema.config import Architecture, BlockSpec, HeadSpec

    out = []
    large = min(input_shape[1], input_shape[2]) >= 16
    for name, kind, stem_c, stem_s, extra in _DONORS:
        # On larger images every donor downsamples in its stem: 4x cheaper to train, and the stem's
        # weights serve stride-1 candidates as well (convolution weights do not depend on the stride).
        stem = BlockSpec("conv", {"out_channels": stem_c, "stride": 2 if large else stem_s, "kernel": 3, "activation": activation})
        blocks = []
        for c, s in _CHAIN:
            params: dict[str, Any] = {"out_channels": c, "activation": activation, **extra}
            if kind == "dilated":
                if s == 2:
                    blocks.append(BlockSpec("pool", {"mode": "max"}))  # dilated blocks keep the resolution by design
            else:
                params["stride"] = s
            blocks.append(BlockSpec(kind, params))
        arch = Architecture(tuple(input_shape), num_classes, (tuple(blocks),), HeadSpec(pool="avg"), stem=stem)  # type: ignore[arg-type]
        out.append((name, arch.validate()))
    return out


def _train_donor(model: nn.Module, data: Any, *, seconds: float, seed: int, max_epochs: int = 40, batch_size: int = 128,
                 min_steps: int = 150, device: torch.device | None = None) -> tuple[int, float]:
    """Train on the train split until the time slice ends (but at least ``min_steps`` batches); returns (epochs, val accuracy).

    Trains on ``device`` (CPU by default) and leaves the model on the CPU, ready to store.
    """
    device = device or torch.device("cpu")
    model.to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    n = len(data.x_train)
    start = time.perf_counter()
    epochs = steps = 0
    done = False
    while not done and epochs < max_epochs:
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            if len(idx) < 2:
                continue
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(data.x_train[idx].to(device)), data.y_train[idx].to(device))
            if not torch.isfinite(loss):
                raise LibraryError("a donor network diverged while building the library; try another --seed.")
            loss.backward()
            opt.step()
            steps += 1
            if time.perf_counter() - start > seconds and steps >= min_steps:
                done = True
                break
        epochs += 1
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(data.x_val), 512):
            correct += int((model(data.x_val[i : i + 512].to(device)).argmax(1).cpu() == data.y_val[i : i + 512]).sum())
    model.cpu()
    return epochs, correct / max(1, len(data.x_val))


def build_library(
    *,
    dataset: str,
    workspace: str | Path,
    minutes: float = 5.0,
    seed: int = 0,
    data_dir: str | None = None,
    train_samples: int | None = None,
    emit: Callable[[str], None] | None = None,
    data: Any = None,
    donors: tuple[str, ...] | None = None,
    min_steps: int = 150,
    device: str | torch.device = "cpu",
) -> Library:
    """Train the donor networks on ``dataset`` within about ``minutes`` and store their blocks.

    The donors train on the training split only (validation gives the recorded donor accuracy), so a
    search with the same split seed never evaluates candidates on data the blocks were trained on.
    Returns the workspace's library (existing blocks from other builds are kept). ``device`` ("auto",
    "cpu", "cuda" or a torch device) is where the donors train; blocks are measured and stored on the CPU.
    """
    from nas_core.data import load_dataset
    from nas_core.model.assembly import assemble
    from nas_core.training.loop import resolve_device, set_seed

    if not (minutes > 0 and math.isfinite(minutes)):
        raise ConfigError(f"--minutes must be a positive number, but got {minutes}; use e.g. --minutes 5.")
    say = emit or (lambda _msg: None)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if data is None:
        data = load_dataset(dataset, seed=seed, data_dir=data_dir, train_samples=train_samples, cache_dir=Path(workspace) / "cache" / "data")
    root = library_dir(workspace)
    chosen = donor_architectures(tuple(data.input_shape), data.num_classes)
    if donors is not None:
        unknown = sorted(set(donors) - {name for name, _ in chosen})
        if unknown:
            raise ConfigError(f"unknown donor(s) {', '.join(unknown)}; valid donors are {', '.join(name for name, _ in chosen)}.")
        chosen = [(name, arch) for name, arch in chosen if name in donors]
    slice_s = minutes * 60.0 / len(chosen)
    for d, (name, arch) in enumerate(chosen):
        set_seed(seed + d)
        model = assemble(arch)
        t0 = time.perf_counter()
        epochs, acc = _train_donor(model, data, seconds=slice_s * 0.9, seed=seed + d, min_steps=min_steps, device=dev)
        stored = 0
        for pos, (info, layer) in enumerate(zip(model.layers_info, model.body)):
            if info.adapter or info.spec is None or not any(True for _ in layer.parameters()):
                continue
            params = {k: v for k, v in info.spec.params.items() if k != "in_channels"}
            save_block(root, layer, kind=info.spec.kind, block_params=get_block(info.spec.kind).resolve(params),
                       input_shape=info.in_shape, output_shape=info.out_shape, source_dataset=data.name,
                       dataset_fingerprint=data.fingerprint, donor=f"{name}: {arch.summary()}", donor_accuracy=acc, position=pos)
            stored += 1
        say(f"donor {name}: {epochs} epoch(s), val accuracy {acc:.4f}, {stored} blocks stored ({time.perf_counter() - t0:.1f} s)")
    return Library(root)


def load_library_weights(model: nn.Module, cfg: Any, *, workspace: str | Path) -> int:
    """Load the library weights of every block a config references by id (sha256 checked); returns how many.

    Raises :class:`LibraryError` when the library or a block is missing or fails its checksum, so the
    caller can train from scratch instead and say so.
    """
    lib = open_library(workspace)
    if not len(lib) and not lib.problems:
        raise LibraryError(f"no module library at {lib.root}; build one with `python -m nas_core library build --workspace {workspace}`.")
    loaded = 0
    for info, layer in zip(model.layers_info, model.body):  # type: ignore[attr-defined,arg-type]
        spec = info.spec
        if info.adapter or spec is None or not spec.library_id:
            continue
        lib.load_into(layer, spec.library_id, sha256=spec.sha256)
        loaded += 1
    return loaded
