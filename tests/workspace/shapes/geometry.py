"""Shapes that know their area and perimeter."""

import math
from dataclasses import dataclass

from .units import Length, to_meters


@dataclass
class Circle:
    radius: Length

    def area(self) -> float:
        r = to_meters(self.radius)
        return math.pi * r * r

    def perimeter(self) -> float:
        return 2 * math.pi * to_meters(self.radius)


@dataclass
class Rectangle:
    width: Length
    height: Length

    def area(self) -> float:
        return to_meters(self.width) * to_meters(self.height)

    def perimeter(self) -> float:
        return 2 * (to_meters(self.width) + to_meters(self.height))

    def is_square(self) -> bool:
        return math.isclose(to_meters(self.width), to_meters(self.height))


def total_area(shapes) -> float:
    return sum(shape.area() for shape in shapes)


def largest(shapes):
    return max(shapes, key=lambda shape: shape.area())
