"""Safe by default: names from configuration cannot reach outside the storage root, removals are guarded."""

import pytest

from harness import fsutil, matrix, pipeline
from harness.config import ConfigError, load_profile, parse_workload
from harness.fsutil import UnsafePath

from conftest import local_root

BAD_NAMES = ["../victim", "/tmp/victim", "a/b", "..", ".hidden", "x,allow_other", "name with space", ""]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unsafe_workload_names_are_refused(name):
    with pytest.raises(ConfigError, match=r"^w\.toml: name: .*is not a safe name"):
        parse_workload({"name": name}, "w.toml")


def test_unsafe_profile_names_are_refused(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text(f'name = "x,allow_other"\nroot = "{tmp_path}/r"\n')  # would add a FUSE mount option via the fsname
    with pytest.raises(ConfigError, match="p.toml: name: .*not a safe name"):
        load_profile(str(p))
    with pytest.raises(ConfigError, match="storage profile '../local' is not a safe name"):
        load_profile("../local")


def test_a_workload_named_outside_the_root_deletes_nothing(tmp_path):
    root = tmp_path / "root"
    victim = tmp_path / "victim" / "dataset"
    victim.mkdir(parents=True)
    (victim / "sentinel.txt").write_text("keep me")
    for name in ("../victim", str(tmp_path / "victim")):
        with pytest.raises(ConfigError):
            w = parse_workload({"name": name, "stages": ["masks"]})
            with local_root(str(root)):
                pipeline.run(w, results_dir=tmp_path / "results")
    assert (victim / "sentinel.txt").read_text() == "keep me"


class Stop(Exception):
    pass


def test_a_workload_past_validation_is_refused_by_the_pipeline(tmp_path, monkeypatch):
    """The parser refuses these names (above); a Workload made past it (model_copy does not validate: a caller in
    Python, or a parser bug) must still be refused by the run itself, before it removes anything. Two guards: the
    workload's lock at attach (storage.attach) and the data folder in pipeline.run_stages; each alone refuses.
    Without both, this very run removes the victim's files (its synthetic dataset folder is made afresh)."""
    from harness.storage import attach

    root, victim = tmp_path / "root", tmp_path / "victim"
    (victim / "dataset").mkdir(parents=True)
    (victim / "dataset" / "sentinel.txt").write_text("keep me")
    root.mkdir()
    good = parse_workload({"name": "w", "stages": ["masks"]})
    unchecked = lambda name, what="": name  # noqa: E731 - a guard taken out
    monkeypatch.setattr("harness.slides.synth.generate", lambda *a, **k: (_ for _ in ()).throw(Stop()))
    for name in ("../victim", str(victim)):
        bad = good.model_copy(update={"name": name})
        for left in ("attach", "pipeline"):
            with monkeypatch.context() as m:
                m.setattr(pipeline if left == "attach" else attach, "check_name", unchecked)
                with local_root(str(root)), pytest.raises(UnsafePath, match="is not a safe name"):
                    pipeline.run(bad, results_dir=tmp_path / "results", fresh=True)
            assert (victim / "dataset" / "sentinel.txt").read_text() == "keep me", (name, left)
    # the control: with neither guard, the run reaches the victim (its dataset folder removed, then Stop)
    monkeypatch.setattr(pipeline, "check_name", unchecked)
    monkeypatch.setattr(attach, "check_name", unchecked)
    with local_root(str(root)), pytest.raises(Stop):
        pipeline.run(good.model_copy(update={"name": "../victim"}), results_dir=tmp_path / "results")
    assert not (victim / "dataset" / "sentinel.txt").exists()


def test_every_removal_is_guarded(tmp_path):
    work = tmp_path / "root" / "w"
    (work / "patches").mkdir(parents=True)
    outside = tmp_path / "sentinel.txt"
    outside.write_text("keep me")
    (work / "patches" / "link").symlink_to(tmp_path)  # a link inside that points out
    for path in (work / ".." / ".." / "sentinel.txt", work / "patches" / "link", work, tmp_path / "root"):
        with pytest.raises(UnsafePath, match="refusing to remove"):
            fsutil.remove(path, work)
    assert outside.read_text() == "keep me" and (work / "patches").is_dir()
    fsutil.remove(work / "patches", work)
    assert not (work / "patches").exists()


def test_fresh_matrix_runs_stay_inside_their_workload_folder(dataset, tmp_path):
    root = tmp_path / "root"
    beside, neighbour = tmp_path / "beside.txt", root / "other" / "patches" / "keep.txt"
    neighbour.parent.mkdir(parents=True)
    for f in (beside, neighbour):
        f.write_text("keep me")
    w = parse_workload({"name": "m", "stages": ["masks", "patches"],
                        "dataset": {"kind": "camelyon16", "path": str(dataset)}, "patches": {"max_per_class": 20},
                        "matrix": {"engines": ["local"], "repetitions": 2, "measure": ["patches"]}})
    with local_root(str(root)):
        doc = matrix.run(w, tmp_path / "results")
    assert doc["results"][0]["n"] == 2
    assert beside.read_text() == neighbour.read_text() == "keep me"
    assert list((root / "m" / "patches" / "manifests").glob("*.parquet"))
