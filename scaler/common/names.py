"""Kubernetes object names, validated the one way every part of turnscale checks them.

A namespace is an RFC 1123 label (at most 63 characters); a Pod, Gateway or Secret name is
an RFC 1123 subdomain (at most 253). Report fields, flags, trigger metadata and Gateway API
objects all use these patterns.
"""

from __future__ import annotations

import re
from typing import Final

DNS_LABEL: Final = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_MAX: Final = 63
SUBDOMAIN_MAX: Final = 253

_LABEL: Final = re.compile(DNS_LABEL)
_SUBDOMAIN: Final = re.compile(DNS_SUBDOMAIN)


def is_dns_label(value: str) -> bool:
    """A namespace (or listener) name: lowercase RFC 1123 label."""
    return len(value) <= LABEL_MAX and _LABEL.fullmatch(value) is not None


def is_dns_subdomain(value: str) -> bool:
    """An object name: lowercase RFC 1123 subdomain."""
    return len(value) <= SUBDOMAIN_MAX and _SUBDOMAIN.fullmatch(value) is not None
