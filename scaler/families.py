"""High-cardinality metric families that render themselves, and the encoder using them.

prometheus-client's encoders validate and escape every label of every sample,
about 5 us a sample: 70 ms for a fleet of 1000 relays. :class:`RenderedFamily`
is still a prometheus-client ``Metric`` (its ``samples`` work for any consumer),
but its label values are Kubernetes names and enum words that never need
escaping, so :func:`encode` writes its lines straight from a format template.
Other families go through the library's own encoder unchanged.

Formats: Prometheus text 0.0.4 and OpenMetrics 1.0 (which Prometheus asks for
first when it scrapes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

OPENMETRICS = "application/openmetrics-text"


class RenderedFamily(Metric):
    """A counter or gauge family whose rows are (label values, value).

    Label values must be valid Kubernetes names or fixed words: nothing that needs
    escaping (the report decoder guarantees it for everything relays send).
    """

    def __init__(self, name: str, documentation: str, typ: str, labels: Sequence[str]) -> None:
        if typ == "counter" and name.endswith("_total"):
            name = name[: -len("_total")]
        super().__init__(name, documentation, typ)
        self.label_names = tuple(labels)
        self.rows: list[tuple[tuple[str, ...], float]] = []
        self._sample_name = name + "_total" if typ == "counter" else name
        pairs = ",".join(f'{label}="{{}}"' for label in self.label_names)
        self._template = self._sample_name + "{{" + pairs + "}} "

    def add(self, values: tuple[str, ...], value: float) -> None:
        self.rows.append((values, value))

    @property
    def samples(self) -> list[Sample]:
        names = self.label_names
        return [
            Sample(self._sample_name, dict(zip(names, v, strict=True)), n) for v, n in self.rows
        ]

    @samples.setter
    def samples(self, _: list[Sample]) -> None:
        """Metric.__init__ assigns an empty list; rows are the storage here."""

    def lines(self, openmetrics: bool) -> str:
        header_name = self.name if openmetrics else self._sample_name
        header = f"# HELP {header_name} {self.documentation}\n# TYPE {header_name} {self.type}\n"
        template = self._template
        body = [template.format(*values) + _number(value) for values, value in self.rows]
        return header + "\n".join(body) + ("\n" if body else "")


def _number(value: float) -> str:
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


class _Single:
    """Makes one family look like a registry to the library's encoders."""

    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> Iterable[Metric]:
        return [self.family]


def encode(families: Iterable[Metric], accept: str | None) -> tuple[bytes, str]:
    """Exposition bytes and content type for ``families``, negotiated from ``accept``."""
    library_encoder, content_type = choose_encoder(accept or "")
    openmetrics = content_type.startswith(OPENMETRICS)
    parts: list[str] = []
    for family in families:
        if isinstance(family, RenderedFamily):
            parts.append(family.lines(openmetrics))
            continue
        text = library_encoder(_Single(family)).decode()
        parts.append(text.removesuffix("# EOF\n") if openmetrics else text)
    if openmetrics:
        parts.append("# EOF\n")
    return "".join(parts).encode(), content_type
