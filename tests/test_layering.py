"""The package's import layering, read from the source (AST) of every module of ``rolora/``.

The package lives in ``rolora/`` at the repository root, so every ``rolora.x`` import resolves to a
folder of the checkout: an import-graph tool sees the same arrows as this test. What is enforced,
exactly (an import is any ``import x`` / ``from x import y`` anywhere in a module, also inside
functions; ``from pkg import name`` counts as importing ``pkg.name`` when that is a module; and
``importlib.import_module("x")`` / ``__import__("x")`` with the name written as a constant, or looped over
from constants, count as importing ``x``):

0. One import style: no relative imports anywhere (``rolora.x`` is written out).
1. The ground floor: ``theory``, ``kernels`` and ``optim`` import nothing of ours; ``kernels``
   imports only torch, triton, numpy and the standard library; ``optim`` only torch and numpy.
2. ``federated`` (aggregation arithmetic and the round protocol) builds on nothing of ours either.
3. ``toy`` and ``llm`` build on ``federated``, ``kernels`` and ``optim``, never on each other;
   ``flower`` builds on those and ``llm``; ``lab`` (sweeps, specs, the report, benchmarks, GPU
   scripts) sits on top and may use everything, and nothing imports it. Every folder of the package
   with an ``__init__.py`` must have a floor here, so a new subpackage gets one on purpose, and no
   module lives outside one except the top-level three. No subpackage imports the top-level modules
   (``rolora.cli``, ``rolora.__main__``): they sit above all. The root package (``rolora/__init__.py``,
   run by every ``import rolora.x``) imports nothing of ours; ``__main__`` imports only ``rolora.cli``;
   ``rolora.cli``, the dispatcher, may import every area but only inside functions, so that
   ``rolora theory`` never imports torch. Only the dispatcher may import a module whose name is computed
   at run time (its subcommand tables): elsewhere no check could see the arrow.
4. No circles between modules, lazy imports inside functions included.
5. Outside ``federated/`` only its public modules (``PUBLIC_FEDERATED``) are imported: the package
   itself, ``api``, ``round``, ``serial``, ``dense``, ``registry``, ``seeding``, ``diagnostics``,
   ``synthetic`` (seeded stand-in uploads, for tests and the aggregation bench), ``validation`` (input
   checks), ``atomic`` (atomic file writes), ``partition`` (which client holds which examples),
   ``local_rules``, ``privacy``, ``additions``, ``composed`` and ``server_opt``. So no
   aggregation arithmetic (``weights``, ``svd``, ``lora_base``, a method's module, ...) is reused, or
   re-implemented around its internals, outside the core.
6. ``toy/``, ``llm/`` and ``flower/`` (everything that builds on ``federated``) contain no hand-written
   weighted sum over clients' tensors: those of ``ClientStart``/``ClientResult``/``ClientUpdate``/
   ``GlobalState``, read as a ``.tensors``, ``.dense`` or ``.layers`` attribute, or through a name the
   same function bound to such reads (``xs = [u.tensors[l]["A"] for u in ups]``, a loop variable over
   them, a ``torch.stack`` of them). Flagged, in any of their modules: a ``sum``/``fsum``/``torch.sum``/
   ``x.sum()`` over a comprehension that multiplies (``*``) and reads them, or over a product with them
   as a factor; an ``x += ...`` that multiplies inside a ``for`` loop over them; an ``einsum`` or
   ``tensordot`` of them; and any ``.add_(x, alpha=w)`` inside a ``for`` loop. Weighted means of
   logged numbers (losses, accuracies) and sizes (``x.numel() * x.element_size()``) do not multiply
   the tensors themselves and pass. A line that is deliberately not an aggregation may say so with the
   comment ``# not an aggregation``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "rolora"
MAY_BUILD_ON = {
    "theory": set(),
    "kernels": set(),
    "optim": set(),
    "federated": set(),
    "toy": {"federated", "kernels", "optim"},
    "llm": {"federated", "kernels", "optim"},
    "flower": {"federated", "kernels", "optim", "llm"},
    "lab": {"theory", "kernels", "optim", "federated", "toy", "llm", "flower"},
}
SUBPACKAGES = tuple(MAY_BUILD_ON)
KERNELS_THIRD_PARTY = {"torch", "triton", "numpy"}
OPTIM_THIRD_PARTY = {"torch", "numpy"}
PUBLIC_FEDERATED = {
    f"rolora.federated{s}" for s in ("", ".api", ".round", ".serial", ".dense", ".registry", ".seeding", ".diagnostics",
                                     ".synthetic", ".validation", ".atomic", ".partition", ".local_rules",
                                     ".privacy", ".additions", ".composed", ".server_opt")
}
NOT_AGGREGATION = "# not an aggregation"
SKIP_DIRS = {"tests", "docs", "build", "dist", "out", ".venv", ".git", "__pycache__", ".hypothesis"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["rolora", *parts])


def package_modules(root: Path) -> dict[str, Path]:
    """rolora's module name -> file, for every .py file of the package (not tests)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if rel[0] in SKIP_DIRS or any(p.startswith(".") for p in rel):
            continue
        out[module_name(path, root)] = path
    return out


IMPORT_CALLS = {"import_module", "__import__"}  # importlib.import_module("x"), __import__("x"): an import
TOP_LEVEL = {"rolora", "rolora.__main__", "rolora.cli"}
DISPATCHERS = {"rolora.cli"}  # may import a module named at run time (a subcommand's, from its tables)


def _loop_constants(name: str, tree: ast.AST) -> list[str] | None:
    """The strings ``name`` takes when its only bindings are ``for name in ("a", "b")`` loops."""
    stores = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Store)]
    loops = [n for n in ast.walk(tree) if isinstance(n, (ast.For, ast.comprehension))
             and isinstance(n.target, ast.Name) and n.target.id == name]
    args = [a for a in ast.walk(tree) if isinstance(a, ast.arg) and a.arg == name]
    if not loops or args or len(stores) != len(loops):
        return None
    values = []
    for loop in loops:
        items = loop.iter.elts if isinstance(loop.iter, (ast.Tuple, ast.List, ast.Set)) else [None]
        if not all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in items):
            return None
        values += [e.value for e in items]
    return values


def dynamic_imports(tree: ast.AST, skip: set[int] | frozenset[int] = frozenset()) -> tuple[dict[str, int], list[int]]:
    """``import_module(...)``/``__import__(...)`` calls (not those in ``skip``): (module named by a constant
    -> line, lines of the calls whose module is not a constant absolute name, so no check can see it)."""
    named, unknown = {}, []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args or id(node) in skip:
            continue
        func = node.func
        fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if fname not in IMPORT_CALLS:
            continue
        arg = node.args[0]
        values = [arg.value] if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else (
            _loop_constants(arg.id, tree) if isinstance(arg, ast.Name) else None)
        if values is None or any(v.startswith(".") for v in values):
            unknown.append(node.lineno)
        else:
            named.update((v, node.lineno) for v in values)
    return named, unknown


def _inside_functions(tree: ast.AST) -> set[int]:
    """ids of the nodes in a function's body (what runs when it is called, not on import)."""
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))]
    bodies = [[f.body] if isinstance(f, ast.Lambda) else f.body for f in funcs]
    return {id(n) for body in bodies for stmt in body for n in ast.walk(stmt)}


def imports_of(path: Path, name: str, modules: set[str], *, eager_only: bool = False) -> set[str]:
    """Absolute names of everything the module imports (relative imports resolved; a module named by a
    constant in ``import_module``/``__import__`` included); ``eager_only``: only what runs on import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    lazy = _inside_functions(tree) if eager_only else set()
    found = set()
    for node in ast.walk(tree):
        if id(node) in lazy:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:  # `from pkg import mod` imports the module pkg.mod
                if f"{target}.{alias.name}" in modules:
                    found.add(f"{target}.{alias.name}")
    return found | set(dynamic_imports(tree, lazy)[0])


def area_of(name: str) -> str | None:
    """The subpackage a rolora module belongs to (None: a top-level module)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SUBPACKAGES else None


def ours(name: str) -> bool:
    return name == "rolora" or name.startswith("rolora.")


def layering_violations(root: Path) -> list[str]:
    """Rules 1-5 of the module docstring, as messages naming the module and the import."""
    modules = package_modules(root)
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    problems = []
    for name, path in modules.items():
        area = area_of(name)
        for imported in sorted(imports_of(path, name, set(modules))):
            top = imported.split(".")[0]
            target_area = area_of(imported) if ours(imported) else None
            where = f"{name} imports {imported}"
            if area == "theory" and ours(imported) and target_area != "theory":
                problems.append(f"{where}: theory imports nothing of ours")
            if area == "kernels":
                if ours(imported) and target_area != "kernels":
                    problems.append(f"{where}: kernels import no other rolora subpackage")
                if not ours(imported) and top not in stdlib and top not in KERNELS_THIRD_PARTY:
                    problems.append(f"{where}: kernels import only torch, triton, numpy and the stdlib")
            if area == "optim" and not ours(imported) and top not in stdlib and top not in OPTIM_THIRD_PARTY:
                problems.append(f"{where}: optim imports only torch, numpy and the stdlib")
            if area is not None and ours(imported):
                if target_area is None:
                    problems.append(f"{where}: a subpackage never imports the top-level modules (upwards)")
                elif target_area != area and target_area not in MAY_BUILD_ON[area]:
                    problems.append(f"{where}: {area} may not import {target_area} (upwards or sideways)")
            if area != "federated" and area_of(imported) == "federated" and imported not in PUBLIC_FEDERATED:
                problems.append(f"{where}: outside federated/ only {sorted(PUBLIC_FEDERATED)} are public")
            if name == "rolora" and ours(imported):
                problems.append(f"{where}: the root package imports nothing of ours (every `import rolora.x` runs it)")
            if name == "rolora.__main__" and ours(imported) and imported != "rolora.cli":
                problems.append(f"{where}: __main__ imports only rolora.cli")
        if area is None and name not in TOP_LEVEL:
            problems.append(f"{name}: a module outside every floor (give its folder an __init__.py and a floor)")
        if name in DISPATCHERS:
            for imported in sorted(i for i in imports_of(path, name, set(modules), eager_only=True) if ours(i)):
                problems.append(f"{name} imports {imported} on import: the dispatcher imports an area lazily")
        else:
            for line in dynamic_imports(ast.parse(path.read_text()))[1]:
                problems.append(f"{name}:{line} imports a module named at run time: write the name out, so the "
                                f"floors can be checked (only {sorted(DISPATCHERS)} may)")
    return problems


SUMS = {"sum", "fsum"}
CONTRACTIONS = {"einsum", "tensordot"}  # a weighted sum in one call: einsum("k,kij->ij", w, stack(xs))
FEDERATED_TENSORS = {"tensors", "dense", "layers"}


def _multiplies(node: ast.AST) -> bool:
    return any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult) for n in ast.walk(node))


def _reads_federated_tensors(node: ast.AST, names: set[str] = frozenset()) -> bool:
    """Reads a ``.tensors``/``.dense``/``.layers`` attribute, or one of ``names`` (bound to such reads)."""
    return any(isinstance(n, ast.Attribute) and n.attr in FEDERATED_TENSORS
               or isinstance(n, ast.Name) and n.id in names for n in ast.walk(node))


CARRIERS = {"stack", "cat", "list", "tuple", "zip", "values", "items", "enumerate", "reversed"}


def _holds_federated_tensors(node: ast.AST, names: set[str]) -> bool:
    """``node``'s value is clients' tensors or a container of them: a ``.tensors``/``.dense``/``.layers``
    read, one of ``names``, an item of one, a list/comprehension/stack/zip of them. Anything computed
    from them (a product, a forward pass) is not: it is no longer the uploads."""
    if isinstance(node, ast.Attribute) and node.attr in FEDERATED_TENSORS:
        return True
    if isinstance(node, ast.Name):
        return node.id in names
    if isinstance(node, (ast.Subscript, ast.Starred)):
        return _holds_federated_tensors(node.value, names)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return any(_holds_federated_tensors(e, names) for e in node.elts)
    if isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp)):
        inner = names | _comprehension_names(node, names)
        return _holds_federated_tensors(node.elt, inner)
    if isinstance(node, ast.Call):
        func = node.func
        fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if fname in CARRIERS:
            receiver = [func.value] if isinstance(func, ast.Attribute) else []
            return any(_holds_federated_tensors(a, names) for a in [*node.args, *receiver])
    return False


def _comprehension_names(node: ast.AST, names: set[str]) -> set[str]:
    return {n.id for g in node.generators if _holds_federated_tensors(g.iter, names)
            for n in ast.walk(g.target) if isinstance(n, ast.Name)}


def federated_names(scope: ast.AST) -> set[str]:
    """Names a function (or the module's top level) binds to clients' tensors: assigned or looped over
    from them, as ``xs`` and ``x`` in ``xs = [u.tensors[l]["A"] for u in ups]`` followed by
    ``sum(w * x for w, x in zip(ws, xs))``."""
    names: set[str] = set()
    while True:
        found = set(names)
        for node in ast.walk(scope):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets, value = (node.targets if isinstance(node, ast.Assign) else [node.target]), node.value
            elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
                targets, value = [node.target], node.iter
            else:
                continue
            if _holds_federated_tensors(value, names):
                found |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        if found == names:
            return names
        names = found


def _names_in_scope(tree: ast.Module) -> dict[int, set[str]]:
    """id(node) -> the federated names of its innermost function (or of the module's top level)."""
    top = ast.Module(body=[s for s in tree.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                       ast.ClassDef))], type_ignores=[])
    top_names = federated_names(top)
    scopes = {id(n): top_names for n in ast.walk(tree)}
    for func in ast.walk(tree):  # breadth first: an inner function overrides its outer one
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            names = federated_names(func)
            scopes.update((id(n), names) for n in ast.walk(func))
    return scopes


def weighted_sums(path: Path) -> list[str]:
    """Rule 6: hand-written weighted sums in one file, as 'file:line: what' messages."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source, filename=str(path))
    names_at = _names_in_scope(tree)
    found = []

    def flag(node: ast.AST, what: str) -> None:
        if NOT_AGGREGATION not in lines[node.lineno - 1]:
            found.append(f"{path.name}:{node.lineno}: {what}")

    def reads(node: ast.AST) -> bool:  # reads clients' tensors, directly or through a name bound to them
        return _reads_federated_tensors(node, names_at[id(node)])

    def weighs(node: ast.AST) -> bool:  # a product one of whose factors is clients' tensors (not their sizes)
        names = names_at[id(node)]
        if isinstance(node, (ast.ListComp, ast.GeneratorExp)):
            names = names | _comprehension_names(node, names)
        return any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult)
                   and (_holds_federated_tensors(n.left, names) or _holds_federated_tensors(n.right, names))
                   for n in ast.walk(node))

    loops = [n for n in ast.walk(tree) if isinstance(n, (ast.For, ast.AsyncFor))]
    in_loop = {id(n) for loop in loops for stmt in loop.body for n in ast.walk(stmt)}
    in_tensor_loop = {
        id(n) for loop in loops if reads(loop) for stmt in loop.body for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            # the summed comprehension may sit in the arguments or, for x.sum(), in the receiver
            scope = [*node.args, *([func.value] if isinstance(func, ast.Attribute) else [])]
            comps = [c for a in scope for c in ast.walk(a) if isinstance(c, (ast.GeneratorExp, ast.ListComp))]
            if fname in SUMS and any(_multiplies(c.elt) and _reads_federated_tensors(c) or weighs(c) for c in comps):
                flag(node, "sum of products over a comprehension")
            elif fname in SUMS and any(weighs(a) for a in scope):
                flag(node, "sum of a product with clients' tensors")
            if fname in CONTRACTIONS and any(_holds_federated_tensors(a, names_at[id(a)]) for a in node.args):
                flag(node, f"{fname} over clients' tensors")
            if fname == "add_" and any(k.arg == "alpha" for k in node.keywords) and id(node) in in_loop:
                flag(node, ".add_(x, alpha=w) in a loop")
        if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add) and _multiplies(node.value):
            if id(node) in in_tensor_loop:
                flag(node, "x += a * b in a loop over federated tensors")
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (lazy imports inside functions included)."""
    modules = package_modules(root)
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports_of(path, name, set(modules)):
            # `import rolora.a.b` also runs rolora.a's __init__; the arrow that matters is to the module
            while imported and imported not in modules and "." in imported:
                imported = imported.rsplit(".", 1)[0]
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def import_cycles(root: Path) -> list[list[str]]:
    """Every circle of imports between modules, as the modules on it (Tarjan's strongly connected
    components of size > 1, or a module importing itself). A package's ``__init__`` that re-exports its
    own modules is not a circle with them: arrows from a module to its own package are left out."""
    graph = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in import_graph(root).items()}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:  # iterative depth would be nicer; the package is ~250 modules deep at most
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_circles_not_even_behind_a_lazy_import():
    assert import_cycles(ROOT) == []


def test_a_planted_circle_is_found(tmp_path):
    root = _tree(tmp_path, {"llm/a.py": "import rolora.llm.b\n", "llm/b.py": "def f():\n    from rolora.llm import a\n"})
    assert import_cycles(root) == [["rolora.llm.a", "rolora.llm.b"]]


def test_every_subpackage_is_scanned():
    areas = {area_of(name) for name in package_modules(ROOT)}
    assert {"theory", "kernels", "federated", "toy", "llm"} <= areas
    folders = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert folders <= set(MAY_BUILD_ON), f"new subpackage(s) {sorted(folders - set(MAY_BUILD_ON))}: give each a layer"
    assert "rolora.federated.round" in package_modules(ROOT)


def relative_imports(root: Path) -> list[str]:
    """Rule 0: every relative import of the package, as 'module: line' messages."""
    return [
        f"{name}:{node.lineno}"
        for name, path in package_modules(root).items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level
    ]


def test_one_import_style_no_relative_imports(tmp_path):
    assert relative_imports(ROOT) == []
    planted = _tree(tmp_path, {"toy/rel.py": "from .data import NUM_CLASSES\n"})
    assert relative_imports(planted) == ["rolora.toy.rel:1"]


def test_the_package_is_layered():
    assert layering_violations(ROOT) == []


@pytest.mark.parametrize("area", ["toy", "llm", "flower"])
def test_no_weighted_sum_over_clients_outside_the_core(area):
    found = [m for path in sorted((ROOT / area).rglob("*.py")) for m in weighted_sums(path)]
    assert found == [], "aggregation belongs in rolora.federated (call run_round / method.aggregate):\n" + "\n".join(found)


# --------------------------------------------------------------------------- the checks can fail
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for area in SUBPACKAGES:
        (root / area).mkdir(parents=True)
        (root / area / "__init__.py").write_text("")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


PLANTED = [
    ("theory/bad.py", "import rolora.federated.api\n", "theory imports nothing of ours"),
    ("kernels/bad.py", "from rolora.federated import api\n", "kernels import no other rolora subpackage"),
    ("kernels/pandas_user.py", "import pandas\n", "kernels import only torch"),
    ("kernels/peft_user.py", "import peft\n", "kernels import only torch"),
    ("optim/up.py", "from rolora.federated import api\n", "optim may not import federated"),
    ("optim/hf.py", "import transformers\n", "optim imports only torch, numpy and the stdlib"),
    ("federated/bad.py", "def f():\n    from rolora.toy import train\n", "federated may not import toy"),
    ("federated/worse.py", "from rolora.llm import engine\n", "federated may not import llm"),
    ("federated/kern.py", "import rolora.kernels.op\n", "federated may not import kernels"),
    ("toy/bad.py", "from rolora import llm\n", "toy may not import llm"),
    ("llm/up.py", "from rolora.flower import strategy\n", "llm may not import flower"),
    ("federated/fl.py", "import rolora.flower.codec\n", "federated may not import flower"),
    ("flower/internal.py", "from rolora.federated.weights import weighted_sum\n", "only"),
    ("llm/cli_user.py", "from rolora.cli import main\n", "never imports the top-level modules"),
    ("llm/internal.py", "from rolora.federated.weights import weighted_sum\n", "only"),
    ("llm/sub.py", "from rolora.federated import svd\n", "only"),
    ("llm/rel.py", "from ..federated.lora_base import LoRAMethod\n", "only"),
    ("llm/lab_user.py", "def f():\n    from rolora.lab.sweep import runner\n", "llm may not import lab"),
    ("flower/lab_user.py", "import rolora.lab.bench.llm\n", "flower may not import lab"),
    ("federated/lab_user.py", "import rolora.lab\n", "federated may not import lab"),
    ("__init__.py", "import rolora.lab.sweep.runner\n", "the root package imports nothing of ours"),
    ("__init__.py", "from rolora.federated import api\n", "the root package imports nothing of ours"),
    ("__main__.py", "from rolora.lab.sweep import runner\n", "__main__ imports only rolora.cli"),
    ("cli.py", "import rolora.llm.engine\n", "the dispatcher imports an area lazily"),
    ("stray/mod.py", "", "outside every floor"),
    ("federated/by_name.py", "import importlib\ndef f():\n    return importlib.import_module('rolora.llm.engine')\n",
     "federated may not import llm"),
    ("llm/by_name.py", "def f():\n    return __import__('rolora.lab.sweep.runner')\n", "llm may not import lab"),
    ("kernels/by_name.py", "from importlib import import_module\npd = import_module('pandas')\n",
     "kernels import only torch"),
    ("toy/run_time.py", "import importlib\ndef f(name):\n    return importlib.import_module(name)\n",
     "imports a module named at run time"),
    ("toy/relative.py", "import importlib\ndef f():\n    return importlib.import_module('.data', 'rolora.toy')\n",
     "imports a module named at run time"),
]


@pytest.mark.parametrize("rel, text, words", PLANTED, ids=[p[0] for p in PLANTED])
def test_a_planted_violation_is_found(tmp_path, rel, text, words):
    root = _tree(tmp_path, {
        "federated/api.py": "", "federated/weights.py": "", "federated/svd.py": "", "federated/lora_base.py": "",
        "toy/train.py": "", "llm/engine.py": "", "kernels/op.py": "", "cli.py": "", rel: text,
    })
    problems = layering_violations(root)
    assert any(words in p and p.startswith(module_name(root / rel, root)) for p in problems), problems


def test_public_federated_modules_and_the_guard_helper_are_allowed(tmp_path):
    root = _tree(tmp_path, {
        "federated/api.py": "", "federated/round.py": "", "llm/ok.py": (
            "from rolora.federated import get_method\nfrom rolora.federated.round import run_round\n"
            "import rolora.kernels\nimport torch, numpy, json\n"),
        "lab/ok.py": "import rolora.flower\nimport rolora.llm\nimport rolora.theory\nimport peft\n",
        "kernels/ok.py": "import triton\nimport torch\nfrom rolora.kernels import op\n",
        "__init__.py": '"""The package."""\n__version__ = "0"\n', "__main__.py": "from rolora.cli import main\n",
        "cli.py": ("import importlib\ndef main(name):\n    from rolora.lab import ok\n"
                   "    return importlib.import_module(name)\n"),  # the dispatcher: lazily, by name
        "lab/versions.py": "def f():\n    for mod in ('triton', 'peft'):\n        __import__(mod)\n",
    })
    assert layering_violations(root) == []


@pytest.mark.parametrize("code", [
    "def f(rs):\n    return sum(r.num_samples * r.tensors['q']['B'] for r in rs)\n",
    "def f(ws, rs):\n    return sum(w * x for w, x in zip(ws, [r.tensors['q']['A'] for r in rs]))\n",
    "import torch\ndef f(ws, us):\n    return torch.sum(torch.stack([w * u.dense['h'] for w, u in zip(ws, us)]), 0)\n",
    "import torch\ndef f(ws, us):\n    return torch.stack([w * u.tensors['q']['A'] for w, u in zip(ws, us)]).sum(0)\n",
    "def f(ws, us):\n    out = 0\n    for w, u in zip(ws, us):\n        out += w * u.tensors['q']['B']\n    return out\n",
    "def f(ws, xs):\n    out = xs[0] * 0\n    for w, x in zip(ws, xs):\n        out.add_(x, alpha=w)\n    return out\n",
    "def f(ws, us):\n    xs = [u.tensors['q']['A'] for u in us]\n    return sum(w * x for w, x in zip(ws, xs))\n",
    "import torch\ndef f(w, us):\n"
    "    return torch.einsum('k,kij->ij', w, torch.stack([u.tensors['q']['A'] for u in us]))\n",
    "import torch\ndef f(w, us):\n    xs = torch.stack([u.layers['q']['B'] for u in us])\n"
    "    return (w[:, None, None] * xs).sum(0)\n",
    "def f(ws, rs):\n    out = {}\n    for w, r in zip(ws, rs):\n        for layer, named in r.tensors.items():\n"
    "            for k, x in named.items():\n                out[layer][k] += w * x\n    return out\n",
])
def test_a_planted_weighted_sum_in_llm_is_found(tmp_path, code):
    path = tmp_path / "fedavg_by_hand.py"
    path.write_text(code)
    assert weighted_sums(path)
    marked = ("*", "add_", "einsum")
    path.write_text("\n".join(line + ("  " + NOT_AGGREGATION if any(m in line for m in marked) else "")
                              for line in code.splitlines()))
    assert weighted_sums(path) == []


def test_weighted_means_of_logged_numbers_pass(tmp_path):
    path = tmp_path / "metrics.py"
    path.write_text("def f(results, w):\n    return sum(w[k] * r.metrics['loss'] for k, r in results.items())\n"
                    "def g(ts):\n    return sum(t.numel() * t.element_size() for t in ts)\n"
                    "def h(us):\n    xs = [u.tensors['q']['A'] for u in us]\n"
                    "    return sum(x.numel() * x.element_size() for x in xs), sum(len(x) * 2 for x in xs)\n"
                    "def forward(x, u):\n    a = u.tensors['q']['A']\n    h = x @ a.T\n    return (h * h).sum()\n")
    assert weighted_sums(path) == []


# --------------------------------------------------------------------------- a third-party tool agrees
REPO = ROOT.parent


def _lint_imports(repo: Path):
    import subprocess

    return subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=repo, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"})


def test_an_import_graph_tool_sees_the_floors_on_the_checkout():
    """import-linter (grimp) resolves every ``rolora.x`` import to a folder of the checkout."""
    proc = _lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize("rel, text, arrow", [
    ("federated/round.py", "\n\ndef _planted():\n    from rolora.llm import engine  # an upward import, lazy\n",
     "rolora.federated.round -> rolora.llm"),
    ("__init__.py", "\nimport rolora.lab.sweep.runner\n", "rolora -> rolora.lab.sweep.runner"),
], ids=["upward", "root"])
def test_the_import_graph_tool_fails_on_an_upward_import(tmp_path, rel, text, arrow):
    import shutil

    shutil.copytree(ROOT, tmp_path / "rolora", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with open(tmp_path / "rolora" / rel, "a") as f:
        f.write(text)
    proc = _lint_imports(tmp_path)
    assert proc.returncode != 0 and arrow in proc.stdout, proc.stdout
