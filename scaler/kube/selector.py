"""Kubernetes label selectors (``app=stunner,tier!=canary``): parsed and validated once.

The API server does the filtering; the scaler parses the selector only so that a typo
is a start-up error naming ``--relay-selector`` instead of a watch failing forever.
Grammar as ``kubectl -l`` takes it: comma-separated requirements ``key=value``,
``key==value``, ``key!=value``, ``key in (a,b)``, ``key notin (a,b)``, ``key``, ``!key``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from scaler.common.names import is_dns_subdomain

# A label key's name part and a label value: 63 letters, digits, -_. at most, alphanumeric
# at both ends. (A key's prefix is a DNS subdomain: scaler.common.names.)
_NAME: Final = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY_NAME = re.compile(_NAME)
_VALUE = re.compile(rf"({_NAME})?")
_SET = re.compile(r"\s*([^\s!=(),]+)\s+(in|notin)\s*\(([^()]*)\)\s*")
_EQUALITY = re.compile(r"\s*([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*")
_EXISTS = re.compile(r"\s*(!?)\s*([^\s!=(),]+)\s*")


class SelectorError(ValueError):
    """A label selector the API server would refuse."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in ("=", "in"):
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values  # "!=", "notin"


@dataclass(frozen=True, slots=True)
class Selector:
    text: str
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(requirement.matches(labels) for requirement in self.requirements)

    def __str__(self) -> str:
        return self.text


def parse_selector(text: str) -> Selector:
    """Parse a selector; an empty one (every pod) is refused: the fleet needs a label."""
    parts = _split(text.strip())
    if not parts:
        raise SelectorError("is empty; relay pods need a label to select them by (app=stunner)")
    return Selector(text.strip(), tuple(_requirement(part) for part in parts))


def _split(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"{text!r} has an unmatched ')'")
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    if depth:
        raise SelectorError(f"{text!r} has an unmatched '('")
    if text:
        parts.append(text[start:])
    if any(not part.strip() for part in parts):
        raise SelectorError(f"{text!r} has an empty requirement (two commas in a row?)")
    return parts


def _requirement(part: str) -> Requirement:
    match = _SET.fullmatch(part)
    if match:
        values = tuple(v.strip() for v in match.group(3).split(","))
        if values == ("",):
            raise SelectorError(f"{part.strip()!r}: a set needs at least one value")
        return Requirement(_key(match.group(1)), match.group(2), tuple(map(_value, values)))
    match = _EQUALITY.fullmatch(part)
    if match:
        operator = "!=" if match.group(2) == "!=" else "="
        return Requirement(_key(match.group(1)), operator, (_value(match.group(3)),))
    match = _EXISTS.fullmatch(part)
    if match:
        return Requirement(_key(match.group(2)), "!" if match.group(1) else "exists")
    raise SelectorError(f"{part.strip()!r} is not KEY=VALUE, KEY!=VALUE, KEY in (...) or KEY")


def _key(key: str) -> str:
    prefix, slash, name = key.rpartition("/")
    if (slash and not is_dns_subdomain(prefix)) or _KEY_NAME.fullmatch(name) is None:
        raise SelectorError(f"{key!r} is not a label key (like app or example.com/tier)")
    return key


def _value(value: str) -> str:
    if _VALUE.fullmatch(value) is None or len(value) > 63:
        raise SelectorError(f"{value!r} is not a label value (63 letters, digits, -_. at most)")
    return value
