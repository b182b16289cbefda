"""The shape of the house: no import runs upward, one registry per axis, errors the CLI can explain."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli, config, models, registry
from harness.commands import validate
from harness.accelerators import ACCELERATORS, resolve
from harness.errors import MissingExtra, UnknownName, WsibenchError

from conftest import ROOT

# top to bottom: cli -> orchestrators -> stages, engines, storage, slides -> configuration, figures, records, files
LAYERS = [
    ["harness.cli", "harness.commands"],
    ["harness.pipeline", "harness.matrix", "harness.feed", "harness.report", "harness.sizing", "harness.calibrate"],
    ["harness.stages", "harness.engines", "harness.storage", "harness.slides"],
    ["harness.config", "harness.metrics", "harness.results", "harness.fsutil", "harness.errors", "harness.registry",
     "harness.models", "harness.accelerators", "harness.tfrecord_format", "harness.docs", "harness.network", "harness.progress",
     "harness.procs", "harness.cputime"],
]


def layer(module: str) -> int:
    best = None
    for depth, names in enumerate(LAYERS):
        for n in names:
            if (module == n or module.startswith(n + ".")) and (best is None or len(n) > len(best[1])):
                best = (depth, n)
    assert best, f"{module} is in no layer: add it to LAYERS"
    return best[0]


def modules() -> dict[str, Path]:
    """Every module of the package, by name (a package by its own name: its __init__)."""
    out = {}
    for path in sorted((ROOT / "harness").rglob("*.py")):
        out[".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = path
    return out


def imports(path: Path, module: str, known: dict[str, Path]):
    """Every harness module a file imports, imports inside functions included: ``from X import name`` counts as
    importing X.name where that is a module, else X."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("harness"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("harness"):
                for a in node.names:
                    yield f"{target}.{a.name}" if f"{target}.{a.name}" in known else target


def graph() -> dict[str, set[str]]:
    known = modules()
    out = {}
    for module, path in known.items():
        targets = set(imports(path, module, known)) - {module}
        unknown = sorted(t for t in targets if t not in known)
        assert not unknown, f"{module} imports what is no module of the package: {unknown}"
        out[module] = targets
    return out


def unplaced(names) -> list[str]:
    return [m for m in names if m != "harness" and not any(m == n or m.startswith(n + ".")
                                                           for layer_names in LAYERS for n in layer_names)]


def upward(edges: dict[str, set[str]]) -> list[str]:
    return [f"{m} imports {t}" for m, targets in edges.items() if m != "harness"
            for t in sorted(targets) if layer(t) < layer(m)]


def test_every_module_is_in_a_layer():
    """A new module must be placed: one in no layer would be exempt from the rule below."""
    found = unplaced(modules())
    assert not found, f"modules in no layer (add them to LAYERS): {found}"


def test_no_import_runs_upward():
    found = upward(graph())
    assert not found, "\n".join(found)


def test_the_layer_checks_name_a_new_module_and_an_upward_import():
    """Negative controls: a module new to the package, in no layer, is named (not exempt from the rule), and fails
    the upward check too rather than being skipped; an upward import, inside a function or not, is named."""
    assert unplaced(["harness", "harness.stages.masks", "harness.zz_new", "harness.commandsx"]) \
        == ["harness.zz_new", "harness.commandsx"]
    with pytest.raises(AssertionError, match="harness.zz_new is in no layer"):
        upward({"harness.pipeline": {"harness.zz_new"}})
    with pytest.raises(AssertionError, match="harness.zz_new is in no layer"):
        upward({"harness.zz_new": {"harness.config"}})
    assert upward({"harness.config": {"harness.pipeline", "harness.errors"}, "harness.stages.masks": {"harness.cli"},
                   "harness.pipeline": {"harness.stages.masks", "harness.config"}}) \
        == ["harness.config imports harness.pipeline", "harness.stages.masks imports harness.cli"]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_modules():
    found = cycles(graph())
    assert not found, "import cycles (imports inside functions included):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_configuration_takes_its_allowed_values_from_the_registries():
    assert config.STAGES == tuple(registry.STAGE_DRIVERS) == ("masks", "patches", "tfrecords", "train", "infer")
    assert config.ENGINES == tuple(registry.ENGINE_CLASSES)
    with pytest.raises(config.ConfigError, match="'inception_v3' or 'small_cnn'"):
        config.parse_workload({"name": "t", "train": {"model": "resnet"}})
    for table, kind in ((registry.STAGE_DRIVERS, "stage"), (registry.ENGINE_CLASSES, "engine")):
        for name in table:  # every entry points at something that exists
            assert callable(registry.load(table, kind, name))


def test_unknown_names_list_the_known_ones_and_missing_extras_say_what_to_install(monkeypatch):
    with pytest.raises(UnknownName, match="unknown engine 'ray'; known: local, multiprocessing, dask, spark"):
        registry.load(registry.ENGINE_CLASSES, "engine", "ray")
    with pytest.raises(UnknownName, match="known: h100-resnet50, a100-resnet50"):
        resolve(config.Train(accelerator="tpu-v9"), Path("results"))
    table = {"ray": registry.Entry("wsibench_test_not_installed.engine:RayEngine", "ray")}
    with pytest.raises(MissingExtra, match=r"engine 'ray' needs wsibench_test_not_installed.*pip install 'wsibench\[ray\]'"):
        registry.load(table, "engine", "ray")
    assert set(ACCELERATORS) and all(a["source"] for a in ACCELERATORS.values())
    assert set(models.MODELS) == {"inception_v3", "small_cnn"}


def test_cli_explains_project_errors_in_one_line_and_keeps_tracebacks_of_bugs(tmp_path, monkeypatch):
    bad = tmp_path / "w.toml"
    bad.write_text('name = "t"\n[engine]\nname = "ray"\n')
    r = subprocess.run([sys.executable, "-m", "harness.cli", "validate", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "engine.name" in r.stderr

    def bug(_):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(validate, "load_workload", bug)
    with pytest.raises(ZeroDivisionError):  # not turned into a one-line message
        cli.main(["validate", str(bad)])

    def user_error(_):
        raise WsibenchError("the user's to fix")
    monkeypatch.setattr(validate, "load_workload", user_error)
    assert cli.main(["validate", str(bad)]) == 1
