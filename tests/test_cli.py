"""The ``qwen3-vllm-rerank`` command line, every subcommand, against real checkpoints and servers."""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import psutil
import pytest
from PIL import Image as PILImage
from safetensors import safe_open

from qwen3_vllm_rerank import Content, Image, RerankClient, UrlFetcher
from qwen3_vllm_rerank.cli import PROG, _snippet, main
from qwen3_vllm_rerank.errors import ConversionError, Qwen3RerankError
from tests.serve.published_configs import PUBLISHED_CONFIGS
from tests.support.fake_vllm import FAKE_EXIT_CODE, fake_vllm
from tests.support.fixtures import Checkpoints, Served
from tests.support.processes import descendants, read_alive
from tests.support.recording import ImageSite

pytestmark = pytest.mark.heavy  # runs the CLI in subprocesses on fixture checkpoints

CLI = str(Path(sys.executable).parent / "qwen3-vllm-rerank")
COMMANDS = ["convert", "serve", "rerank", "make-fixture"]
QUERY = "What is the capital of France?"
DOCS = ["Bananas are rich in potassium.", "Paris is the capital and largest city of France.", "Berlin"]


def _run(
    *args: str, stdin: str | None = None, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], input=stdin, capture_output=True, text=True, timeout=timeout, env=env)


def _with_fake_vllm(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This environment with a stand-in vLLM 0.32 on PYTHONPATH: its server exits at once, after
    everything ``serve`` says before vLLM starts has been said."""
    return {**os.environ, "PYTHONPATH": str(fake_vllm(tmp_path)), **extra}


def _one_error_line(stderr: str, expected: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("qwen3-vllm-rerank: error:")]
    assert len(lines) == 1, stderr
    assert expected in lines[0]
    assert "Traceback" not in stderr


# --- help and usage -------------------------------------------------------------------------


def test_help_for_every_command() -> None:
    top = _run("--help")
    assert top.returncode == 0
    for command in COMMANDS:
        assert command in top.stdout
        result = _run(command, "--help")
        assert result.returncode == 0, result.stderr
        assert f"usage: qwen3-vllm-rerank {command}" in result.stdout
        assert "--debug" in result.stdout


def test_usage_errors_exit_2() -> None:
    assert _run().returncode == 2
    assert _run("frobnicate").returncode == 2
    result = _run("convert", "a", "b", "--", "extra")
    assert result.returncode == 2
    assert "unexpected arguments after --" in result.stderr
    assert _run("rerank", "--query", "q", "--top-n", "0", "doc").returncode == 2


# --- make-fixture and convert -----------------------------------------------------------------


def test_make_fixture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "fixture"
    assert main(["make-fixture", str(target), "--untied", "--dtype", "bfloat16", "--seed", "3"]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    config = json.loads((target / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    assert config["dtype"] == "bfloat16"
    with safe_open(str(target / "model.safetensors"), framework="pt") as handle:
        assert "lm_head.weight" in handle.keys()  # noqa: SIM118 - safe_open is not a mapping
    assert main(["make-fixture", str(target)]) == 1
    _one_error_line(capsys.readouterr().err, "already holds a checkpoint")


def test_make_fixture_vl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--vl: a tiny Qwen3-VL reranker with the real tokenizer and the processor files a published one
    ships; it converts like a real one."""
    target = tmp_path / "vl"
    assert main(["make-fixture", str(target), "--vl", "--untied"]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    config = json.loads((target / "config.json").read_text())
    assert config["architectures"] == ["Qwen3VLForConditionalGeneration"]
    assert config["tie_word_embeddings"] is False
    for name in ("tokenizer.json", "preprocessor_config.json", "chat_template.jinja"):
        assert (target / name).is_file(), name
    assert main(["convert", str(target), str(tmp_path / "converted"), "--link"]) == 0
    converted = json.loads((tmp_path / "converted" / "config.json").read_text())
    assert converted["architectures"] == ["Qwen3VLForSequenceClassification"]


def test_convert_then_refuse_to_overwrite(
    checkpoints: Checkpoints, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = checkpoints.get("untied"), tmp_path / "converted"
    assert main(["convert", str(source), str(target), "--link", "--no-verify"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {target}" in out
    assert "not verified" in out
    assert json.loads((target / "config.json").read_text())["architectures"] == [
        "Qwen3ForSequenceClassification"
    ]
    shard = "model-00001-of-00003.safetensors"
    assert (target / shard).stat().st_ino == (source / shard).stat().st_ino  # --link

    assert main(["convert", str(source), str(target)]) == 1
    _one_error_line(capsys.readouterr().err, "is not empty; pass a new or empty directory")
    with pytest.raises(ConversionError, match="not empty"):
        main(["convert", str(source), str(target), "--debug"])


def test_convert_verifies_by_default(
    checkpoints: Checkpoints, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["convert", str(checkpoints.get("tied")), str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "verified against the original" in captured.out
    assert "max |difference|" in captured.err  # the library's log line


def test_convert_error_is_one_line_without_traceback(checkpoints: Checkpoints, tmp_path: Path) -> None:
    result = _run("convert", str(checkpoints.get("tied")), str(tmp_path / "out"), "--yes-token", "yes please")
    assert result.returncode == 1
    _one_error_line(result.stderr, "'yes please' is not a single token")
    debug = _run(
        "--debug", "convert", str(checkpoints.get("tied")), str(tmp_path / "out"), "--yes-token", "x y"
    )
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr
    assert "ConversionError" in debug.stderr


# --- rerank -----------------------------------------------------------------------------------


def test_rerank_prints_a_table_best_first(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rerank", "--base-url", served.base_url, "--query", QUERY, *DOCS]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "index", "score", "document"]
    with RerankClient(served.base_url) as client:
        expected = client.rerank(QUERY, DOCS)
    rows = [line.split(None, 3) for line in lines[1:]]
    assert [int(row[1]) for row in rows] == [r.index for r in expected]
    assert [float(row[2]) for row in rows] == [round(r.score, 4) for r in expected]
    assert [row[3] for row in rows] == [r.document for r in expected]


def test_rerank_json_top_n_and_instruction(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    instruction = "Given a question, retrieve passages that answer it"
    args = ["rerank", "--base-url", served.base_url, "-q", QUERY, "--top-n", "2", "--json"]
    assert main([*args, "--instruction", instruction, "--model", served.model, *DOCS]) == 0
    rows = json.loads(capsys.readouterr().out)
    with RerankClient(served.base_url) as client:
        expected = client.rerank(QUERY, DOCS, top_n=2, instruction=instruction)
    assert rows == [
        {"rank": i, "index": r.index, "score": r.score, "document": r.document}
        for i, r in enumerate(expected, 1)
    ]


@pytest.mark.parametrize(
    "stdin",
    [
        "\n".join(DOCS) + "\n\n",
        "\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(DOCS)),
        "\n".join(json.dumps(d) for d in DOCS),
    ],
    ids=["lines", "json-objects", "json-strings"],
)
def test_rerank_reads_documents_from_stdin(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, stdin: str
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert main(["rerank", "--base-url", served.base_url, "-q", QUERY, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(row["document"] for row in rows) == sorted(DOCS)
    assert rows[0]["document"] == DOCS[1]


def test_rerank_documents_after_double_dash(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rerank", "--base-url", served.base_url, "-q", QUERY, "--json", "--", "-v", "--x"]) == 0
    assert sorted(row["document"] for row in json.loads(capsys.readouterr().out)) == ["--x", "-v"]


def test_rerank_errors_are_one_line(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO('{"text": "ok"}\nnot json\n'))
    assert main(["rerank", "--base-url", served.base_url, "-q", QUERY]) == 1
    _one_error_line(capsys.readouterr().err, "stdin line 2: not JSON")
    monkeypatch.setattr("sys.stdin", io.StringIO('{"title": "no text"}\n'))
    assert main(["rerank", "--base-url", served.base_url, "-q", QUERY]) == 1
    _one_error_line(capsys.readouterr().err, 'an object with a "text" string')
    monkeypatch.setattr("sys.stdin", io.StringIO("\n\n"))
    assert main(["rerank", "--base-url", served.base_url, "-q", QUERY]) == 1
    _one_error_line(capsys.readouterr().err, "no documents on stdin")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = _run("rerank", "--base-url", f"http://127.0.0.1:{port}", "-q", QUERY, "doc", timeout=60)
    assert result.returncode == 1
    _one_error_line(result.stderr, f"cannot connect to the vLLM server at http://127.0.0.1:{port}")


# --- rerank with images (a Qwen3-VL-Reranker server) -------------------------------------------

VL_QUERY = "a chart of quarterly revenue"


def _picture(path: Path, width: int, height: int, seed: int) -> Path:
    """A random-noise PNG at ``path`` (distinct pictures score differently)."""
    rng = random.Random(seed)
    pixels = bytes(rng.randrange(256) for _ in range(width * height * 3))
    PILImage.frombytes("RGB", (width, height), pixels).save(path, format="PNG")
    return path


def _data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _table(out: str) -> list[tuple[int, float, str]]:
    """The rerank table's rows: (index, score, document cell)."""
    lines = out.splitlines()
    assert lines[0].split() == ["rank", "index", "score", "document"]
    rows = [line.split(None, 3) for line in lines[1:]]
    assert [int(row[0]) for row in rows] == list(range(1, len(rows) + 1))
    return [(int(row[1]), float(row[2]), row[3]) for row in rows]


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line main() printed, without its prefix."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("qwen3-vllm-rerank: error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0].removeprefix("qwen3-vllm-rerank: error: ")


def _client_error(base_url: str, query: object, documents: list[object], **options: object) -> str:
    """The first line of what the client raises for the same inputs."""
    with RerankClient(base_url, **options) as client:  # type: ignore[arg-type]
        with pytest.raises(Qwen3RerankError) as raised:
            client.rerank(query, documents)  # type: ignore[arg-type]
    return str(raised.value).strip().splitlines()[0]


def _closed_port() -> str:
    """A loopback URL nothing listens on: a request to it is a connection error."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_rerank_image_files_and_an_image_query_rank_like_the_client(
    vl_served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--image PATH (repeated) adds one image-only document per file after the text ones, shown by its
    path; --query-image makes the query an image (with --query as its text, or alone): ranking and
    scores are the client's for the same inputs."""
    monkeypatch.setenv("COLUMNS", "500")  # the table cuts cells to the terminal's width
    text = "Revenue grew in every region in the third quarter."
    pages = [_picture(tmp_path / f"page{i}.png", 64 + 32 * i, 96, i) for i in range(3)]
    query_picture = _picture(tmp_path / "query.png", 333, 517, 9)  # not aligned: resized like the reference
    args = ["rerank", "--base-url", vl_served.base_url, "-q", VL_QUERY, text]
    args += [arg for page in pages for arg in ("--image", str(page))]
    assert main(args) == 0
    rows = _table(capsys.readouterr().out)
    with RerankClient(vl_served.base_url) as client:
        expected = client.rerank(VL_QUERY, [text, *(Image(page) for page in pages)])
    assert [(index, score) for index, score, _ in rows] == [(r.index, round(r.score, 4)) for r in expected]
    shown = [text, *(str(page) for page in pages)]
    assert [cell for _, _, cell in rows] == [shown[r.index] for r in expected]
    assert len({score for _, score, _ in rows}) > 1, "the documents do not all score alike"

    assert main([*args, "--query-image", str(query_picture), "--json", "--top-n", "2"]) == 0
    dumped = json.loads(capsys.readouterr().out)
    query = Content(VL_QUERY, images=[Image(query_picture)])
    with RerankClient(vl_served.base_url) as client:
        expected = client.rerank(query, [text, *(Image(page) for page in pages)], top_n=2)
    documents: list[object] = [text, *({"text": "", "image": [str(page)]} for page in pages)]
    assert dumped == [
        {"rank": rank, "index": r.index, "score": r.score, "document": documents[r.index]}
        for rank, r in enumerate(expected, 1)
    ]

    image_only = ["rerank", "--base-url", vl_served.base_url, "--query-image", str(query_picture), "--json"]
    assert main([*image_only, "--image", str(pages[0]), "--image", str(pages[2])]) == 0
    with RerankClient(vl_served.base_url) as client:
        expected = client.rerank(Image(query_picture), [Image(pages[0]), Image(pages[2])])
    rows_json = json.loads(capsys.readouterr().out)
    assert [(row["index"], row["score"]) for row in rows_json] == [(r.index, r.score) for r in expected]


def test_rerank_json_lines_with_images_score_like_the_client(
    vl_served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """JSON lines may carry "image" (one source or a list) beside "text": data: URLs are read as they
    are, local paths (relative to the working directory too) inside --image-root, http(s) URLs from
    --allow-image-host hosts, fetched by the command; each document scores as the client scores the
    same Content, and the table shows its image sources, then its text."""
    root = tmp_path / "pages"
    root.mkdir()
    first, second = _picture(root / "a.png", 64, 96, 1), _picture(root / "b.png", 20, 30, 2)
    site = ImageSite(_picture(tmp_path / "remote.png", 96, 64, 3).read_bytes())
    try:
        lines = [
            {"text": "Quarterly revenue, by region", "image": _data_url(first)},
            {"text": "two pages", "image": [str(first), "pages/b.png"], "id": 1},
            {"image": site.url},
            "plain text",
            {"text": "text only"},
        ]
        monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(json.dumps(line) for line in lines)))
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("COLUMNS", "500")  # the table cuts cells to the terminal's width
        args = ["rerank", "--base-url", vl_served.base_url, "-q", VL_QUERY, "--image-root", "pages"]
        assert main([*args, "--allow-image-host", "127.0.0.1"]) == 0
        rows = _table(capsys.readouterr().out)
        assert site.hits == 1, "fetched by the command, never by the server"
        fetcher = UrlFetcher(allowed_hosts=("127.0.0.1",))
        with RerankClient(vl_served.base_url, image_fetcher=fetcher) as client:
            expected = client.rerank(
                VL_QUERY,
                [
                    Content("Quarterly revenue, by region", images=[first]),
                    Content("two pages", images=[first, second]),
                    Image(site.url),
                    "plain text",
                    "text only",
                ],
            )
    finally:
        site.close()
    assert [(index, score) for index, score, _ in rows] == [(r.index, round(r.score, 4)) for r in expected]
    cells = {index: cell for index, _, cell in rows}
    assert cells[0].startswith("[data:image/png;base64,…(")
    assert cells[0].endswith(" chars)] Quarterly revenue, by region")
    assert cells[1] == f"[{first}, pages/b.png] two pages"
    assert cells[2] == site.url
    assert (cells[3], cells[4]) == ("plain text", "text only")


def test_rerank_json_lines_read_only_the_image_sources_the_options_allow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """JSON lines may be retrieved data: a local path or a file: URL needs --image-root, an http(s) URL
    --fetch-images or --allow-image-host; each refusal, and each malformed "image", names the line and
    what to do, before any request (the server here is a closed port, which would be a connection
    error) and without fetching anything. A query is required, and the two fetch options exclude
    each other (usage errors)."""
    picture = _picture(tmp_path / "page.png", 64, 64, 1)
    site = ImageSite(picture.read_bytes())
    args = ["rerank", "--base-url", _closed_port(), "-q", VL_QUERY]
    cases: list[tuple[object, list[str], str]] = [
        ({"image": str(picture)}, [], f"stdin line 2: image {str(picture)!r} is a local path"),
        ({"image": str(picture)}, [], "pass --image-root, or name the file with --image PATH"),
        ({"image": picture.as_uri()}, ["--fetch-images"], "is a file: URL; it is read only inside"),
        ({"text": "t", "image": [site.url]}, [], "is a URL, not fetched by default"),
        ({"image": site.url}, ["--image-root", str(tmp_path)], "pass --fetch-images to fetch public"),
        ({"text": "t", "image": []}, [], 'stdin line 2: "image" must be a path or URL, or a non-empty'),
        ({"image": ["data:image/png;base64,AA", 7]}, [], 'stdin line 2: "image" must be a path or URL'),
        ({"text": 7, "image": site.url}, ["--fetch-images"], 'stdin line 2: "text" must be a string'),
    ]
    try:
        for line, options, expected in cases:
            stdin = json.dumps("first document") + "\n" + json.dumps(line)
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
            assert main([*args, *options]) == 1
            assert expected in _error(capsys), line
        assert site.hits == 0
    finally:
        site.close()
    with pytest.raises(SystemExit) as usage:
        main(["rerank", "--base-url", _closed_port(), "--image", str(picture)])
    assert usage.value.code == 2
    assert "give the query: --query TEXT, --query-image PATH, or both" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main([*args, "--fetch-images", "--allow-image-host", "127.0.0.1", "doc"])
    assert usage.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_rerank_image_refusals_are_the_clients_in_one_line(
    vl_served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreadable image file (a document's or the query's), a JSON-lines path outside --image-root
    (or a symlink out of it) and a loopback URL with --fetch-images: each exits 1 with the client's
    own message for the same inputs as the one error line."""
    picture = _picture(tmp_path / "page.png", 64, 64, 1)
    missing = tmp_path / "missing.png"
    garbage = tmp_path / "not-an-image.png"
    garbage.write_bytes(b"not an image at all")
    vl = ["rerank", "--base-url", vl_served.base_url, "-q", VL_QUERY, "a text document"]

    for bad in (missing, garbage):
        assert main([*vl, "--image", str(bad)]) == 1
        message = _error(capsys)
        assert message.startswith("1 document(s) cannot be scored: documents[1]: cannot read image file")
        assert message == _client_error(vl_served.base_url, VL_QUERY, ["a text document", Image(bad)])

    assert main([*vl, "--query-image", str(missing)]) == 1
    message = _error(capsys)
    assert message.startswith("query: cannot read image file")
    query = Content(VL_QUERY, images=[Image(missing)])
    assert message == _client_error(vl_served.base_url, query, ["a text document"])

    root = tmp_path / "root"
    root.mkdir()
    (root / "link.png").symlink_to(picture)
    monkeypatch.chdir(tmp_path)
    fetcher = UrlFetcher(allowed_hosts=(), file_roots=(str(root),))
    for source in (str(picture), "root/link.png"):
        monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"text": "t", "image": source})))
        assert main(["rerank", "--base-url", vl_served.base_url, "-q", VL_QUERY, "--image-root", "root"]) == 1
        message = _error(capsys)
        assert "documents[0]: cannot read image file" in message
        document = Content("t", images=[Path(os.path.abspath(source)).as_uri()])
        assert message == _client_error(vl_served.base_url, VL_QUERY, [document], image_fetcher=fetcher)

    site = ImageSite(picture.read_bytes())
    try:
        monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"image": site.url})))
        assert main(["rerank", "--base-url", vl_served.base_url, "-q", VL_QUERY, "--fetch-images"]) == 1
        message = _error(capsys)
        assert "documents[0]: the image URL could not be fetched" in message  # public addresses only
        assert message == _client_error(
            vl_served.base_url, VL_QUERY, [Image(site.url)], image_fetcher=UrlFetcher()
        )
        assert site.hits == 0
    finally:
        site.close()


def test_rerank_images_against_a_text_reranker_are_refused_like_the_client(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A document image or a query image sent to a text Qwen3-Reranker: exit 1 with the client's
    message for the same inputs as the one error line."""
    picture = _picture(tmp_path / "page.png", 64, 64, 1)
    text = ["rerank", "--base-url", served.base_url, "-q", VL_QUERY, "a text document"]
    assert main([*text, "--image", str(picture)]) == 1
    message = _error(capsys)
    assert "documents[1] has images" in message
    assert message == _client_error(served.base_url, VL_QUERY, ["a text document", Image(picture)])
    assert main([*text, "--query-image", str(picture)]) == 1
    assert _error(capsys) == _client_error(
        served.base_url, Content(VL_QUERY, images=[picture]), ["a text document"]
    )


def test_serve_snippet_shows_image_reranking_for_a_vl_server() -> None:
    """``serve`` prints a ready-to-paste image rerank command for a Qwen3-VL checkpoint only."""
    vl = _snippet("http://127.0.0.1:8000", "m", api_key=False, family="vl")
    assert f"{PROG} rerank --base-url http://127.0.0.1:8000 --query 'a revenue chart' --image page1.png" in vl
    assert "--image" not in _snippet("http://127.0.0.1:8000", "m", api_key=False)


def test_rerank_help_describes_images() -> None:
    """The rerank command's --help names every image option and the rule for JSON-lines sources."""
    out = _run("rerank", "--help").stdout
    for option in ("--image PATH", "--query-image PATH", "--image-root DIR", "--fetch-images"):
        assert option in out
    assert "--allow-image-host HOST" in out
    assert "only data: URLs are read from them" in " ".join(out.split())


# --- serve ------------------------------------------------------------------------------------


def _lines(stream: IO[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _runs_vllm(children: list[psutil.Process]) -> bool:
    """Whether one of the CLI's children is vLLM's server."""
    return any("vllm.entrypoints" in " ".join(line) for line in read_alive(children, psutil.Process.cmdline))


def _serve(
    model: Path, server_python: str, tmp_path: Path, host: str = "127.0.0.1"
) -> tuple[subprocess.Popen[str], Path]:
    stderr = tmp_path / "stderr.txt"
    command = [CLI, "serve", str(model), "--host", host, "--port", "0", "--python", server_python]
    command += ["--log-file", str(tmp_path / "vllm.log"), "--", "--dtype", "float32"]
    with stderr.open("w") as err:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=err, text=True, preexec_fn=_as_if_from_a_terminal
        )
    return process, stderr


def _as_if_from_a_terminal() -> None:
    """Ctrl-C reaches a command typed at a terminal. A suite started as a background job
    (``cmd &``, as CI may run it) inherits SIGINT ignored, and ``serve`` rightly keeps
    ignored signals ignored, so give the child the terminal's default back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.usefixtures("server_room")  # it starts a vLLM server of its own
def test_serve_prints_how_to_use_it_streams_the_log_and_stops_on_ctrl_c(
    checkpoints: Checkpoints, server_python: str, tmp_path: Path
) -> None:
    process, stderr = _serve(checkpoints.get("tied"), server_python, tmp_path, host="0.0.0.0")
    try:
        assert process.stdout is not None
        lines = _lines(process.stdout)
        out: list[str] = []
        deadline = time.monotonic() + 600
        while not out or "Press Ctrl-C to stop." not in out[-1]:
            line = lines.get(timeout=max(deadline - time.monotonic(), 1))
            assert line is not None, f"serve exited early: {stderr.read_text()[-3000:]}"
            out.append(line)
        text = "".join(out)
        match = re.search(r"at (http://127\.0\.0\.1:\d+) \(original checkpoint", text)
        assert match, text
        assert "\nWARNING: binding 0.0.0.0 without an API key: every endpoint" in text
        base_url = match.group(1)
        model = str(checkpoints.get("tied"))
        kwargs = f"Qwen3VLLMReranker(base_url={base_url!r}, model={model!r}, top_n=3)"
        for module in ("langchain_qwen3_vllm_rerank", "llama_index.postprocessor.qwen3_vllm_rerank"):
            assert f"from {module} import Qwen3VLLMReranker\n    reranker = {kwargs}" in text
        with RerankClient(base_url) as client:
            assert len(client.score(QUERY, DOCS)) == 3
        # vLLM's own log is streamed to stderr.
        log_start = (tmp_path / "vllm.log").read_text().splitlines()[0]
        assert log_start in stderr.read_text()

        children = descendants(process.pid)
        assert _runs_vllm(children)
        process.send_signal(signal.SIGINT)
        assert process.wait(300) == 0  # generous: a loaded 2-core machine stops vLLM slowly
        assert "SIGINT received, stopping vLLM" in stderr.read_text()
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == [], "no vLLM process outlives the CLI"
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.usefixtures("server_room")  # it starts a vLLM server of its own
def test_serve_stops_cleanly_on_sigterm_during_startup(
    checkpoints: Checkpoints, server_python: str, tmp_path: Path
) -> None:
    process, stderr = _serve(checkpoints.get("tied"), server_python, tmp_path)
    try:
        deadline = time.monotonic() + 120
        children: list[psutil.Process] = []
        while not _runs_vllm(children):
            assert process.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, "vLLM was never launched"
            time.sleep(0.2)
            children = descendants(process.pid)
        time.sleep(3)  # vLLM is busy importing / starting its engine
        children = descendants(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(300) == 0  # generous: a loaded 2-core machine stops vLLM slowly
        assert "SIGTERM received, stopping vLLM" in stderr.read_text()
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == []
    finally:
        if process.poll() is None:
            process.kill()


def test_serve_reports_a_bad_checkpoint_in_one_line(tmp_path: Path) -> None:
    result = _run("serve", str(tmp_path), "--port", "0", "--quiet", timeout=120)
    assert result.returncode == 1
    _one_error_line(result.stderr, "has no config.json")


def test_serve_a_path_that_does_not_exist_says_so_in_one_line(tmp_path: Path) -> None:
    """Not vLLM's HFValidationError: a path is never taken for a hub id."""
    for missing in (tmp_path / "nowhere", "./not-here", "/nonexistent"):
        result = _run("serve", str(missing), "--port", "0", "--quiet", timeout=120)
        assert result.returncode == 1
        _one_error_line(result.stderr, f"{missing} does not exist: pass a checkpoint directory or a hub id")
    (tmp_path / "file.json").write_text("{}")
    result = _run("serve", str(tmp_path / "file.json"), "--port", "0", "--quiet", timeout=120)
    _one_error_line(result.stderr, "is not a directory")


def test_serve_on_a_network_host_says_which_paths_the_api_key_leaves_open(tmp_path: Path) -> None:
    """The warning comes before vLLM starts: here a stand-in vLLM that exits at once makes the start fail."""
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 128,
        "hidden_size": 128,
        "max_position_embeddings": 40960,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    args = ["--host", "0.0.0.0", "--api-key", "k", "--port", "0", "--quiet", "--python", sys.executable]
    result = _run("serve", str(tmp_path), *args, timeout=120, env=_with_fake_vllm(tmp_path))
    assert result.returncode == 1
    warning = (
        "qwen3-vllm-rerank: binding 0.0.0.0: --api-key guards only paths under /v1, /v2, /inference, /cohere"
    )
    assert warning in result.stderr
    assert "/score, /rerank, /classify, /pooling" in result.stderr
    _one_error_line(result.stderr, f"vLLM exited with code {FAKE_EXIT_CODE} while starting")


def test_serve_debug_never_shows_the_api_key(tmp_path: Path) -> None:
    """Regression: ``serve --debug`` logged vLLM's command line with ``--api-key KEY`` in it. Here an
    stand-in vLLM makes the start fail at once, after the command was logged; the key comes
    from the command line, then from $VLLM_API_KEY (which keeps it off the CLI's own command line)."""
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 128,
        "hidden_size": 128,
        "max_position_embeddings": 40960,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    secret = "cli-secret-do-not-print"
    args = ["--port", "0", "--quiet", "--python", sys.executable]
    flag = _run(
        "serve",
        "--debug",
        str(tmp_path),
        "--api-key",
        secret,
        *args,
        timeout=120,
        env=_with_fake_vllm(tmp_path),
    )
    assert "command: " in flag.stderr
    assert secret not in flag.stdout + flag.stderr
    assert "readable by every local user" in flag.stderr  # and a hint to use the variable instead
    env = _with_fake_vllm(tmp_path / "again", VLLM_API_KEY=secret)
    variable = subprocess.run(
        [CLI, "serve", "--debug", str(tmp_path), *args], capture_output=True, text=True, timeout=120, env=env
    )
    assert "command: " in variable.stderr
    assert secret not in variable.stdout + variable.stderr
    assert "readable by every local user" not in variable.stderr


def test_serve_gpu_memory_caps_what_the_server_holds(tmp_path: Path) -> None:
    """``serve --gpu-memory`` reaches the plan: on a GPU build of vLLM (a stand-in that exits at once)
    the server is planned within the cap, through vLLM's byte-sized KV cache flag."""
    (tmp_path / "config.json").write_text(json.dumps(PUBLISHED_CONFIGS["0.6B"]))
    args = ["--gpu-memory", "4", "--port", "0", "--quiet", "--python", sys.executable]
    result = _run("serve", "--debug", str(tmp_path), *args, timeout=120, env=_with_fake_vllm(tmp_path))
    assert "GPU memory 4.0 GiB = weights" in result.stderr
    command = next(line for line in result.stderr.splitlines() if "command: " in line)
    assert "--kv-cache-memory-bytes" in command
    assert "--gpu-memory-utilization" in command


def test_serve_image_cache_pages_sizes_the_encoder_cache(tmp_path: Path) -> None:
    """``serve --image-cache-pages N`` reaches the plan of a Qwen3-VL checkpoint (a stand-in vLLM that
    exits at once): the plan says the cache holds N pages and names its cache manager; 0 leaves it to
    vLLM; a negative count is refused by the parser."""
    (tmp_path / "config.json").write_text(json.dumps(PUBLISHED_CONFIGS["VL-2B"]))
    args = ["--port", "0", "--quiet", "--python", sys.executable]
    env = _with_fake_vllm(tmp_path)
    sized = _run("serve", "--debug", str(tmp_path), "--image-cache-pages", "8", *args, env=env)
    assert "encoder cache 8 pages" in sized.stderr
    command = next(line for line in sized.stderr.splitlines() if "command: " in line)
    assert "--ec-manager-config" in command
    vllms = _run("serve", "--debug", str(tmp_path), "--image-cache-pages", "0", *args, env=env)
    command = next(line for line in vllms.stderr.splitlines() if "command: " in line)
    assert "--ec-manager-config" not in command
    refused = _run("serve", str(tmp_path), "--image-cache-pages", "-1", env=env)
    assert refused.returncode == 2
    assert "must be 0 or a positive integer" in refused.stderr


# --- what the CLI prints from its input is safe on a terminal (issue 23, hole 11) -------------

#: Retrieved text that drives a terminal: set the window title, clear the screen, override the
#: text's direction (Trojan Source), an 8-bit CSI, and a cell split by tab and newline.
HOSTILE = {
    "\x1b]0;title\x07": "\\x1b]0;title\\x07",
    "\x1b[2J": "\\x1b[2J",
    "\u202e": "\\u202e",
    "\x9b31m": "\\x9b31m",
    "a\tb\nc": "a\\x09b\\x0ac",
}


@pytest.mark.parametrize("raw", sorted(HOSTILE))
def test_terminal_safe_writes_control_characters_as_escapes(raw: str) -> None:
    from qwen3_vllm_rerank.cli import terminal_safe

    shown = terminal_safe(f"doc {raw} end")
    assert shown == f"doc {HOSTILE[raw]} end"
    assert shown.isprintable()


def _printable_lines(text: str) -> bool:
    return all(line.isprintable() for line in text.split("\n"))


def test_rerank_shows_hostile_json_lines_escaped(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documents on stdin carrying escape sequences reach the table, the JSON and the error
    line escaped (against a loopback server speaking vLLM's API)."""
    from tests.client.test_wire_faults import FakeVLLM, _scores

    documents = ["\x1b]0;title\x07 pwned", "\x1b[2J\u202e cleared"]  # FakeVLLM scores two documents
    lines = "\n".join(json.dumps(d) for d in documents) + "\n"
    with FakeVLLM(_scores) as server:
        monkeypatch.setattr("sys.stdin", io.StringIO(lines))
        assert main(["rerank", "--base-url", server.url(), "-q", "q"]) == 0
        out = capsys.readouterr().out
        assert _printable_lines(out)
        assert "\\x1b]0;title\\x07 pwned" in out
        assert "\\x1b[2J\\u202e cleared" in out

        monkeypatch.setattr("sys.stdin", io.StringIO(lines))
        assert main(["rerank", "--base-url", server.url(), "-q", "q", "--json"]) == 0
        out = capsys.readouterr().out
        assert _printable_lines(out)
        assert sorted(row["document"] for row in json.loads(out)) == sorted(documents)  # the same values

    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"image": "\u202e\x1b[2J.png"}) + "\n"))
    assert main(["rerank", "--base-url", "http://127.0.0.1:9", "-q", "q"]) == 1
    err = capsys.readouterr().err
    assert _printable_lines(err)
    assert "\\u202e" in err
