"""The shape of the library, read from its source: imports point one way, no import
cycles, no module over 400 lines, no function over 60, no block of six lines written
twice.

The levels below are the picture of docs/architecture.md. Exceptions would be listed
with their size (a ratchet: they may shrink, never grow); today there are none.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "s2s"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

# Lower levels may not import higher ones: layers and data, then the engine and search,
# then the tasks, then what uses tasks, then the command line.
LEVELS = {
    "s2s.errors": 0,
    "s2s.runtime": 0,
    "s2s.config": 1,
    "s2s.nn": 2,
    "s2s.data": 2,
    "s2s.decoding": 3,
    "s2s.training": 3,
    "s2s.translation": 4,
    "s2s.charlm": 4,
    "s2s.experiments": 5,
    "s2s.cli": 6,
    "s2s.__main__": 7,
}
# The engine knows no task, no model and no data format: only these.
ENGINE_IMPORTS = ("s2s.config", "s2s.errors", "s2s.runtime", "s2s.training")

# What still breaks a rule, with its size today: a ratchet (may shrink, never grow).
LONG_MODULES: dict[str, int] = {}
LONG_FUNCTIONS: dict[str, int] = {}
CYCLES: set[frozenset] = set()
SAME_LEVEL: set[tuple[str, str]] = set()
REPEATED: set[frozenset] = set()


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports_of(path: Path, known: dict) -> set[str]:
    """The s2s modules a module imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("s2s"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(known)
            found |= subs  # `from pkg import module` imports the module, not pkg's names
            if len(subs) < len(node.names):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("s2s")}
    return {m for m in found if m in known and m != "s2s"}


def level(module: str) -> int:
    matches = [k for k in LEVELS if module == k or module.startswith(k + ".")]
    assert matches, f"{module} has no level in tests/test_layout.py LEVELS: place it"
    return LEVELS[max(matches, key=len)]


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def test_imports_point_down():
    wrong = []
    for module, imported in graph().items():
        if module == "s2s":
            continue
        for other in imported:
            if other.split(".")[:2] == module.split(".")[:2]:
                continue  # within one package
            if level(other) > level(module):
                wrong.append(f"{module} -> {other}")
            elif level(other) == level(module) and (module, other) not in SAME_LEVEL:
                if level(module) >= 4:  # tasks do not import each other
                    wrong.append(f"{module} -> {other} (same level)")
    assert not wrong, "imports against the layout: " + ", ".join(sorted(wrong))


def test_the_engine_imports_no_task_model_or_data():
    wrong = [
        f"{module} -> {other}"
        for module, imported in graph().items()
        if module.startswith("s2s.training")
        for other in imported
        if not other.startswith(ENGINE_IMPORTS)
    ]
    assert not wrong, "the training engine imports beyond config and errors: " + ", ".join(wrong)


def test_no_import_cycles_but_the_listed_one():
    g = graph()
    cycles = set()

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in g[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = {m: reach(m) for m in g}
    for m in g:
        group = frozenset({m} | {o for o in reachable[m] if m in reachable[o]})
        if len(group) > 1:
            cycles.add(group)
    assert cycles <= CYCLES, f"new import cycles: {cycles - CYCLES}"


def function_lengths(path: Path, module: str) -> dict[str, int]:
    out = {}

    def visit(node, prefix=""):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[f"{module}:{prefix}{child.name}"] = child.end_lineno - child.lineno + 1
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return out


def test_modules_and_functions_stay_short():
    too_long = []
    for module, path in modules().items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > LONG_MODULES.get(module, MAX_MODULE_LINES):
            too_long.append(f"{module}: {lines} lines")
        for name, n in function_lengths(path, module).items():
            if n > LONG_FUNCTIONS.get(name, MAX_FUNCTION_LINES):
                too_long.append(f"{name}: {n} lines")
    assert not too_long, "over the limits (400 a module, 60 a function): " + "; ".join(too_long)


# `name=name,`: an argument passed on under its own name (explicit keyword arguments
# forwarded to a module, house style 4), not logic written twice.
FORWARDED = re.compile(r"(\w+)=\1,")


def test_no_block_of_six_lines_is_written_twice():
    places: dict[tuple, list] = {}
    for module, path in modules().items():
        source = path.read_text(encoding="utf-8")
        imports = {  # import lists name the same things: not code written twice
            n
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for n in range(node.lineno, node.end_lineno + 1)
        }
        lines = [(i + 1, x.strip()) for i, x in enumerate(source.splitlines())]
        lines = [
            (i, x)
            for i, x in lines
            if x and not x.startswith("#") and i not in imports and not FORWARDED.fullmatch(x)
        ]
        for k in range(len(lines) - 5):
            block = tuple(x for _, x in lines[k : k + 6])
            if all(len(x) > 3 for x in block):  # not brackets and the like
                places.setdefault(block, []).append((module, lines[k][0]))
    repeated = [spots for spots in places.values() if len(spots) > 1]
    new = [s for s in repeated if frozenset(m for m, _ in s) not in REPEATED]
    assert not new, f"blocks of six lines written twice: {new[:3]}"


def test_every_mutant_of_the_mutation_check_still_applies(tmp_path):
    """scripts/mutation_check.py breaks features by replacing exact source text; text
    that a refactor changed would leave its feature unchecked (and the check failing
    only when someone runs it). Each mutant's text occurs exactly once in the files."""
    import importlib.util
    import shutil
    import sys

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "mutation_check", root / "scripts/mutation_check.py"
    )
    mc = importlib.util.module_from_spec(spec)
    sys.modules["mutation_check"] = mc
    try:
        spec.loader.exec_module(mc)
        files = {file for mutant in mc.MUTANTS for file, _, _ in mutant.edits}
        for file in files:
            (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / file, tmp_path / file)
        mc.check_texts(tmp_path)  # SystemExit naming the mutant if a text is gone
    finally:
        del sys.modules["mutation_check"]
    assert len(mc.MUTANTS) > 50
