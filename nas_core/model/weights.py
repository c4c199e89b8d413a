"""Network weights as safetensors files (never pickle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas_core.errors import ConfigError


def save_weights(model: Any, path: str | Path) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def load_weights(model: Any, path: str | Path) -> Any:
    """Load safetensors weights (never pickle); a mismatch is a clear error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(f"weights file {path} cannot be read as safetensors ({exc}); re-download it.") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"weights file {path} does not fit this architecture (missing {len(missing)}, unexpected {len(unexpected)} tensors).")
    return model
