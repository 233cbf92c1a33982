"""The layering in DESIGN.md holds: each reid_core module imports only modules of lower layers (so there is
no import cycle), every module is in the table, and app.py / train.py stand on the public API only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "reid_core"


def design_table() -> dict[str, tuple[int, set[str]]]:
    """module -> (layer, allowed imports) from DESIGN.md's table."""
    rows = re.findall(r"^\| (\d) \| `(\w+)` \|[^|]*\|([^|]*)\|$", (ROOT / "DESIGN.md").read_text(), re.M)
    return {name: (int(layer), {m.strip() for m in deps.split(",") if m.strip()}) for layer, name, deps in rows}


def package_imports(path: Path) -> set[str]:
    """reid_core modules a file imports (relative imports, and absolute `reid_core.x`), at any depth."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                out |= {node.module} if node.module else {a.name for a in node.names}
            elif node.module and node.module.startswith("reid_core."):
                out.add(node.module.split(".")[1])
            elif node.module == "reid_core":  # `from reid_core import engines` imports the module engines
                out |= {a.name for a in node.names if (PACKAGE / f"{a.name}.py").exists()}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("reid_core.")}
    return out


def test_every_module_is_in_the_table_and_imports_only_lower_layers() -> None:
    table = design_table()
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == set(table), (modules ^ set(table))
    for name in sorted(modules):
        layer, allowed = table[name]
        got = package_imports(PACKAGE / f"{name}.py")
        assert got == allowed, (name, "imports", sorted(got), "DESIGN.md says", sorted(allowed))
        assert all(table[dep][0] < layer for dep in got), (name, [(d, table[d][0]) for d in got])


def test_app_train_and_space_stand_on_the_public_api() -> None:
    scripts = [("app.py", {"reid_core", "reid_core.figures.plots"}), ("train.py", {"reid_core"})]
    scripts += [(f"space/{p.name}", {"reid_core"}) for p in sorted((ROOT / "space").glob("*.py"))]
    for script, allowed in scripts:
        tree = ast.parse((ROOT / script).read_text())
        used = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                and n.module.startswith("reid_core")}
        used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
                 if a.name.startswith("reid_core")}
        assert used <= allowed, (script, sorted(used - allowed))


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from .api import ReID\nfrom reid_core.search.gallery import Gallery\nimport reid_core.model.network\n"
                   "from reid_core import engines, Limits\n")
    assert package_imports(bad) == {"api", "gallery", "model", "engines"}


def test_only_the_cli_parses_arguments() -> None:
    """Library modules are called, not run: argparse and a `main` live in cli.py alone."""
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imports |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        mains = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
        if path.stem == "cli":
            assert "argparse" in imports and mains == ["main"]
        else:
            assert "argparse" not in imports and not mains, path.name
