"""The one source policy (images/_policy.py) against hostile references, issue 23's holes 2, 5, 7,
8 and 10 and the suspected UNC / device-node items: what a reference may read or fetch, one failure
text per kind of source, credentials bound to origins, an address table that is the same on every
Python, and DNS that cannot be exhausted. Local files in tmp trees, servers on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import os
import shutil
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from qwen3_vllm_rerank.errors import InvalidInput
from qwen3_vllm_rerank.images import Image, UrlFetcher, _files, aprepare_image, prepare_image
from qwen3_vllm_rerank.images._addresses import NON_GLOBAL_V4, NON_GLOBAL_V6, is_public
from qwen3_vllm_rerank.images._fetching import FETCH_FAILED
from qwen3_vllm_rerank.images._files import FILE_UNREADABLE
from qwen3_vllm_rerank.images._network import RESOLVER
from qwen3_vllm_rerank.images._sources import describe
from tests.images.test_fetching import Site, _serve, body, redirect

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PAGE = (10, 200, 30)
SECRET = (250, 5, 5)


def _png(colour: tuple[int, int, int], size: int = 64) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


PAGE_URL = prepare_image(_png(PAGE)).url
SECRET_URL = prepare_image(_png(SECRET)).url


def _tree(base: Path) -> Path:
    """``base/root`` (the one root) holds pages, a symlink out and a directory symlink out;
    ``base/secret.png`` and ``base/outside/secret2.png`` are secrets outside it."""
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    (base / "outside").mkdir()
    (root / "page.png").write_bytes(_png(PAGE))
    (root / "sub" / "page.png").write_bytes(_png(PAGE))
    (base / "secret.png").write_bytes(_png(SECRET))
    (base / "outside" / "secret2.png").write_bytes(_png(SECRET))
    (base / "outside" / "page.png").write_bytes(_png(SECRET))
    (root / "escape.png").symlink_to(base / "secret.png")
    (root / "link_out").symlink_to(base / "outside", target_is_directory=True)
    (root / "link_in").symlink_to(root / "sub", target_is_directory=True)
    (root / "notes.txt").write_text("not an image")
    os.mkfifo(root / "fifo.png")
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tree(tmp_path_factory.mktemp("policy"))


def _confined(root: Path) -> UrlFetcher:
    return UrlFetcher(allowed_hosts=(), file_roots=(str(root),))


def _message(image: Image, fetcher: UrlFetcher | None) -> str:
    with pytest.raises(InvalidInput) as info:
        prepare_image(image, label="documents[1]", fetcher=fetcher)
    return str(info.value)


def _unreadable(image: Image) -> str:
    return f"documents[1]: {FILE_UNREADABLE.format(shown=describe(image.source))}"


# --- hole 2: every local reference goes through file_roots --------------------------------


def test_a_retrieved_path_is_read_only_inside_file_roots(root: Path) -> None:
    inside = Image(str(root / "page.png"), retrieved=True)
    assert prepare_image(inside, fetcher=_confined(root)).url == PAGE_URL
    outside = Image(str(root.parent / "secret.png"), retrieved=True)
    assert _message(outside, _confined(root)) == _unreadable(outside)


def test_a_retrieved_path_without_file_roots_is_refused_saying_how_to_allow_it(root: Path) -> None:
    for fetcher in (None, UrlFetcher(), UrlFetcher(allowed_hosts=("127.0.0.1",))):
        message = _message(Image(str(root / "page.png"), retrieved=True), fetcher)
        assert "image_fetcher=UrlFetcher(allowed_hosts=(), file_roots=(directory, ...))" in message
        message = _message(Image((root / "page.png").as_uri()), fetcher)
        assert "image_fetcher=UrlFetcher(allowed_hosts=(), file_roots=(directory, ...))" in message


def test_an_applications_own_path_is_read_anywhere_without_roots_and_only_inside_them_with(
    root: Path,
) -> None:
    secret = str(root.parent / "secret.png")
    assert prepare_image(Image(secret)).url == SECRET_URL
    assert prepare_image(Image(Path(secret))).url == SECRET_URL
    assert _message(Image(secret), _confined(root)) == _unreadable(Image(secret))
    assert prepare_image(Image(str(root / "page.png")), fetcher=_confined(root)).url == PAGE_URL


def test_missing_refused_outside_and_not_an_image_say_the_same_thing(root: Path) -> None:
    spellings = [
        root / "missing.png",
        root / "notes.txt",  # not an image
        root / "fifo.png",  # would block a plain open
        root / "sub",  # a directory
        root / "escape.png",  # a symlink out
        root / "link_out" / "secret2.png",  # a directory symlink out
        root / ".." / "secret.png",
        root.parent / "secret.png",
        Path("/dev/zero"),  # a device, outside
    ]
    for path in spellings:
        for image in (Image(str(path), retrieved=True), Image(path.as_uri()), Image(str(path))):
            assert _message(image, _confined(root)) == _unreadable(image), image


class _OpenSpy:
    """Records the names ``os.open`` is asked to open (and opens them as asked)."""

    def __init__(self, real: Callable[..., int]) -> None:
        self.real = real
        self.names: list[str] = []

    def __call__(self, path: Any, *args: Any, **kwargs: Any) -> int:
        self.names.append(os.fsdecode(path))
        return self.real(path, *args, **kwargs)


def test_a_device_node_or_fifo_is_never_opened(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _OpenSpy(os.open)
    monkeypatch.setattr(os, "open", spy)
    devices = UrlFetcher(allowed_hosts=(), file_roots=("/dev",))
    for image, fetcher in [
        (Image("/dev/zero"), None),  # the application's own path, no roots
        (Image("/dev/zero", retrieved=True), devices),
        (Image("file:///dev/zero"), devices),
        (Image(str(root / "fifo.png"), retrieved=True), _confined(root)),
    ]:
        assert _message(image, fetcher) == _unreadable(image)
    assert not [name for name in spy.names if name.endswith(("zero", "fifo.png"))], spy.names


@pytest.mark.parametrize("walk", [True, False], ids=["openat-walk", "verify-opened-fd"])
@pytest.mark.parametrize("spelling", ["path", "file-url"])
def test_a_directory_swapped_for_a_symlink_after_the_check_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, walk: bool, spelling: str
) -> None:
    root = _tree(tmp_path)
    target = root / "sub" / "page.png"
    real_realpath = os.path.realpath

    def racing(path: Any, *args: Any, **kwargs: Any) -> Any:
        resolved = real_realpath(path, *args, **kwargs)
        if os.fspath(path) == str(target) and (root / "sub").is_dir() and not (root / "sub").is_symlink():
            shutil.rmtree(root / "sub")  # the attacker wins the race: sub is now a link out
            (root / "sub").symlink_to(tmp_path / "outside", target_is_directory=True)
        return resolved

    monkeypatch.setattr(os.path, "realpath", racing)
    monkeypatch.setattr(_files, "WALK", walk, raising=False)  # raising=False: runs on the old code too
    image = Image(str(target), retrieved=True) if spelling == "path" else Image(target.as_uri())
    assert _message(image, _confined(root)) == _unreadable(image)
    assert (root / "sub").is_symlink(), "the race was run"


def test_the_walk_follows_no_symlink_even_one_pointing_inside(root: Path) -> None:
    with pytest.raises(NotADirectoryError):  # O_NOFOLLOW | O_DIRECTORY on a symbolic link
        _files._walk(str(root), ["link_in", "page.png"], 1 << 20)
    with pytest.raises(_files.FileUnreadable, match="not a regular file"):  # lstat, before opening
        _files._walk(str(root), ["escape.png"], 1 << 20)
    assert _files._walk(str(root), ["sub", "page.png"], 1 << 20) == _png(PAGE)


_PARTS = st.sampled_from(
    [
        "..",
        ".",
        "",
        "root",
        "sub",
        "outside",
        "link_out",
        "link_in",
        "page.png",
        "secret.png",
        "secret2.png",
        "escape.png",
        "%2e%2e",
        "%2F..",
        "..%2f",
        "\0",
        "page.png\0.png",
    ]
)


@st.composite
def _spellings(draw: st.DrawFn, base: str) -> Image:
    path = "/".join(draw(st.lists(_PARTS, min_size=1, max_size=6)))
    start = draw(st.sampled_from(["base", "root", "relative", "double-slash"]))
    if start == "base":
        path = f"{base}/{path}"
    elif start == "root":
        path = f"{base}/root/{path}"
    elif start == "double-slash":
        path = f"//{base.lstrip('/')}//{path}"
    if draw(st.booleans()):
        path = urllib.parse.quote(path, safe="/%")
    form = draw(st.sampled_from(["path", "pathlike", "file:", "file://", "file://localhost"]))
    retrieved = draw(st.booleans())
    if form == "path":
        return Image(path, retrieved=retrieved)
    if form == "pathlike":
        return Image(Path(path.replace("\0", "")), retrieved=retrieved)
    return Image(form + ("" if form == "file:" or path.startswith("/") else "/") + path, retrieved=retrieved)


@FUZZ
@given(data=st.data())
def test_no_spelling_reads_a_file_outside_the_roots(root: Path, data: st.DataObject) -> None:
    """Whatever the spelling (.., //, symlinks out, absolute or relative, file: forms,
    percent-encoding, NUL), a reference either reads a page inside the root or says the one
    FILE_UNREADABLE text; the secrets outside are never read."""
    image = data.draw(_spellings(str(root.parent)))
    with contextlib.chdir(root / "sub"):
        assert _outcome(image, _confined(root)) in (PAGE_URL, _unreadable(image))


def _outcome(image: Image, fetcher: UrlFetcher) -> str:
    """The prepared image's URL, or the message it was refused with."""
    try:
        return prepare_image(image, label="documents[1]", fetcher=fetcher).url
    except InvalidInput as error:
        return str(error)


@pytest.mark.parametrize(
    ("path", "windows", "refused"),
    [
        ("\\\\server\\share\\page.png", True, True),
        ("//server/share/page.png", True, True),
        ("\\\\?\\C:\\pages\\page.png", True, True),
        ("\\\\.\\PhysicalDrive0", True, True),
        ("C:\\pages\\page.png", True, False),
        ("//srv/pages/page.png", False, False),  # POSIX: the same as /srv/pages/page.png
        ("/srv/pages/page\0.png", False, True),
    ],
)
def test_unc_and_device_paths_are_never_opened_on_windows(path: str, windows: bool, refused: bool) -> None:
    if refused:
        with pytest.raises(_files.FileUnreadable):
            _files.checked_spelling(path, windows=windows)
    else:
        assert _files.checked_spelling(path, windows=windows) == path


# --- hole 5: credentials bound to origins -------------------------------------------------


@pytest.fixture
def cdn() -> Iterator[Site]:
    yield from _serve(Site("127.0.0.1", {"/ok": body(b"cdn bytes")}))


@pytest.fixture
def neighbour() -> Iterator[Site]:
    """Another server on the same address, another port: another origin."""
    yield from _serve(Site("127.0.0.1", {"/ok": body(b"neighbour bytes")}))


def test_headers_go_to_their_origin_only_not_another_port_scheme_or_redirect_target(
    cdn: Site, neighbour: Site
) -> None:
    cdn.routes["/hop"] = redirect(lambda: neighbour.url("/ok"))
    fetcher = UrlFetcher(
        allowed_hosts=("127.0.0.0/8", "localhost"),
        headers={f"http://127.0.0.1:{cdn.port}": {"Authorization": "Bearer cdn-secret"}},
    )
    assert fetcher.fetch(cdn.url("/ok")) == b"cdn bytes"
    assert fetcher.fetch(neighbour.url("/ok")) == b"neighbour bytes"  # a document naming another port
    assert fetcher.fetch(cdn.url("/hop")) == b"neighbour bytes"  # a redirect to another origin
    assert fetcher.fetch(f"http://localhost:{cdn.port}/ok") == b"cdn bytes"  # another host name
    assert [h.get("authorization") for _, h in cdn.seen] == ["Bearer cdn-secret", "Bearer cdn-secret", None]
    assert all("authorization" not in h for _, h in neighbour.seen)
    assert len(neighbour.seen) == 2


async def test_an_https_origins_headers_never_go_over_plain_http(cdn: Site) -> None:
    fetcher = UrlFetcher(
        allowed_hosts=("127.0.0.1",),
        headers={f"https://127.0.0.1:{cdn.port}": {"Authorization": "Bearer cdn-secret"}},
    )
    assert await fetcher.afetch(cdn.url("/ok")) == b"cdn bytes"
    assert fetcher.fetch(cdn.url("/ok")) == b"cdn bytes"
    assert all("authorization" not in h for _, h in cdn.seen)
    assert len(cdn.seen) == 2


# --- hole 8: one failure text for every fetched URL ---------------------------------------


def test_a_fetched_non_image_says_what_a_404_and_a_closed_port_say(cdn: Site) -> None:
    cdn.routes["/text"] = body(b"<html>internal admin page</html>", ("Content-Type", "text/html"))
    cdn.routes["/png"] = body(_png(PAGE))
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    closed_port = closed.server_address[1]
    closed.server_close()
    fetcher = UrlFetcher(allowed_hosts=("127.0.0.1",), timeout=5)
    urls = [cdn.url("/text"), cdn.url("/missing"), f"http://127.0.0.1:{closed_port}/a.png"]

    def sync(url: str, **kw: Any) -> str:
        with pytest.raises(InvalidInput) as info:
            prepare_image(url, label="documents[2]", fetcher=fetcher, **kw)
        return str(info.value)

    async def both() -> set[str]:
        messages = {sync(url) for url in urls} | {sync(cdn.url("/png"), max_image_pixels=100)}
        for url in urls:
            with pytest.raises(InvalidInput) as info:
                await aprepare_image(url, label="documents[2]", fetcher=fetcher)
            messages.add(str(info.value))
        return messages

    assert asyncio.run(both()) == {f"documents[2]: {FETCH_FAILED}"}
    assert prepare_image(cdn.url("/png"), fetcher=fetcher).url == PAGE_URL


# --- hole 10: the address table is the same on every Python -------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "64:ff9b:1::a00:1",  # RFC 8215 local-use NAT64 (10.0.0.1)
        "::ffff:0:7f00:1",  # IPv4-translated 127.0.0.1
        "fec0::1",  # site-local
        "5f00::1",  # SRv6 SIDs
        "3fff::1",  # documentation (RFC 9637)
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "::ffff:127.0.0.1",
        "::127.0.0.1",  # IPv4-compatible
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2001::1",  # Teredo
        "2001:db8::1",
        "100::1",  # discard-only
        "fd00::1",
        "fe80::1",
        "ff02::1",
        "::",
        "::1",
        "100.64.0.1",
        "192.0.0.9",
        "198.18.0.1",
        "192.88.99.1",
        "255.255.255.255",
        "0.1.2.3",
    ],
)
def test_these_addresses_are_never_public(text: str) -> None:
    assert not is_public(ipaddress.ip_address(text))


@pytest.mark.parametrize(
    "text",
    [
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700::1111",
        "2a00:1450::1",
        "64:ff9b::808:808",
        "::ffff:8.8.8.8",
        "2002:808:808::1",
    ],
)
def test_these_addresses_are_public(text: str) -> None:
    assert is_public(ipaddress.ip_address(text))


_V4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)


@FUZZ
@given(v4=_V4, low=st.integers(0, 2**80 - 1))
def test_an_ipv6_form_carrying_an_ipv4_address_is_judged_by_it(v4: ipaddress.IPv4Address, low: int) -> None:
    """Mapped, translated, NAT64 and 6to4 forms are public iff the IPv4 address is."""
    value = int(v4)
    for carried in (
        0xFFFF_0000_0000 | value,
        0xFFFF_0000_0000_0000 | value,
        (0x0064_FF9B << 96) | value,
        (0x2002 << 112) | (value << 80) | low,
    ):
        assert is_public(ipaddress.IPv6Address(carried)) == is_public(v4)
    assert not is_public(ipaddress.IPv6Address(value))  # IPv4-compatible: deprecated, never


@FUZZ
@given(value=st.integers(0, 2**128 - 1))
def test_only_global_unicast_outside_the_table_is_public(value: int) -> None:
    address = ipaddress.IPv6Address(value)
    carries = address in ipaddress.IPv6Network("2002::/16") or value >> 32 in (
        0xFFFF,
        0xFFFF_0000,
        0x64_FF9B_0000_0000_0000_0000,
    )
    if not carries:
        global_unicast = address in ipaddress.IPv6Network("2000::/3")
        assert is_public(address) == (global_unicast and not any(address in n for n in NON_GLOBAL_V6))


@FUZZ
@given(v4=_V4)
def test_ipv4_is_public_iff_outside_the_table(v4: ipaddress.IPv4Address) -> None:
    assert is_public(v4) == (not any(v4 in network for network in NON_GLOBAL_V4))


# --- hole 7: DNS that never answers cannot take the resolver ------------------------------


@pytest.fixture
def stalled_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Names under ``.stall.test`` never answer (until the test ends); others resolve as ever."""
    release = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".stall.test"):
            release.wait(60)
            raise socket.gaierror(socket.EAI_AGAIN, "no answer")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        yield
    finally:
        release.set()
        for _ in range(100):  # the stalled lookups return once released
            if RESOLVER.running() == 0:
                break
            time.sleep(0.05)


def _png_site_fetcher() -> UrlFetcher:
    return UrlFetcher(allowed_hosts=("127.0.0.0/8", "localhost"), timeout=0.3)


def test_stalled_lookups_leave_ip_literals_and_other_hosts_fast(stalled_dns: None, cdn: Site) -> None:
    fetcher = _png_site_fetcher()
    poisoned = [f"http://same.stall.test/{i}.png" for i in range(10)]
    poisoned += [f"http://host{i}.stall.test/a.png" for i in range(4)]
    for url in poisoned:
        with pytest.raises(InvalidInput, match="could not be fetched"):
            fetcher.fetch(url)
    assert RESOLVER.running("same.stall.test") <= 2, "one name holds at most its per-host share"
    started = time.monotonic()
    assert fetcher.fetch(cdn.url("/ok")) == b"cdn bytes"  # an IP literal: never looked up
    assert fetcher.fetch(f"http://localhost:{cdn.port}/ok") == b"cdn bytes"  # another host
    assert time.monotonic() - started < 5.0  # the bug: each failed after the whole timeout


async def test_stalled_lookups_leave_the_async_path_fast(stalled_dns: None, cdn: Site, root: Path) -> None:
    fetcher = _png_site_fetcher()
    for i in range(8):
        with pytest.raises(InvalidInput, match="could not be fetched"):
            await fetcher.afetch(f"http://host{i % 3}.stall.test/a.png")
    started = time.monotonic()
    assert await fetcher.afetch(cdn.url("/ok")) == b"cdn bytes"
    assert await fetcher.afetch(f"http://localhost:{cdn.port}/ok") == b"cdn bytes"
    assert (await aprepare_image(str(root / "page.png"))).url == PAGE_URL  # the loop's threads are free
    assert time.monotonic() - started < 5.0  # the bug: 14 s
