"""The layering in DESIGN.md holds, read from the code's own imports (ast, never a string match):
- every module of reid_core is in DESIGN.md's table, imports exactly what its row says, and only modules of
  lower layers (so there is no import cycle);
- every package is described, and its modules import only their own package and the packages (or top-level
  modules) its paragraph allows; those rules admit no cycle between packages;
- inside the library nothing imports the package root (`from reid_core import ...` loads the whole package);
- app.py, train.py and space/ stand on the public API (the names in `reid_core.__all__`) and the submodules
  DESIGN.md names for them, resolved to the modules they actually load."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "reid_core"
DESIGN = (ROOT / "DESIGN.md").read_text()
# what the entry points may load besides the public API (reid_core/__init__.py)
ENTRY_POINTS = {"app.py": set(), "train.py": set(), "space": {"reid_core.figures.plots"}}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """reid_core/data/images.py -> "data.images"; a package's __init__.py -> the package ("data")."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the library but the package __init__ files."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py")) if p.name != "__init__.py"}


def resolve(node: ast.ImportFrom, here: list[str] | None, root: Path) -> set[str]:
    """The modules under `root` an ImportFrom loads (dotted, relative to root): `from .x import a` -> x, or x.a where
    that is a module; `from .. import a` -> a. `here`: the importing module's package, as parts under root (None:
    a file outside the library, whose relative imports are its own)."""
    if node.level:
        if here is None or node.level - 1 > len(here):
            return set()
        base = here[:len(here) - (node.level - 1)]
    elif node.module and (node.module == root.name or node.module.startswith(root.name + ".")):
        base = []
        node = ast.ImportFrom(module=".".join(node.module.split(".")[1:]) or None, names=node.names, level=1)
    else:
        return set()
    base = base + (node.module.split(".") if node.module else [])
    out = set()
    for alias in node.names:
        sub = root.joinpath(*base, alias.name)
        if sub.with_suffix(".py").is_file() or (sub / "__init__.py").is_file():
            out.add(".".join([*base, alias.name]))
        elif base:
            out.add(".".join(base))
    return out


def imports_of(path: Path, root: Path = PACKAGE) -> set[str]:
    """Library modules a file loads, at any depth of its code (functions included)."""
    here = list(path.relative_to(root).parent.parts) if path.is_relative_to(root) else None
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            out |= resolve(node, here, root)
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith(root.name + ".")}
    return out


def design_table() -> dict[str, tuple[int, set[str]]]:
    """module -> (layer, allowed imports) from DESIGN.md's module table."""
    rows = re.findall(r"^\| (\d+) \| `([\w.]+)` \|[^|]*\|([^|]*)\|$", DESIGN, re.M)
    return {name: (int(layer), {m.strip().strip("`") for m in deps.split(",") if m.strip()})
            for layer, name, deps in rows}


def package_rules() -> dict[str, set[str]]:
    """package -> the packages and top-level modules it may import, from DESIGN.md's `### \\`pkg/\\`` paragraphs
    ("May import: ..." ends each; "nothing" for none)."""
    out = {}
    for name, body in re.findall(r"^### `(\w+)/`[^\n]*\n(.*?)(?=^#|\Z)", DESIGN, re.M | re.S):
        said = re.search(r"May import: ([^.\n]*)\.", body)
        assert said, f"DESIGN.md: the paragraph of {name}/ does not say what it may import"
        out[name] = set() if said.group(1).strip() == "nothing" else {
            w.strip().strip("`").rstrip("/") for w in said.group(1).split(",")}
    return out


def unit(module: str) -> str:
    """The package a module belongs to, or the top-level module itself."""
    return module.split(".")[0]


def test_every_module_is_in_the_table_and_imports_only_lower_layers() -> None:
    table, modules = design_table(), library_modules()
    assert set(modules) == set(table), sorted(set(modules) ^ set(table))
    for name, path in modules.items():
        layer, allowed = table[name]
        got = imports_of(path)
        assert got == allowed, (name, "imports", sorted(got), "DESIGN.md says", sorted(allowed))
        # video.x: the footage subpackage, checked by its own table below (it stands on layers up to `gallery`)
        assert all(table[dep][0] < layer for dep in got if not dep.startswith("video.")), (name, got)


def test_packages_import_only_what_their_paragraph_allows() -> None:
    rules, modules = package_rules(), library_modules()
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    # a paragraph may stand for a package not yet merged (its heading says so); every package on disk has one
    ahead = set(re.findall(r"^### `(\w+)/` \(arriving", DESIGN, re.M))
    assert packages <= set(rules) and set(rules) - packages <= ahead, (packages ^ set(rules), ahead)
    tops = {m for m in modules if "." not in m}
    for pkg, allowed in rules.items():
        assert allowed <= (set(rules) | tops) - {pkg}, (pkg, allowed - set(rules) - tops)
    for name, path in modules.items():
        if "." in name:
            outside = {unit(d) for d in imports_of(path)} - {unit(name)}
            assert outside <= rules[unit(name)], (name, "imports", sorted(outside - rules[unit(name)]))
    # no cycle between packages and top-level modules: the table's top-level rows and the package rules
    graph = {pkg: set(allowed) for pkg, allowed in rules.items()}
    graph |= {top: {unit(d) for d in design_table()[top][1]} - {top} for top in tops}
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, ("a cycle between packages", (*path, node))
        if node not in done:
            for nxt in graph.get(node, ()):
                visit(nxt, (*path, node))
            done.add(node)

    for node in graph:
        visit(node, ())


def test_package_inits_hold_no_code_and_the_library_never_imports_its_root() -> None:
    """A package's __init__ is its docstring (so importing data/ loads no torch); no library module imports
    `reid_core` by name: relative imports only, and never the root that loads every package."""
    for init in PACKAGE.glob("*/__init__.py"):
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr), init
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            assert not any(n == "reid_core" or n.startswith("reid_core.") for n in names), (path, node.lineno)


def public_api() -> set[str]:
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    return set(next(ast.literal_eval(n.value) for n in tree.body
                    if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "__all__"))


def entry_point_imports(path: Path) -> tuple[set[str], set[str]]:
    """(names taken from the package root, submodules loaded) by an app-side file."""
    names = {a.name for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.ImportFrom) and node.module == "reid_core" for a in node.names}
    return names, {f"reid_core.{m}" for m in imports_of(path)}


def test_app_train_and_space_stand_on_the_public_api() -> None:
    api = public_api()
    files = [("app.py", ROOT / "app.py"), ("train.py", ROOT / "train.py")]
    files += [("space", p) for p in sorted((ROOT / "space").rglob("*.py"))]
    for rule, path in files:
        names, modules = entry_point_imports(path)
        assert names <= api, (path.name, "takes from reid_core what is not its public API", sorted(names - api))
        assert modules <= ENTRY_POINTS[rule], (path.name, sorted(modules - ENTRY_POINTS[rule]))


def test_the_checkers_see_violations(tmp_path: Path) -> None:
    lib = tmp_path / "reid_core"
    for f in ("api.py", "engines.py", "data/__init__.py", "data/images.py", "data/limits.py", "model/__init__.py",
              "model/network.py", "search/__init__.py", "search/gallery.py"):
        (lib / f).parent.mkdir(parents=True, exist_ok=True)
        (lib / f).write_text("")
    bad = lib / "data" / "images.py"
    bad.write_text("from .limits import Limits\nfrom ..api import ReID\nfrom reid_core.search.gallery import Gallery\n"
                   "import reid_core.model.network\n"
                   "def f():\n    from .. import engines\n    from ..data import limits\n")
    assert imports_of(bad, lib) == {"data.limits", "api", "search.gallery", "model.network", "engines"}
    app = tmp_path / "app.py"  # a submodule taken through the root is a module, not a name of the public API
    app.write_text("from reid_core import ReID, plots\nfrom reid_core.figures import plots as p\n")
    names, modules = entry_point_imports(app)
    assert names - public_api() == {"plots"} and modules == {"reid_core.figures.plots"} | (
        {"reid_core.plots"} if (PACKAGE / "plots.py").exists() else set())


def test_only_the_cli_parses_arguments() -> None:
    """Library modules are called, not run: argparse and a `main` live in cli.py alone (and the `video` verb's
    flags in video/commands.py, which cli.py calls; it has no `main`)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imports |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        mains = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
        if path == PACKAGE / "cli.py":
            assert "argparse" in imports and mains == ["main"]
        elif path == PACKAGE / "video" / "commands.py":
            assert not mains
        else:
            assert "argparse" not in imports and not mains, path.name


def test_no_file_over_400_lines_without_a_reason_in_design() -> None:
    """A long file is split, or DESIGN.md says why it is not (its path in the "Long files" list)."""
    reasons = set(re.findall(r"^- `([\w/.]+\.py)` \(\d+ lines\)", DESIGN, re.M))
    files = [*PACKAGE.rglob("*.py"), ROOT / "app.py", ROOT / "train.py", *(ROOT / "space").rglob("*.py")]
    long = {str(p.relative_to(ROOT)) for p in files if len(p.read_text().splitlines()) > 400}
    assert long <= reasons, sorted(long - reasons)
