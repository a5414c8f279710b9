"""A stand-in vLLM installation for tests of the launcher that need no real server.

:func:`fake_vllm` writes a directory for ``PYTHONPATH`` holding a ``vllm`` distribution of a given
version (what :class:`~qwen3_vllm_rerank.VLLMServer` reads before planning) and a fake
``vllm.entrypoints.openai.api_server`` that records how it was started, as the kernel shows it to
every local user (``/proc/self/cmdline``) and its environment's ``VLLM_API_KEY`` and ``HF_TOKEN``, into
``$FAKE_VLLM_RECORD`` when that is set, then exits with code :data:`FAKE_EXIT_CODE`.

With ``FAKE_VLLM_SERVE=1`` it serves instead, on the ``--host`` / ``--port`` it was given, like a reranker
that passes the launcher's text self-check: ``/health`` answers 200, ``/v1/score`` gives the documents
distinct scores (``(i + 1) / (n + 1)``). ``FAKE_VLLM_BIND_DELAY``: seconds to wait before binding (vLLM
imports for seconds first); ``FAKE_VLLM_BIND_IN_CHILD=1``: bind and serve in a forked child process, as
vLLM's API-server processes may. If the port is taken it exits with :data:`FAKE_BIND_FAILED`, as vLLM does.
"""

from __future__ import annotations

from pathlib import Path

FAKE_EXIT_CODE = 3
FAKE_BIND_FAILED = 4

FAKE_API_SERVER = f"""
import json, os, socket, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
with open("/proc/self/cmdline", "rb") as handle:
    cmdline = handle.read().split(b"\\0")
record = {{
    "cmdline": [part.decode() for part in cmdline],
    "key": os.environ.get("VLLM_API_KEY"),
    "hf_token": os.environ.get("HF_TOKEN"),
    "pid": os.getpid(),
}}
if os.environ.get("FAKE_VLLM_RECORD"):
    with open(os.environ["FAKE_VLLM_RECORD"], "w") as handle:
        json.dump(record, handle)
if not os.environ.get("FAKE_VLLM_SERVE"):
    sys.exit({FAKE_EXIT_CODE})


class Handler(BaseHTTPRequestHandler):
    def _answer(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._answer({{}})

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        count = len(request.get("text_2") or request.get("documents") or [])
        self._answer({{"data": [{{"index": i, "score": (i + 1) / (count + 1)}} for i in range(count)]}})

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ":" in sys.argv[sys.argv.index("--host") + 1] else socket.AF_INET


time.sleep(float(os.environ.get("FAKE_VLLM_BIND_DELAY") or 0))
if os.environ.get("FAKE_VLLM_BIND_IN_CHILD") and os.fork():
    os.wait()
    sys.exit(0)
host, port = sys.argv[sys.argv.index("--host") + 1], int(sys.argv[sys.argv.index("--port") + 1])
try:
    server = Server((host, port), Handler)
except OSError:
    sys.exit({FAKE_BIND_FAILED})
server.serve_forever()
"""


def fake_vllm(root: Path, version: str = "0.32.0") -> Path:
    """The directory to put on ``PYTHONPATH`` (created under ``root``)."""
    package = root / "fake" / "vllm" / "entrypoints" / "openai"
    package.mkdir(parents=True)
    for level in (package.parent.parent, package.parent, package):
        (level / "__init__.py").write_text("")
    (package / "api_server.py").write_text(FAKE_API_SERVER)
    metadata = root / "fake" / f"vllm-{version}.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
    return root / "fake"
