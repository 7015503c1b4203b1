"""The shape of the tree (docs/contributing.md, "Layout"): dependencies point one way, modules
and functions stay small, the core names no plugin, and plugins are found without a list.

Read from the sources with :mod:`ast`, so each check fails on the line that breaks it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"evalkit": ROOT / "evalkit", "evalkit.tasks": ROOT / "tasks", "evalkit.patches": ROOT / "patches"}
# the generic core: everything in evalkit/ but the family and model modules, the test helper
# and the plugins that live there (row sinks)
NOT_CORE = {
    "families.py",
    "family.py",
    "models.py",
    "loading.py",
    "embedded.py",
    "remote_code.py",
    "sp_tokenizer.py",
    "testing.py",
}


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, ast.AST, bool]]:
    """(module imported, the import node, whether it sits inside a function) for evalkit's own."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside = {
        id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(f)
    }
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in known and target != name:
                out.append((target, node, id(node) in inside))
    return out


def graph() -> tuple[dict[str, set[str]], list]:
    mods = modules()
    edges, lazy = {}, []
    for name, path in mods.items():
        for target, node, in_function in imports(name, path, set(mods)):
            edges.setdefault(name, set()).add(target)
            if in_function:
                lazy.append((name, target, node))
    return edges, lazy


def test_no_import_cycle_among_evalkits_modules_imports_inside_functions_counted():
    edges, _ = graph()
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(modules()):
        if start not in state:
            visit(start, [start])


def test_imports_of_our_own_modules_inside_functions_are_few_and_say_why():
    _, lazy = graph()
    assert len(lazy) <= 15, f"{len(lazy)} imports of evalkit's modules inside functions (at most 15)"
    for name, target, node in lazy:
        line = modules()[name].read_text(encoding="utf-8").splitlines()[node.end_lineno - 1]
        assert "# lazy:" in line, f"{name} imports {target} inside a function without a '# lazy: reason'"


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_and_functions_are_small(name):
    path = modules()[name]
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 400, f"{path.relative_to(ROOT)} has {len(text.splitlines())} lines (at most 400)"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            assert n <= 60, f"{path.relative_to(ROOT)}:{node.lineno} {node.name} has {n} lines (at most 60)"


def plugin_names() -> set[str]:
    """Every name a plugin defines: tasks, methods, families, installers, sinks, metrics, task
    options, method parameters and task columns (less the core's own columns and cell fields)."""
    from evalkit.registry import FAMILIES, INSTALLERS, METHODS, METRICS, OPTIONS, SINKS, TASKS
    from evalkit.schema import CORE_COLUMNS, SHARED
    from evalkit.task import columns_of

    names = {
        *TASKS.names(),
        *METHODS.names(),
        *FAMILIES.names(),
        *INSTALLERS.names(),
        *SINKS.names(),
        *METRICS.names(),
        *OPTIONS.names(),
    }
    names |= {p.name for m in METHODS.values() for p in m.params}
    names |= {c for t in TASKS.values() for c in columns_of(t)}
    core = set(CORE_COLUMNS) - {p.name for m in METHODS.values() for p in m.params}
    cell_fields = {"length", "sample", "depth", "doc", "seed"}
    profile_values = {"position_start", "position_end", "nll"}  # positions.csv's values, written by the sweep
    # words that are plugin names by coincidence: SHARED's kinds ("none"), one-letter names, the
    # plural of the cell field depth as a report header
    coincidences = set(SHARED) | {n for n in names if len(n) == 1} | {"depths"}
    return names - core - cell_fields - profile_values - coincidences


def test_the_core_names_no_plugin():
    """String literals of plugin names in the core (docstrings aside): at most 3, these."""
    names = plugin_names()
    found = []
    for path in sorted((ROOT / "evalkit").glob("*.py")):
        if path.name in NOT_CORE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        found += [
            f"{path.name}:{n.lineno} {n.value!r}"
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in names and id(n) not in docs
        ]
    # results.py's FOREIGN_IDENTITY (rows of an unknown task) and schema.py's reading of version-1 rows
    assert len(found) <= 3, f"plugin names in the core: {found}"


def test_plugins_are_discovered_without_a_list(tmp_path):
    """A new task, method and sink file in their folders is registered with no other change
    (run in a copy of the package tree, so the checkout stays as it is)."""
    import shutil

    copy = tmp_path / "tree" / "evalkit"  # laid out as the installed package is (pyproject.toml's package-dir)
    shutil.copytree(ROOT / "evalkit", copy, ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("tasks", "patches"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "tasks" / "echo_task.py").write_text(
        "from evalkit.task import register\nfrom evalkit.tasks.niah_multivalue import NiahMultivalue\n\n\n"
        "class Echo(NiahMultivalue):\n    name = 'echo-task'\n    metrics = NiahMultivalue.metric('echo-task', 'echo')\n\n\n"
        "register(Echo())\n"
    )
    (copy / "patches" / "methods_half.py").write_text(
        "from evalkit.method import Method, register\n\n"
        "register(Method('half-pi', 'rope', 'PI at s = 2', 'a test', rope=None))\n"
    )
    (copy / "sinks" / "null.py").write_text(
        "from evalkit.registry import SINKS\n\n\nclass Null:\n    name = 'null'\n\n"
        "    def __init__(self, folder):\n        pass\n\n    def write(self, rows):\n        pass\n\n"
        "    def close(self):\n        pass\n\n\nSINKS.add('null', Null)\n"
    )
    loader = (
        "from evalkit.registry import METHODS, SINKS, TASKS\n"
        "print('echo-task' in TASKS, 'half-pi' in METHODS, 'null' in SINKS)\n"
    )
    # -I -S: only the copy and the standard library (not the checkout's editable install)
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(copy.parent)!r})\n" + loader],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.stdout.split() == ["True", "True", "True"], done.stderr[-2000:]
