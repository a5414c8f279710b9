"""A call's images (client/_inputs.py, no server): bad retrieved data is told apart from
programmer errors, every unusable document of a call at once."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image as PILImage

from qwen3_vllm_rerank.client import _inputs
from qwen3_vllm_rerank.errors import InvalidInput, UnusableDocuments
from qwen3_vllm_rerank.images import Content, Image


def _png() -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def _page(tmp_path: Path) -> Path:
    page = tmp_path / "page.png"
    page.write_bytes(_png())
    return page


def _documents(tmp_path: Path) -> list[object]:
    return [
        "plain text",
        Content("bad bytes", images=[b"not an image"]),
        Image(_png()),
        Content("missing file", images=[str(tmp_path / "missing.png")]),
        Image("https://example.com/a.png?sig=secret"),  # no fetcher: refused
        Image("file:///etc/passwd"),  # no file_roots: refused
        Content("two bad", images=[b"x", b"y"]),
        Image(str(_page(tmp_path)), retrieved=True),  # a path a document named, no file_roots: refused
    ]


def _assert_all_told(error: UnusableDocuments) -> None:
    assert isinstance(error, InvalidInput)
    assert sorted(error.reasons) == [1, 3, 4, 5, 6, 7]
    assert "secret" not in str(error)
    assert "cannot read image file" in error.reasons[3]
    assert "file_roots" in error.reasons[5]
    assert error.reasons[6].count("not an image") == 2
    assert "file_roots=(directory, ...)" in error.reasons[7]


def test_every_unusable_document_of_a_call_is_told_at_once(tmp_path: Path) -> None:
    request = _inputs.score_request("query", _documents(tmp_path), None)
    with pytest.raises(UnusableDocuments) as info:
        _inputs.prepare(request, None).refuse_unusable()
    _assert_all_told(info.value)


async def test_every_unusable_document_of_an_async_call_is_told_at_once(tmp_path: Path) -> None:
    request = _inputs.score_request("query", _documents(tmp_path), None)
    with pytest.raises(UnusableDocuments) as info:
        (await _inputs.aprepare(request, None)).refuse_unusable()
    _assert_all_told(info.value)


async def test_a_bad_query_image_and_a_wrong_type_stay_plain_invalid_input() -> None:
    request = _inputs.score_request(Content("q", images=[b"not an image"]), [Image(_png())], None)
    with pytest.raises(InvalidInput, match=r"^query: ") as info:
        _inputs.prepare(request, None)
    assert not isinstance(info.value, UnusableDocuments)
    with pytest.raises(InvalidInput, match=r"^query: ") as ainfo:
        await _inputs.aprepare(request, None)
    assert not isinstance(ainfo.value, UnusableDocuments)
    with pytest.raises(InvalidInput, match=r"documents\[1\] must be") as wrong:
        _inputs.score_request("q", ["fine", None], None)
    assert not isinstance(wrong.value, UnusableDocuments)


def test_bare_sources_are_images_by_the_one_table_of_kinds(tmp_path: Path) -> None:
    request = _inputs.score_request("q", [_png(), tmp_path / "a.png", PILImage.new("RGB", (8, 8))], None)
    assert [image.kind for _, _, image in request.document_images()] == ["bytes", "path", "pil"]
