"""Gateway API status the live relay writes: pure, from what :mod:`.translate` decided.

* Gateway: ``Accepted`` (True, or False with the reason of the :class:`GatewayError` that
  refused the configuration) and ``Programmed`` (True once every listener is bound); per
  listener (``status.listeners``) ``Accepted``, ``ResolvedRefs`` (False with
  ``InvalidCertificateRef`` or ``RefNotPermitted`` for a certificate that cannot be used)
  and ``Programmed``, with ``supportedKinds`` and ``attachedRoutes``.
* UDPRoute: one ``status.parents`` entry for the Gateway, with ``Accepted`` (the route
  attaches) and ``ResolvedRefs`` (every backend exists).

A condition keeps its ``lastTransitionTime`` while its status stays the same, so relays
that compute the same status write nothing (:func:`unchanged`), however many replicas run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from relay.gateway.objects import GATEWAY_GROUP, STUNNER_GROUP

__all__ = [
    "Condition",
    "ListenerStatus",
    "gateway_reason",
    "gateway_status",
    "route_status",
    "route_status_detached",
    "unchanged",
]

#: Gateway API reasons for a Gateway's Accepted=False, by GatewayError reason.
_GATEWAY_REASONS: Final = {
    "UnsupportedProtocol": "ListenersNotValid",
    "Conflicted": "ListenersNotValid",
    "ListenersNotValid": "ListenersNotValid",
    "InvalidParameters": "InvalidParameters",
    "UnsupportedAddress": "UnsupportedAddress",
}
MESSAGE_LIMIT: Final = 32768
DEFAULT_CONTROLLER: Final = "turnscale.io/relay"

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class ListenerStatus:
    """What one Gateway listener's ``status.listeners`` entry says."""

    name: str
    conditions: tuple[Condition, ...]
    attached_routes: int = 0


def gateway_reason(reason: str) -> str:
    """The Gateway API reason for a refused Gateway."""
    return _GATEWAY_REASONS.get(reason, "Invalid")


def _timestamp(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _conditions(
    wanted: Sequence[Condition], generation: int, existing: Sequence[Any], now: float
) -> list[Json]:
    before = {c.get("type"): c for c in existing if isinstance(c, dict)}
    out = []
    for condition in wanted:
        status = "True" if condition.status else "False"
        old = before.get(condition.type) or {}
        since = old.get("lastTransitionTime") if old.get("status") == status else None
        out.append(
            {
                "type": condition.type,
                "status": status,
                "reason": condition.reason,
                "message": condition.message[:MESSAGE_LIMIT],
                "observedGeneration": generation,
                "lastTransitionTime": since or _timestamp(now),
            }
        )
    return out


def gateway_status(
    gateway: Mapping[str, Any],
    wanted: Sequence[Condition],
    now: float,
    listeners: Sequence[ListenerStatus] | None = None,
) -> Json:
    """The ``status`` to write on ``gateway`` (a raw object): ``wanted`` conditions, the
    others it has (another controller's) left alone; ``listeners`` (when given) replace
    ``status.listeners``, each condition keeping its ``lastTransitionTime`` while it holds."""
    metadata = gateway.get("metadata") or {}
    generation = int(metadata.get("generation") or 0)
    status = gateway.get("status") or {}
    existing = status.get("conditions") or []
    ours = {c.type for c in wanted}
    others = [c for c in existing if isinstance(c, dict) and c.get("type") not in ours]
    conditions = _conditions(wanted, generation, existing, now)
    result = {**status, "conditions": others + conditions}
    if listeners is not None:
        before = {
            entry.get("name"): entry
            for entry in status.get("listeners") or []
            if isinstance(entry, dict)
        }
        result["listeners"] = [
            {
                "name": item.name,
                "supportedKinds": [{"group": STUNNER_GROUP, "kind": "UDPRoute"}],
                "attachedRoutes": item.attached_routes,
                "conditions": _conditions(
                    item.conditions,
                    generation,
                    (before.get(item.name) or {}).get("conditions") or [],
                    now,
                ),
            }
            for item in listeners
        ]
    return result


def route_status(
    route: Mapping[str, Any],
    gateway: tuple[str, str],
    wanted: Sequence[Condition],
    now: float,
    controller: str = DEFAULT_CONTROLLER,
) -> Json:
    """The ``status`` to write on ``route``: its parent entry for ``gateway`` set, the
    entries of other Gateways kept."""
    metadata = route.get("metadata") or {}
    status = route.get("status") or {}
    namespace, name = gateway
    parents = [p for p in status.get("parents") or [] if isinstance(p, dict)]
    mine = None
    kept = []
    for parent in parents:
        ref = parent.get("parentRef") or {}
        if (
            ref.get("name") == name
            and (ref.get("namespace") or metadata.get("namespace")) == namespace
            and parent.get("controllerName") == controller
        ):
            mine = parent
        else:
            kept.append(parent)
    existing = (mine or {}).get("conditions") or []
    entry = {
        "parentRef": {
            "group": GATEWAY_GROUP,
            "kind": "Gateway",
            "namespace": namespace,
            "name": name,
        },
        "controllerName": controller,
        "conditions": _conditions(wanted, int(metadata.get("generation") or 0), existing, now),
    }
    return {**status, "parents": [*kept, entry]}


def route_status_detached(
    route: Mapping[str, Any], gateway: tuple[str, str], controller: str = DEFAULT_CONTROLLER
) -> Json | None:
    """The ``status`` of a route no longer attached to ``gateway``: its parent entry for it
    gone; None when it has none."""
    metadata = route.get("metadata") or {}
    status = route.get("status") or {}
    parents = [p for p in status.get("parents") or [] if isinstance(p, dict)]
    kept = [
        p
        for p in parents
        if not (
            (p.get("parentRef") or {}).get("name") == gateway[1]
            and ((p.get("parentRef") or {}).get("namespace") or metadata.get("namespace"))
            == gateway[0]
            and p.get("controllerName") == controller
        )
    ]
    return None if len(kept) == len(parents) else {**status, "parents": kept}


def unchanged(obj: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether ``obj`` already has ``status`` (nothing to write)."""
    return obj.get("status") == status
