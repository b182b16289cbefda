"""Workload and storage-profile settings: TOML in, validated objects out.

Every error names the file, the key and what was expected, in one line per problem.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import WsibenchError
from .fsutil import check_name
from .models import LEARNING_RATES as OPTIMIZERS, MODELS
from .registry import ENGINE_CLASSES, STAGE_DRIVERS

STAGES = tuple(STAGE_DRIVERS)    # allowed values come from the registries
ENGINES = tuple(ENGINE_CLASSES)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(WsibenchError, ValueError):
    """A workload or profile that cannot be used; the message names file, key and expectation."""

    exit_code = 2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class SyntheticSpec(_Strict):
    slides: int = Field(12, gt=0, le=100_000, description="slides in all, training and testing")
    size: int = Field(8192, ge=1024, le=1_048_576, description="level-0 width and height in pixels")
    seed: int = Field(0, description="random seed: the same specification and seed give the same slides")
    tumor_fraction: float = Field(0.5, ge=0, le=1, description="share of slides that carry lesions")
    test_fraction: float = Field(0.25, ge=0, lt=1, description="share of each class kept for testing")
    mpp: float = Field(0.25, gt=0, le=1000, description="microns per pixel at level 0")
    difficulty: float = Field(0.55, ge=0, le=1, description="0 easy .. 1 hard: stain variation between slides, "
                              "tumour texture closer to normal, micro-metastases and isolated tumour cells")


class Dataset(_Strict):
    kind: Literal["synthetic", "auto", "camelyon16", "camelyon17", "flat"] = Field(
        "synthetic", description="synthetic: slides generated once per specification (see [dataset.synthetic]) under "
                                 "<storage root>/<workload>/dataset; or a real dataset's layout, auto detects it "
                                 "(the record says which)")
    path: str | None = Field(None, description="the dataset's folder (every kind but synthetic)")
    synthetic: SyntheticSpec = Field(
        SyntheticSpec(), description="the synthetic CAMELYON16-like dataset (kind = synthetic)")
    missing_annotations: Literal["error", "exclude"] = Field(
        "error", description="a slide labelled tumor without lesion annotation: stop, or leave it out (recorded)")
    missing_labels: Literal["error", "exclude"] = Field(
        "error", description="a slide without a label (reference.csv): stop, or leave it out (recorded). CAMELYON17 "
                             "slides without a stage label are the challenge's test patients: always inferred "
                             "without one, their patients staged, not scored")
    exclude_from_evaluation: list[str] | None = Field(
        None, description="slides run but not evaluated; default: the release's known problem slides "
                          "(CAMELYON16 Test_049, Test_114)")
    test_centers: list[int] = Field([], description="camelyon17: centers whose slides are the test split")
    decode_warnings: Literal["error", "record"] = Field(
        "error", description="a JPEG tile libjpeg calls corrupt (damaged data it decodes anyway, into wrong pixels): "
                             "the slide fails naming the tile, or the pixels are kept and the warning recorded")

    @model_validator(mode="after")
    def _path_for_real_data(self):
        # whether the folder exists is the machine's business: `wsibench validate` and the run check it
        if self.kind != "synthetic" and not self.path:
            raise ValueError(f"dataset.path is required when kind = {self.kind!r}")
        return self


class Masks(_Strict):
    level: int | None = Field(None, ge=0, le=32, description="pyramid level; default: nearest a 32x downsample")
    target_downsample: float = Field(
        32.0, ge=1, le=4096, description="the mask level is the one whose downsample is nearest this (log scale), "
                                         "when level is unset")
    tissue_level: int | None = Field(None, ge=0, le=32, description="default: same rule as level")
    median_blur: int = Field(7, gt=0, le=255, description="odd kernel size, in mask pixels")
    min_saturation: int = Field(20, ge=0, le=255, description="floor under the Otsu threshold")
    tumor_groups: list[str] = Field(["_0", "_1", "Tumor", "metastasis", "metastases"],
                                    description="ASAP annotation groups painted as tumor (case-insensitive)")
    exclusion_groups: list[str] = Field(["_2", "Exclusion", "negative"],
                                        description="ASAP annotation groups painted last as not tumor, holes in "
                                                    "lesions (case-insensitive)")

    @model_validator(mode="after")
    def _odd(self):
        if self.median_blur % 2 == 0:
            raise ValueError("masks.median_blur: expected an odd number")
        return self


class Patches(_Strict):
    size: int = Field(224, gt=0, le=4096, description="patch side in pixels")
    level: int = Field(0, ge=0, le=32, description="pyramid level the patches are cut from (unless mpp is set)")
    mpp: float | None = Field(None, gt=0, le=1000, description="target microns per pixel; overrides level")
    stride: int | None = Field(None, gt=0, le=65536, description="default: the patch size")
    stride_tumor: int | None = Field(None, gt=0, le=65536, description="grid stride of tumor patches; default: stride")
    stride_normal: int | None = Field(None, gt=0, le=65536, description="grid stride of normal patches; default: stride")
    tumor_threshold: float = Field(
        0.9, gt=0, le=1, description="a patch is tumor when at least this share of its footprint is tumor")
    tissue_threshold: float = Field(
        0.5, ge=0, le=1, description="a patch is normal when it holds no tumor and at least this share of tissue")
    max_per_class: int = Field(
        3000, gt=0, le=10_000_000, description="patches kept per class and slide (a seeded choice when there are "
                                               "more)")
    normal_from_tumor_slides: bool = Field(True, description="take normal patches from tumor slides too")
    sampling: Literal["footprint", "reference"] = Field(
        "footprint", description=(
            "footprint: every grid patch labelled by its whole footprint (tumor_threshold, tissue_threshold), up "
            "to max_per_class a seeded choice; reference: the reference pipeline's rule, for I/O fidelity: the "
            "strided points of each mask contour's bounding box at mask resolution, every q-th kept (q = "
            "candidates // max_per_class + 1), a patch accepted when the mask pixel at its corner is set, stopping "
            "at max_per_class (the thresholds are not used)"))
    output: Literal["jpeg", "tfrecord"] = Field(
        "jpeg", description="jpeg: one file per patch (the small-file workload); tfrecord: one TFRecord file per "
                            "slide")
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of the encoded patches")
    seed: int = Field(0, description="seed of the per-class choice")


class TFRecords(_Strict):
    shard_mb: float = Field(100.0, gt=0, le=100_000, description="target shard size in MB")
    shards: int | None = Field(None, gt=0, le=1_000_000, description="a shard count; overrides shard_mb")
    val_fraction: float = Field(0.05, ge=0, lt=1, description="share of slides for validation")
    seed: int = Field(0, description="seed of the train/validation split and of the shuffle")
    dlio_features: bool = Field(False, description="also write the keys MLPerf Storage's (DLIO 2.0) TensorFlow reader "
                                                   "requires, image (bytes) and size (int64), so DLIO can read the "
                                                   "shards; image repeats each JPEG, so records about double")


class Train(_Strict):
    model: Literal[tuple(MODELS)] = Field(  # type: ignore[valid-type]
        "inception_v3", description="inception_v3: the reference model, from scratch; small_cnn: small, for CPUs")
    image_size: int | None = Field(None, gt=0, le=4096, description="input side in px; default 224 (inception_v3), 96 (small_cnn)")
    batch_size: int = Field(32, gt=0, le=65536, description="images per step (per process)")
    epochs: int = Field(1, gt=0, le=100_000, description="training epochs; validation AUC and a checkpoint after each")
    steps_per_epoch: int | None = Field(None, gt=0, le=1_000_000_000, description="default: one pass over the training shards")
    optimizer: Literal[tuple(OPTIMIZERS)] | None = Field(  # type: ignore[valid-type]
        None, description="default: rmsprop (inception_v3), adam (small_cnn)")
    learning_rate: float | None = Field(None, gt=0, le=100, description="default: 0.01 (rmsprop), 0.001 (adam)")
    lr_decay: float = Field(0.94, gt=0, le=1, description="learning-rate factor every lr_decay_steps (or "
                                                          "lr_decay_epochs), as a staircase")
    lr_decay_epochs: float = Field(30.0, gt=0, le=1_000_000, description="epochs between learning-rate decays, "
                                                                         "unless lr_decay_steps is set")
    lr_decay_steps: int | None = Field(None, gt=0, le=1_000_000_000, description=(
        "steps between learning-rate decays, whatever an epoch is; overrides lr_decay_epochs (the reference "
        "pipeline: 1875, from its hard-coded 2,000-sample epoch / batch 32 x 30 epochs)"))
    weight_decay: float = Field(4e-5, ge=0, le=1, description=(
        "L2 weight decay in TF-slim's convention: weight_decay x sum(w^2) / 2 added to the loss over the "
        "convolution and classifier kernels (the reference's 4e-5 is Keras's L2(2e-5)); 0 = none"))
    shuffle_buffer: int = Field(
        2048, ge=0, le=100_000_000, description="records in the tf.data shuffle buffer; 0 = no shuffle")
    interleave_cycle: int = Field(4, gt=0, le=4096, description="shards read in parallel")
    parallel_calls: int = Field(-1, ge=-1, le=4096, description="decode threads; -1 = AUTOTUNE")
    prefetch: int = Field(-1, ge=-1, le=4096, description="batches prefetched; -1 = AUTOTUNE, 0 = none")
    augment: bool = Field(True, description="random flips, 90-degree rotations and brightness on training images")
    balance_classes: bool = Field(True, description="weigh the loss so each class counts half")
    mixed_precision: bool = Field(False, description="compute in float16 (Keras mixed_float16 policy)")
    decode_delay_ms: float = Field(0.0, ge=0, le=60_000, description="artificial delay per image in the decode map (starvation experiments)")
    decode: bool = Field(True, description="decode (and augment) each image in the input pipeline; false: read and "
                                           "parse the records only, as MLPerf Storage's DLIO does (emulated "
                                           "accelerators only), so storage-only sizing is not capped by the host's CPU")
    seed: int = Field(0, description="seed of the weights, the shuffle and the augmentation")
    distribution: Literal["none", "multiworker", "horovod"] = Field(
        "none", description="several training processes: tf.distribute MultiWorkerMirroredStrategy or Horovod (Gloo)")
    processes: int = Field(1, gt=0, le=4096, description="training processes (ranks): distributed workers or emulated accelerators")
    accelerator: str | None = Field(None, description="emulate this accelerator (a name from `wsibench feed --help`, "
                                                      "or 'calibrated' for the newest `wsibench calibrate` result)")
    step_time_s: float | None = Field(None, gt=0, le=3600, description="emulated step time in seconds (instead of an accelerator)")


    @model_validator(mode="after")
    def _decode_only_emulated(self):
        if not self.decode and not (self.accelerator or self.step_time_s):
            raise ValueError("train.decode = false needs emulated accelerators (train.accelerator or train.step_time_s): "
                             "a real model trains on decoded images")
        return self


class Infer(_Strict):
    batch_size: int = Field(64, gt=0, le=65536, description="patches per model call")
    stride: int | None = Field(None, gt=0, le=65536, description="default: the patch size")
    tissue_threshold: float = Field(
        0.5, ge=0, le=1, description="patches with at least this share of tissue are classified")
    top_k: int = Field(10, gt=0, le=1_000_000, description="slide score: mean of the k highest patch probabilities")
    allow_stale_model: bool = Field(False, description="judge a model older than the TFRecord shards (by default "
                                                       "refused: it was not trained on them)")
    froc_threshold: float = Field(0.5, gt=0, lt=1, description="FROC detections: heatmap regions at or above this "
                                                               "probability, one detection each at its maximum")
    pn_threshold: float = Field(0.5, gt=0, lt=1, description=(
        "CAMELYON17 pN staging: heatmap regions at or above this probability are a slide's lesions; the longest "
        "diameter of its longest gives its class (over 2 mm macro, over 0.2 mm micro, else itc; none: negative)"))
    froc_resolution: Literal["official", "slide_mpp"] = Field(
        "official", description="official: the FROC's 75 um margin and 275 um ITC rule at 0.243 um/px for every "
                                "slide, as CAMELYON16's Evaluation_FROC.py (the challenge's score); slide_mpp: at "
                                "each slide's own level-0 mpp (0.243 where it records none), not the challenge's "
                                "score")


class Engine(_Strict):
    name: Literal[ENGINES] = Field(  # type: ignore[valid-type]
        "local", description="engine of every stage not named in stages")
    workers: int = Field(1, gt=0, le=4096, description="worker processes (embedded engines)")
    retries: int = Field(1, ge=0, le=100, description="retries of a failing item, by the engine's own mechanism")
    address: str | None = Field(None, description="dask: scheduler of an existing cluster, tcp://host:8786; \"lab\": "
                                                  "the Dask workers on a lab storage profile's client hosts")
    master: str | None = Field(None, description="spark: spark://host:7077, yarn, k8s://...; default local[workers]")
    spark_conf: dict[str, str] = Field(
        {}, description="extra Spark settings, e.g. {\"spark.executor.memory\" = \"4g\"}")
    stages: dict[Literal[STAGES], Literal[ENGINES]] = Field(  # type: ignore[valid-type]
        {}, description="engine per stage, e.g. {patches = 'spark', infer = 'dask'}")
    nodes: int | None = Field(None, gt=0, le=4096, description=(
        "hosts of the cluster that run the stages: dask, the workers of N hosts (engine.address); spark standalone, "
        "one executor on each of N workers, with spark.executor.cores (default: workers) cores each "
        "(engine.master); embedded engines are one node"))

    def is_cluster(self, name: str) -> bool:
        """Whether engine ``name`` runs on a cluster of this configuration (else embedded, on this host)."""
        return StageEngine(name, self.workers, self.retries, self.address, self.master).cluster

    @model_validator(mode="after")
    def _nodes_need_a_cluster(self):
        used = {self.name, *self.stages.values()}
        if self.nodes and self.nodes > 1 and not any(self.is_cluster(n) for n in used):
            raise ValueError(f"nodes = {self.nodes} needs a cluster: engine.address (dask) or engine.master "
                             f"(spark standalone); {', '.join(sorted(used))} here would run on this one host")
        return self


LAB_ADDRESS = "lab"  # engine.address: the Dask cluster of a lab storage profile's client hosts


@dataclass(frozen=True)
class StageEngine:
    """The engine one stage runs under, as planned: its name, worker processes, the cluster it connects to and how
    many of that cluster's hosts it uses (None: embedded, one host)."""
    name: str
    workers: int
    retries: int
    address: str | None = None     # dask: an existing cluster's scheduler
    master: str | None = None      # spark: a standalone master, yarn, k8s
    conf: tuple = ()               # spark settings, as (key, value) pairs
    nodes: int | None = None       # hosts of the cluster used; None where the engine is embedded

    @property
    def cluster(self) -> bool:
        return (self.name == "dask" and bool(self.address)) or \
            (self.name == "spark" and bool(self.master) and not self.master.startswith("local"))


@dataclass(frozen=True)
class EnginePlan:
    """Which engine runs each stage, with how many workers and nodes: computed once (``plan_engines``) from the
    workload's [engine] and the command line's overrides, handed to the stages, and recorded as it was asked."""
    default: StageEngine
    per_stage: tuple = ()          # (stage, StageEngine) for the stages the workload gives an engine of their own
    nodes_requested: int | None = None

    def for_stage(self, stage: str | None) -> StageEngine:
        return dict(self.per_stage).get(stage, self.default)

    def on_lab(self, address: str | None, source: str = "") -> "EnginePlan":
        """The plan with ``engine.address = "lab"`` replaced by the Dask scheduler of the lab storage's client hosts."""
        uses = [e for e in (self.default, *dict(self.per_stage).values()) if e.address == LAB_ADDRESS]
        if not uses:
            return self
        if not address:
            raise ConfigError(f"{source}: engine.address = \"lab\" runs stages on the client hosts of a lab storage "
                              "profile (kind = \"lab\" with lab.client_hosts > 0); this storage has none")
        swap = lambda e: dataclasses.replace(e, address=address) if e.address == LAB_ADDRESS else e  # noqa: E731
        return dataclasses.replace(self, default=swap(self.default),
                                   per_stage=tuple((s, swap(e)) for s, e in self.per_stage))

    def record(self) -> dict:
        """The run record's ``engine`` section, before the run (what ran replaces workers and nodes after)."""
        d = self.default
        return {"name": d.name, "workers": d.workers, "workers_requested": d.workers, "address": d.address or d.master,
                "per_stage": {s: e.name for s, e in self.per_stage}, "nodes_requested": self.nodes_requested,
                "nodes": (d.nodes or 1) if d.cluster else 1}


def plan_engines(workload: "Workload", engine: str | None = None, workers: int | None = None,
                 nodes: int | None = None) -> EnginePlan:
    """The engine plan of a run: ``engine`` (one engine for every stage), ``workers`` and ``nodes`` override the
    workload's. Nodes beyond one need a cluster engine."""
    e = workload.engine
    default_name = engine or e.name
    asked, nodes = nodes, nodes or e.nodes

    def stage_engine(name: str) -> StageEngine:
        base = StageEngine(name, workers or e.workers, e.retries, e.address, e.master, tuple(sorted(e.spark_conf.items())))
        return dataclasses.replace(base, nodes=nodes) if base.cluster else base

    used = {engine} if engine else {e.name, *e.stages.values()}
    if asked and asked > 1 and not any(stage_engine(n).cluster for n in used):  # the workload's own: validated
        raise ConfigError(f"{workload.source}: {nodes} nodes need a cluster engine (engine.address for dask, "
                          f"engine.master for spark); {', '.join(sorted(used))} would run on this one host")
    per_stage = () if engine else tuple((s, stage_engine(n)) for s, n in e.stages.items())
    return EnginePlan(stage_engine(default_name), per_stage, nodes)


class Network(_Strict):
    interface: str | None = Field(
        None, description="open the services of distributed training on this interface (multi-host runs); "
                          "default: none beyond loopback (ranks run in a private network namespace)")


class Matrix(_Strict):
    engines: list[Literal[ENGINES]] = Field(  # type: ignore[valid-type]
        [], description="engines to compare; default: engine.name")
    workers: list[Annotated[int, Field(gt=0, le=4096)]] = Field(
        [], description="worker counts to compare; default: engine.workers")
    nodes: list[Annotated[int, Field(gt=0, le=4096)]] = Field(
        [], description="node counts of the cluster engines (engine.address / engine.master); embedded engines run once, "
                        "on one node")
    storage: list[str] = Field([], description="storage profiles to compare; default: storage")
    repetitions: int = Field(
        1, gt=0, le=1000, description="runs of each configuration (mean, std, min, max; > 5% spread flagged)")
    measure: list[Literal[STAGES]] = Field(  # type: ignore[valid-type]
        ["patches"], description="stages measured, fresh every time; the stages before them are prepared once per "
                                 "storage profile")


def _safe(value: str) -> str:
    try:
        return check_name(value, "")
    except OSError as e:  # as a ValueError, pydantic reports it under its key
        raise ValueError(str(e)) from None


SafeName = Annotated[str, AfterValidator(_safe)]


class Workload(_Strict):
    name: SafeName = Field(description="the workload's folder under the storage root and part of every run id")
    description: str = Field("", description="free text")
    stages: list[Literal[STAGES]] = Field(  # type: ignore[valid-type]
        ["masks", "patches", "tfrecords"], description="stages run by `wsibench run`, always in pipeline order; "
                                                       "--stages overrides")
    storage: str = Field(
        "local", description="storage profile: a name in storage_profiles/ or a TOML path; --storage overrides")
    dataset: Dataset = Field(Dataset(), description="the slides and their annotations")
    engine: Engine = Field(Engine(), description="what maps the stages over their items (slides, shards)")
    masks: Masks = Field(Masks(), description="the masks stage: tumor masks from annotations, tissue masks from pixels")
    patches: Patches = Field(
        Patches(), description="the patch stage: a labelled grid over the masks, patches cut and encoded")
    tfrecords: TFRecords = Field(
        TFRecords(), description="the tfrecords stage: shuffled shards split into train and validation by slide")
    train: Train = Field(Train(), description="the train stage: a tf.data pipeline and a timed training loop")
    infer: Infer = Field(Infer(), description="the infer stage: heatmaps of the test slides, patch and slide AUC")
    network: Network = Field(Network(), description="where the services of distributed training listen")
    matrix: Matrix = Field(Matrix(), description="`wsibench matrix`: the configurations compared")

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
                got = repr(e["input"])
                msg += f" (got {got if len(got) <= 80 else got[:60] + f'... ({len(got)} characters)'})"
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
    if path.is_dir():
        raise ConfigError(f"{path}: a directory, not a TOML file")
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a TOML file: not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except RecursionError:  # Python's TOML reader recurses once per level, and gives up a few hundred down
        raise ConfigError(f"{path}: arrays or inline tables nested too deeply to read (hundreds of levels; no "
                          "workload needs more than a few)") from None


def load_workload(path: str | Path) -> Workload:
    data = load_toml(path)
    ds = data.get("dataset")
    if isinstance(ds, dict) and isinstance(ds.get("path"), str):  # relative to the workload file
        p = Path(ds["path"]).expanduser()
        ds["path"] = str(p if p.is_absolute() else (Path(path).parent / p).resolve())
    return parse_workload(data, str(path))


class Throttle(_Strict):
    backing: str = Field(description="folder the throttled mount passes through to; '{results}' allowed")
    read_mb_s: float | None = Field(None, gt=0, le=1e6, description="read bandwidth cap, MB/s; unset = none")
    write_mb_s: float | None = Field(None, gt=0, le=1e6, description="write bandwidth cap, MB/s; unset = none")
    iops: float | None = Field(None, gt=0, le=1e9, description="operations per second cap; unset = none")
    latency_ms: float = Field(0.0, ge=0, le=10_000, description="per read or write operation")
    metadata_ms: float = Field(0.0, ge=0, le=10_000, description="per create, open, mkdir, unlink, rename")
    read_only: bool = Field(False, description="refuse writes through the mount")


class Lab(_Strict):
    chunkservers: int = Field(2, gt=0, le=16, description="MooseFS chunk servers (storage targets), each on its own "
                                                          "namespace host")
    goal: int = Field(2, gt=0, le=16, description="replication goal: copies of every chunk (mfssetgoal)")
    client_hosts: int = Field(0, ge=0, le=16, description="client hosts: namespace hosts that each mount the file "
                                                          "system themselves and run Dask workers (engine.address = "
                                                          "\"lab\" runs stages on them)")
    workers_per_host: int = Field(1, gt=0, le=64, description="Dask worker processes on each client host")
    server_link_mbit: float | None = Field(None, gt=0, le=1e6, description="each chunk server's link, Mbit/s "
                                                                          "(tc tbf, both directions); unset = unshaped")
    client_link_mbit: float | None = Field(None, gt=0, le=1e6, description="each client host's link, Mbit/s; unset = "
                                                                          "unshaped")
    master_link_mbit: float | None = Field(None, gt=0, le=1e6, description="the metadata server's link, Mbit/s")
    cache_mode: Literal["DIRECT", "AUTO", "YES", "NO"] = Field(
        "DIRECT", description="mfsmount's mfscachemode: DIRECT keeps the client's page cache out of every read, as "
                              "the emulated profiles do; AUTO is MooseFS's default")
    io_retries: int = Field(8, gt=0, le=100, description="mfsmount's mfsioretries: how often an I/O is retried "
                                                         "(a lost server or master) before it fails with an error")
    timeout_s: float | None = Field(None, gt=0, le=86400, description=(
        "mfsmount's mfstimeout, seconds: an operation the file system cannot answer within it (its master gone, a "
        "chunk's every copy lost) fails with EIO instead of waiting; and a master gone this long makes the lab stop "
        "its mounts, so that requests that outwait mfstimeout (a truncate, a close) fail too. Unset: io_retries "
        "bounds most waits (8 retries: about 30 to 40 s for data, a few s for metadata), the mounts stop after "
        "120 s without a master"))


PROFILE_KINDS = ("path", "emulated", "lab")  # what a profile's root is (storage.attached handles each)


class StorageProfile(_Strict):
    name: SafeName = Field(description="profile name; default: the file's name without .toml")
    description: str = Field("", description="free text")
    kind: Literal[PROFILE_KINDS] = Field(  # type: ignore[valid-type]
        "path", description="path: an existing folder (a local disk, an NFS, BeeGFS or Lustre mount); emulated: a "
                            "throttled FUSE passthrough of a local folder mounted for the run ([throttle]), every "
                            "result labelled emulated; lab: a real MooseFS file system that wsibench starts on "
                            "network-namespace hosts of this machine for the run ([lab]), results labelled lab")
    root: str = Field(description="root folder; '{results}' stands for the results directory")
    root_env: str | None = Field(None, description="environment variable that overrides root")
    fstype: str | None = Field(None, description="file-system type the profile claims (ext4, nfs, beegfs, ...)")
    create: bool = Field(False, description="create the root when missing (only for folders the harness owns)")
    reference: dict[str, float | str] = Field(
        {}, description="figures to compare against (vendor or measured), units in the key names; copied into run "
                        "records")
    throttle: Throttle | None = Field(None, description="kind = \"emulated\": the bandwidth, IOPS and latencies of the "
                                                        "throttled FUSE passthrough mounted at root for the run")

    lab: Lab | None = Field(None, description="kind = \"lab\": the MooseFS servers, client hosts and links")

    @model_validator(mode="after")
    def _table_with_kind(self):
        if (self.kind == "emulated") != (self.throttle is not None):
            raise ValueError('kind = "emulated" and a [throttle] table go together')
        if (self.kind == "lab") != (self.lab is not None):
            raise ValueError('kind = "lab" and a [lab] table go together')
        if self.lab and self.lab.goal > self.lab.chunkservers:
            raise ValueError(f"lab.goal = {self.lab.goal} needs at least as many chunk servers "
                             f"(lab.chunkservers = {self.lab.chunkservers})")
        return self

    @property
    def emulated(self) -> bool:
        """Results on this profile are labelled emulated (a throttled passthrough, not the storage it imitates)."""
        return self.kind == "emulated"

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
    if "emulate" in data or "emulated" in data:
        raise ConfigError(f'{p}: "emulated = true" and [emulate] are now kind = "emulated" and [throttle]')
    try:
        return StorageProfile.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format(e, str(p))) from None
