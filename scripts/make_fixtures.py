#!/usr/bin/env python3
"""Generate the Python-produced safetensors fixture used by slimnn's Rust tests.

Writes, relative to the repository root:

  tests/fixtures/python_safetensors.safetensors
      A safetensors file written by the official Python ``safetensors`` package
      (``safetensors.numpy.save_file``), with tensors in PyTorch naming and layout
      (row-major, ``[out, in]`` for Linear, ``[out, in, kh, kw]`` for Conv2d, and the
      ``torch.nn.utils.prune`` ``<name>_orig`` / ``<name>_mask`` convention).

  tests/fixtures/python_safetensors.json
      The expected content: the ``__metadata__`` dict and, for every tensor, its
      safetensors dtype string, its shape, the formula that produced it, the
      data_offsets the writer chose, and its values as a flat row-major list of f64
      (taken *after* conversion to the stored dtype, so the Rust test can compare
      exactly). ``values_f64_bits`` repeats the values as 16-hex-digit f64 bit patterns
      (``f64::from_bits(u64::from_str_radix(s, 16))``), for a bit-exact comparison that
      does not depend on the JSON float parser (serde_json without its
      ``float_roundtrip`` feature may be 1 ulp off on values such as conv.weight's).

Every value is chosen to be exactly representable in its dtype (small dyadic
fractions; ``i`` below is the flat row-major index ``0..numel``):

  fc1.weight            F32  [4, 6]        i * 0.25 - 1.0
  fc1.bias              F32  [4]           i * 0.5 - 1.0
  fc2.weight            F16  [3, 4]        i * 0.125 - 0.75
  fc2.bias              F16  [3]           0.25 - i * 0.5
  conv.weight           F64  [2, 3, 3, 3]  (i - 27) * 0.125 + 2**-40
                                           (the 2**-40 term is not representable in
                                           f32, so it catches a reader that narrows f64)
  emb.weight            BF16 [5, 4]        i * 0.5 - 4.0
  bn.running_mean       F32  [3]           i * 0.75 - 0.5
  bn.num_batches_tracked I64 []            2**33 + 7 (a scalar, shape []; > 2**32 to
                                           catch a reader that narrows to 32 bits)
  pruned.weight_orig    F32  [3, 4]        i * 0.25 - 1.5
  pruned.weight_mask    F32  [3, 4]        1.0 where |weight_orig| > 0.5 else 0.0
                                           (5 of 12 entries are 0.0)

bf16: numpy has no native bfloat16, so ``ml_dtypes.bfloat16`` is used; safetensors
(>= 0.4) maps that dtype to "BF16" and writes it with ``save_file`` like every other
tensor. Only if ``ml_dtypes`` is missing (or ``save_file`` rejects it, or
``--manual-bf16`` is given) does the script fall back to building the whole file by
hand per the safetensors spec (8-byte little-endian header length, JSON header with
dtype/shape/data_offsets and ``__metadata__``, then the raw little-endian bytes), with
bf16 computed as the upper 16 bits of the f32 bit pattern, rounded to nearest even.
The script prints which path it took.

The script is deterministic: running it twice with the same ``safetensors`` version
gives byte-identical files. The package itself orders the ``__metadata__`` keys
randomly (a Rust HashMap), so the script repeats ``save_file`` until they come out in
sorted order (see ``save_deterministic``); tensor order is fixed by the package (by
dtype size, descending, then name). The producer string in the metadata contains the
package version, so a different version changes the file and its sha256; a reader
must not depend on the byte layout, only on the header.

Requirements: ``pip install numpy safetensors ml_dtypes``

Usage (from anywhere):  python3 scripts/make_fixtures.py [--out-dir DIR] [--manual-bf16]
"""

import argparse
import hashlib
import json
import os
import re
import struct
import sys

import numpy as np
import safetensors
from safetensors.numpy import save_file

try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - fallback path
    ml_dtypes = None
    BF16 = None

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEM = "python_safetensors"

# numpy dtype name -> safetensors dtype string, and the element size in bytes.
ST_DTYPE = {"float32": "F32", "float16": "F16", "float64": "F64", "bfloat16": "BF16", "int64": "I64"}

# String-only metadata (the safetensors ``__metadata__`` field), keys in sorted order.
METADATA = {
    "fixture": "slimnn scripts/make_fixtures.py",
    "framework": "pytorch-like",
    "producer": f"python safetensors {safetensors.__version__}",
}


def idx(shape):
    """Flat row-major index 0..numel as f64, reshaped (np.prod(()) == 1 for scalars)."""
    return np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)


def f32_to_bf16_bits(a):
    """Upper 16 bits of the f32 pattern, rounded to nearest even (finite inputs only)."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bf16_bits_to_f64(b):
    return (b.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def build_tensors():
    """Return an ordered list of (name, safetensors dtype, shape, formula, f64 source)."""
    orig = idx((3, 4)) * 0.25 - 1.5
    specs = [
        ("fc1.weight", "F32", (4, 6), "i * 0.25 - 1.0", idx((4, 6)) * 0.25 - 1.0),
        ("fc1.bias", "F32", (4,), "i * 0.5 - 1.0", idx((4,)) * 0.5 - 1.0),
        ("fc2.weight", "F16", (3, 4), "i * 0.125 - 0.75", idx((3, 4)) * 0.125 - 0.75),
        ("fc2.bias", "F16", (3,), "0.25 - i * 0.5", 0.25 - idx((3,)) * 0.5),
        ("conv.weight", "F64", (2, 3, 3, 3), "(i - 27) * 0.125 + 2**-40",
         (idx((2, 3, 3, 3)) - 27) * 0.125 + 2.0 ** -40),
        ("emb.weight", "BF16", (5, 4), "i * 0.5 - 4.0", idx((5, 4)) * 0.5 - 4.0),
        ("bn.running_mean", "F32", (3,), "i * 0.75 - 0.5", idx((3,)) * 0.75 - 0.5),
        ("bn.num_batches_tracked", "I64", (), "2**33 + 7 (scalar)",
         np.array(2 ** 33 + 7, dtype=np.float64)),
        ("pruned.weight_orig", "F32", (3, 4), "i * 0.25 - 1.5", orig),
        ("pruned.weight_mask", "F32", (3, 4), "1.0 where |pruned.weight_orig| > 0.5 else 0.0",
         (np.abs(orig) > 0.5).astype(np.float64)),
    ]
    return specs


def to_numpy(st_dtype, src):
    """Convert the f64 source to the stored dtype (numpy array), or bf16 bits as uint16."""
    if st_dtype == "F32":
        return src.astype(np.float32)
    if st_dtype == "F16":
        return src.astype(np.float16)
    if st_dtype == "F64":
        return src.astype(np.float64)
    if st_dtype == "I64":
        return src.astype(np.int64)
    if st_dtype == "BF16":
        if BF16 is not None:
            return src.astype(np.float32).astype(BF16)
        return f32_to_bf16_bits(src.astype(np.float32)).reshape(src.shape)
    raise ValueError(st_dtype)


def stored_as_f64(st_dtype, arr):
    if st_dtype == "BF16" and arr.dtype == np.uint16:
        return bf16_bits_to_f64(arr)
    return arr.astype(np.float64)


def save_deterministic(tensors, path, max_tries=500):
    """save_file, repeated until the header's ``__metadata__`` keys come out sorted.

    The Rust core of the safetensors package keeps the metadata in a HashMap with a
    randomly seeded hasher, so the order of the metadata keys in the JSON header (and
    hence the file's bytes and sha256) changes from run to run. Tensor order is already
    deterministic (by dtype size, then name). Retrying until the metadata keys happen to
    be in sorted order (probability 1/k! per try for k keys) makes the output
    byte-reproducible while every byte is still written by the official package.
    Returns the number of tries.
    """
    tmp = path + ".tmp"
    for attempt in range(1, max_tries + 1):
        save_file(tensors, tmp, metadata=METADATA)
        header, _ = read_header(tmp)
        keys = list(header["__metadata__"])
        if keys == sorted(keys):
            os.replace(tmp, path)
            return attempt
    os.remove(tmp)
    raise RuntimeError(f"metadata keys never came out sorted in {max_tries} tries")


def write_by_hand(path, arrays, metadata):
    """Write a safetensors file per the spec, without the safetensors package.

    Layout: u64 little-endian header length N, N bytes of UTF-8 JSON header (padded with
    spaces to a multiple of 8), then the concatenated little-endian tensor bytes.
    ``arrays`` maps name -> (safetensors dtype string, numpy array); BF16 arrays are raw
    uint16 bit patterns. Tensors are laid out in name order.
    """
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs = []
    offset = 0
    for name in sorted(arrays):
        st_dtype, arr = arrays[name]
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": st_dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def verify(path, expected, metadata):
    """Re-read the file with a tiny independent parser and check every value exactly."""
    header, data_start = read_header(path)
    assert header.pop("__metadata__") == metadata, "metadata mismatch"
    assert set(header) == set(expected), "tensor name set mismatch"
    with open(path, "rb") as f:
        data = f.read()[data_start:]
    np_le = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "BF16": "<u2"}
    for name, (st_dtype, shape, values) in expected.items():
        h = header[name]
        assert h["dtype"] == st_dtype and tuple(h["shape"]) == shape, (name, h)
        lo, hi = h["data_offsets"]
        arr = np.frombuffer(data[lo:hi], dtype=np_le[st_dtype])
        got = bf16_bits_to_f64(arr) if st_dtype == "BF16" else arr.astype(np.float64)
        assert got.tolist() == values, (name, got.tolist(), values)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default=os.path.join(REPO_ROOT, "tests", "fixtures"))
    ap.add_argument("--manual-bf16", action="store_true",
                    help="write the file by hand (the fallback path) even if ml_dtypes works")
    args = ap.parse_args()

    os.makedirs(args.out_dir, exist_ok=True)
    st_path = os.path.join(args.out_dir, STEM + ".safetensors")
    json_path = os.path.join(args.out_dir, STEM + ".json")

    tensors = {}   # name -> numpy array in the stored dtype
    expected = {}  # name -> (dtype, shape, flat f64 values)
    doc = {}
    for name, st_dtype, shape, formula, src in build_tensors():
        arr = to_numpy(st_dtype, src)
        assert arr.shape == shape
        values = stored_as_f64(st_dtype, arr).reshape(-1).tolist()
        # Every value must be exact in its dtype: the conversion changed nothing.
        assert values == src.reshape(-1).tolist(), f"{name}: not exact in {st_dtype}"
        tensors[name] = arr
        expected[name] = (st_dtype, shape, values)
        bits = [format(b, "016x") for b in np.array(values, dtype="<f8").view("<u8").tolist()]
        doc[name] = {"dtype": st_dtype, "shape": list(shape), "formula": formula,
                     "values": values, "values_f64_bits": bits}

    manual = args.manual_bf16 or BF16 is None
    if not manual:
        try:
            tries = save_deterministic(tensors, st_path)
            how = "safetensors.numpy.save_file (bf16 via ml_dtypes.bfloat16)"
            print(f"save_file: metadata keys came out sorted after {tries} tries")
        except Exception as e:  # pragma: no cover - fallback path
            print(f"save_file refused the tensors ({e!r}); writing the file by hand",
                  file=sys.stderr)
            manual = True
    if manual:
        arrays = {}
        for name, arr in tensors.items():
            st_dtype = expected[name][0]
            if st_dtype == "BF16" and arr.dtype != np.uint16:
                arr = arr.view(np.uint16)
            arrays[name] = (st_dtype, arr)
        write_by_hand(st_path, arrays, METADATA)
        how = "by hand per the safetensors spec (bf16 = f32 upper 16 bits, RNE)"

    verify(st_path, expected, METADATA)
    if BF16 is not None:
        # Cross-check with the official reader too.
        from safetensors.numpy import load_file
        loaded = load_file(st_path)
        for name, arr in tensors.items():
            assert loaded[name].dtype == arr.dtype or expected[name][0] == "BF16"
            assert stored_as_f64(expected[name][0], loaded[name]).reshape(-1).tolist() \
                == expected[name][2], name

    header, data_start = read_header(st_path)
    for name in doc:
        doc[name]["data_offsets"] = header[name]["data_offsets"]
    with open(st_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()

    out = {
        "file": STEM + ".safetensors",
        "written_by": how,
        "safetensors_version": safetensors.__version__,
        "numpy_version": np.__version__,
        "sha256": digest,
        "header_len": data_start - 8,
        "metadata": METADATA,
        "tensors": doc,
    }
    text = json.dumps(out, indent=1)
    # Keep each list of scalars on one line so the file stays readable.
    text = re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]"
                  if m.group(1).strip() else "[]", text)
    assert json.loads(text) == out
    with open(json_path, "w") as f:
        f.write(text + "\n")

    print(f"wrote {st_path} ({os.path.getsize(st_path)} bytes) {how}")
    print(f"wrote {json_path}")
    print(f"sha256 {digest}  {os.path.basename(st_path)}")


if __name__ == "__main__":
    main()
