"""TFRecord files without TensorFlow: tf.train.Example encoding, record framing, index files, reading.

Workers that cut patches or write shards need not import TensorFlow (seconds of start-up and a large
memory footprint per worker). The format is small: each record is
``uint64 length | masked crc32c(length) | data | masked crc32c(data)``, little-endian; the data is a
tf.train.Example protobuf. Tests read the files back with TensorFlow and with the independent `tfrecord`
package. Index files use that package's format: one ``offset length`` line per record.
"""
from __future__ import annotations

import functools
import struct
from pathlib import Path
from typing import Iterator

import crc32c

_MASK_DELTA = 0xA282EAD8


def masked_crc(data: bytes) -> int:
    c = crc32c.crc32c(data)
    return (((c >> 15) | (c << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    n = struct.pack("<Q", len(data))
    return n + struct.pack("<I", masked_crc(n)) + data + struct.pack("<I", masked_crc(data))


def write_record(f, data: bytes) -> int:
    """Write one framed record (``frame(data)``) to the file f as its three parts, without joining them into a new
    bytes first (with a large buffer: no copy of the data but the buffer's); returns the bytes written."""
    n = struct.pack("<Q", len(data))
    f.write(n + struct.pack("<I", masked_crc(n)))
    f.write(data)
    f.write(struct.pack("<I", masked_crc(data)))
    return len(data) + 16


RECORD_BUFFER = 1 << 20  # bytes of write buffer for a file of records: one write call per ~60 patches, not per one


_SMALL = [bytes((i,)) for i in range(128)]


def _varint(v: int) -> bytes:
    if 0 <= v < 128:
        return _SMALL[v]
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # length-delimited field
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature(value) -> bytes:
    if isinstance(value, (bytes, str)):
        v = value.encode() if isinstance(value, str) else value
        return _field(1, _field(1, v))  # Feature.bytes_list(1) -> BytesList.value(1)
    if isinstance(value, int):
        return _field(3, _field(1, _varint(value)))  # Feature.int64_list(3) -> packed Int64List.value(1)
    raise TypeError(f"unsupported feature type {type(value).__name__}")


def _entry(key: str, value) -> bytes:  # one entry of the Features map: key(1), Feature(2)
    return _field(1, _field(1, key.encode()) + _field(2, _feature(value)))


_cached_entry = functools.lru_cache(maxsize=1024)(_entry)  # the keys and values patches share (label, size, slide)
_UNSHARED = ("loc_x", "loc_y")  # a patch's own position: caching it would only evict the shared entries


def example(features: dict) -> bytes:
    """Serialise {key: bytes | str | int} as a tf.train.Example (keys sorted, so output is deterministic)."""
    entries = b"".join(_entry(k, v) if k in _UNSHARED or isinstance(v, bytes) and len(v) > 64 else _cached_entry(k, v)
                       for k, v in sorted(features.items()))
    return _field(1, entries)  # Example.features(1) -> Features.feature map entries(1)


DLIO_KEYS = ("image", "size")  # what MLPerf Storage's (DLIO 2.0) TensorFlow reader parses: bytes, and the side in px


def patch_example(jpeg: bytes, label: int, slide: str, x: int, y: int, height: int, width: int,
                  dlio: bool = False) -> bytes:
    """One patch as a tf.train.Example: the reference pipeline's keys (``image/encoded``, ``image/format``,
    ``image/class/label``, ``image/height``, ``image/width``) and the patch's origin; with ``dlio`` also the keys
    DLIO 2.0's TensorFlow reader requires, ``image`` (the same JPEG bytes, a second time) and ``size`` (int64).

    The same bytes as ``example`` of those features, put together from pieces: the entries patches share (label,
    format, size, slide) cached, the JPEG's own entry a header before the JPEG, the position's two entries (the
    hot path of TFRecord output: ~4 us a patch instead of ~25)."""
    if dlio:
        return example({"image/encoded": jpeg, "image/format": b"jpeg", "image/class/label": int(label),
                        "image/height": int(height), "image/width": int(width), "slide": slide, "loc_x": int(x),
                        "loc_y": int(y), "image": jpeg, "size": int(height)})
    label_entry, middle, slide_entry = _patch_shared(int(label), int(height), int(width), slide)
    head = _bytes_entry_head(_ENCODED_KEY, len(jpeg))
    loc = _int_entry(_LOC_X, int(x)) + _int_entry(_LOC_Y, int(y))
    n = len(label_entry) + len(head) + len(jpeg) + len(middle) + len(loc) + len(slide_entry)
    return b"".join((_EXAMPLE_TAG, _varint(n), label_entry, head, jpeg, middle, loc, slide_entry))


_EXAMPLE_TAG = _varint(1 << 3 | 2)  # Example.features(1), length-delimited
_ENCODED_KEY = _field(1, b"image/encoded")
_LOC_X, _LOC_Y = _field(1, b"loc_x"), _field(1, b"loc_y")


def _int_entry(key_field: bytes, v: int) -> bytes:
    """_entry(key, v) for an int v and a key field under 118 bytes: every length inside fits one byte."""
    vb = _varint(v)
    n = len(vb)
    return b"".join((bytes((0x0A, len(key_field) + 6 + n)), key_field, bytes((0x12, 4 + n, 0x1A, 2 + n, 0x0A, n)), vb))


def _bytes_entry_head(key_field: bytes, n: int) -> bytes:
    """The bytes of a Features map entry {key: bytes_list [v]} that come before v, for a value of n bytes
    (_entry(key, v) == _bytes_entry_head(_field(1, key), len(v)) + v)."""
    tail1 = _varint(n)                                   # BytesList.value(1): tag 0x0a, length, value
    bytes_list = 1 + len(tail1) + n
    tail2 = _varint(bytes_list)                          # Feature.bytes_list(1)
    feature = 1 + len(tail2) + bytes_list
    tail3 = _varint(feature)                             # entry's value(2): the Feature
    body = len(key_field) + 1 + len(tail3) + feature
    return b"".join((b"\x0a", _varint(body), key_field, b"\x12", tail3, b"\x0a", tail2, b"\x0a", tail1))


@functools.lru_cache(maxsize=64)
def _patch_shared(label: int, height: int, width: int, slide: str) -> tuple[bytes, bytes, bytes]:
    """The entries of a patch's Example that do not depend on its pixels or position, in key order around them:
    image/class/label | image/encoded | image/format, image/height, image/width | loc_x, loc_y | slide."""
    return (_entry("image/class/label", label),
            _entry("image/format", b"jpeg") + _entry("image/height", height) + _entry("image/width", width),
            _entry("slide", slide))


def with_dlio(data: bytes, size: int) -> bytes:
    """An Example written by ``patch_example`` without the DLIO keys, with them."""
    e = parse_example(data)
    return example(e | {"image": e["image/encoded"], "size": int(size)})


def without_dlio(data: bytes) -> bytes:
    """An Example written by ``patch_example``, as it was before the DLIO keys were added."""
    e = parse_example(data)
    return example({k: v for k, v in e.items() if k not in DLIO_KEYS}) if any(k in e for k in DLIO_KEYS) else data


def patch_example_size(jpeg_size: int, label: int, slide: str, x: int, y: int, height: int, width: int,
                       dlio: bool = False) -> int:
    """len(patch_example(jpeg, ..., dlio=dlio)) for any JPEG of ``jpeg_size`` bytes, computed without the JPEG."""
    def field(n: int) -> int:  # a length-delimited field of n payload bytes (one-byte field tags here)
        return 1 + len(_varint(n)) + n
    others = example({"image/format": b"jpeg", "image/class/label": int(label), "image/height": int(height),
                      "image/width": int(width), "slide": slide, "loc_x": int(x), "loc_y": int(y),
                      **({"size": int(height)} if dlio else {})})
    n, shift, i = 0, 0, 1  # the length of its map entries: the varint after its one-byte tag
    while True:
        n |= (others[i] & 0x7F) << shift
        if not others[i] & 0x80:
            break
        i, shift = i + 1, shift + 7
    keys = ("image/encoded", "image") if dlio else ("image/encoded",)  # DLIO's image: the same JPEG again
    return field(n + sum(field(field(len(k)) + field(field(field(jpeg_size)))) for k in keys))


def jpeg_size_of(example_size: int, *args) -> int:
    """The JPEG size whose patch_example(...) (without DLIO's keys) is ``example_size`` bytes: the inverse of
    patch_example_size (which grows with the JPEG), by bisection."""
    lo, hi = 0, example_size
    while lo < hi:
        mid = (lo + hi) // 2
        if patch_example_size(mid, *args) < example_size:
            lo = mid + 1
        else:
            hi = mid
    return lo


class CorruptRecord(ValueError):
    pass


def read_records(path: str | Path, verify: bool = True) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, data) of every record; CRCs checked when verify."""
    with open(path, "rb") as f:
        offset = 0
        while True:
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                raise CorruptRecord(f"{path}: truncated record header at byte {offset}")
            (n,) = struct.unpack("<Q", head[:8])
            if verify and struct.unpack("<I", head[8:])[0] != masked_crc(head[:8]):
                raise CorruptRecord(f"{path}: bad length CRC at byte {offset}")
            data, tail = f.read(n), f.read(4)
            if len(data) < n or len(tail) < 4:
                raise CorruptRecord(f"{path}: truncated record at byte {offset}")
            if verify and struct.unpack("<I", tail)[0] != masked_crc(data):
                raise CorruptRecord(f"{path}: bad data CRC at byte {offset}")
            yield offset, data
            offset += 16 + n


def read_at(path: str | Path, offset: int) -> bytes:
    """The data of the record at byte ``offset``, CRC checked."""
    with open(path, "rb") as f:
        f.seek(offset)
        head = f.read(12)
        (n,) = struct.unpack("<Q", head[:8])
        data, tail = f.read(n), f.read(4)
    if len(data) < n or len(tail) < 4 or struct.unpack("<I", tail)[0] != masked_crc(data):
        raise CorruptRecord(f"{path}: bad or truncated record at byte {offset}")
    return data


def parse_example(data: bytes) -> dict:
    """Decode an Example written by ``example`` (bytes and int64 features) back to a dict."""
    def fields(buf):
        i = 0
        while i < len(buf):
            tag, i = _read_varint(buf, i)
            n, i = _read_varint(buf, i)
            yield tag >> 3, buf[i:i + n]
            i += n

    out = {}
    for _, feats in fields(data):
        for _, entry in fields(feats):
            d = dict(fields(entry))
            key, feat = d[1].decode(), dict(fields(d[2]))
            if 1 in feat:
                out[key] = dict(fields(feat[1]))[1]
            elif 3 in feat:
                out[key] = _read_varint(dict(fields(feat[3]))[1], 0)[0]
    return out


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = v = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def steps_per_epoch(records: list[int], n: int, batch: int) -> int:
    """MLPerf mode: the steps every one of ``n`` accelerators takes in an epoch, each reading its own shards
    (sorted, dealt round-robin: DLIO's TF reader) once: the fewest records of any accelerator, in whole batches."""
    return min(sum(records[r::n]) for r in range(n)) // batch
