"""Deterministic tools for the travel agent: the same question always gets the same answer."""

from __future__ import annotations

from typing import Annotated

from agent_framework import tool
from pydantic import Field

# Typical conditions per city and season. A real app would call a weather or booking service here;
# a fixed table keeps the example agent testable offline and its answers reproducible.
_CLIMATE: dict[str, dict[str, str]] = {
    "lisbon": {
        "winter": "mild, 15 °C, some rain",
        "spring": "sunny, 20 °C",
        "summer": "hot and dry, 28 °C",
        "autumn": "warm, 22 °C",
    },
    "oslo": {
        "winter": "snowy, -4 °C",
        "spring": "cool, 9 °C",
        "summer": "pleasant, 21 °C",
        "autumn": "crisp, 8 °C, rainy",
    },
    "tokyo": {
        "winter": "cold and clear, 6 °C",
        "spring": "cherry blossom season, 16 °C",
        "summer": "humid, 31 °C",
        "autumn": "comfortable, 19 °C",
    },
    "seattle": {
        "winter": "grey and wet, 6 °C",
        "spring": "showers, 13 °C",
        "summer": "dry and sunny, 24 °C",
        "autumn": "rainy, 12 °C",
    },
}

_SEASONS_BY_MONTH: dict[str, str] = {
    **dict.fromkeys(("december", "january", "february"), "winter"),
    **dict.fromkeys(("march", "april", "may"), "spring"),
    **dict.fromkeys(("june", "july", "august"), "summer"),
    **dict.fromkeys(("september", "october", "november"), "autumn"),
}

_NIGHTLY_BUDGET_EUR: dict[str, int] = {"lisbon": 140, "oslo": 230, "tokyo": 190, "seattle": 210}


def known_cities() -> frozenset[str]:
    """The cities the tools know, in lower case."""
    return frozenset(_CLIMATE)


@tool(name="get_destination_weather", description="Typical weather for a city in a given month.")
def get_destination_weather(
    city: Annotated[str, Field(description="City name, e.g. Lisbon")],
    month: Annotated[str, Field(description="Month name, e.g. April")],
) -> str:
    """Return the typical weather for ``city`` in ``month`` from a fixed climate table."""
    season = _SEASONS_BY_MONTH.get(month.strip().lower())
    climate = _CLIMATE.get(city.strip().lower())
    if season is None:
        return f"'{month}' is not a month name."
    if climate is None:
        return f"No climate data for {city}; known cities: {', '.join(sorted(name.title() for name in _CLIMATE))}."
    return f"{city.strip().title()} in {month.strip().title()}: {climate[season]}."


@tool(name="estimate_trip_budget", description="Rough accommodation and food budget for a trip, in euros.")
def estimate_trip_budget(
    city: Annotated[str, Field(description="City name, e.g. Tokyo")],
    nights: Annotated[int, Field(description="Number of nights", ge=1, le=60)],
    travellers: Annotated[int, Field(description="Number of travellers", ge=1, le=12)] = 1,
) -> str:
    """Return a deterministic budget estimate: nightly rate times nights, plus 40 EUR food per person per day."""
    nightly = _NIGHTLY_BUDGET_EUR.get(city.strip().lower())
    if nightly is None:
        return f"No budget data for {city}."
    rooms = (travellers + 1) // 2
    total = nightly * nights * rooms + 40 * nights * travellers
    return f"About {total} EUR for {travellers} traveller(s), {nights} night(s) in {city.strip().title()}."
