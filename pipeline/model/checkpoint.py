"""Supernet checkpoints: ours (knows its space) and the official AttentiveNAS format.

Ours is a dict `{'format', 'space', 'num_classes', 'state_dict', 'extra'}` written
atomically (`pipeline.atomic`: unique temporary file, fsync, rename), so a kill mid-save leaves the previous
checkpoint intact. The official format is a dict whose `'state_dict'` keys carry the
`module.` prefix of DistributedDataParallel plus `*.bn_tracking.*` buffers we do not use.
Files are read with `torch.load(weights_only=True)`: no code from a checkpoint runs.
Every refusal is a one-line `CheckpointError` naming the file, the key and the fix.
"""
from __future__ import annotations

import pickle
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from pipeline.atomic import atomic_path
from pipeline.errors import CheckpointError, ConfigError
from pipeline.model.supernet import Supernet
from pipeline.space import SearchSpace, StageSpec
from pipeline.space.space import BUILTIN_SPACES

FORMAT = "pipeline.supernet/1"
OFFICIAL_PREFIX = "module."
#: Extra BN statistics of the official code; accepted in official files and ignored.
IGNORED_MARKER = ".bn_tracking."
#: Space assumed for official checkpoints (they do not record theirs).
OFFICIAL_SPACE = "attentivenas"


@dataclass
class LoadedCheckpoint:
    """A loaded supernet plus the `extra` dict saved with it (empty for official files)."""

    supernet: Supernet
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------- saving
def save_checkpoint(path: str | Path, supernet: Supernet, extra: dict[str, Any] | None = None) -> Path:
    """Write our format atomically. `extra` (e.g. epoch, optimizer state) must be tensors and plain data."""
    if isinstance(supernet, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        supernet = supernet.module
    extra = dict(extra or {})
    _check_plain(extra, "extra")
    payload = {
        "format": FORMAT,
        "space": asdict(supernet.space),
        "num_classes": supernet.num_classes,
        "state_dict": supernet.state_dict(),
        "extra": extra,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _check_plain(value: Any, where: str) -> None:
    """Refuse what `torch.load(weights_only=True)` could not read back."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise CheckpointError(f"{where} has a key of type {type(key).__name__}; use str or int keys")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, (torch.Tensor, str, int, float, bool, type(None))):
        raise CheckpointError(
            f"{where} is a {type(value).__name__}; checkpoints hold only tensors and plain data "
            "(convert it first, e.g. config.to_dict())"
        )


# ---------------------------------------------------------------------- loading
def load_checkpoint(path: str | Path, space: SearchSpace | None = None) -> LoadedCheckpoint:
    """Load ours or the official format into a new Supernet.

    Ours carries its space: `space`, if given, must be the same (else an error says which
    space the file needs). Official files carry none: `space` defaults to attentivenas.
    """
    raw = _read(path)
    if raw.get("format") == FORMAT:
        lacking = [k for k in ("space", "num_classes", "state_dict") if k not in raw]
        if lacking or not isinstance(raw["state_dict"], dict):
            raise CheckpointError(
                f"{path} is an incomplete {FORMAT} checkpoint (lacks {lacking or ['state_dict']}); re-save it"
            )
        saved_space = _space_from_data(raw.get("space"), path)
        if space is not None and space.structure() != saved_space.structure():
            raise CheckpointError(
                f"{path} is a supernet of space {saved_space.name!r}, not of space {space.name!r}; "
                f"load it with space {saved_space.name!r} (--space {saved_space.name}) or without a space"
            )
        supernet = _new_supernet(space or saved_space, int(raw["num_classes"]))
        _load_checked(supernet, raw["state_dict"], str(path))
        return LoadedCheckpoint(supernet, dict(raw.get("extra") or {}))
    state = _official_state(raw, path)
    classifier = state.get("classifier.linear.linear.weight")
    if not isinstance(classifier, torch.Tensor) or classifier.dim() != 2:
        raise CheckpointError(
            f"{path} lacks tensor 'classifier.linear.linear.weight'; it is not an AttentiveNAS supernet"
        )
    supernet = _new_supernet(space or SearchSpace.load(OFFICIAL_SPACE), classifier.size(0))
    _load_checked(supernet, state, str(path))
    return LoadedCheckpoint(supernet)


def _new_supernet(space: SearchSpace, num_classes: int) -> Supernet:
    """A supernet to load weights into, with dropout and drop-connect off.

    A loaded supernet is mostly evaluated, and BN recalibration runs it in training mode,
    where drop-connect would distort the statistics; a trainer sets its rates per step.
    """
    return Supernet(space, num_classes=num_classes, dropout=0.0, drop_connect=0.0)


def load_supernet(path: str | Path, space: SearchSpace | None = None) -> Supernet:
    """The supernet of a checkpoint in our or the official format (see `load_checkpoint`)."""
    return load_checkpoint(path, space).supernet


def load_official_state_dict(supernet: Supernet, path_or_dict: str | Path | Mapping[str, Any]) -> None:
    """Load official weights (a file, its checkpoint dict, or its state dict) into `supernet`."""
    source = path_or_dict if isinstance(path_or_dict, (str, Path)) else "<state dict>"
    raw = _read(path_or_dict) if isinstance(path_or_dict, (str, Path)) else dict(path_or_dict)
    _load_checked(supernet, _official_state(raw, source), str(source))


def _read(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickler_reason(err)
        if reason.startswith("Unsupported global"):
            raise CheckpointError(
                f"{path} holds Python objects besides tensors and plain data ({reason}); if you trust it, "
                "re-save its 'state_dict' alone with torch.save and load that"
            ) from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (unpickling failed: {reason})") from None
    except Exception as err:  # torch raises many types for foreign or truncated files
        reason = f"{type(err).__name__}: {_first_line(err)}"
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({reason})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a checkpoint dict")
    return raw


def _unpickler_reason(err: Exception) -> str:
    """The first sentence after torch's 'WeightsUnpickler error:' (the rest is generic advice)."""
    match = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(err))
    return match.group(1).split(". ")[0].strip() if match else _first_line(err)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _official_state(raw: dict[str, Any], source: str | Path) -> dict[str, Any]:
    """The state dict of an official checkpoint (or of a bare state dict), prefix and bn_tracking removed."""
    state = raw.get("state_dict", raw)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{source} has no 'state_dict' of tensors; expected our checkpoint or the official AttentiveNAS format"
        )
    return {
        (key[len(OFFICIAL_PREFIX):] if key.startswith(OFFICIAL_PREFIX) else key): value
        for key, value in state.items()
        if IGNORED_MARKER not in key
    }


def _load_checked(supernet: Supernet, state: Mapping[str, Any], source: str) -> None:
    """Load `state` strictly, naming the first missing, unexpected or wrongly shaped tensor."""
    expected = supernet.state_dict()
    hint = _space_hint(supernet, state)
    for key, want in expected.items():
        if key not in state:
            raise CheckpointError(f"checkpoint {source} lacks tensor {key!r}{hint}")
        got = state[key]
        if not isinstance(got, torch.Tensor):
            raise CheckpointError(f"checkpoint {source}: {key!r} is a {type(got).__name__}, not a tensor")
        if tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(
                f"checkpoint {source}: tensor {key!r} has shape {list(got.shape)}, "
                f"space {supernet.space.name!r} expects {list(want.shape)}{hint}"
            )
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise CheckpointError(
            f"checkpoint {source} has tensor {unexpected[0]!r} ({len(unexpected)} unexpected in all) "
            f"that space {supernet.space.name!r} does not have{hint}"
        )
    supernet.load_state_dict(state, strict=True)


def _space_hint(supernet: Supernet, state: Mapping[str, Any]) -> str:
    """'; it fits space X: ...' when the tensors match another built-in space, else ''."""
    if _shapes_match(supernet, state):
        return ""
    for name in BUILTIN_SPACES:
        if name == supernet.space.name:
            continue
        with torch.device("meta"):
            other = Supernet(SearchSpace.load(name), num_classes=supernet.num_classes)
        if _shapes_match(other, state):
            return f"; the checkpoint fits space {name!r}: load it with that space (--space {name})"
    return "; is it a checkpoint of another space? load it with the space it was trained with"


def _shapes_match(supernet: Supernet, state: Mapping[str, Any]) -> bool:
    expected = supernet.state_dict()
    return set(expected) == set(state) and all(
        isinstance(state[k], torch.Tensor) and state[k].shape == v.shape for k, v in expected.items()
    )


# ------------------------------------------------------------------ space data
def _space_from_data(data: Any, path: str | Path) -> SearchSpace:
    """Rebuild the SearchSpace stored by `save_checkpoint` (`asdict` of it)."""
    def tuples(d: dict[str, Any]) -> dict[str, Any]:
        return {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in d.items()}

    try:
        fields = tuples({k: v for k, v in data.items() if k != "stages"})
        stages = tuple(StageSpec(**tuples(stage)) for stage in data["stages"])
        return SearchSpace(**fields, stages=stages)
    except (AttributeError, KeyError, TypeError, ConfigError) as err:
        raise CheckpointError(
            f"{path} has malformed space data ({_first_line(err)}); re-save it with save_checkpoint"
        ) from None
