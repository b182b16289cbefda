"""wsibench calibrate with Keras 3 alone (any backend), and the models it builds."""
import json
import subprocess
import sys

import numpy as np
import pytest

from harness.config import Train

from conftest import ROOT


def test_inception_v3_carries_the_reference_weight_decay_on_every_convolution():
    """Keras 3 refuses add_loss on a functional model: the decay is each convolution's own regulariser. Its size
    is slim's l2_regularizer(4e-5), the reference's: 4e-5 x tf.nn.l2_loss(w) = 4e-5 x sum(w^2) / 2 (before, Keras's
    L2(4e-5): twice that)."""
    import keras

    from harness import models

    m = models.build(Train(model="inception_v3", weight_decay=4e-5))
    convs = [layer for layer in m.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 94
    kernels = [np.asarray(layer.kernel) for layer in convs] + [np.asarray(m.layers[-1].kernel)]
    slim_l2 = 4e-5 * sum(float((k.astype(np.float64) ** 2).sum()) / 2 for k in kernels)
    assert float(sum(np.asarray(x) for x in m.losses)) == pytest.approx(slim_l2, rel=1e-4)
    assert not models.build(Train(model="inception_v3", weight_decay=0)).losses


def test_learning_rate_decays_every_lr_decay_steps_whatever_the_epoch():
    """The reference decayed every 1,875 steps (its hard-coded 2,000-sample epoch / 32 x 30 epochs), not every
    30 of its real epochs: lr_decay_steps gives that step count, an epoch of any length."""
    from harness import models

    cfg = Train(model="inception_v3", learning_rate=0.01, lr_decay=0.94, lr_decay_steps=1875)
    for steps_per_epoch in (10, 13_770):
        lr = models.schedule(cfg, steps_per_epoch)
        assert [float(lr(s)) for s in (0, 1874, 1875, 3750)] == pytest.approx([0.01, 0.01, 0.0094, 0.01 * 0.94 ** 2])
    lr = models.schedule(Train(model="inception_v3", lr_decay_epochs=2), 100)  # else by epochs
    assert [float(lr(s)) for s in (199, 200)] == pytest.approx([0.01, 0.0094])


def test_cli_and_calibrate_do_not_need_tensorflow():
    """What `wsibench calibrate` imports before Keras picks its backend: no TensorFlow (GPU images ship without it)."""
    code = ("import sys; import harness.cli, harness.calibrate, harness.accelerators, harness.models; "
            "harness.cli.build_parser(); print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]


@pytest.mark.slow
def test_calibrate_times_training_and_inference(tmp_path):
    r = subprocess.run([sys.executable, "-m", "harness.cli", "calibrate", str(ROOT / "workloads" / "quickstart.toml"),
                        "--results", str(tmp_path), "--steps", "3", "--warmup", "1", "--infer-batch", "64"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    (f,) = (tmp_path / "calibration").glob("small_cnn-b32-*.json")
    c = json.loads(f.read_text())
    assert c["backend"] in ("tensorflow", "jax", "torch") and c["device"]
    assert 0 < c["step_s_min"] <= c["step_s"] <= c["step_s_max"] and c["images_per_s"] == pytest.approx(32 / c["step_s"])
    assert c["infer"]["batch"] == 64 and c["infer"]["images_per_s"] == pytest.approx(64 / c["infer"]["batch_s"])
    assert c["first_step_s"] >= c["step_s_min"]  # tracing: start-up, kept apart
    from harness import accelerators
    a = accelerators.profile(f.stem, tmp_path)
    assert a["infer_images_per_s"] == c["infer"]["images_per_s"] and "wsibench calibrate" in a["source"]
