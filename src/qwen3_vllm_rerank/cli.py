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
from pathlib import Path
from types import FrameType
from typing import IO, Literal, TextIO

from . import __version__
from .client import DEFAULT_TIMEOUT
from .errors import InvalidInput, Qwen3RerankError

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


def _snippet(base_url: str, model: str, api_key: bool) -> str:
    key = (
        "\n    # the server requires an API key: pass api_key=... or set $QWEN3_VLLM_RERANK_API_KEY"
        if api_key
        else ""
    )
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
    )


#: Where ``serve`` reads the server's API key from (vLLM's own variable), off the command line.
API_KEY_ENV = "VLLM_API_KEY"


def _serve(args: argparse.Namespace) -> int:
    from .serve import VLLMServer

    if args.api_key:
        logger.warning(
            "--api-key on the command line is readable by every local user (ps, /proc/PID/cmdline): "
            "set $%s instead",
            API_KEY_ENV,
        )
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
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
        log_file=log_file,
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
            print(_snippet(server.base_url, server.served_model_name, bool(api_key)), flush=True)
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


def _read_documents(stream: TextIO) -> list[str]:
    """One document per line; JSON lines (``{"text": ...}`` or a JSON string) if the first line is JSON."""
    lines = [(number, line) for number, line in enumerate(stream.read().splitlines(), 1) if line.strip()]
    if not lines:
        return []
    try:
        first = json.loads(lines[0][1])
    except json.JSONDecodeError:
        return [line for _, line in lines]
    if not isinstance(first, dict | str):
        return [line for _, line in lines]
    documents: list[str] = []
    for number, line in lines:
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"stdin line {number}: not JSON ({exc.msg}), but the first line was") from exc
        if isinstance(item, dict):
            item = item.get("text")
        if not isinstance(item, str):
            raise InvalidInput(
                f'stdin line {number}: expected a JSON string or an object with a "text" string, '
                f"got {line[:80]}"
            )
        documents.append(item)
    return documents


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(width - 1, 0)] + "…"


def _rerank(args: argparse.Namespace) -> int:
    from .client import RerankClient

    documents = list(args.documents)
    if not documents:
        if sys.stdin.isatty():
            raise InvalidInput(
                "no documents: pass them as arguments, or one per line (or JSON lines) on stdin"
            )
        documents = _read_documents(sys.stdin)
        if not documents:
            raise InvalidInput("no documents on stdin")
    with RerankClient(args.base_url, model=args.model, api_key=args.api_key, timeout=args.timeout) as client:
        results = client.rerank(args.query, documents, top_n=args.top_n, instruction=args.instruction)
    if args.json:
        rows = [
            {"rank": rank, "index": r.index, "score": r.score, "document": documents[r.index]}
            for rank, r in enumerate(results, 1)
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    width = max(shutil.get_terminal_size((120, 24)).columns - 24, 20)
    print(f"{'rank':>4}  {'index':>5}  {'score':>8}  document")
    for rank, result in enumerate(results, 1):
        shown = _one_line(documents[result.index], width)
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


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number (0 for a free one), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
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
        help="the Python that has vLLM installed (default: $QWEN3_VLLM_RERANK_SERVER_PYTHON, else this one)",
    )
    serve.add_argument("--max-model-len", type=_positive_int, help="longest prompt in tokens (default: 8192)")
    serve.add_argument(
        "--api-key",
        help="require this API key on vLLM's /v1, /v2, /inference and /cohere paths (vLLM leaves /score, "
        "/rerank, /tokenize, /metrics, ... open: on a non-loopback --host, keep the port private); "
        f"default: ${API_KEY_ENV}. Prefer the variable: a command line is readable by every local user. "
        "vLLM gets the key through its environment, never its command line",
    )
    serve.add_argument(
        "--startup-timeout", type=float, default=600.0, help="seconds to wait for the server (default: 600)"
    )
    serve.add_argument("--log-file", help="write vLLM's log here (default: a temporary file)")
    serve.add_argument("--quiet", action="store_true", help="do not stream vLLM's log to stderr")
    serve.set_defaults(handler=_serve, vllm_args=[])

    rerank = commands.add_parser(
        "rerank",
        parents=[debug],
        help="rerank documents for a query against a running server",
        description=(
            "Score documents for a query with the Qwen3-Reranker template and print them best first. "
            "Documents come from the arguments, or from stdin: one per line, or JSON lines "
            '(each a JSON string or an object with a "text" string).'
        ),
    )
    rerank.add_argument(
        "--base-url",
        help="the server (default: $QWEN3_VLLM_RERANK_BASE_URL, else http://127.0.0.1:8000)",
    )
    rerank.add_argument("--query", "-q", required=True, help="the query")
    rerank.add_argument("--instruction", help="the task instruction (default: Qwen's web-search one)")
    rerank.add_argument("--top-n", type=_positive_int, help="print only the best N")
    rerank.add_argument("--model", help="the served model name (default: discovered from /v1/models)")
    rerank.add_argument("--api-key", help="API key (default: $QWEN3_VLLM_RERANK_API_KEY)")
    rerank.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds for the server to answer a request (default: {DEFAULT_TIMEOUT:g}, the client's)",
    )
    rerank.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rerank.add_argument("documents", nargs="*", metavar="DOC", help="documents (default: read stdin)")
    rerank.set_defaults(handler=_rerank)

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
    return parser


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
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
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
    lines = str(exc).strip().splitlines()
    first = lines[0].rstrip(":") if lines else ""
    if not isinstance(exc, Qwen3RerankError):
        first = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return first


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    own, passthrough = _split_passthrough(args_list)
    parser = build_parser()
    args = parser.parse_args(own)
    if passthrough:
        if args.command == "serve":
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
