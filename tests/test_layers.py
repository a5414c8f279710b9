"""The package's import graph, read from the source with ``ast``: no cycle, no import against the layers,
no reaching into another product's private modules, and every product's ``__init__`` re-exports exactly
its ``__all__``.

Every import counts: at module level, inside functions, under ``if TYPE_CHECKING:``; relative imports are
resolved against the importing module. A *unit* is a product folder (``client``, ``images``, ``serve``,
``convert``, ``testing``) or a top-level module; a module may always import modules of its own unit.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "qwen3_vllm_rerank"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE
PRODUCTS = ("client", "images", "serve", "convert", "testing", "batch")

BOTTOM = frozenset({"errors", "_checkpoints", "_protocol", "_redaction", "_streams", "prompt"})
_EVERYTHING = BOTTOM | {*PRODUCTS, "adapters", "cli", "__init__"}
#: The layers, as one table: unit -> the units it may import (besides its own modules). An entry
#: ``product._module`` allows that one private module of another product, and nothing else of it.
#: ``__init__`` is the package's own face (``qwen3_vllm_rerank``), which re-exports the products.
LAYERS: dict[str, frozenset[str]] = {
    **dict.fromkeys(BOTTOM, BOTTOM),
    "images": BOTTOM,
    # client._inputs drives the image pipeline of one call: its per-image outcomes and the kind table.
    "client": BOTTOM | {"images", "images._calls", "images._failures", "images._sources"},
    "serve": BOTTOM | {"images._geometry"},
    "convert": BOTTOM | {"images._geometry"},
    # The option table (client._options) is the contract the adapters declare their settings from.
    "adapters": BOTTOM | {"client", "client._options", "images"},
    "__init__": BOTTOM | {"client", "images", "serve", "convert"},
    # The text fixture writes the Sentence Transformers files with the converter's own writer.
    "testing": (_EVERYTHING - {"adapters", "cli"}) | {"convert._sentence_transformers"},
    # The batch engine prepares rows with the client's own pieces and plans engines with serve's; a
    # row's page is an images.Image under the client's source policy.
    "batch": BOTTOM
    | {
        "client",
        "images",
        "client._budget",
        "client._discovery",
        "client._flow",
        "client._inputs",
        "client._sanitize",
        "client._tokens",
        "serve",
        "serve._install",
        "serve._secrets",
        "serve._server",
    },
    "cli": _EVERYTHING | {"batch", "batch._command"},  # the only non-test importer of testing
}

#: Imports against these rules that the tree still holds, as (importer, imported) modules: none. An
#: entry is listed, not allowed: the test fails on any other violation and on a listed one that is
#: gone, so this set only shrinks; never add to it to make a new import pass.
KNOWN_VIOLATIONS: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True, slots=True)
class Module:
    """One module of the package: ``name`` relative to the package (``client._flow``, ``errors``,
    ``__init__`` for the package itself, ``convert`` for ``convert/__init__.py``)."""

    name: str
    path: Path

    @property
    def unit(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


def _modules() -> dict[str, Module]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = Module(".".join(parts), path)
    return found


def _imported_names(module: Module) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) of everything ``module`` imports, candidates for a module first:
    ``from a import b`` yields ``a.b`` (which may be a name inside ``a``, resolved by the caller)."""
    tree = ast.parse(module.path.read_text(), filename=str(module.path))
    own = [PACKAGE, *module.name.split(".")] if module.name != "__init__" else [PACKAGE]
    package = own if module.is_package else own[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:
                yield node.lineno, f"{prefix}.{alias.name}" if alias.name != "*" else prefix


def _target(dotted: str, modules: dict[str, Module]) -> str | None:
    """The package module a dotted import name lands in (``None``: outside the package)."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE:
        return None
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[1:end]) or "__init__"
        if name in modules:
            return name
    return None  # pragma: no cover - a name under the package that no file defines


@dataclass(frozen=True, slots=True)
class Graph:
    modules: dict[str, Module]
    #: importer -> imported -> the first line of that import
    edges: dict[str, dict[str, int]]

    @property
    def size(self) -> str:
        count = sum(len(targets) for targets in self.edges.values())
        return f"the graph has {len(self.modules)} units (modules) and {count} edges"


@functools.cache
def _graph() -> Graph:
    modules = _modules()
    edges: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, module in modules.items():
        for line, dotted in _imported_names(module):
            target = _target(dotted, modules)
            if target is not None and target != name:
                edges[name].setdefault(target, line)
    return Graph(modules, edges)


def _cycles(graph: Graph) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph.edges):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.edges[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


@dataclass(frozen=True, slots=True)
class Violation:
    importer: str
    imported: str
    message: str


def _layer_violations(graph: Graph) -> list[Violation]:
    """Imports against :data:`LAYERS` and imports of another product's private module."""
    found = []
    for name, targets in sorted(graph.edges.items()):
        module = graph.modules[name]
        allowed = LAYERS.get(module.unit)
        if allowed is None:
            message = f"{PACKAGE}.{name} belongs to no layer: add its unit {module.unit!r} to LAYERS"
            found.append(Violation(name, "", message))
            continue
        for target, line in sorted(targets.items()):
            unit, where = target.split(".", 1)[0], f"{module.path.relative_to(SRC.parent)}:{line}"
            if unit == module.unit or target in allowed:
                continue
            if unit not in allowed:
                message = f"{where}: {name} ({module.unit}) imports {target} ({unit}): not allowed by LAYERS"
                found.append(Violation(name, target, message))
            elif unit in PRODUCTS and target != unit:
                message = (
                    f"{where}: {name} imports {target}, a private module of {unit}: import it from {unit}"
                )
                found.append(Violation(name, target, message))
    return found


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    cycles = [" -> ".join(component) for component in _cycles(graph)]
    assert not cycles, "\n  ".join([f"import cycles ({graph.size}):", *cycles])


def test_no_import_runs_against_the_layers() -> None:
    graph = _graph()
    found = _layer_violations(graph)
    problems = [v.message for v in found if (v.importer, v.imported) not in KNOWN_VIOLATIONS]
    fixed = KNOWN_VIOLATIONS - {(v.importer, v.imported) for v in found}
    problems += [f"{a} -> {b} is fixed: remove it from KNOWN_VIOLATIONS" for a, b in sorted(fixed)]
    assert not problems, "\n  ".join([f"imports against the layers ({graph.size}):", *problems])


def test_the_reader_sees_every_kind_of_import() -> None:
    """The graph is real: the kinds of import the rules depend on are all found (a reader that
    missed function-level, TYPE_CHECKING or relative imports would pass everything)."""
    edges = _graph().edges
    assert "testing" in edges["cli"], "the CLI's function-level import of testing"
    assert "_checkpoints" in edges["prompt"], "prompt's `if TYPE_CHECKING:` import"
    assert "convert._conversion_plan" in edges["convert._verify"], "a relative import inside a product"
    assert "errors" in edges["convert._reading"], "a `from ..errors import` two levels up"
    assert {"convert", "errors"} <= set(edges["__init__"]), "the package's own re-exports"


# --- each product's __init__ re-exports exactly its __all__ -------------------------------------


def _public_bindings(path: Path) -> tuple[set[str], set[str] | None]:
    """(public names an ``__init__`` binds at module level, its ``__all__`` or ``None``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    bound: set[str] = set()
    declared: set[str] | None = None
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            bound |= {alias.asname or alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            bound |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id == "__all__" and node.value is not None:
                    declared = set(ast.literal_eval(node.value))
                elif isinstance(target, ast.Name):
                    bound.add(target.id)
    return {name for name in bound if not name.startswith("_")}, declared


@pytest.mark.parametrize("product", [*PRODUCTS, "__init__"])
def test_each_product_init_re_exports_exactly_its_all(product: str) -> None:
    """An ``__init__`` binds (imports, defines) exactly the names of its ``__all__``: nothing used
    privately, nothing exported that is not declared; the package's own face included."""
    path = SRC / ("__init__.py" if product == "__init__" else f"{product}/__init__.py")
    bound, declared = _public_bindings(path)
    assert declared is not None, f"{path} has no literal __all__"
    assert bound == declared, (
        f"{path}: bound but not in __all__: {sorted(bound - declared)}; "
        f"in __all__ but not bound: {sorted(declared - bound)}"
    )


def test_the_rules_catch_what_they_claim() -> None:
    """On a made-up graph: a two-module cycle is found, serve importing the client is against the
    layers, and the client reaching into images' private module is caught while serve's allowed
    import of images._geometry is not."""
    names = ["serve._plan", "client._flow", "images._preparing", "images._geometry", "images", "errors"]
    modules = {name: Module(name, SRC / (name.replace(".", "/") + ".py")) for name in names}
    edges = {name: {} for name in names} | {
        "serve._plan": {"client._flow": 1, "images._geometry": 2},
        "client._flow": {"images._preparing": 3, "images": 4, "errors": 5},
        "images._preparing": {"errors": 6, "images": 7},
        "images": {"images._preparing": 8},
    }
    graph = Graph(modules, edges)
    assert _cycles(graph) == [["images", "images._preparing"]]
    found = {(v.importer, v.imported) for v in _layer_violations(graph)}
    assert found == {("serve._plan", "client._flow"), ("client._flow", "images._preparing")}


# --- the adapter distributions (integrations/*) use the core's faces only ------------------------

INTEGRATIONS = SRC.parents[1] / "integrations"
#: What an adapter distribution may import of the core: the package's face, the shared adapter
#: contract (which also exports the option table its settings are declared from), and the client's
#: and images' faces; never a private module.
ADAPTER_IMPORTS = frozenset({"__init__", "adapters", "client", "images"})


def _adapter_modules() -> list[Module]:
    packages = [p for p in INTEGRATIONS.rglob("*.py") if "tests" not in p.relative_to(INTEGRATIONS).parts]
    return [Module(str(path.relative_to(INTEGRATIONS)), path) for path in sorted(packages)]


def test_the_adapter_distributions_import_only_the_cores_faces() -> None:
    modules = _modules()
    adapters = _adapter_modules()
    assert {m.path.relative_to(INTEGRATIONS).parts[0] for m in adapters} >= {
        "langchain",
        "llama-index",
        "haystack",
    }
    found: set[str] = set()
    for adapter in adapters:
        tree = ast.parse(adapter.path.read_text(), filename=str(adapter.path))
        for node in ast.walk(tree):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [f"{node.module}.{alias.name}" for alias in node.names]
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                else []
            )
            for dotted in names:
                target = _target(dotted, modules)
                if target is not None and target not in ADAPTER_IMPORTS:
                    found.add(f"{adapter.name}:{node.lineno} imports {PACKAGE}.{target}")
    assert not found, "\n  ".join(["adapters reaching into the core's private modules:", *sorted(found)])


def test_only_the_adapter_contract_needs_pydantic() -> None:
    """The core does not depend on pydantic (the ``adapters`` extra and the adapter distributions
    declare it): no module of the package imports it but ``adapters``."""
    importers = set()
    for module in _modules().values():
        tree = ast.parse(module.path.read_text(), filename=str(module.path))
        for node in ast.walk(tree):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            if any(name.split(".")[0] == "pydantic" for name in names):
                importers.add(module.name)
    assert importers == {"adapters"}


def test_the_adapter_distributions_share_one_build_hook() -> None:
    """Each adapter project needs its own ``hatch_build.py`` (hatchling loads it from the project's
    directory, and a wheel is built from an sdist holding only that project's files): one text, kept
    identical in the three."""
    hooks = {p.parent.name: p.read_bytes() for p in sorted(INTEGRATIONS.glob("*/hatch_build.py"))}
    assert set(hooks) == {"langchain", "llama-index", "haystack"}
    assert len(set(hooks.values())) == 1, "integrations/*/hatch_build.py differ: copy one over the others"
