"""The shape of the house: no import runs upward, one registry per axis, errors the CLI can explain."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli, config, models, registry
from harness.accelerators import ACCELERATORS, resolve
from harness.errors import MissingExtra, UnknownName, WsibenchError

from conftest import ROOT

# top to bottom: cli -> orchestrators -> stages, engines, storage, slides -> configuration, figures, records, files
LAYERS = [
    ["harness.cli"],
    ["harness.pipeline", "harness.matrix", "harness.feed", "harness.report", "harness.sizing", "harness.calibrate"],
    ["harness.stages", "harness.engines", "harness.storage", "harness.slides"],
    ["harness.config", "harness.metrics", "harness.results", "harness.fsutil", "harness.errors", "harness.registry",
     "harness.models", "harness.accelerators", "harness.tfrecord", "harness.docs"],
]


def layer(module: str) -> int:
    best = None
    for depth, names in enumerate(LAYERS):
        for n in names:
            if (module == n or module.startswith(n + ".")) and (best is None or len(n) > len(best[1])):
                best = (depth, n)
    assert best, f"{module} is in no layer: add it to LAYERS"
    return best[0]


def imports(path: Path, module: str):
    """Every harness module imported by a file, lazy imports inside functions included."""
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
                # `from . import x` names modules: count each one
                subs = [f"{target}.{a.name}" for a in node.names] if not node.module else [target]
                yield from subs


def test_no_import_runs_upward():
    upward = []
    for path in sorted((ROOT / "harness").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for target in imports(path, module):
            try:
                if layer(target) < layer(module):
                    upward.append(f"{module} imports {target}")
            except AssertionError:  # `from . import name` of a non-module name
                continue
    assert not upward, "\n".join(upward)


def test_configuration_takes_its_allowed_values_from_the_registries():
    assert config.STAGES == tuple(registry.STAGES) == ("masks", "patches", "tfrecords", "train", "infer")
    assert config.ENGINES == tuple(registry.ENGINES)
    with pytest.raises(config.ConfigError, match="'inception_v3' or 'small_cnn'"):
        config.parse_workload({"name": "t", "train": {"model": "resnet"}})
    for table, kind in ((registry.STAGES, "stage"), (registry.ENGINES, "engine")):
        for name in table:  # every entry points at something that exists
            assert callable(registry.load(table, kind, name))


def test_unknown_names_list_the_known_ones_and_missing_extras_say_what_to_install(monkeypatch):
    with pytest.raises(UnknownName, match="unknown engine 'ray'; known: local, multiprocessing, dask, spark"):
        registry.load(registry.ENGINES, "engine", "ray")
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
    monkeypatch.setattr(cli, "load_workload", bug)
    with pytest.raises(ZeroDivisionError):  # not turned into a one-line message
        cli.main(["validate", str(bad)])

    def user_error(_):
        raise WsibenchError("the user's to fix")
    monkeypatch.setattr(cli, "load_workload", user_error)
    assert cli.main(["validate", str(bad)]) == 1
