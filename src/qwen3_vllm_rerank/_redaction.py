"""Secrets out of what is shown: a URL as an error message or a log line may show it.

Every module that names a URL in an error, a warning, a repr or a dump shows it through
:func:`redact_url` (a URL on its own) or :func:`redact_urls_in` (a message that may quote URLs).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["REDACTED", "redact_url", "redact_urls_in"]

#: What stands in for a secret in a shown URL.
REDACTED = "***"

#: A URL written in a message with ``user:password@`` in it.
_URL_WITH_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s@]*@\S*")


def redact_url(url: str) -> str:
    """``url`` as it may be shown in an error or a log line: without secrets.

    The userinfo (``http://svc:pw@host`` -> ``http://***@host``) is replaced, every
    query value is replaced but its name kept (``?token=abc&x`` -> ``?token=***&***``,
    names help debugging, values may be keys), and the fragment is dropped. A URL
    that cannot be parsed, or with an ``@`` outside its authority (a password with an
    unencoded ``/``, ``?`` or ``#``, or no ``scheme://``), is ambiguous about where its
    secret ends: only its scheme is kept (``http://***``). Never raises.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for an authority that is not host[:port]
    except ValueError:
        return _scheme_only(url)
    if "@" in parts.path + parts.query + parts.fragment or (parts.scheme and not parts.netloc):
        return _scheme_only(url)
    _userinfo, at, host = parts.netloc.rpartition("@")
    shown = f"{parts.scheme}://" if parts.scheme else ""
    shown += (f"{REDACTED}@" if at else "") + host + parts.path
    if parts.query:
        shown += "?" + "&".join(_redact_query_item(item) for item in parts.query.split("&"))
    return shown


def redact_urls_in(text: str) -> str:
    """``text`` with every ``scheme://user:password@...`` in it shown as :func:`redact_url` shows it
    (a message that quotes a URL with credentials, e.g. an exception's text)."""
    return _URL_WITH_USERINFO.sub(lambda match: redact_url(match.group()), text)


def _scheme_only(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://{REDACTED}" if sep and scheme.isalnum() else REDACTED


def _redact_query_item(item: str) -> str:
    name, eq, _ = item.partition("=")
    return f"{name}={REDACTED}" if eq else REDACTED
