"""Workload and storage-profile settings: TOML in, validated objects out.

Every error names the file, the key and what was expected, in one line per problem.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import WsibenchError
from .fsutil import check_name
from .models import LEARNING_RATES as OPTIMIZERS, MODELS
from .registry import ENGINES as _ENGINES, STAGES as _STAGES

STAGES = tuple(_STAGES)    # allowed values come from the registries
ENGINES = tuple(_ENGINES)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(WsibenchError, ValueError):
    """A workload or profile that cannot be used; the message names file, key and expectation."""

    exit_code = 2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class SyntheticSpec(_Strict):
    slides: int = Field(12, gt=0, le=100_000, description="slides in all, training and testing")
    size: int = Field(8192, ge=1024, le=1_048_576, description="level-0 width and height in pixels")
    seed: int = 0
    tumor_fraction: float = Field(0.5, ge=0, le=1, description="share of slides that carry lesions")
    test_fraction: float = Field(0.25, ge=0, lt=1, description="share of each class kept for testing")
    mpp: float = Field(0.25, gt=0, description="microns per pixel at level 0")


class Dataset(_Strict):
    kind: Literal["synthetic", "camelyon16"] = "synthetic"
    path: str | None = Field(None, description="folder in the CAMELYON16 layout (kind = camelyon16)")
    synthetic: SyntheticSpec = SyntheticSpec()

    @model_validator(mode="after")
    def _path_for_camelyon(self):
        if self.kind == "camelyon16":
            if not self.path:
                raise ValueError("dataset.path is required when kind = 'camelyon16'")
            if not Path(self.path).is_dir():
                raise ValueError(f"dataset.path: folder {self.path!r} does not exist")
        return self


class Masks(_Strict):
    level: int | None = Field(None, ge=0, le=32, description="pyramid level; default: nearest a 32x downsample")
    target_downsample: float = Field(32.0, ge=1, le=4096)
    tissue_level: int | None = Field(None, ge=0, le=32, description="default: same rule as level")
    median_blur: int = Field(7, gt=0, le=255, description="odd kernel size, in mask pixels")
    min_saturation: int = Field(20, ge=0, le=255, description="floor under the Otsu threshold")
    tumor_groups: list[str] = ["_0", "_1", "Tumor", "tumor", "metastasis"]
    exclusion_groups: list[str] = ["_2", "Exclusion", "negative"]

    @model_validator(mode="after")
    def _odd(self):
        if self.median_blur % 2 == 0:
            raise ValueError("masks.median_blur: expected an odd number")
        return self


class Patches(_Strict):
    size: int = Field(224, gt=0, le=4096, description="patch side in pixels")
    level: int = Field(0, ge=0, le=32)
    mpp: float | None = Field(None, gt=0, le=1000, description="target microns per pixel; overrides level")
    stride: int | None = Field(None, gt=0, le=65536, description="default: the patch size")
    tumor_threshold: float = Field(0.9, gt=0, le=1)
    tissue_threshold: float = Field(0.5, ge=0, le=1)
    max_per_class: int = Field(3000, gt=0, le=10_000_000)
    normal_from_tumor_slides: bool = True
    output: Literal["jpeg", "tfrecord"] = "jpeg"
    jpeg_quality: int = Field(90, ge=1, le=100)
    seed: int = 0


class TFRecords(_Strict):
    shard_mb: float = Field(100.0, gt=0, le=100_000, description="target shard size in MB")
    shards: int | None = Field(None, gt=0, le=1_000_000, description="a shard count; overrides shard_mb")
    val_fraction: float = Field(0.05, ge=0, lt=1, description="share of slides for validation")
    seed: int = 0


class Train(_Strict):
    model: Literal[tuple(MODELS)] = "inception_v3"  # type: ignore[valid-type]
    image_size: int | None = Field(None, gt=0, le=4096, description="input side in px; default 224 (inception_v3), 96 (small_cnn)")
    batch_size: int = Field(32, gt=0, le=65536)
    epochs: int = Field(1, gt=0, le=100_000)
    steps_per_epoch: int | None = Field(None, gt=0, le=1_000_000_000, description="default: one pass over the training shards")
    optimizer: Literal[tuple(OPTIMIZERS)] | None = Field(  # type: ignore[valid-type]
        None, description="default: rmsprop (inception_v3), adam (small_cnn)")
    learning_rate: float | None = Field(None, gt=0, le=100, description="default: 0.01 (rmsprop), 0.001 (adam)")
    lr_decay: float = Field(0.94, gt=0, le=1, description="learning-rate factor every lr_decay_epochs")
    lr_decay_epochs: float = Field(30.0, gt=0, le=1_000_000)
    weight_decay: float = Field(4e-5, ge=0, le=1)
    shuffle_buffer: int = Field(2048, ge=0, le=100_000_000)
    interleave_cycle: int = Field(4, gt=0, le=4096, description="shards read in parallel")
    parallel_calls: int = Field(-1, ge=-1, le=4096, description="decode threads; -1 = AUTOTUNE")
    prefetch: int = Field(-1, ge=-1, le=4096, description="batches prefetched; -1 = AUTOTUNE, 0 = none")
    augment: bool = True
    balance_classes: bool = Field(True, description="weigh the loss so each class counts half")
    mixed_precision: bool = False
    decode_delay_ms: float = Field(0.0, ge=0, le=60_000, description="artificial delay per image in the decode map (starvation experiments)")
    seed: int = 0
    distribution: Literal["none", "multiworker", "horovod"] = Field(
        "none", description="several training processes: tf.distribute MultiWorkerMirroredStrategy or Horovod (Gloo)")
    processes: int = Field(1, gt=0, le=4096, description="training processes (ranks): distributed workers or emulated accelerators")
    accelerator: str | None = Field(None, description="emulate this accelerator (a name from `wsibench feed --help`, "
                                                      "or 'calibrated' for the newest `wsibench calibrate` result)")
    step_time_s: float | None = Field(None, gt=0, le=3600, description="emulated step time in seconds (instead of an accelerator)")


class Infer(_Strict):
    batch_size: int = Field(64, gt=0, le=65536)
    stride: int | None = Field(None, gt=0, le=65536, description="default: the patch size")
    tissue_threshold: float = Field(0.5, ge=0, le=1)
    top_k: int = Field(10, gt=0, le=1_000_000, description="slide score: mean of the k highest patch probabilities")
    allow_stale_model: bool = Field(False, description="judge a model older than the TFRecord shards (by default "
                                                       "refused: it was not trained on them)")


class Engine(_Strict):
    name: Literal[ENGINES] = "local"  # type: ignore[valid-type]
    workers: int = Field(1, gt=0, le=4096, description="worker processes (embedded engines)")
    retries: int = Field(1, ge=0, le=100, description="retries of a failing item, by the engine's own mechanism")
    address: str | None = Field(None, description="dask: scheduler of an existing cluster, tcp://host:8786")
    master: str | None = Field(None, description="spark: spark://host:7077, yarn, k8s://...; default local[workers]")
    spark_conf: dict[str, str] = {}
    stages: dict[Literal[STAGES], Literal[ENGINES]] = Field(  # type: ignore[valid-type]
        {}, description="engine per stage, e.g. {patches = 'spark', infer = 'dask'}")
    nodes: int | None = Field(None, gt=0, le=4096, description=(
        "hosts of the cluster that run the stages: dask, the workers of N hosts (engine.address); spark standalone, "
        "one executor on each of N workers, with spark.executor.cores (default: workers) cores each "
        "(engine.master); embedded engines are one node"))

    def is_cluster(self, name: str) -> bool:
        """Whether engine ``name`` runs on a cluster of this configuration (else embedded, on this host)."""
        return (name == "dask" and bool(self.address)) or \
            (name == "spark" and bool(self.master) and not self.master.startswith("local"))

    @model_validator(mode="after")
    def _nodes_need_a_cluster(self):
        used = {self.name, *self.stages.values()}
        if self.nodes and self.nodes > 1 and not any(self.is_cluster(n) for n in used):
            raise ValueError(f"nodes = {self.nodes} needs a cluster: engine.address (dask) or engine.master "
                             f"(spark standalone); {', '.join(sorted(used))} here would run on this one host")
        return self


class Network(_Strict):
    interface: str | None = Field(
        None, description="open the services of distributed training on this interface (multi-host runs); "
                          "default: none beyond loopback (ranks run in a private network namespace)")


class Matrix(_Strict):
    engines: list[Literal[ENGINES]] = []  # type: ignore[valid-type]
    workers: list[Annotated[int, Field(gt=0, le=4096)]] = []
    nodes: list[Annotated[int, Field(gt=0, le=4096)]] = Field(
        [], description="node counts of the cluster engines (engine.address / engine.master); embedded engines run once, "
                        "on one node")
    storage: list[str] = []
    repetitions: int = Field(1, gt=0, le=1000)
    measure: list[Literal[STAGES]] = ["patches"]  # type: ignore[valid-type]


def _safe(value: str) -> str:
    try:
        return check_name(value, "")
    except OSError as e:  # as a ValueError, pydantic reports it under its key
        raise ValueError(str(e)) from None


SafeName = Annotated[str, AfterValidator(_safe)]


class Workload(_Strict):
    name: SafeName = Field(description="the workload's folder under the storage root and part of every run id")
    description: str = ""
    stages: list[Literal[STAGES]] = ["masks", "patches", "tfrecords"]  # type: ignore[valid-type]
    storage: str = "local"
    dataset: Dataset = Dataset()
    engine: Engine = Engine()
    masks: Masks = Masks()
    patches: Patches = Patches()
    tfrecords: TFRecords = TFRecords()
    train: Train = Train()
    infer: Infer = Infer()
    network: Network = Network()
    matrix: Matrix = Matrix()

    @property
    def source(self) -> str:
        return getattr(self, "_source", "<memory>")


def _format(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if "input" in e and e["type"] != "value_error":
                msg += f" (got {e['input']!r})"
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def parse_workload(data: dict, source: str = "<memory>") -> Workload:
    try:
        w = Workload.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format(e, source)) from None
    object.__setattr__(w, "_source", source)
    return w


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a TOML file: not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def load_workload(path: str | Path) -> Workload:
    data = load_toml(path)
    ds = data.get("dataset")
    if isinstance(ds, dict) and isinstance(ds.get("path"), str):  # relative to the workload file
        p = Path(ds["path"]).expanduser()
        ds["path"] = str(p if p.is_absolute() else (Path(path).parent / p).resolve())
    return parse_workload(data, str(path))


class Emulate(_Strict):
    backing: str = Field(description="folder the throttled mount passes through to; '{results}' allowed")
    read_mb_s: float | None = Field(None, gt=0, le=1e6)
    write_mb_s: float | None = Field(None, gt=0, le=1e6)
    iops: float | None = Field(None, gt=0, le=1e9)
    latency_ms: float = Field(0.0, ge=0, le=10_000, description="per read or write operation")
    metadata_ms: float = Field(0.0, ge=0, le=10_000, description="per create, open, mkdir, unlink, rename")
    read_only: bool = False


class StorageProfile(_Strict):
    name: SafeName
    description: str = ""
    root: str = Field(description="root folder; '{results}' stands for the results directory")
    root_env: str | None = Field(None, description="environment variable that overrides root")
    fstype: str | None = Field(None, description="file-system type the profile claims (ext4, nfs, beegfs, ...)")
    emulated: bool = False
    create: bool = Field(False, description="create the root when missing (only for folders the harness owns)")
    reference: dict[str, float | str] = {}
    emulate: Emulate | None = Field(None, description="mount a throttled FUSE passthrough at root for the run")

    def resolve_root(self, results_dir: Path) -> Path:
        raw = os.environ.get(self.root_env, "") if self.root_env else ""
        raw = raw or self.root.replace("{results}", str(results_dir))
        return Path(raw).expanduser().resolve()


def load_profile(name_or_path: str) -> StorageProfile:
    """A profile by name (storage_profiles/NAME.toml) or by the path of a TOML file."""
    p = Path(name_or_path)
    if not p.suffix:
        try:
            check_name(name_or_path, "storage profile")
        except OSError as e:
            raise ConfigError(str(e)) from None
        p = PROJECT_ROOT / "storage_profiles" / f"{name_or_path}.toml"
    data = load_toml(p)
    data.setdefault("name", p.stem)
    try:
        return StorageProfile.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format(e, str(p))) from None
