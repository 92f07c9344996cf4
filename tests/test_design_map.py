"""docs/DESIGN.md is the map of lm/: every module stands on a floor there, imports only run to
its own floor or below, and no imports form a circle. Read with ast (nothing is imported), so
imports inside functions count too."""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DESIGN = os.path.join(ROOT, "docs", "DESIGN.md")


def floors() -> dict:
    """{'lm/x.py': floor} from the rows `| N | room | `lm/x.py` ... |` of the floor table."""
    out = {}
    for line in open(DESIGN, encoding="utf-8"):
        row = re.match(r"\|\s*(\d+)\s*\|[^|]*\|(.*)\|\s*$", line)
        if row:
            for path in re.findall(r"`(lm/[^`]+\.py)`", row.group(2)):
                out[path] = int(row.group(1))
    return out


def modules(root=ROOT) -> dict:
    """{'lm.x': 'lm/x.py'} of every module under lm/ (a package by its __init__.py)."""
    out = {}
    for base, _, files in os.walk(os.path.join(root, "lm")):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(base, name), root).replace(os.sep, "/")
                dotted = rel[:-3].replace("/", ".")
                out[dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted] = rel
    return out


def imports(mods: dict, root=ROOT) -> dict:
    """{'lm.x': {'lm.y', ...}}: every lm module each one imports, at any depth of its code."""
    def resolve(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for mod, rel in mods.items():
        tree = ast.parse(open(os.path.join(root, rel), encoding="utf-8").read())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                target = resolve(name) if name.split(".")[0] == "lm" else ""
                if target and target != mod and not mod.startswith(target + "."):  # not its own package
                    graph.setdefault(mod, set()).add(target)
    return graph


def upward(on_map: dict, mods: dict, graph: dict) -> list:
    floor = {mod: on_map.get(rel, 0) for mod, rel in mods.items()}
    return sorted(f"{a} (floor {floor[a]}) -> {b} (floor {floor[b]})"
                  for a, targets in graph.items() for b in targets if floor[b] > floor[a])


def circles(graph: dict) -> list:
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    return found


def test_every_module_is_on_the_map():
    on_map, mods = floors(), modules()
    missing = sorted(rel for rel in mods.values() if rel not in on_map)
    assert not missing, f"add these to the floor table of docs/DESIGN.md: {missing}"
    gone = sorted(set(on_map) - set(mods.values()))
    assert not gone, f"docs/DESIGN.md names modules that do not exist: {gone}"


def test_imports_run_downward_only():
    mods = modules()
    found = upward(floors(), mods, imports(mods))
    assert not found, "imports that run upward (docs/DESIGN.md floors):\n" + "\n".join(found)


def test_no_import_circles():
    found = circles(imports(modules()))
    assert not found, "import circles: " + "; ".join(" -> ".join(c) for c in found)


def test_the_checks_catch_an_upward_arrow_and_a_circle(tmp_path):
    """A config that imports the trainer lazily (inside a function), which imports the config."""
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "__init__.py").write_text("")
    (tmp_path / "lm" / "config.py").write_text("def f():\n    from lm import trainer\n")
    (tmp_path / "lm" / "trainer.py").write_text("from lm.config import f\n")
    mods = modules(tmp_path)
    graph = imports(mods, tmp_path)
    assert upward(floors(), mods, graph) == ["lm.config (floor 0) -> lm.trainer (floor 6)"]
    assert circles(graph) == [["lm.config", "lm.trainer", "lm.config"]]
