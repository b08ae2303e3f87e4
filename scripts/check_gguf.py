#!/usr/bin/env python3
"""GGUF interoperability between slimnn and the Python ``gguf`` package (llama.cpp's).

Two commands:

  write-fixture   Writes tests/fixtures/gguf_python.gguf with ``gguf.GGUFWriter``
                  (key-values of several types; tensors F32, F16, BF16, Q8_0, Q4_0 made
                  by ``gguf.quants.quantize``, and Q4_K, Q6_K blocks made by the NumPy
                  port of ggml's reference quantizers in make_ggml_fixture.py), and
                  tests/fixtures/gguf_python.json: per tensor its name, row-major shape,
                  type and the values ``gguf.quants.dequantize`` gives. The Rust test
                  ``tests/gguf_interop.rs`` reads the file with slimnn and demands the
                  same names, shapes, types and bit-identical values.

  check FILE      Reads a GGUF written by slimnn with ``gguf.GGUFReader`` and compares
                  it with FILE's sidecar FILE.json (written by slimnn's test
                  ``tests/gguf_interop.rs``: names, shapes, types, slimnn's decoded
                  values): same names, shapes (GGUF's ne reversed), types, and
                  ``gguf.quants.dequantize`` values bit for bit. The committed pair
                  tests/fixtures/gguf_slimnn.gguf / .json is such a file.

Run:

    pip install gguf numpy
    python3 scripts/check_gguf.py write-fixture
    python3 scripts/check_gguf.py check tests/fixtures/gguf_slimnn.gguf
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import gguf
from gguf.constants import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_ggml_fixture import quantize_q4_k, quantize_q6_k  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"


def values_of(data: np.ndarray, ty: T) -> np.ndarray:
    if ty == T.F32:
        return data.astype(np.float32).ravel()
    if ty == T.F16:
        return data.astype(np.float32).ravel()
    return dequantize(np.ascontiguousarray(data).view(np.uint8), ty).astype(np.float32).ravel()


def write_fixture() -> None:
    rng = np.random.default_rng(1405)
    path = FIXTURES / "gguf_python.gguf"
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_name("gguf-package fixture")
    w.add_uint32("llama.context_length", 4096)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("test.flag", True)
    w.add_int64("test.i64", -(2**40))
    w.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "hé"])
    w.add_array("test.ints", [1, -2, 3])
    tensors = []

    def add(name: str, x: np.ndarray, ty: T) -> None:
        x = x.astype(np.float32)
        if ty == T.F32:
            data = x
            w.add_tensor(name, data)
        elif ty == T.F16:
            data = x.astype(np.float16)
            w.add_tensor(name, data)
        else:
            if ty == T.Q4_K:
                raw = np.frombuffer(quantize_q4_k(x.ravel()), dtype=np.uint8)
            elif ty == T.Q6_K:
                raw = np.frombuffer(quantize_q6_k(x.ravel()), dtype=np.uint8)
            else:
                raw = quantize(x, ty).ravel()
            data = raw.reshape(x.shape[0], -1)
            w.add_tensor(name, data, raw_dtype=ty)
        tensors.append(
            {
                "name": name,
                "shape": list(x.shape),
                "type": ty.name,
                "values": [float(v) for v in values_of(data, ty)],
            }
        )

    add("token_embd.weight", rng.normal(0, 0.02, (3, 4)), T.F32)
    add("blk.0.attn_norm.weight", rng.normal(1, 0.1, (2, 8)), T.F16)
    add("blk.0.ffn_gate.weight", rng.normal(0, 0.02, (4, 8)), T.BF16)
    add("blk.0.attn_q.weight", rng.normal(0, 0.02, (2, 64)), T.Q8_0)
    add("blk.0.attn_k.weight", rng.normal(0, 0.02, (2, 64)), T.Q4_0)
    add("blk.0.ffn_up.weight", rng.normal(0, 0.02, (2, 256)), T.Q4_K)
    add("output.weight", rng.normal(0, 0.02, (1, 256)), T.Q6_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    meta = {
        "generator": "scripts/check_gguf.py write-fixture",
        "gguf_version": getattr(gguf, "__version__", None) or _version(),
        "numpy_version": np.__version__,
        "tensors": tensors,
    }
    (FIXTURES / "gguf_python.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes) and gguf_python.json")


def _version() -> str:
    from importlib.metadata import version

    return version("gguf")


def check(path: Path) -> None:
    want = json.loads(Path(str(path) + ".json").read_text())
    r = gguf.GGUFReader(str(path))
    got = {t.name: t for t in r.tensors}
    assert [t["name"] for t in want["tensors"]] == [t.name for t in r.tensors], "names/order"
    for t in want["tensors"]:
        g = got[t["name"]]
        shape = [int(d) for d in reversed(g.shape.tolist())]
        assert shape == t["shape"], (t["name"], shape, t["shape"])
        assert g.tensor_type.name == t["type"], (t["name"], g.tensor_type.name, t["type"])
        if g.tensor_type in (T.F32, T.F16):
            vals = np.asarray(g.data).astype(np.float32).ravel()
        else:
            vals = dequantize(np.asarray(g.data).view(np.uint8), g.tensor_type).astype(np.float32).ravel()
        exp = np.asarray(t["values"], dtype=np.float32)
        assert vals.shape == exp.shape, t["name"]
        assert np.array_equal(vals.view(np.uint32), exp.view(np.uint32)), f"{t['name']}: values differ"
        print(f"ok  {t['name']:<24} {t['type']:<5} {shape}")
    for k, v in want.get("metadata", {}).items():
        f = r.get_field(k)
        assert f is not None, k
        text = bytes(f.parts[f.data[0]]).decode("utf-8")
        assert text == v, (k, text, v)
    print(f"ok  {len(want['tensors'])} tensors and {len(want.get('metadata', {}))} key-values "
          f"of {path} read by gguf {_version()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("write-fixture")
    c = sub.add_parser("check")
    c.add_argument("file", type=Path)
    args = ap.parse_args()
    if args.cmd == "write-fixture":
        write_fixture()
    else:
        check(args.file)


if __name__ == "__main__":
    main()
