"""Which hosts and addresses the image fetcher may reach: pure rules, no network.

By default only *public* addresses: :func:`is_public` refuses every address that is not
global by :mod:`ipaddress` (loopback, private, link-local, unique-local, shared, reserved,
unspecified, documentation...), every multicast address, and every IPv6 address that
embeds an IPv4 address which is not public itself (IPv4-mapped ``::ffff:a.b.c.d``,
IPv4-compatible ``::a.b.c.d``, 6to4 ``2002::/16``, Teredo, NAT64 ``64:ff9b::/96``).
An allow-list (:class:`HostRules`) replaces that default with what the application names.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import InvalidInput

__all__ = ["Address", "HostRules", "is_public", "normalize_host", "parse_address"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (and may be routed to)."""
    embedded: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        embedded.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        embedded.append(address.sixtofour)
    if address.teredo is not None:
        embedded.extend(address.teredo)
    as_int = int(address)
    if as_int >> 32 == 0 or address in _NAT64:  # IPv4-compatible (::a.b.c.d) or NAT64
        embedded.append(ipaddress.IPv4Address(as_int & 0xFFFFFFFF))
    return embedded


def is_public(address: Address) -> bool:
    """Whether ``address`` is one the fetcher reaches by default (see the module docstring)."""
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        return all(is_public(embedded) for embedded in _embedded_ipv4(address))
    return True


def parse_address(text: str) -> Address | None:
    """The address a resolver answered (a scope id such as ``%eth0`` dropped), or ``None``."""
    try:
        return ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None


def normalize_host(host: str) -> str:
    """A host name as it is matched: lower case, without brackets or a trailing dot."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host[:-1] if host.endswith(".") else host


def _unmapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class HostRules:
    """A parsed ``allowed_hosts``: exact host names, ``*.suffix`` patterns (any subdomain of the
    suffix, not the suffix itself) and IP networks (a single address is a /32 or /128)."""

    names: frozenset[str]
    suffixes: tuple[str, ...]
    networks: tuple[Network, ...]

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def parse(entries: tuple[str, ...]) -> HostRules:
        """The rules for ``entries``; :class:`InvalidInput` for an entry that is neither."""
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[Network] = []
        for entry in entries:
            if not isinstance(entry, str):
                raise InvalidInput(
                    "allowed_hosts entries must be host names or IP networks (str), "
                    f"got {type(entry).__name__}"
                )
            text = normalize_host(entry)
            try:
                networks.append(ipaddress.ip_network(text, strict=True))
                continue
            except ValueError:
                pass
            pattern = text[2:] if text.startswith("*.") else text
            labels = pattern.split(".")
            # A numeric last label is an address in a legacy form (127.1, 2130706433, 0x7f000001).
            numeric = bool(re.fullmatch(r"[0-9]+|0x[0-9a-f]*", labels[-1]))
            if not pattern or numeric or not all(_LABEL.match(label) for label in labels):
                raise InvalidInput(
                    f"allowed_hosts entry {entry!r} is neither a host name (exact, or *.example.com) "
                    "nor an IP network (10.0.0.0/8, 127.0.0.1); no scheme, port or path"
                )
            if text.startswith("*."):
                suffixes.append("." + pattern)
            else:
                names.add(pattern)
        return HostRules(frozenset(names), tuple(suffixes), tuple(networks))

    def names_host(self, host: str) -> bool:
        """Whether ``host`` (a URL's host name) is listed by name or pattern."""
        host = normalize_host(host)
        return host in self.names or any(host.endswith(suffix) for suffix in self.suffixes)

    def holds(self, address: Address) -> bool:
        """Whether ``address`` lies in a listed network (an IPv4-mapped address as its IPv4)."""
        plain = _unmapped(address)
        return any(plain in network for network in self.networks)


def refused_addresses(host: str, addresses: Iterable[Address], rules: HostRules | None) -> list[Address]:
    """Which of ``host``'s resolved ``addresses`` may not be reached: with no rules, the
    non-public ones; with rules, none if ``host`` is listed by name, else those outside the
    listed networks."""
    if rules is None:
        return [address for address in addresses if not is_public(address)]
    if rules.names_host(host):
        return []
    return [address for address in addresses if not rules.holds(address)]
