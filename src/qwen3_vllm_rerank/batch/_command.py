"""``qwen3-vllm-rerank batch IN OUT``: :func:`~._dataset.rerank_dataset` over files.

``IN``: a Parquet or JSON-lines file, or a directory of them (``--input-format`` when the names do not
say). ``OUT``: a directory. With Parquet output (the default) the run writes ``OUT`` as it goes and is
resumable: the same command again scores only the rows ``OUT`` does not hold yet. With
``--output-format jsonl`` the rows are scored into ``--write-to DIR`` (resumable) or in memory of the
cluster, then written to ``OUT`` as JSON lines. The API key of ``--base-url`` servers is read from
the client's environment variable (``API_KEY_ENV``) only, never from the command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..client import API_KEY_ENV
from ..errors import InvalidInput
from ..images import UrlFetcher
from ._columns import ERROR, SCORE

__all__ = ["add_parser", "run"]

_FORMATS = ("parquet", "jsonl")


def add_parser(subparsers: Any, *parents: argparse.ArgumentParser) -> None:
    """Add the ``batch`` command to the CLI's subcommands (argparse's ``add_subparsers`` result).

    ``parents``: the options every subcommand shares (the CLI's ``--debug``). vLLM flags for
    ``--model`` go after ``--``; the CLI's ``main`` hands them over as ``vllm_args``.
    """
    batch = subparsers.add_parser(
        "batch",
        parents=list(parents),
        usage="%(prog)s [options] IN OUT (--model MODEL | --base-url URLS) [-- VLLM_ARGS ...]",
        help="score every (query, document) row of a Parquet / JSON-lines file on Ray Data (resumable)",
        description="Score every row of a file on Ray Data; Parquet output is resumable (rerun to finish).",
    )
    batch.add_argument("input", help="a Parquet or JSON-lines file, or a directory of them")
    batch.add_argument("output", help="the output directory (Parquet: resumable)")
    engine = batch.add_mutually_exclusive_group(required=True)
    engine.add_argument("--model", help="score with Ray's vLLM stage on this checkpoint directory or hub id")
    engine.add_argument(
        "--base-url",
        help=f"score with these running servers (comma-separated); key: ${API_KEY_ENV}",
    )
    batch.add_argument(
        "--query-column", default="query", help="the column holding the query (default: query)"
    )
    batch.add_argument(
        "--document-column", default="document", help="the column holding the document (default: document)"
    )
    batch.add_argument("--id-column", help="a column that tells identical pairs apart (part of the row key)")
    batch.add_argument(
        "--image-column",
        help="--base-url with a Qwen3-VL reranker: a column holding each row's page (image bytes or a path)",
    )
    batch.add_argument(
        "--image-root",
        action="append",
        default=[],
        metavar="DIR",
        help="a directory the --image-column paths may be read from (repeatable; none: paths are refused)",
    )
    batch.add_argument("--instruction", help="the instruction (default: the model family's)")
    batch.add_argument("--write-to", type=Path, help="resumable Parquet directory (default: OUT for Parquet)")
    batch.add_argument("--input-format", choices=_FORMATS, help="default: from IN's file names")
    batch.add_argument("--output-format", choices=_FORMATS, default="parquet", help="default: parquet")
    batch.add_argument(
        "--long-documents", choices=("truncate", "error"), default="truncate", help="default: truncate"
    )
    batch.add_argument("--batch-size", type=int, default=64, help="rows per batch (default: 64)")
    batch.add_argument(
        "--concurrency", type=int, default=1, help="vLLM workers (--model) or client actors (--base-url)"
    )
    batch.add_argument(
        "--num-cpus", type=int, help="CPUs of the local Ray cluster started when $RAY_ADDRESS is not set"
    )
    batch.set_defaults(handler=run, vllm_args=[])


def _input_format(path: Path, given: str | None) -> str:
    if given is not None:
        return given
    names = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    suffixes = {p.suffix.lower() for p in names}
    if suffixes and suffixes <= {".parquet"}:
        return "parquet"
    if suffixes and suffixes <= {".jsonl", ".json"}:
        return "jsonl"
    raise InvalidInput(
        f"cannot tell the format of {path} from its file names ({sorted(suffixes)}): pass --input-format"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``batch``; prints how many rows were scored and how many failed, returns 0."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError("the batch command needs Ray Data: pip install 'qwen3-vllm-rerank[ray]'") from exc
    from ._dataset import rerank_dataset

    source = Path(args.input)
    if not source.exists():
        raise InvalidInput(f"{source} does not exist: pass a Parquet or JSON-lines file or directory")
    output = Path(args.output)
    write_to = (
        args.write_to if args.write_to is not None else (output if args.output_format == "parquet" else None)
    )
    if not ray.is_initialized():
        ray.init(num_cpus=args.num_cpus, include_dashboard=False)
    if _input_format(source, args.input_format) == "parquet":
        ds = ray.data.read_parquet(str(source))
    else:
        ds = ray.data.read_json(str(source), lines=True)
    result = rerank_dataset(
        ds,
        query=args.query_column,
        document=args.document_column,
        model=args.model,
        base_url=args.base_url,
        instruction=args.instruction,
        write_to=write_to,
        id_column=args.id_column,
        image=args.image_column,
        image_fetcher=UrlFetcher(allowed_hosts=(), file_roots=tuple(args.image_root))
        if args.image_root
        else None,
        long_documents=args.long_documents,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        extra_args=list(args.vllm_args),
    )
    if write_to is None or write_to != output:
        writer = result.write_parquet if args.output_format == "parquet" else result.write_json
        writer(str(output))
        result = (ray.data.read_parquet if args.output_format == "parquet" else ray.data.read_json)(
            str(output)
        )
    counts = result.select_columns([SCORE, ERROR]).to_pandas()
    failed = int(counts[ERROR].notna().sum())
    print(
        f"{len(counts)} rows in {output}: {len(counts) - failed} scored, {failed} not (see {ERROR})",
        file=sys.stdout,
    )
    return 0
