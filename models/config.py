"""What every model config shares: it travels in the bitstream header as a JSON object,
so parsing it back must bound-check every value (the header is untrusted input)."""

from __future__ import annotations

from dataclasses import asdict


def check_int(name: str, value, low: int, high: int) -> None:
    """``value`` must be a real int (not a bool) in [low, high]."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"model config {name}={value!r} outside [{low}, {high}]")


class ModelConfig:
    """Mixin for config dataclasses: ``to_dict`` and a validating ``from_dict``.

    Subclasses implement ``validate()``, raising ValueError on anything out of bounds.
    """

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        """Parse and bound-check a config read from a bitstream header (untrusted)."""
        if not isinstance(data, dict):
            raise ValueError("model config is not an object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown model config fields {sorted(unknown)}")
        config = cls(**data)
        config.validate()
        return config

    def validate(self) -> None:
        raise NotImplementedError
