"""Which hosts and addresses the image fetcher may reach: pure rules, no network.

By default only *public* addresses, decided by an explicit table (:data:`NON_GLOBAL`) taken from
IANA's IPv4 and IPv6 special-purpose address registries, the same on every Python version
(``ipaddress``'s ``is_global`` changed between 3.11, 3.12 and 3.13, and so would our defaults):

* IPv4: public unless it lies in a network of :data:`NON_GLOBAL_V4` (this network, private,
  shared, loopback, link-local, IETF protocol assignments, documentation, benchmarking, the
  6to4 relay anycast, multicast, reserved, broadcast).
* IPv6: an address that carries an IPv4 address a packet to it reaches is judged by that IPv4
  address: IPv4-mapped ``::ffff:0:0/96``, IPv4-translated ``::ffff:0:0:0/96``, the NAT64
  well-known prefix ``64:ff9b::/96`` (RFC 6052), 6to4 ``2002::/16``. Any other is public only
  inside global unicast ``2000::/3`` and outside the non-global blocks of
  :data:`NON_GLOBAL_V6` (IETF protocol assignments ``2001::/23`` with Teredo, documentation
  ``2001:db8::/32`` and ``3fff::/20``, the returned 6bone ``3ffe::/16``). So ``::``, ``::1``,
  IPv4-compatible ``::a.b.c.d``, local-use NAT64 ``64:ff9b:1::/48`` (RFC 8215), discard
  ``100::/64``, SRv6 ``5f00::/16``, unique-local ``fc00::/7``, link-local ``fe80::/10``,
  site-local ``fec0::/10`` and multicast ``ff00::/8`` are all refused.

An allow-list (:class:`HostRules`) replaces that default with what the application names.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import InvalidInput

__all__ = [
    "NON_GLOBAL_V4",
    "NON_GLOBAL_V6",
    "Address",
    "HostRules",
    "embedded_ipv4",
    "is_public",
    "normalize_host",
    "parse_address",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: IPv4 networks that are not globally reachable (IANA IPv4 Special-Purpose Address Registry,
#: plus multicast): an address in one is never fetched by default.
NON_GLOBAL_V4: tuple[ipaddress.IPv4Network, ...] = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/8",  # "this network" (RFC 791)
        "10.0.0.0/8",  # private (RFC 1918)
        "100.64.0.0/10",  # shared address space, carrier-grade NAT (RFC 6598)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments (RFC 6890)
        "192.0.2.0/24",  # documentation TEST-NET-1
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated, RFC 7526)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking (RFC 2544)
        "198.51.100.0/24",  # documentation TEST-NET-2
        "203.0.113.0/24",  # documentation TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the limited broadcast 255.255.255.255
    )
)
#: IPv6 global unicast: the only block outside the IPv4-carrying prefixes that may be public.
GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
#: Blocks of :data:`GLOBAL_UNICAST` that are not globally reachable (IANA IPv6 Special-Purpose
#: Address Registry; 6to4 ``2002::/16`` is judged by the IPv4 address it carries instead).
NON_GLOBAL_V6: tuple[ipaddress.IPv6Network, ...] = tuple(
    ipaddress.IPv6Network(network)
    for network in (
        "2001::/23",  # IETF protocol assignments, Teredo 2001::/32 among them (RFC 2928, 4380)
        "2001:db8::/32",  # documentation (RFC 3849)
        "3ffe::/16",  # the 6bone, returned (RFC 3701)
        "3fff::/20",  # documentation (RFC 9637)
    )
)
#: IPv6 prefixes whose last 32 bits are an IPv4 address a packet is delivered to.
CARRIES_IPV4_LOW32: tuple[ipaddress.IPv6Network, ...] = tuple(
    ipaddress.IPv6Network(network)
    for network in (
        "::ffff:0:0/96",  # IPv4-mapped (RFC 4291)
        "::ffff:0:0:0/96",  # IPv4-translated (RFC 2765)
        "64:ff9b::/96",  # NAT64 well-known prefix (RFC 6052)
    )
)
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address that a packet to ``address`` reaches, if it carries one (see the module
    docstring); ``None`` otherwise."""
    value = int(address)
    if any(address in prefix for prefix in CARRIES_IPV4_LOW32):
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)
    return None


def is_public(address: Address) -> bool:
    """Whether ``address`` is one the fetcher reaches by default (see the module docstring)."""
    if isinstance(address, ipaddress.IPv4Address):
        return not any(address in network for network in NON_GLOBAL_V4)
    carried = embedded_ipv4(address)
    if carried is not None:
        return is_public(carried)
    return address in GLOBAL_UNICAST and not any(address in network for network in NON_GLOBAL_V6)


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
