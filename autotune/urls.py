"""URLs in what autotune prints or stores (a leaf: the artifact store and the study storage both use it)."""

from __future__ import annotations

__all__ = ["redact_url"]


def redact_url(url: str) -> str:
    """The URL with any password hidden (for logs, reports, cards and the stored config).

    Everything between ``user:`` and the *last* ``@`` goes: a raw ``@`` in a password would make a
    URL parser (sqlalchemy's too) split it there and show the rest as part of the host.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    if ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"
