"""The asv benchmarks never rot: asv finds them, and one quick sample of each runs without failing."""
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

ASV = str(Path(sys.executable).parent / "asv")


def test_asv_check_and_quick_run():
    env = dict(os.environ)
    py = f"existing:{sys.executable}"
    if not (Path.home() / ".asv-machine.json").exists():
        subprocess.run([ASV, "machine", "--yes"], cwd=ROOT, env=env, check=True, capture_output=True)
    r = subprocess.run([ASV, "check", "-E", py], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "No problems found" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([ASV, "run", "-E", py, "--quick", "--dry-run"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    for name in ("time_synthetic_slide_8192", "time_rasterise_lesions_ds16", "track_patch_stage_patches_per_s",
                 "track_reference_read_region_pil_patches_per_s", "track_write_records_per_s", "track_read_mb_per_s",
                 "track_tfdata_images_per_s", "time_map_50_trivial_items"):
        assert name[-30:] in r.stdout, name  # asv shortens long names from the left
    assert "failed" not in r.stdout.lower()
