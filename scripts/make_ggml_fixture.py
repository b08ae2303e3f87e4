#!/usr/bin/env python3
"""Generate the ggml Q8_0 / Q4_0 block-quantization fixture used by slimnn's Rust tests.

The reference is the Python ``gguf`` package (``gguf.quants``), an implementation of
ggml's ``quantize_row_q8_0_ref`` / ``quantize_row_q4_0_ref`` / ``dequantize_row_*``
that is independent of the Rust code. For every case below the script runs
``gguf.quants.quantize(x, Q8_0)``, ``quantize(x, Q4_0)`` and ``dequantize`` of both, and
stores the results so the Rust test can demand byte-for-byte equal blocks and
bit-for-bit equal dequantized f32 values.

Writes, relative to the repository root:

  tests/fixtures/ggml_blocks.bin
      A small binary container, all integers little-endian:

          magic   8 bytes  b"GGMLQFX1"
          u32     format version (1)
          u32     number of cases
          then per case:
            u32   name length in bytes, then the name (UTF-8)
            u32   n, the number of f32 values (a multiple of 32)
            f32   n input values                     (4*n bytes)
            u8    Q8_0 blocks                        (n/32*34 bytes)
            u8    Q4_0 blocks                        (n/32*18 bytes)
            f32   n values, dequantize(Q8_0 blocks)  (4*n bytes)
            f32   n values, dequantize(Q4_0 blocks)  (4*n bytes)

  tests/fixtures/ggml_blocks.json
      An index for humans and other tools: gguf and numpy versions, the .bin's size and
      sha256, and per case its name, description, n and the absolute byte offset and
      length of each of the five arrays in the .bin. The Rust test parses only the .bin
      (std only, no JSON parser) and checks that the index names the same cases.

Cases (inputs are float32; the seed is fixed, so the output is reproducible for a given
gguf/numpy version):

  normal          4096 values ~ N(0, 0.02^2): typical weights.
  max_ties        Blocks whose largest magnitude occurs more than once or with either
                  sign: +m before -m, -m before +m, negative-only maximum, positive-only
                  maximum, the same +m twice, and a tie in the high half (elements
                  16..31, which Q4_0 stores in the high nibbles). Q4_0 takes the *first*
                  element of largest magnitude (argmax), with its sign.
  zeros           An all +0.0 block; an all-zero block whose first element is -0.0
                  (numpy's argmax then picks -0.0, so Q4_0 stores d = +0.0 where
                  ggml's C code, which starts from max = +0.0, would store -0.0); a block
                  of alternating +-0.0; a block of -0.0 with one nonzero value.
  tiny            Blocks of N(0, 1) * s for s = 1e-2 ... 1e-8, 1e-12, 1e-20, 1e-30:
                  f16-subnormal scales, and scales that round to 0 in f16 (the quants are
                  still nonzero since 1/d is taken from the f32 d). The smallest scale
                  keeps 1/d finite in f32 (the reference's behaviour when 1/d overflows
                  is undefined in C).
  large           N(0, 1e4^2) blocks, and blocks with max magnitude 5e5 and 524032
                  (= 8 * 65504, so the Q4_0 scale is exactly f16's largest finite).
                  Larger blocks are out of the formats' range: a scale above f16's
                  65504 is stored as inf and dequantizes to inf/NaN.
  q8_midpoints    x * id = k + 0.5 exactly for Q8_0 (d = 1, 0.5, 0.25, with id = 1, 2,
                  4 exact): roundf rounds half away from zero (0.5 -> 1, -2.5 -> -3),
                  unlike round-half-even.
  q4_midpoints    x * id = k + 0.5 exactly for Q4_0 (d = 1, -1, 0.25): x*id + 8.5 is an
                  integer, so truncation sends the midpoint up (toward +inf).
  near_midpoints  The f32 neighbours just below/above those midpoints, for both formats:
                  for Q4_0, x*id + 8.5 rounds in f32 before the truncation (e.g.
                  0.49999997 + 8.5 == 9.0 in f32), which must be reproduced exactly.
  wide            64 blocks of U(-1, 1) * 10^U(-4, 3), a different scale per block.

Run (from anywhere):

    pip install gguf numpy
    python3 scripts/make_ggml_fixture.py            # or --out-dir DIR

The script prints the .bin's sha256. Commit both files together.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
from pathlib import Path

import numpy as np

import gguf
from gguf.constants import GGMLQuantizationType
from gguf.quants import dequantize, quantize

try:
    from importlib.metadata import version as _pkg_version

    GGUF_VERSION = _pkg_version("gguf")
except Exception:  # pragma: no cover - metadata missing
    GGUF_VERSION = getattr(gguf, "__version__", "unknown")

QK = 32
Q8_0_BLOCK_BYTES = 34
Q4_0_BLOCK_BYTES = 18
MAGIC = b"GGMLQFX1"
FORMAT_VERSION = 1
SEED = 20240611


def f32(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def case_normal(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, 0.02, 4096).astype(np.float32)


def case_max_ties(rng: np.random.Generator) -> np.ndarray:
    blocks = []

    def base() -> np.ndarray:
        return rng.uniform(-0.5, 0.5, QK).astype(np.float32)

    b = base(); b[3] = 1.0; b[20] = -1.0; blocks.append(b)    # +m first, then -m
    b = base(); b[3] = -1.0; b[20] = 1.0; blocks.append(b)    # -m first, then +m
    b = base(); b[7] = -2.0; blocks.append(b)                 # max magnitude negative
    b = base(); b[30] = 2.0; blocks.append(b)                 # max magnitude positive
    b = base(); b[0] = 0.75; b[31] = 0.75; blocks.append(b)   # same +m twice
    b = base(); b[16] = -1.5; b[31] = 1.5; blocks.append(b)   # tie in the high half
    b = base(); b[0] = -3.0; b[16] = 3.0; b[31] = -3.0; blocks.append(b)
    # max at the very first and very last element with every other value tied too
    blocks.append(np.full(QK, 0.125, dtype=np.float32))
    blocks.append(np.full(QK, -0.125, dtype=np.float32))
    return np.concatenate(blocks)


def case_zeros(rng: np.random.Generator) -> np.ndarray:
    pos = np.zeros(QK, dtype=np.float32)
    neg_first = np.zeros(QK, dtype=np.float32)
    neg_first[0] = -0.0
    alternating = np.array([(-0.0 if i % 2 else 0.0) for i in range(QK)], dtype=np.float32)
    neg_with_one = np.full(QK, -0.0, dtype=np.float32)
    neg_with_one[9] = 0.3
    return np.concatenate([pos, neg_first, alternating, neg_with_one])


def case_tiny(rng: np.random.Generator) -> np.ndarray:
    scales = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-12, 1e-20, 1e-30]
    blocks = [(rng.normal(0.0, 1.0, QK) * s).astype(np.float32) for s in scales]
    # exact powers of two around f16's subnormal range: d = 2^-24 (smallest subnormal)
    # and d = 2^-25 (a tie between 0 and the smallest subnormal, rounds to even = 0)
    for d in (2.0 ** -24, 2.0 ** -25, 2.0 ** -14):
        b = (rng.uniform(-1.0, 1.0, QK) * 127.0 * d).astype(np.float32)
        b[5] = np.float32(127.0 * d)
        blocks.append(b)
    return np.concatenate(blocks)


def case_large(rng: np.random.Generator) -> np.ndarray:
    blocks = [rng.normal(0.0, 1e4, QK).astype(np.float32) for _ in range(4)]
    for m in (5e5, 524032.0):
        b = (rng.uniform(-1.0, 1.0, QK) * m).astype(np.float32)
        b[11] = np.float32(-m)
        blocks.append(b)
    return np.concatenate(blocks)


def case_q8_midpoints(rng: np.random.Generator) -> np.ndarray:
    blocks = []
    for d in (1.0, 0.5, 0.25):  # amax = 127 * d, so d = amax/127 and id = 1/d exactly
        b = np.empty(QK, dtype=np.float32)
        b[0] = 127.0 * d
        ks = np.arange(-16, 15)  # 31 midpoints k + 0.5, k = -16..14
        b[1:] = (ks + 0.5) * d
        blocks.append(b)
        # the same with the largest magnitude negative and the midpoints near the top
        b = np.empty(QK, dtype=np.float32)
        b[31] = -127.0 * d
        ks = np.concatenate([np.arange(111, 127), -np.arange(112, 127)])[:31]
        b[:31] = (ks + 0.5) * d
        blocks.append(b)
    return np.concatenate(blocks)


def case_q4_midpoints(rng: np.random.Generator) -> np.ndarray:
    blocks = []
    for m in (-8.0, 8.0, -2.0):  # d = m / -8 = 1, -1, 0.25; id = 1, -1, 4 exactly
        d = m / -8.0
        b = np.empty(QK, dtype=np.float32)
        b[0] = m
        ks = np.arange(-8, 8)  # x*id = k + 0.5
        mid = ((ks + 0.5) / (1.0 / d)).astype(np.float32)
        b[1:17] = mid
        b[17:] = mid[:15][::-1]
        blocks.append(b)
    return np.concatenate(blocks)


def case_near_midpoints(rng: np.random.Generator) -> np.ndarray:
    blocks = []
    # Q8_0 with d = 1 (amax = 127): midpoints k + 0.5 and their f32 neighbours
    mids = f32([0.5, 1.5, 2.5, -0.5, -1.5, 63.5, -100.5, 126.5])
    below = np.nextafter(mids, np.float32(-np.inf))
    above = np.nextafter(mids, np.float32(np.inf))
    vals = np.concatenate([below, above, mids[:7]])
    b = np.zeros(QK, dtype=np.float32)
    b[0] = 127.0
    b[1 : 1 + len(vals)] = vals
    blocks.append(b)
    # Q4_0 with d = 1 (max = -8, id = 1): x + 8.5 rounds to an integer in f32 for the
    # neighbours just below k + 0.5
    mids = f32([-7.5, -3.5, -0.5, 0.5, 1.5, 3.5, 6.5, 7.5])
    below = np.nextafter(mids, np.float32(-np.inf))
    above = np.nextafter(mids, np.float32(np.inf))
    b = np.zeros(QK, dtype=np.float32)
    b[0] = -8.0
    b[1:9] = below
    b[9:17] = above
    b[17:25] = mids
    b[25:] = np.nextafter(f32([-8.0, -7.0, 0.0, 7.0, 8.0, 4.0, -4.0]), np.float32(0.0))
    blocks.append(b)
    # the same with d = -1 (max = +8, id = -1)
    b2 = -b
    blocks.append(b2.astype(np.float32))
    return np.concatenate(blocks)


def case_wide(rng: np.random.Generator) -> np.ndarray:
    n_blocks = 64
    scales = 10.0 ** rng.uniform(-4.0, 3.0, (n_blocks, 1))
    return (rng.uniform(-1.0, 1.0, (n_blocks, QK)) * scales).astype(np.float32).ravel()


CASES = [
    ("normal", case_normal, "4096 values ~ N(0, 0.02^2)"),
    ("max_ties", case_max_ties, "largest magnitude repeated / with either sign / first vs later"),
    ("zeros", case_zeros, "all +0.0; all zero with -0.0 first; alternating +-0.0; -0.0 with one nonzero"),
    ("tiny", case_tiny, "N(0,1)*s for s = 1e-2..1e-8, 1e-12, 1e-20, 1e-30, and d = 2^-24, 2^-25, 2^-14"),
    ("large", case_large, "N(0, 1e4^2), and max magnitude 5e5, 524032"),
    ("q8_midpoints", case_q8_midpoints, "Q8_0 x*id = k + 0.5 exactly, d = 1, 0.5, 0.25"),
    ("q4_midpoints", case_q4_midpoints, "Q4_0 x*id = k + 0.5 exactly, d = 1, -1, 0.25"),
    ("near_midpoints", case_near_midpoints, "f32 neighbours of the midpoints, both formats"),
    ("wide", case_wide, "64 blocks of U(-1,1) * 10^U(-4,3)"),
]


# ----------------------------------------------------------------------------------
# k-quants Q4_K and Q6_K. The gguf package dequantizes them but does not quantize, so
# the blocks come from the NumPy port below of ggml's reference quantizers
# (quantize_row_q4_K_ref / quantize_row_q6_K_ref in ggml/src/ggml-quants.c, no
# importance matrix), every operation in float32 in the C code's order, without fused
# multiply-add; their dequantized values come from gguf.quants.dequantize.

QK_K = 256
Q4_K_BLOCK_BYTES = 144
Q6_K_BLOCK_BYTES = 210
KQ_MAGIC = b"GGMLKQX1"
F = np.float32
GROUP_MAX_EPS = F(1e-15)


def nearest_int(fval) -> int:
    val = np.array([F(fval) + F(12582912.0)], dtype=np.float32).view(np.int32)[0]
    return int(val & 0x007FFFFF) - 0x00400000


def make_qkx2_quants(nmax, x, weights, rmin, rdelta, nstep):
    n = len(x)
    mn = x[0]
    mx = x[0]
    sum_w = weights[0]
    sum_x = F(sum_w * x[0])
    for i in range(1, n):
        if x[i] < mn:
            mn = x[i]
        if x[i] > mx:
            mx = x[i]
        w = weights[i]
        sum_w = F(sum_w + w)
        sum_x = F(sum_x + F(w * x[i]))
    if mn > 0:
        mn = F(0)
    L = [0] * n
    if mx == mn:
        return F(0), F(-mn), L
    iscale = F(F(nmax) / F(mx - mn))
    scale = F(F(1) / iscale)
    best_error = F(0)
    for i in range(n):
        l = max(0, min(nmax, nearest_int(F(iscale * F(x[i] - mn)))))
        L[i] = l
        diff = F(F(F(scale * F(l)) + mn) - x[i])
        best_error = F(best_error + F(weights[i] * F(diff * diff)))
    for is_ in range(nstep + 1):
        iscale = F(F(F(rmin + F(rdelta * F(is_))) + F(nmax)) / F(mx - mn))
        sum_l = sum_l2 = sum_xl = F(0)
        laux = [0] * n
        for i in range(n):
            l = max(0, min(nmax, nearest_int(F(iscale * F(x[i] - mn)))))
            laux[i] = l
            w = weights[i]
            lf = F(l)
            sum_l = F(sum_l + F(w * lf))
            sum_l2 = F(sum_l2 + F(F(w * lf) * lf))
            sum_xl = F(sum_xl + F(F(w * lf) * x[i]))
        D = F(F(sum_w * sum_l2) - F(sum_l * sum_l))
        if D > 0:
            this_scale = F(F(F(sum_w * sum_xl) - F(sum_x * sum_l)) / D)
            this_min = F(F(F(sum_l2 * sum_x) - F(sum_l * sum_xl)) / D)
            if this_min > 0:
                this_min = F(0)
                this_scale = F(sum_xl / sum_l2)
            cur_error = F(0)
            for i in range(n):
                diff = F(F(F(this_scale * F(laux[i])) + this_min) - x[i])
                cur_error = F(cur_error + F(weights[i] * F(diff * diff)))
            if cur_error < best_error:
                L = list(laux)
                best_error = cur_error
                scale = this_scale
                mn = this_min
    return scale, F(-mn), L


def make_qx_quants_rmse1(nmax, x):
    n = len(x)
    mx = F(0)
    amax = F(0)
    for v in x:
        ax = F(abs(v))
        if ax > amax:
            amax = ax
            mx = v
    if amax < GROUP_MAX_EPS:
        return F(0), [0] * n
    iscale = F(F(-nmax) / mx)
    L = [0] * n
    sumlx = suml2 = F(0)
    for i in range(n):
        l = max(-nmax, min(nmax - 1, nearest_int(F(iscale * x[i]))))
        L[i] = l + nmax
        w = F(x[i] * x[i])
        sumlx = F(sumlx + F(F(w * x[i]) * F(l)))
        suml2 = F(suml2 + F(F(w * F(l)) * F(l)))
    scale = F(sumlx / suml2) if suml2 != 0 else F(0)
    best = F(scale * sumlx)
    for is_ in range(-9, 10):
        if is_ == 0:
            continue
        iscale = F(F(-F(F(nmax) + F(F(0.1) * F(is_)))) / mx)
        sumlx = suml2 = F(0)
        for i in range(n):
            l = max(-nmax, min(nmax - 1, nearest_int(F(iscale * x[i]))))
            w = F(x[i] * x[i])
            sumlx = F(sumlx + F(F(w * x[i]) * F(l)))
            suml2 = F(suml2 + F(F(w * F(l)) * F(l)))
        if suml2 > 0 and F(sumlx * sumlx) > F(best * suml2):
            for i in range(n):
                l = max(-nmax, min(nmax - 1, nearest_int(F(iscale * x[i]))))
                L[i] = nmax + l
            scale = F(sumlx / suml2)
            best = F(scale * sumlx)
    return scale, L


def scale_min_k4(j, q):
    if j < 4:
        return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)


def f16_round(v) -> np.float16:
    return np.float16(F(v))


def quantize_q4_k(x: np.ndarray) -> bytes:
    out = bytearray()
    for xb in x.reshape(-1, QK_K):
        xb = [F(v) for v in xb]
        L = [0] * QK_K
        scales = [F(0)] * 8
        mins = [F(0)] * 8
        max_scale = F(0)
        max_min = F(0)
        for j in range(8):
            xs = xb[32 * j : 32 * j + 32]
            sum_x2 = F(0)
            for v in xs:
                sum_x2 = F(sum_x2 + F(v * v))
            av_x = F(np.sqrt(F(sum_x2 / F(32))))
            weights = [F(av_x + F(abs(v))) for v in xs]
            s, m, l = make_qkx2_quants(15, xs, weights, F(-1.0), F(0.1), 20)
            L[32 * j : 32 * j + 32] = l
            scales[j] = s
            mins[j] = m
            if s > max_scale:
                max_scale = s
            if m > max_min:
                max_min = m
        inv_scale = F(F(63) / max_scale) if max_scale > 0 else F(0)
        inv_min = F(F(63) / max_min) if max_min > 0 else F(0)
        sc = [0] * 12
        for j in range(8):
            ls = min(63, nearest_int(F(inv_scale * scales[j])) & 0xFF)
            lm = min(63, nearest_int(F(inv_min * mins[j])) & 0xFF)
            if j < 4:
                sc[j] = ls
                sc[j + 4] = lm
            else:
                sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4)
                sc[j - 4] |= (ls >> 4) << 6
                sc[j] |= (lm >> 4) << 6
        d16 = f16_round(F(max_scale / F(63)))
        dmin16 = f16_round(F(max_min / F(63)))
        for j in range(8):
            s, m = scale_min_k4(j, sc)
            d = F(F(d16) * F(s))
            if d == 0:
                continue
            dm = F(F(dmin16) * F(m))
            for ii in range(32):
                L[32 * j + ii] = max(0, min(15, nearest_int(F(F(xb[32 * j + ii] + dm) / d))))
        out += np.array([d16, dmin16], dtype="<f2").tobytes()
        out += bytes(sc)
        for j in range(0, QK_K, 64):
            out += bytes(L[j + k] | (L[j + k + 32] << 4) for k in range(32))
    return bytes(out)


def quantize_q6_k(x: np.ndarray) -> bytes:
    out = bytearray()
    for xb in x.reshape(-1, QK_K):
        xb = [F(v) for v in xb]
        L = [0] * QK_K
        scales = [F(0)] * 16
        max_scale = F(0)
        max_abs_scale = F(0)
        for ib in range(16):
            s, l = make_qx_quants_rmse1(32, xb[16 * ib : 16 * ib + 16])
            L[16 * ib : 16 * ib + 16] = l
            scales[ib] = s
            if F(abs(s)) > max_abs_scale:
                max_abs_scale = F(abs(s))
                max_scale = s
        if max_abs_scale < GROUP_MAX_EPS:
            out += bytes(Q6_K_BLOCK_BYTES)
            continue
        iscale = F(F(-128.0) / max_scale)
        d16 = f16_round(F(F(1) / iscale))
        sc = [min(127, nearest_int(F(iscale * s))) for s in scales]
        for j in range(16):
            d = F(F(d16) * F(sc[j]))
            if d == 0:
                continue
            for ii in range(16):
                L[16 * j + ii] = max(-32, min(31, nearest_int(F(xb[16 * j + ii] / d)))) + 32
        ql = [0] * 128
        qh = [0] * 64
        for h, j in enumerate(range(0, QK_K, 128)):
            for k in range(32):
                q1, q2, q3, q4 = L[j + k], L[j + k + 32], L[j + k + 64], L[j + k + 96]
                ql[64 * h + k] = (q1 & 0xF) | ((q3 & 0xF) << 4)
                ql[64 * h + k + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4)
                qh[32 * h + k] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
        out += bytes(ql) + bytes(qh) + bytes(s & 0xFF for s in sc)
        out += np.array([d16], dtype="<f2").tobytes()
    return bytes(out)


def kcase_normal(rng):
    return rng.normal(0.0, 0.02, 4 * QK_K).astype(np.float32)


def kcase_wide(rng):
    # a different magnitude per 16 values, and some sub-blocks all positive / all negative
    x = rng.uniform(-1.0, 1.0, (4 * QK_K // 16, 16)) * 10.0 ** rng.uniform(-4.0, 2.0, (4 * QK_K // 16, 1))
    x[3] = np.abs(x[3])
    x[7] = -np.abs(x[7])
    x[20] = np.abs(x[20]) + 5.0
    return x.astype(np.float32).ravel()


def kcase_zeros(rng):
    x = np.zeros(3 * QK_K, dtype=np.float32)
    x[QK_K : QK_K + 32] = rng.normal(0.0, 1.0, 32)   # one live sub-block, the rest zero
    x[2 * QK_K + 100] = 0.5                           # a single nonzero value
    return x


def kcase_tiny_large(rng):
    blocks = [rng.normal(0.0, 1.0, QK_K) * s for s in (1e-6, 1e-12, 1e-20, 1e3, 3e4)]
    return np.concatenate(blocks).astype(np.float32)


def kcase_ties(rng):
    # repeated values, exact small integers and a max of either sign
    x = np.round(rng.uniform(-8.0, 8.0, 2 * QK_K)).astype(np.float32)
    x[:16] = 3.0
    x[16:32] = -3.0
    x[QK_K + 5] = -40.0
    x[QK_K + 200] = 40.0
    return x


KCASES = [
    ("normal", kcase_normal, "1024 values ~ N(0, 0.02^2)"),
    ("wide", kcase_wide, "U(-1,1) * 10^U(-4,2) per 16 values; all-positive / all-negative / offset sub-blocks"),
    ("zeros", kcase_zeros, "zero super-block, one live sub-block, a single nonzero value"),
    ("tiny_large", kcase_tiny_large, "N(0,1) * 1e-6, 1e-12, 1e-20, 1e3, 3e4 per super-block"),
    ("ties", kcase_ties, "rounded integers, runs of equal values, +-40 outliers"),
]


def write_kquants(out_dir: Path) -> None:
    rng = np.random.default_rng(SEED + 1)
    buf = bytearray()
    buf += KQ_MAGIC
    buf += struct.pack("<II", FORMAT_VERSION, len(KCASES))
    index = []
    for name, make, description in KCASES:
        x = make(rng)
        assert x.dtype == np.float32 and x.size % QK_K == 0, name
        n = x.size
        q4 = np.frombuffer(quantize_q4_k(x), dtype=np.uint8)
        q6 = np.frombuffer(quantize_q6_k(x), dtype=np.uint8)
        assert q4.size == n // QK_K * Q4_K_BLOCK_BYTES and q6.size == n // QK_K * Q6_K_BLOCK_BYTES
        dq4 = dequantize(q4, GGMLQuantizationType.Q4_K).astype(np.float32, copy=False)
        dq6 = dequantize(q6, GGMLQuantizationType.Q6_K).astype(np.float32, copy=False)
        name_bytes = name.encode("utf-8")
        buf += struct.pack("<I", len(name_bytes)) + name_bytes
        buf += struct.pack("<I", n)
        offsets = {}
        for key, arr in (
            ("input_f32", x.astype("<f4")),
            ("q4_k", q4),
            ("q6_k", q6),
            ("q4_k_dequant_f32", dq4.astype("<f4")),
            ("q6_k_dequant_f32", dq6.astype("<f4")),
        ):
            raw = arr.tobytes()
            offsets[key] = {"offset": len(buf), "len": len(raw)}
            buf += raw
        rel = float(np.linalg.norm(dq4 - x) / max(np.linalg.norm(x), 1e-30))
        index.append({"name": name, "description": description, "n": n, "arrays": offsets,
                      "q4_k_rel_error": rel})
    bin_path = out_dir / "ggml_kquants.bin"
    json_path = out_dir / "ggml_kquants.json"
    bin_path.write_bytes(bytes(buf))
    sha = hashlib.sha256(buf).hexdigest()
    meta = {
        "generator": "scripts/make_ggml_fixture.py",
        "reference": "blocks: this script's NumPy port of ggml's quantize_row_q4_K_ref / "
        "quantize_row_q6_K_ref; values: gguf.quants.dequantize (Python gguf package)",
        "gguf_version": GGUF_VERSION,
        "numpy_version": np.__version__,
        "seed": SEED + 1,
        "file": bin_path.name,
        "file_len": len(buf),
        "sha256": sha,
        "format": "magic b'GGMLKQX1', u32 version, u32 n_cases; per case u32 name_len, "
        "name, u32 n, then input f32[n], Q4_K u8[n/256*144], Q6_K u8[n/256*210], "
        "dequant Q4_K f32[n], dequant Q6_K f32[n]; all little-endian",
        "format_version": FORMAT_VERSION,
        "cases": index,
    }
    json_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {bin_path} ({len(buf)} bytes, sha256 {sha})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    repo = Path(__file__).resolve().parent.parent
    ap.add_argument("--out-dir", type=Path, default=repo / "tests" / "fixtures")
    ap.add_argument("--only-kquants", action="store_true", help="write only ggml_kquants.*")
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_kquants(args.out_dir)
    if args.only_kquants:
        return

    rng = np.random.default_rng(SEED)
    buf = bytearray()
    buf += MAGIC
    buf += struct.pack("<II", FORMAT_VERSION, len(CASES))
    index = []
    for name, make, description in CASES:
        x = make(rng)
        assert x.dtype == np.float32 and x.ndim == 1 and x.size % QK == 0, name
        assert np.all(np.isfinite(x)), name
        n = x.size
        q8 = quantize(x, GGMLQuantizationType.Q8_0)
        q4 = quantize(x, GGMLQuantizationType.Q4_0)
        assert q8.dtype == np.uint8 and q8.size == n // QK * Q8_0_BLOCK_BYTES, name
        assert q4.dtype == np.uint8 and q4.size == n // QK * Q4_0_BLOCK_BYTES, name
        dq8 = dequantize(q8, GGMLQuantizationType.Q8_0).astype(np.float32, copy=False)
        dq4 = dequantize(q4, GGMLQuantizationType.Q4_0).astype(np.float32, copy=False)
        assert dq8.shape == (n,) and dq4.shape == (n,), name

        name_bytes = name.encode("utf-8")
        buf += struct.pack("<I", len(name_bytes)) + name_bytes
        buf += struct.pack("<I", n)
        offsets = {}
        for key, arr in (
            ("input_f32", x.astype("<f4")),
            ("q8_0", q8),
            ("q4_0", q4),
            ("q8_0_dequant_f32", dq8.astype("<f4")),
            ("q4_0_dequant_f32", dq4.astype("<f4")),
        ):
            raw = arr.tobytes()
            offsets[key] = {"offset": len(buf), "len": len(raw)}
            buf += raw
        index.append({"name": name, "description": description, "n": n, "arrays": offsets})

    bin_path = args.out_dir / "ggml_blocks.bin"
    json_path = args.out_dir / "ggml_blocks.json"
    bin_path.write_bytes(bytes(buf))
    sha = hashlib.sha256(buf).hexdigest()
    meta = {
        "generator": "scripts/make_ggml_fixture.py",
        "reference": "gguf.quants.quantize / gguf.quants.dequantize (Python gguf package)",
        "gguf_version": GGUF_VERSION,
        "numpy_version": np.__version__,
        "seed": SEED,
        "file": bin_path.name,
        "file_len": len(buf),
        "sha256": sha,
        "format": "magic b'GGMLQFX1', u32 version, u32 n_cases; per case u32 name_len, "
        "name, u32 n, then input f32[n], Q8_0 u8[n/32*34], Q4_0 u8[n/32*18], "
        "dequant Q8_0 f32[n], dequant Q4_0 f32[n]; all little-endian",
        "format_version": FORMAT_VERSION,
        "cases": index,
    }
    json_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {bin_path} ({len(buf)} bytes, sha256 {sha})")
    print(f"wrote {json_path} (gguf {GGUF_VERSION}, numpy {np.__version__}, {len(CASES)} cases)")


if __name__ == "__main__":
    main()
