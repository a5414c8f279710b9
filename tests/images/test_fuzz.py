"""Property-based tests of the parsers of untrusted image input: data: URLs, image headers,
and which addresses the fetcher's default lets through."""

from __future__ import annotations

import base64
import io
import ipaddress
import struct
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from qwen3_vllm_rerank.errors import InvalidInput
from qwen3_vllm_rerank.images import PreparedImage, prepare_image
from qwen3_vllm_rerank.images._addresses import HostRules, is_public, refused_addresses

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(source: object) -> PreparedImage | InvalidInput:
    try:
        return prepare_image(source, label="documents[0]")  # type: ignore[arg-type]
    except InvalidInput as error:
        return error


def _valid(prepared: PreparedImage | InvalidInput) -> bool:
    if isinstance(prepared, InvalidInput):
        return str(prepared).startswith("documents[0]: ")
    return (
        prepared.url.startswith("data:image/png;base64,") and prepared.width % 32 == prepared.height % 32 == 0
    )


_PREFIXES = st.sampled_from(
    ["data:", "data:image/png;base64,", "DATA:image/jpeg;base64,", "data:image/;base64,"]
)


@FUZZ
@given(prefix=_PREFIXES, rest=st.text(max_size=200))
def test_any_data_url_is_an_image_or_invalid_input(prefix: str, rest: str) -> None:
    """Any string starting with data: prepares to a valid image or raises InvalidInput, nothing else."""
    assert _valid(_outcome(prefix + rest))


def _png(width: int, height: int, mode: str) -> bytes:
    buffer = io.BytesIO()
    PILImage.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


_SEEDS = [
    _png(3, 2, "RGB"),
    _png(40, 33, "RGBA"),
    _png(5, 7, "P"),
    _png(2, 2, "L"),
]
for fmt in ("GIF", "BMP", "TIFF", "JPEG", "WEBP"):
    _buffer = io.BytesIO()
    PILImage.new("RGB", (9, 6), (1, 2, 3)).save(_buffer, format=fmt)
    _SEEDS.append(_buffer.getvalue())


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    cut = draw(st.integers(1, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=64))


@st.composite
def _claimed_png(draw: st.DrawFn) -> bytes:
    """A PNG whose header claims any size, bit depth and colour type."""
    width, height = draw(st.integers(0, 2**31)), draw(st.integers(0, 2**31))
    depth, colour = draw(st.sampled_from([1, 2, 4, 8, 16, 3])), draw(st.sampled_from([0, 2, 3, 4, 6, 5]))
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    idat = b"IDAT" + zlib.compress(draw(st.binary(max_size=256)))
    chunks = b"".join(
        struct.pack(">I", len(c) - 4) + c + struct.pack(">I", zlib.crc32(c)) for c in (ihdr, idat)
    )
    return b"\x89PNG\r\n\x1a\n" + chunks + b"\x00\x00\x00\x00IEND\xaeB`\x82"


@FUZZ
@given(data=st.one_of(st.binary(max_size=512), _mutated(), _claimed_png()))
def test_any_bytes_are_an_image_or_invalid_input(data: bytes) -> None:
    """Any bytes given as an image prepare to a valid PreparedImage or raise InvalidInput, nothing else."""
    assert _valid(_outcome(data))
    assert _valid(_outcome("data:image/png;base64," + base64.b64encode(data).decode()))


def _expected_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """The oracle: global by ipaddress, not multicast, and so is every IPv4 it embeds."""
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return True
    embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    value = int(address)
    if value >> 32 == 0 or address in ipaddress.IPv6Network("64:ff9b::/96"):
        embedded.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    return all(_expected_public(v4) for v4 in embedded if v4 is not None)


_V4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
_V6 = st.one_of(
    st.integers(0, 2**128 - 1),
    _V4.map(lambda v4: 0xFFFF_0000_0000 | int(v4)),  # IPv4-mapped
    _V4.map(int),  # IPv4-compatible
    _V4.map(lambda v4: (0x2002 << 112) | (int(v4) << 80)),  # 6to4
    _V4.map(lambda v4: (0x0064_FF9B << 96) | int(v4)),  # NAT64
    st.sampled_from(["::1", "::", "fe80::1", "fc00::1", "ff02::1", "2001:db8::1", "2606:4700::1111"]).map(
        lambda text: int(ipaddress.IPv6Address(text))
    ),
).map(ipaddress.IPv6Address)


@FUZZ
@given(address=st.one_of(_V4, _V6))
def test_the_default_is_never_more_open_than_pythons_own_table(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    """With no allow-list, an address the library's explicit table calls public is also global by this
    Python's ipaddress (not multicast, nor embedding a non-global IPv4): the table may refuse more (its
    registry is newer than some Pythons'), never less. Its exact contents are tested case by case in
    test_source_policy.py."""
    if is_public(address):
        assert _expected_public(address), address
    assert (refused_addresses("example.com", [address], None) == []) == is_public(address)


@FUZZ
@given(address=st.one_of(_V4, _V6), prefix=st.integers(0, 32))
def test_an_allow_list_network_admits_exactly_its_addresses(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, prefix: int
) -> None:
    """With a network allow-list, an address is admitted iff it (or the IPv4 it maps) lies in a listed network."""
    network = ipaddress.IPv4Network(f"10.0.0.0/{prefix}", strict=False)
    rules = HostRules.parse((str(network),))
    plain = (
        address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped else address
    )
    assert (refused_addresses("anything.example", [address], rules) == []) == (plain in network)
