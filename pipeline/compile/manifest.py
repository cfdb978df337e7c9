"""`manifest.json`: the self-description of one artifact folder.

The manifest is plain JSON checked against `pipeline/data/manifest.schema.json` on every
read and write, so an app, a later pipeline step (search fills accuracy, measure fills
latency) and a person all see the same validated fields. Writes are atomic (temp file +
rename): a crash never leaves a half-written manifest beside a good library.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline.atomic import write_json
from pipeline.errors import PipelineError
from pipeline.paths import DATA_DIR

MANIFEST_NAME = "manifest.json"
SCHEMA_PATH = DATA_DIR / "manifest.schema.json"


class ManifestError(PipelineError):
    """A manifest is missing, not JSON, or does not match the schema."""


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.Draft202012Validator(schema)


def validate_manifest(data: dict[str, Any], where: str = "manifest") -> None:
    """Raise `ManifestError` naming the first offending field."""
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        field = "/".join(str(p) for p in err.absolute_path) or "<root>"
        raise ManifestError(f"{where}: field {field!r}: {err.message}; "
                            "re-create the artifact with `pipeline compile`")


def file_entry(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of one artifact file, as the manifest lists it."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


class Manifest:
    """A validated manifest; mutate through the `set_*` helpers, then `write`."""

    def __init__(self, data: dict[str, Any]):
        validate_manifest(data)
        self._data = data

    # ----------------------------------------------------------------- access
    @property
    def data(self) -> dict[str, Any]:
        """A deep copy of the raw JSON object (changes go through the setters)."""
        return copy.deepcopy(self._data)

    @property
    def verified(self) -> bool:
        return bool(self._data["verification"]["verified"])

    @property
    def subnet_id(self) -> str:
        return self._data["subnet"]["id"]

    @property
    def device(self) -> str:
        return self._data["build"]["device"]

    def __getitem__(self, key: str) -> Any:
        return copy.deepcopy(self._data[key])

    # ---------------------------------------------------------------- updates
    def _replace(self, section: str, value: Any) -> None:
        """Swap one section, keeping the manifest valid (the old one stays on error)."""
        candidate = {**copy.deepcopy(self._data), section: value}
        validate_manifest(candidate, where=f"update of {section!r}")
        self._data = candidate

    def set_accuracy(self, top1: float, source: str, dataset: str | None = None) -> None:
        """Record top-1 (%) and where it came from (supernet eval, predictor, ...)."""
        self._replace("accuracy", {"top1": float(top1), "source": source, "dataset": dataset})

    def set_latency(self, predicted_ms: float | None = None, measured_ms: float | None = None,
                    measurement: dict[str, Any] | None = None, predictor: str | None = None) -> None:
        """Fill predicted and/or measured latency; arguments left None keep their value."""
        given = {"predicted_ms": predicted_ms, "measured_ms": measured_ms,
                 "measurement": measurement, "predictor": predictor}
        latency = {**self._data["latency"], **{k: v for k, v in given.items() if v is not None}}
        self._replace("latency", latency)

    def set_verification(self, verification: dict[str, Any]) -> None:
        """Replace the verification record (see `pipeline.compile.verify`)."""
        self._replace("verification", dict(verification))

    # -------------------------------------------------------------- file I/O
    @classmethod
    def read(cls, folder_or_file: str | Path) -> "Manifest":
        """Load and validate `manifest.json` from an artifact folder (or the file itself)."""
        path = Path(folder_or_file)
        if path.is_dir():
            path = path / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise ManifestError(f"{path} does not exist; point at an artifact folder made by "
                                "`pipeline compile`") from err
        except json.JSONDecodeError as err:
            raise ManifestError(f"{path} is not JSON ({err}); re-create the artifact") from err
        try:
            return cls(data)
        except ManifestError as err:
            raise ManifestError(f"{path}: {err}") from err

    def write(self, folder: str | Path) -> Path:
        """Atomically write `manifest.json` into `folder`."""
        return write_json(Path(folder) / MANIFEST_NAME, self._data, indent=2)
