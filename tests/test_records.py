"""The run record's contract: a schema version, a schema in the repository that documents every key, records of
the previous version still read, newer ones refused with what to run, and generated docs kept in sync."""
import json
import subprocess
import sys

import jsonschema
import pytest

from harness import cli, docs, pipeline
from harness.config import Engine, Train, parse_workload
from harness.results import load, record, schema

from conftest import FOREIGN_RECORDS, ROOT, record_problems


@pytest.fixture(scope="module")
def masks_run(dataset, tmp_path_factory):
    """A real run record: the masks stage over the session's synthetic dataset."""
    res = tmp_path_factory.mktemp("records")
    w = parse_workload({"name": "rec", "stages": ["masks"], "dataset": {"kind": "camelyon16", "path": str(dataset)}})
    s = pipeline.run(w, results_dir=res, storage=None)
    assert s["status"] == "ok"
    return res, s


def test_a_record_carries_its_version_and_validates_and_an_undocumented_key_is_named(masks_run):
    res, s = masks_run
    doc = json.loads((res / s["run_id"] / "summary.json").read_text())
    assert doc["schema_version"] == record.SCHEMA_VERSION == 2
    assert schema.problems(doc) == []
    doc["stages"]["masks"]["peak_rss_bytes"] = 5  # a key someone adds without documenting it
    doc["page_cache"]["io_profile"] = {}
    found = schema.problems(doc, "x/summary.json")
    assert found == ["x/summary.json: $.page_cache: undocumented key 'io_profile': document it in "
                     "docs/run-record.schema.json (meaning, unit, when null)",
                     "x/summary.json: $.stages.masks: undocumented key 'peak_rss_bytes': document it in "
                     "docs/run-record.schema.json (meaning, unit, when null)"]
    del doc["schema_version"]
    with pytest.raises(schema.RecordError, match=r"x/summary.json: \$: 'schema_version' is a required property"):
        schema.check({k: v for k, v in doc.items() if k not in ("page_cache", "stages")} | {"stages": {}},
                     "x/summary.json")


def test_the_session_check_names_the_file_and_the_path(masks_run, tmp_path):
    res, s = masks_run
    doc = json.loads((res / s["run_id"] / "summary.json").read_text())
    bad = tmp_path / FOREIGN_RECORDS / "run-bad"  # not a record of the suite's own runs: the session check skips it
    bad.mkdir(parents=True)
    doc["stages"]["masks"]["seconds"] = "slow"
    (bad / "summary.json").write_text(json.dumps(doc))
    n, problems = record_problems(bad.parent)
    assert n == 1 and problems == [f"{bad / 'summary.json'}: $.stages.masks.seconds: 'slow' is not of type 'number'"]


def test_version_1_records_are_read_and_newer_ones_refused_with_what_to_run(masks_run, tmp_path):
    res, s = masks_run
    doc = json.loads((res / s["run_id"] / "summary.json").read_text())
    folder = tmp_path / FOREIGN_RECORDS
    v1 = {k: v for k, v in doc.items() if k != "schema_version"} | {"run_id": "v1-run"}
    v3 = doc | {"schema_version": 3, "run_id": "v3-run"}
    for d in (v1, v3):
        (folder / d["run_id"]).mkdir(parents=True)
        (folder / d["run_id"] / "summary.json").write_text(json.dumps(d))
    old = load(folder / "v1-run")
    assert old["schema_version"] == 2 and schema.problems({k: v for k, v in old.items() if k != "_dir"}) == []
    with pytest.raises(schema.RecordError, match=r"v3-run/summary.json: run record schema_version 3, written by a "
                                                 r"newer wsibench.*reads versions 1 to 2\. Update wsibench"):
        load(folder / "v3-run")
    r = subprocess.run([sys.executable, "-m", "harness.cli", "runs", "--results", str(folder)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "v1-run" in r.stdout and "v3-run" not in r.stdout
    assert "v3-run/summary.json: run record schema_version 3" in r.stderr and "Update wsibench" in r.stderr
    r = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(folder / "v1-run"), "-o",
                        str(tmp_path / "r.html")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(folder / "v3-run"), "-o",
                        str(tmp_path / "r3.html")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "schema_version 3" in r.stderr


def test_the_schema_is_valid_and_describes_every_key():
    s = schema.load_schema()
    jsonschema.Draft202012Validator.check_schema(s)
    assert s["properties"]["schema_version"]["const"] == record.SCHEMA_VERSION
    undescribed = []

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            if "description" not in sub and "$ref" not in sub:
                undescribed.append(f"{path}.{key}")
            walk(sub, f"{path}.{key}")
        for name in ("items", "additionalProperties"):
            if isinstance(node.get(name), dict):
                walk(node[name], f"{path}[]")
    walk(s, "$")
    for name, d in s["$defs"].items():
        walk(d, f"$defs.{name}")
    assert not undescribed


def test_generated_docs_are_in_sync():
    for path, text in docs.generated().items():
        assert path.is_file() and path.read_text() == text, \
            f"{path.relative_to(ROOT)} is out of date: run `python -m harness.docs` and commit it"
    md = (ROOT / "docs" / "run-record.md").read_text()
    assert "### `stages.patches`" in md and "| `patches_per_s` |" in md and "undocumented key" in md


def test_validate_explain_documents_every_workload_key(capsys):
    assert cli.main(["validate", "--explain", "train"]) == 0
    out = capsys.readouterr().out
    assert "[train]" in out and "batch_size = 32  (integer, > 0, <= 65536)" in out and "images per step" in out
    assert "[engine]" not in out
    assert cli.main(["validate", "--explain", "nope"]) == 1
    assert "no such key or table" in capsys.readouterr().err
    ref = (ROOT / "docs" / "workload-reference.md").read_text()
    for model, prefix in ((Train, "train."), (Engine, "engine.")):
        for name, field in model.model_fields.items():
            row = next(l for l in ref.splitlines() if l.startswith(f"| `{prefix}{name}` |"))
            assert field.description and field.description.replace("|", "\\|") in row, row
    assert '| `patches.output` | one of "jpeg", "tfrecord" | `"jpeg"` |' in ref
    rows = docs.workload_keys()
    assert all(r["meaning"] for r in rows), [r["key"] for r in rows if not r["meaning"]]


def test_a_patch_example_put_together_from_pieces_is_the_generic_encoding():
    """patch_example builds its bytes from cached entries and a header before the JPEG (the hot path of TFRecord
    output); they are the bytes of the generic encoder (which the read-back tests check against TensorFlow and the
    tfrecord package), at every varint boundary of the JPEG's length and of the position, any label and slide."""
    import os

    from harness import tfrecord_format

    for j in (0, 1, 127, 128, 129, 16_383, 16_384, 18_000, 2**21 + 5):
        jpeg = os.urandom(j)
        for label, slide, x, y, side in ((0, "a", 0, 0, 224), (1, "tumor_001", 127, 128, 299),
                                         (1, "n\u00e9" * 100, 2**40, 16_384, 1), (0, "s", 2**63 - 1, -5, 128)):
            generic = tfrecord_format.example({"image/encoded": jpeg, "image/format": b"jpeg",
                                               "image/class/label": label, "image/height": side, "image/width": side,
                                               "slide": slide, "loc_x": x, "loc_y": y})
            assert tfrecord_format.patch_example(jpeg, label, slide, x, y, side, side) == generic, (j, slide, x, y)


@pytest.mark.parametrize("dlio", [False, True])
def test_shard_planning_counts_the_bytes_the_records_will_have(dlio):
    """The shards are planned from each Example's size computed without the JPEG; with DLIO's keys each record carries
    its JPEG twice, and the plan counted it once (shards came out ~2x shard_mb). Exact at every varint boundary, from
    JPEG files and from record files alike."""
    import os

    from harness import tfrecord_format

    for j in (1, 127, 128, 16_383, 16_384, 18_000, 2**21 + 5):
        jpeg = os.urandom(j)
        args = (1, "tumor_001", 12_345, 678, 224, 224)
        assert tfrecord_format.patch_example_size(j, *args, dlio=dlio) == len(tfrecord_format.patch_example(jpeg, *args, dlio=dlio))
        assert tfrecord_format.jpeg_size_of(len(tfrecord_format.patch_example(jpeg, *args)), *args) == j
