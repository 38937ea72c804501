"""A tiny geometry package: the fixture workspace for hindsight's tests and demo."""

from .geometry import Circle, Rectangle, total_area
from .units import Length, to_meters

__all__ = ["Circle", "Rectangle", "Length", "to_meters", "total_area"]
