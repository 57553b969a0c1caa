"""The package's layout: no import cycles, and ``backbones/`` a leaf.

Imports are read with :mod:`ast`, those at module level and those inside
functions alike, so a cycle that only a lazy import closes is found too.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

import sktransfer
from sktransfer import backbones
from sktransfer.backbones import _registry

PACKAGE = pathlib.Path(sktransfer.__file__).parent
#: What backbones/ may import from the package above it.
BACKBONES_MAY_IMPORT = {"sktransfer.exceptions"}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str) -> set[str]:
    """The modules of sktransfer that module ``name`` imports, anywhere in it."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            # ``from . import _pooling`` imports a module, ``from .x import f`` a name.
            targets = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target not in MODULES and "." in target:
                target = target.rpartition(".")[0]
            if target in MODULES and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {name: imported_modules(name) for name in MODULES}
    # The registry imports its families by name (importlib), on first lookup.
    graph["sktransfer.backbones._registry"] |= {
        f"sktransfer.backbones{family}" for family in _registry.FAMILIES
    }
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(name):
        state[name] = "open"
        path.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name)
            if cycle:
                return cycle
    return None


def test_every_relative_import_names_a_module_of_the_package():
    """Imports inside functions run late: a moved module must not leave one dangling."""
    dangling = []
    for name, path in MODULES.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level and node.module:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module])
                if module not in MODULES:
                    dangling.append(f"{name}:{node.lineno} imports {module}")
    assert not dangling, dangling


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_backbones_imports_nothing_from_the_package_above_but_exceptions():
    for name in MODULES:
        if name == "sktransfer.backbones" or name.startswith("sktransfer.backbones."):
            above = {
                target
                for target in imported_modules(name)
                if not target.startswith("sktransfer.backbones")
            }
            assert above <= BACKBONES_MAY_IMPORT, f"{name} imports {above}"


def calls_at_import(tree: ast.Module):
    """The calls a module makes when it is imported (not those inside functions)."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            pending.extend(node.decorator_list)  # run at import; the body does not
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Call):
            yield node
        pending.extend(ast.iter_child_nodes(node))


def test_no_backbones_module_registers_a_backbone_when_imported():
    for name, path in MODULES.items():
        if not name.startswith("sktransfer.backbones"):
            continue
        for call in calls_at_import(ast.parse(path.read_text("utf-8"))):
            function = call.func
            called = function.id if isinstance(function, ast.Name) else getattr(
                function, "attr", None
            )
            assert called != "register", f"{name}:{call.lineno} registers on import"


def test_backbones_exports_its_public_names():
    assert {
        "BackboneSpec", "Block", "block_info", "blocks", "build", "get_spec",
        "imagenet_classes", "list_backbones", "names", "native_size",
        "preprocess_input", "register",
    } <= set(backbones.__all__)  # fmt: skip
    for name in backbones.__all__:
        assert getattr(backbones, name).__module__.startswith("sktransfer.backbones.")


def test_importing_the_package_imports_no_keras_and_registers_nothing():
    code = (
        "import sys\n"
        "import sktransfer, sktransfer.backbones, sktransfer.cli\n"
        "from sktransfer.backbones import _registry\n"
        "assert _registry._registry is None, 'the registry was filled on import'\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow')]\n"
        "assert not loaded, loaded[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_module_imports_first_in_a_fresh_interpreter(name):
    subprocess.run([sys.executable, "-c", f"import {name}"], check=True, cwd=PACKAGE.parent)
