"""Local files named by retrieved content: file: URLs only inside file_roots, and paths that
say one thing whatever is wrong with them (no existence oracle)."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from PIL import Image as PILImage

from qwen3_vllm_rerank.errors import InvalidInput
from qwen3_vllm_rerank.images import UrlFetcher, prepare_image


def _png() -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (64, 64), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``root/`` holds ``page.png`` and a symlink out; ``secret.png`` lies outside it."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "page.png").write_bytes(_png())
    (tmp_path / "secret.png").write_bytes(_png())
    (root / "escape.png").symlink_to(tmp_path / "secret.png")
    return tmp_path


def refused(source: str, fetcher: UrlFetcher | None = None) -> str:
    with pytest.raises(InvalidInput) as info:
        prepare_image(source, label="documents[1]", fetcher=fetcher)
    return str(info.value)


def test_a_file_url_is_refused_without_file_roots(tree: Path) -> None:
    url = (tree / "root" / "page.png").as_uri()
    for fetcher in (None, UrlFetcher(), UrlFetcher(allowed_hosts=())):
        assert "file_roots" in refused(url, fetcher)
    assert "file_roots" in refused("file:" + str(tree / "root" / "page.png"))


def test_file_roots_open_only_regular_files_inside_them(tree: Path) -> None:
    fetcher = UrlFetcher(file_roots=(str(tree / "root"),))
    assert prepare_image((tree / "root" / "page.png").as_uri(), fetcher=fetcher).width == 64
    assert prepare_image("file://localhost" + str(tree / "root" / "page.png"), fetcher=fetcher).width == 64
    os.mkfifo(tree / "root" / "fifo.png")
    outside = [
        (tree / "secret.png").as_uri(),  # outside the root
        (tree / "root" / "escape.png").as_uri(),  # a symlink out of it
        (tree / "root" / ".." / "secret.png").as_uri(),  # .. out of it
        (tree / "root" / "missing.png").as_uri(),
        (tree / "root" / "fifo.png").as_uri(),  # would block a plain open
        (tree / "root").as_uri(),  # a directory
        "file://otherhost" + str(tree / "root" / "page.png"),
    ]
    messages = {re.sub(r"'file:[^']*'", "URL", refused(url, fetcher)) for url in outside}
    assert len(messages) == 1, messages
    assert "cannot read image file URL" in messages.pop()


def test_a_plain_path_says_the_same_thing_whatever_is_wrong(tree: Path) -> None:
    os.mkfifo(tree / "fifo.png")
    (tree / "notes.txt").write_text("not an image")
    unreadable = tree / "unreadable.png"
    unreadable.write_bytes(_png())
    unreadable.chmod(0)
    cases = [tree / "missing.png", tree, tree / "fifo.png", tree / "notes.txt", unreadable]
    if os.access(unreadable, os.R_OK):  # root reads anything: the mode proves nothing then
        cases.remove(unreadable)
    messages = {refused(str(path)).replace(repr(str(path)), "PATH") for path in cases}
    assert len(messages) == 1, messages
    assert "cannot read image file PATH" in messages.pop()
