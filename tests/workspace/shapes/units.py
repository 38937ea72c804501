"""Lengths with units."""

from dataclasses import dataclass

FACTORS = {"mm": 0.001, "cm": 0.01, "m": 1.0, "km": 1000.0, "in": 0.0254, "ft": 0.3048}


@dataclass(frozen=True)
class Length:
    value: float
    unit: str = "m"

    def __post_init__(self):
        if self.unit not in FACTORS:
            raise ValueError(f"unknown unit: {self.unit}")

    def to(self, unit: str) -> "Length":
        return Length(to_meters(self) / FACTORS[unit], unit)


def to_meters(length: Length) -> float:
    return length.value * FACTORS[length.unit]
