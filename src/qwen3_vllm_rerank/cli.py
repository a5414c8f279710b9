"""The ``qwen3-vllm-rerank`` command line: convert a checkpoint, serve it, rerank with it.

Every subcommand has ``--help``. Errors print one line on stderr and exit with a
non-zero code; ``--debug`` shows the traceback and debug logs instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Literal, TextIO, TypeAlias

from . import __version__
from ._redaction import redact_url
from .batch._command import add_parser as add_batch_parser
from .client import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL, DEFAULT_TIMEOUT
from .errors import InvalidInput, Qwen3RerankError
from .images import Content, Image, UrlFetcher
from .serve import SERVER_PYTHON_ENV, VLLM_API_KEY_ENV

__all__ = ["main"]

PROG = "qwen3-vllm-rerank"
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

logger = logging.getLogger("qwen3_vllm_rerank")


class _Stop(BaseException):
    """A stop signal arrived (SIGINT, SIGTERM or SIGHUP); unwinds like KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[Callable[[], None]]:
    """Turn SIGINT/SIGTERM/SIGHUP into :class:`_Stop`; the yielded function makes later ones no-ops.

    Signals already ignored (``nohup``, background jobs) stay ignored.
    """
    candidates = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    previous = {s: signal.getsignal(s) for s in candidates}
    signals = [s for s in candidates if previous[s] != signal.SIG_IGN]

    def raise_stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signum)

    def while_stopping(signum: int, frame: FrameType | None) -> None:
        print(f"{PROG}: already stopping the server", file=sys.stderr, flush=True)

    def stopping() -> None:
        for s in signals:
            signal.signal(s, while_stopping)

    for s in signals:
        signal.signal(s, raise_stop)
    try:
        yield stopping
    finally:
        for s in signals:
            signal.signal(s, previous[s])


class _LogFollower(threading.Thread):
    """Copies what is appended to a file to a stream, like ``tail -f``, until stopped."""

    def __init__(self, path: Path, out: TextIO) -> None:
        super().__init__(name="vllm-log", daemon=True)
        self.path = path
        self.out = out
        self._stop_event = threading.Event()

    def run(self) -> None:
        handle: IO[str] | None = None
        try:
            while True:
                stopping = self._stop_event.is_set()
                if handle is None and self.path.exists():
                    handle = self.path.open(errors="replace")
                if handle is not None:
                    chunk = handle.read()
                    if chunk:
                        self.out.write(chunk)
                        self.out.flush()
                if stopping:
                    return
                self._stop_event.wait(0.2)
        finally:
            if handle is not None:
                handle.close()

    def stop(self) -> None:
        """Copy what is left, then end."""
        self._stop_event.set()
        self.join(timeout=5)


# --- subcommands ------------------------------------------------------------------------


def _convert(args: argparse.Namespace) -> int:
    from .convert import convert_checkpoint

    verify: bool | Literal["model"] = "model" if args.verify_model else bool(args.verify)
    dst = convert_checkpoint(
        args.src,
        args.dst,
        yes_token=args.yes_token,
        no_token=args.no_token,
        verify=verify,
        link=args.link,
    )
    check = {
        True: "verified against the original (files and tensors)",
        "model": "verified against the original (files, tensors and logits)",
        False: "not verified (--no-verify)",
    }[verify]
    print(f"wrote {dst}: a Qwen3ForSequenceClassification checkpoint, {check}")
    print(f"serve it with: {PROG} serve {dst}")
    return 0


def _snippet(base_url: str, model: str, api_key: bool, family: str = "text") -> str:
    key = f"\n    # the server requires an API key: pass api_key=... or set ${API_KEY_ENV}" if api_key else ""
    kwargs = f"base_url={base_url!r}, model={model!r}, top_n=3"
    return (
        "LangChain:\n"
        "    from langchain_qwen3_vllm_rerank import Qwen3VLLMReranker\n"
        f"    reranker = Qwen3VLLMReranker({kwargs}){key}\n"
        "\n"
        "LlamaIndex:\n"
        "    from llama_index.postprocessor.qwen3_vllm_rerank import Qwen3VLLMReranker\n"
        f"    reranker = Qwen3VLLMReranker({kwargs}){key}\n"
        "\n"
        "Command line:\n"
        f"    {PROG} rerank --base-url {base_url} --query 'what is a closure?' 'doc one' 'doc two'\n"
        + (
            f"    {PROG} rerank --base-url {base_url} --query 'a revenue chart' --image page1.png "
            "--image page2.png\n"
            if family == "vl"
            else ""
        )
    )


def _serve(args: argparse.Namespace) -> int:
    from .serve import VLLMServer

    if args.api_key:
        logger.warning(
            "--api-key on the command line is readable by every local user (ps, /proc/PID/cmdline): "
            "set $%s instead",
            VLLM_API_KEY_ENV,
        )
    api_key = args.api_key or os.environ.get(VLLM_API_KEY_ENV) or None
    if args.log_file:
        log_file = Path(args.log_file)
    else:
        handle, name = tempfile.mkstemp(prefix="qwen3-vllm-", suffix=".log")
        os.close(handle)
        log_file = Path(name)
    server = VLLMServer(
        args.model,
        host=args.host,
        port=args.port or None,
        python=args.python,
        extra_args=args.vllm_args,
        startup_timeout=args.startup_timeout,
        max_model_len=args.max_model_len,
        api_key=api_key,
        gpu_memory=args.gpu_memory,
        log_file=log_file,
        allow_server_media=args.allow_server_media,
        image_cache_pages=args.image_cache_pages,
    )
    follower = None if args.quiet else _LogFollower(log_file, sys.stderr)
    with _stop_on_signals() as stopping:
        try:
            if follower is not None:
                follower.start()
            logger.info("vLLM's log: %s", log_file)
            server.start()
            plan = server.plan.summary() if server.plan else ""
            print(f"vLLM is serving {server.served_model_name} at {server.base_url} ({plan})", flush=True)
            for warning in server.plan.warnings if server.plan else ():
                print(f"WARNING: {warning}", flush=True)
            print(flush=True)
            family = server.plan.family if server.plan else "text"
            print(_snippet(server.base_url, server.served_model_name, bool(api_key), family), flush=True)
            print("Press Ctrl-C to stop.", flush=True)
            process = server.process
            while process is not None and process.poll() is None:
                time.sleep(0.5)
            code = process.returncode if process is not None else None
            raise Qwen3RerankError(f"vLLM exited by itself with code {code}; see its log: {log_file}")
        except _Stop as stop:
            stopping()
            print(f"{PROG}: {stop} received, stopping vLLM", file=sys.stderr, flush=True)
            return 0
        finally:
            stopping()
            server.stop()
            if follower is not None:
                follower.stop()


@dataclass(frozen=True, slots=True)
class _Document:
    """One document to rerank: what the client scores, how the table shows it, and what
    ``--json`` prints for it (a text document's text; else its text and image sources as given).

    Args:
        value: what the client scores (a str, or a :class:`Content` of text and images).
        shown: the table's cell: the text, or the images' sources (then the text).
        dumped: ``--json``'s ``document``: the text, or ``{"text": ..., "image": [source, ...]}``.
    """

    value: str | Content
    shown: str
    dumped: str | dict[str, object]

    @classmethod
    def text(cls, text: str) -> _Document:
        return cls(text, text, text)

    @classmethod
    def with_images(cls, text: str, sources: Sequence[str], images: Sequence[Image]) -> _Document:
        """Text and images; ``sources`` are the images as the user wrote them, ``images`` what is read."""
        labels = ", ".join(_image_label(source) for source in sources)
        shown = f"[{labels}] {text}" if text else labels
        return cls(Content(text, images=images), shown, {"text": text, "image": list(sources)})

    @classmethod
    def image_file(cls, path: str) -> _Document:
        """An ``--image`` file: read as a path whatever it looks like, shown as written."""
        return cls(Content("", images=[Image(Path(path))]), path, {"text": "", "image": [path]})


def _image_label(source: str) -> str:
    """An image source for the table: a path as given, a ``data:`` URL shortened, any other URL
    without secrets (userinfo and query values, as the client shows URLs)."""
    kind = Image(source).kind
    if kind == "data-url":
        return f"{source.split(',', 1)[0]},…({len(source)} chars)"
    if kind in ("url", "file-url"):
        return redact_url(source)
    return source


@dataclass(frozen=True, slots=True)
class _ImagePolicy:
    """What image sources named by JSON lines on stdin (perhaps retrieved data, so untrusted) may
    be read, from the options; images named on the command line are the user's and always read.

    Args:
        roots: absolute directories local paths and ``file:`` URLs in JSON lines may be read
            from (``--image-root``; symlinks resolved, by the client's fetcher); none: refused.
        fetch: ``--fetch-images``: http(s) URLs are fetched by the client, public addresses only.
        hosts: ``--allow-image-host``: http(s) URLs are fetched from these hosts or networks only
            (private ones included).

    ``data:`` URLs are always read: they hold the image itself.
    """

    roots: tuple[str, ...] = ()
    fetch: bool = False
    hosts: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> _ImagePolicy:
        roots = tuple(os.path.abspath(root) for root in args.image_roots)
        return cls(roots, bool(args.fetch_images), tuple(args.image_hosts))

    def fetcher(self) -> UrlFetcher | None:
        """The client's fetcher for what the options allow (``None``: nothing but paths and data)."""
        if not (self.roots or self.fetch or self.hosts):
            return None
        # allowed_hosts: None is every public address; () no URL at all (file: URLs only).
        hosts = self.hosts if self.hosts else None if self.fetch else ()
        return UrlFetcher(allowed_hosts=hosts, file_roots=self.roots)

    def image(self, source: str, where: str) -> Image:
        """The image a JSON-lines ``image`` value names; a source the options do not allow is
        refused, naming the option that allows it. A local path is read through a ``file:`` URL,
        so that the client reads it only inside ``roots``."""
        image = Image(source)
        shown = _image_label(source)
        if image.kind == "path":
            if not self.roots:
                raise InvalidInput(
                    f"{where}: image {shown!r} is a local path; paths in JSON lines are read only inside "
                    "the directories given with --image-root DIR (JSON lines may come from retrieved "
                    "data): pass --image-root, or name the file with --image PATH"
                )
            return Image(Path(os.path.abspath(source)).as_uri())
        if image.kind == "file-url" and not self.roots:
            raise InvalidInput(
                f"{where}: image {shown!r} is a file: URL; it is read only inside the directories given "
                "with --image-root DIR"
            )
        if image.kind == "url" and not (self.fetch or self.hosts):
            raise InvalidInput(
                f"{where}: image {shown!r} is a URL, not fetched by default (JSON lines may come from "
                "retrieved data): pass --fetch-images to fetch public http(s) URLs, or "
                "--allow-image-host HOST for the hosts you trust"
            )
        return image


def _json_document(item: object, where: str, policy: _ImagePolicy) -> _Document:
    """One JSON-lines document: a JSON string, or an object with ``text`` and/or ``image``."""
    expected = (
        f'{where}: expected a JSON string, or an object with a "text" string and/or an "image" '
        "(a path or URL, or a list of them)"
    )
    if isinstance(item, str):
        return _Document.text(item)
    if not isinstance(item, dict):
        raise InvalidInput(expected)
    text, images = item.get("text"), item.get("image")
    if images is None:
        if not isinstance(text, str):
            raise InvalidInput(expected)
        return _Document.text(text)
    if text is not None and not isinstance(text, str):
        raise InvalidInput(f'{where}: "text" must be a string, got {json.dumps(text)[:80]}')
    sources = images if isinstance(images, list) else [images]
    if not sources or not all(isinstance(source, str) and source for source in sources):
        raise InvalidInput(
            f'{where}: "image" must be a path or URL, or a non-empty list of them, '
            f"got {json.dumps(images)[:80]}"
        )
    return _Document.with_images(text or "", sources, [policy.image(source, where) for source in sources])


def _read_documents(stream: TextIO, policy: _ImagePolicy) -> list[_Document]:
    """One document per line; JSON lines (a JSON string, or an object with ``"text"`` and/or
    ``"image"``) if the first line is JSON."""
    lines = [(number, line) for number, line in enumerate(stream.read().splitlines(), 1) if line.strip()]
    if not lines:
        return []
    try:
        first = json.loads(lines[0][1])
    except json.JSONDecodeError:
        return [_Document.text(line) for _, line in lines]
    if not isinstance(first, dict | str):
        return [_Document.text(line) for _, line in lines]
    documents: list[_Document] = []
    for number, line in lines:
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"stdin line {number}: not JSON ({exc.msg}), but the first line was") from exc
        documents.append(_json_document(item, f"stdin line {number}", policy))
    return documents


#: Characters shown escaped wherever the CLI prints something that came from its input (documents,
#: image sources, errors quoting them, log lines): a terminal acts on them instead of showing them.
#: C0 (tab and newline included: a cell stays one cell, a line one line), DEL, C1, the bidirectional
#: embeddings, overrides, isolates and marks (Trojan Source), and the Unicode line separators.
_UNSAFE = frozenset(
    (
        *range(0x00, 0x20),  # C0
        *range(0x7F, 0xA0),  # DEL, C1
        *(0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)),  # bidi
        *(0x2028, 0x2029),  # line and paragraph separators
    )
)
_ESCAPES = {code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in _UNSAFE}


#: Those JSON leaves raw (``json.dumps`` escapes C0 in strings; C0 outside them is its layout).
_JSON_ESCAPES = {code: f"\\u{code:04x}" for code in _UNSAFE if code >= 0x7F}


def terminal_safe(text: str) -> str:
    """``text`` with every character a terminal would act on written as an escape
    (``\\x1b``, ``\\u202e``): safe to print, whatever a document holds."""
    return text.translate(_ESCAPES)


def _json_safe(dumped: str) -> str:
    """JSON text with the characters of :func:`terminal_safe` that JSON leaves raw (C1,
    bidirectional controls, line separators) written as ``\\uXXXX`` escapes: the same JSON
    value, safe on a terminal. They can only appear inside strings, where the escape is valid."""
    return dumped.translate(_JSON_ESCAPES)


def _one_line(text: str, width: int) -> str:
    """A table cell: ``text`` made :func:`terminal_safe`, cut to ``width`` characters."""
    flat = terminal_safe(text)
    return flat if len(flat) <= width else flat[: max(width - 1, 0)] + "…"


def _query(args: argparse.Namespace) -> str | Content:
    """``--query``'s text, or a :class:`Content` of it and the ``--query-image`` files."""
    if not args.query_images:
        return str(args.query)
    return Content(args.query or "", images=[Image(Path(path)) for path in args.query_images])


def _documents(args: argparse.Namespace, policy: _ImagePolicy) -> list[_Document]:
    """The arguments' documents (texts, then one per ``--image`` file), else stdin's."""
    documents = [_Document.text(text) for text in args.documents]
    documents += [_Document.image_file(path) for path in args.images]
    if documents:
        return documents
    if sys.stdin.isatty():
        raise InvalidInput(
            "no documents: pass them as arguments or with --image, or one per line (or JSON lines) on stdin"
        )
    documents = _read_documents(sys.stdin, policy)
    if not documents:
        raise InvalidInput("no documents on stdin")
    return documents


def _rerank(args: argparse.Namespace) -> int:
    from .client import RerankClient

    policy = _ImagePolicy.from_args(args)
    query = _query(args)
    documents = _documents(args, policy)
    with RerankClient(
        args.base_url,
        model=args.model,
        api_key=args.api_key,
        timeout=args.timeout,
        image_fetcher=policy.fetcher(),
    ) as client:
        results = client.rerank(
            query, [d.value for d in documents], top_n=args.top_n, instruction=args.instruction
        )
    if args.json:
        rows = [
            {"rank": rank, "index": r.index, "score": r.score, "document": documents[r.index].dumped}
            for rank, r in enumerate(results, 1)
        ]
        print(_json_safe(json.dumps(rows, ensure_ascii=False, indent=2)))
        return 0
    width = max(shutil.get_terminal_size((120, 24)).columns - 24, 20)
    print(f"{'rank':>4}  {'index':>5}  {'score':>8}  document")
    for rank, result in enumerate(results, 1):
        shown = _one_line(documents[result.index].shown, width)
        print(f"{rank:>4}  {result.index:>5}  {result.score:>8.4f}  {shown}")
    return 0


def _make_fixture(args: argparse.Namespace) -> int:
    from .testing import QWEN3_0_6B_SHAPE, TINY_SHAPE, make_fixture_checkpoint, make_vl_fixture_checkpoint

    if args.vl:
        if args.shape != "tiny" or args.max_shard_size:
            raise SystemExit(
                "make-fixture: --vl builds the tiny Qwen3-VL shape only (no --shape, --max-shard-size)"
            )
        vl_path = make_vl_fixture_checkpoint(args.dir, tied=not args.untied, dtype=args.dtype, seed=args.seed)
        kind = "untied" if args.untied else "tied"
        print(f"wrote {vl_path}: a random-weight tiny Qwen3-VL-Reranker checkpoint ({kind}, {args.dtype})")
        return 0
    shape = {"tiny": TINY_SHAPE, "0.6b": QWEN3_0_6B_SHAPE}[args.shape]
    path = make_fixture_checkpoint(
        args.dir,
        tied=not args.untied,
        dtype=args.dtype,
        seed=args.seed,
        shape=shape,
        max_shard_size=args.max_shard_size,
    )
    kind = "untied" if args.untied else "tied"
    print(
        f"wrote {path}: a random-weight {args.shape} Qwen3-Reranker-shaped checkpoint ({kind}, {args.dtype})"
    )
    return 0


# --- the parser -------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number (0 for a free one), got {text}")
    return value


#: What ``add_subparsers`` returns: each subcommand is added to it (argparse's own type).
_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: the global options, then one ``_add_*_parser`` per subcommand."""
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and debug logs"
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Convert, serve and query Qwen3-Reranker checkpoints with vLLM.",
        epilog=f"Run `{PROG} COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", default=False, help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # In the order `--help` lists them; a new subcommand is one more _add_*_parser function, with
    # its handler beside the others above, added here. `batch` lives in its own product (Ray).
    _add_convert_parser(commands, debug)
    _add_serve_parser(commands, debug)
    _add_rerank_parser(commands, debug)
    _add_make_fixture_parser(commands, debug)
    add_batch_parser(commands, debug)
    return parser


def _add_convert_parser(commands: _Commands, debug: argparse.ArgumentParser) -> None:
    """``convert SRC DST``: :func:`_convert`."""
    convert = commands.add_parser(
        "convert",
        parents=[debug],
        help="convert an original checkpoint into a one-logit seq-cls checkpoint",
        description=(
            "Convert an original Qwen3-Reranker checkpoint (Qwen3ForCausalLM) into a "
            "Qwen3ForSequenceClassification checkpoint with score.weight = W[yes] - W[no], streaming "
            "tensors (memory does not grow with the model). vLLM serves the result with --runner "
            "pooling alone; transformers and sentence-transformers load it as a cross-encoder "
            "(with Qwen3-Reranker's prompt in its chat_template.jinja)."
        ),
    )
    convert.add_argument("src", metavar="SRC", help="the original checkpoint: a directory or a hub id")
    convert.add_argument("dst", metavar="DST", help="a new or empty directory for the converted checkpoint")
    convert.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="read the result back against the original: every tensor, score.weight = W[yes] - W[no], "
        "config and tokenizer files (streaming, as cheap as converting); default: on",
    )
    convert.add_argument(
        "--verify-model",
        action="store_true",
        help="also compare the converted logits with the original's on templated pairs, with transformers "
        "(needs torch; loads both models one at a time in float32: about 4 bytes per parameter of memory)",
    )
    convert.add_argument(
        "--link", action="store_true", help="hard-link shards that need no change instead of copying them"
    )
    convert.add_argument("--yes-token", default="yes", help="the token that means relevant (default: yes)")
    convert.add_argument("--no-token", default="no", help="the token that means not relevant (default: no)")
    convert.set_defaults(handler=_convert)


def _add_serve_parser(commands: _Commands, debug: argparse.ArgumentParser) -> None:
    """``serve MODEL [-- VLLM_ARGS ...]``: :func:`_serve` (:func:`main` splits off what follows ``--``)."""
    serve = commands.add_parser(
        "serve",
        parents=[debug],
        help="start a vLLM server for a checkpoint and print how to use it",
        usage=f"{PROG} serve [options] MODEL [-- VLLM_ARGS ...]",
        description=(
            "Start vLLM for an original or converted Qwen3-Reranker (text or Qwen3-VL) checkpoint with "
            "the right flags, wait until it scores correctly, print its URL and ready-to-paste "
            "LangChain/LlamaIndex code, and stream its log to stderr. Ctrl-C or SIGTERM stops it and "
            "every worker."
        ),
        epilog=(
            "Arguments after `--` go to vLLM unchanged and win over the chosen ones, e.g. "
            "`-- --dtype bfloat16 --block-size 64` or `-- --data-parallel-size 2` (one engine per "
            "replica, each with its own KV cache). On vLLM's CPU build the dtype follows the CPU: "
            "float32 when it has no native bfloat16 (no avx512_bf16/amx_bf16), else the checkpoint's."
        ),
    )
    serve.add_argument("model", metavar="MODEL", help="a checkpoint directory or a hub id")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port (default: 8000; 0 for a free one)")
    serve.add_argument(
        "--python",
        metavar="PATH",
        help=f"the Python that has vLLM installed (default: ${SERVER_PYTHON_ENV}, else this one)",
    )
    serve.add_argument("--max-model-len", type=_positive_int, help="longest prompt in tokens (default: 8192)")
    serve.add_argument(
        "--api-key",
        help="require this API key on vLLM's /v1, /v2, /inference and /cohere paths (vLLM leaves /score, "
        "/rerank, /tokenize, /metrics, ... open: on a non-loopback --host, keep the port private); "
        f"default: ${VLLM_API_KEY_ENV}. Prefer the variable: a command line is readable by every local user. "
        "vLLM gets the key through its environment, never its command line",
    )
    serve.add_argument(
        "--startup-timeout", type=float, default=600.0, help="seconds to wait for the server (default: 600)"
    )
    serve.add_argument(
        "--gpu-memory",
        type=float,
        metavar="GIB",
        help="on a GPU, the most the server may hold per GPU in GiB (weights, activations, KV cache); "
        "default: what the model needs, within vLLM's 92%% of the device",
    )
    serve.add_argument("--log-file", help="write vLLM's log here (default: a temporary file)")
    serve.add_argument("--quiet", action="store_true", help="do not stream vLLM's log to stderr")
    serve.add_argument(
        "--allow-server-media",
        action="store_true",
        help="accept --allowed-media-domains / --allowed-local-media-path after --: vLLM then fetches the "
        "image URLs and reads the files a request names (off: the server fetches and reads nothing)",
    )
    serve.add_argument(
        "--image-cache-pages",
        type=_non_negative_int,
        metavar="N",
        help="Qwen3-VL: how many full-size pages vLLM's encoder cache holds, so that a page scored again "
        "skips the vision encoder (default: the plan's, fewer where memory is short; 0: vLLM's own sizing)",
    )
    serve.set_defaults(handler=_serve, vllm_args=[])


def _add_rerank_parser(commands: _Commands, debug: argparse.ArgumentParser) -> None:
    """``rerank ... [DOC ...]``: :func:`_rerank`."""
    rerank = commands.add_parser(
        "rerank",
        parents=[debug],
        help="rerank documents (text, images, or both) for a query against a running server",
        usage=(
            f"{PROG} rerank [options] (--query TEXT | --query-image PATH ...) [--image PATH ...] [DOC ...]"
        ),
        description=(
            "Score documents for a query with the reranker's template (Qwen3-Reranker or Qwen3-VL-"
            "Reranker, as the server serves) and print them best first. Documents are the DOC "
            "arguments and one image-only document per --image file, or else come from stdin: one per "
            'line, or JSON lines, each a JSON string or an object with a "text" string and/or an '
            '"image" (one source or a list of them), e.g. {"text": "page 7", "image": "data:image/png;'
            'base64,..."}. Images need a Qwen3-VL-Reranker server; they are prepared like the official '
            "reranker's, by this command, and sent inline (the server reads no file and fetches no URL)."
        ),
        epilog=(
            "Files named by --image and --query-image are read as paths. Image sources in JSON lines may "
            "come from retrieved data, so by default only data: URLs are read from them: local paths and "
            "file: URLs only inside an --image-root DIR (relative paths from the current directory; "
            "symlinks resolved), http(s) URLs only with --fetch-images (public addresses) or "
            "--allow-image-host HOST (only those). An image shows in the table as its source."
        ),
    )
    rerank.add_argument(
        "--base-url",
        help=f"the server (default: ${BASE_URL_ENV}, else {DEFAULT_BASE_URL})",
    )
    rerank.add_argument(
        "--query", "-q", help="the query's text (with --query-image: the text beside the query's images)"
    )
    rerank.add_argument(
        "--query-image",
        action="append",
        default=[],
        dest="query_images",
        metavar="PATH",
        help="an image file the query shows (repeat for several; before the query's text, in order)",
    )
    rerank.add_argument(
        "--image",
        action="append",
        default=[],
        dest="images",
        metavar="PATH",
        help="an image file to rank as a document of its own (repeatable; after the DOC arguments)",
    )
    rerank.add_argument(
        "--image-root",
        action="append",
        default=[],
        dest="image_roots",
        metavar="DIR",
        help="read local paths and file: URLs in JSON lines on stdin, only inside this directory "
        "(repeatable; default: none are read); once given, --image and --query-image files must lie "
        "inside one too: nothing outside the roots is read",
    )
    fetching = rerank.add_mutually_exclusive_group()
    fetching.add_argument(
        "--fetch-images",
        action="store_true",
        help="fetch http(s) image URLs in JSON lines on stdin, from public addresses only (this command "
        "fetches them, never the server)",
    )
    fetching.add_argument(
        "--allow-image-host",
        action="append",
        default=[],
        dest="image_hosts",
        metavar="HOST",
        help="fetch http(s) image URLs in JSON lines from this host (cdn.example.com, *.example.com) or "
        "network (10.0.0.0/8, 127.0.0.1) only, private ones included (repeatable)",
    )
    rerank.add_argument("--instruction", help="the task instruction (default: the model family's own)")
    rerank.add_argument("--top-n", type=_positive_int, help="print only the best N")
    rerank.add_argument("--model", help="the served model name (default: discovered from /v1/models)")
    rerank.add_argument("--api-key", help=f"API key (default: ${API_KEY_ENV})")
    rerank.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds for the server to answer a request (default: {DEFAULT_TIMEOUT:g}, the client's)",
    )
    rerank.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rerank.add_argument(
        "documents", nargs="*", metavar="DOC", help="text documents (default, without --image: read stdin)"
    )
    rerank.set_defaults(handler=_rerank)


def _add_make_fixture_parser(commands: _Commands, debug: argparse.ArgumentParser) -> None:
    """``make-fixture DIR``: :func:`_make_fixture`."""
    fixture = commands.add_parser(
        "make-fixture",
        parents=[debug],
        help="write a random-weight Qwen3-Reranker-shaped checkpoint for tests",
        description=(
            "Write a random-weight Qwen3ForCausalLM with the real Qwen3 tokenizer: every token id and "
            "code path is the real one, the scores mean nothing. Needs the `testing` extra."
        ),
    )
    fixture.add_argument("dir", metavar="DIR", help="the directory to write")
    fixture.add_argument("--untied", action="store_true", help="a separate lm_head, like the 8B")
    fixture.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default="float32", help="default: float32"
    )
    fixture.add_argument("--seed", type=int, default=0, help="the same seed gives the same weights")
    fixture.add_argument(
        "--shape", choices=["tiny", "0.6b"], default="tiny", help="tiny (default) or Qwen3-Reranker-0.6B's"
    )
    fixture.add_argument("--max-shard-size", help='shard the weights, e.g. "500MB"')
    fixture.add_argument(
        "--vl", action="store_true", help="a tiny Qwen3-VL-Reranker (Qwen3VLForConditionalGeneration) instead"
    )
    fixture.set_defaults(handler=_make_fixture)


def _split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split at the first ``--``: argparse cannot take ``--`` after a subcommand's options."""
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1 :]


@contextlib.contextmanager
def _logging_to_stderr(debug: bool) -> Iterator[None]:
    """The library's logs on stderr for the duration of the command, then as they were."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SafeFormatter(f"{PROG}: %(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _error_line(exc: BaseException) -> str:
    """The error's first line (split at newlines only), :func:`terminal_safe`: it may quote input."""
    first = str(exc).strip().split("\n", 1)[0].rstrip(":")
    if not isinstance(exc, Qwen3RerankError):
        first = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return terminal_safe(first)


class _SafeFormatter(logging.Formatter):
    """Log lines with their message :func:`terminal_safe` (a log line may quote a document's
    image URL); a ``--debug`` traceback, appended after it, stays as Python wrote it."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return terminal_safe(super().formatMessage(record))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    own, passthrough = _split_passthrough(args_list)
    parser = build_parser()
    args = parser.parse_args(own)
    if args.command == "rerank" and args.query is None and not args.query_images:
        parser.error("rerank: give the query: --query TEXT, --query-image PATH, or both")
    if passthrough:
        if args.command in ("serve", "batch"):
            args.vllm_args = passthrough
        elif args.command == "rerank":
            args.documents = [*args.documents, *passthrough]
        else:
            parser.error(f"unexpected arguments after --: {' '.join(passthrough)}")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        with _logging_to_stderr(args.debug):
            return handler(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {_error_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover - `python -m qwen3_vllm_rerank.cli`
    raise SystemExit(main())
