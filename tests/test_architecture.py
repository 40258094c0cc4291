"""The house by stages (docs/architecture.md), read from the source: every import of a module of bot/,
wherever it stands (at the top, or inside a function to be lazy), counts.

- no module imports one that imports it back, however long the way round;
- the ground imports no stage (`cli`, the command on top of everything, excepted);
- the stages import one another in one order only;
- no module uses another's private names (`_name`).
"""

from __future__ import annotations

import ast
from pathlib import Path

BOT = Path(__file__).resolve().parent.parent / "bot"
GROUND = {"bot", "bot.common", *(f"bot.common.{path.stem}" for path in (BOT / "common").glob("*.py"))}
TOP = {"bot.cli", "bot.__main__"}  # the command (`huggingtweets`, `python -m bot`)
# Each stage, and the stages it may stand on (besides the ground).
MAY_IMPORT = {
    "data": set(),
    "sources": {"data"},
    "publishing": {"data"},
    "training": {"data", "publishing"},
    "workers": {"data", "publishing", "training"},
    "requests": {"data", "sources", "publishing", "training", "workers"},
}


def modules() -> dict[str, Path]:
    found = {}
    for path in BOT.rglob("*.py"):
        if "playground" in path.parts:  # the Space's script, run on its own (package data)
            continue
        name = ".".join(("bot", *path.relative_to(BOT).with_suffix("").parts))
        found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> tuple[set[str], list[str]]:
    """The modules of bot/ that `path` imports, and the private names of theirs it uses."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found, private, aliases = set(), [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bot":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in known:  # `from bot.training import job`
                    found.add(full)
                    aliases[alias.asname or alias.name] = full
                else:
                    found.add(node.module)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            private.append(f"{aliases[node.value.id]}.{node.attr}")
    return {m for m in found if m in known}, private


def stage(module: str) -> str:
    return "ground" if module in GROUND else "top" if module in TOP else module.split(".")[1]


GRAPH = {name: imports(path, modules()) for name, path in modules().items()}


def test_no_module_imports_one_that_imports_it_back():
    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in GRAPH[todo.pop()][0]:
                if nxt not in seen and nxt != "bot":  # the package itself: its __init__ imports nothing of ours
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    circles = sorted(f"{a} -> {b}" for a, (deps, _) in GRAPH.items() for b in deps if a != b and a in reachable(b))
    assert circles == []


def test_imports_run_one_way_ground_then_stages_then_the_command():
    wrong = []
    for module, (deps, _) in GRAPH.items():
        here = stage(module)
        for dep in deps:
            there = stage(dep)
            if here == "top" or there in ("ground", here):
                continue
            if here == "ground" or there == "top" or there not in MAY_IMPORT[here]:
                wrong.append(f"{module} ({here}) imports {dep} ({there})")
    assert wrong == []


def test_no_module_uses_another_modules_private_names():
    assert [f"{module} uses {name}" for module, (_, private) in GRAPH.items() for name in private] == []


def test_every_stage_says_what_comes_in_and_what_goes_out():
    for package in [*MAY_IMPORT, "common"]:
        doc = ast.get_docstring(ast.parse((BOT / package / "__init__.py").read_text(encoding="utf-8"))) or ""
        assert "In:" in doc and "Out:" in doc, package


def test_the_top_of_bot_is_the_stages_the_ground_and_the_command():
    entries = {p.name for p in BOT.iterdir() if p.name != "__pycache__"}
    command = {f"{m.split('.')[-1]}.py" for m in TOP}
    assert entries == set(MAY_IMPORT) | {"common"} | command | {"__init__.py", "config.toml"}
    assert len(entries) <= 11
