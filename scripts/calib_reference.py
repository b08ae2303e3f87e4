"""NumPy reference of GPTQ and SparseGPT, for slimnn's calib solvers.

A port of the papers' reference implementations (github.com/IST-DASLab/gptq `gptq.py`,
github.com/IST-DASLab/sparsegpt `sparsegpt.py`) to NumPy in float64, on slimnn's grids:
- GPTQ: dead inputs, dampening percdamp * mean(diag H), act-order (descending diag H,
  static groups), H^-1 through Cholesky and its upper Cholesky factor, lazy batched
  updates in column blocks. Grids as slimnn's UniformQuantizer: affine levels 0..2^b-1
  with a zero point, or symmetric levels +-(2^(b-1)-1); scales rounded to float32 (as
  stored). Group parameters from the original weights (static_groups=True, slimnn's
  default), or from the group's current weights when its first column is reached
  (static_groups=False, the reference's default; the reference reads the lazily updated
  copy, which differs only for groups that start inside a block).
- SparseGPT: adaptive mask selection per block by w^2 / U_jj^2 (the whole block, or each
  row) with exact counts (cumulative rounding, ties to the earlier position), N:M by the
  same score when each group starts, lazy batched updates.

Run `python3 scripts/calib_reference.py` to rewrite tests/fixtures/calib_solvers.json (a
16x64 weight and 256 integer input rows, with the reference's codes and masks); the Rust
test tests/calib_reference.rs checks slimnn produces the same. Requirements: numpy.
"""
import json
import os

import numpy as np


def prepare(H, percdamp, perm=None):
    H = H.copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    if perm is not None:
        H = H[perm][:, perm]
    H[np.diag_indices_from(H)] += percdamp * np.mean(np.diag(H))
    L = np.linalg.cholesky(H)
    Linv = np.linalg.inv(L)
    Hinv = Linv.T @ Linv
    U = np.linalg.cholesky(Hinv).T  # upper: Hinv = U^T U
    return U, dead


def grid(bits, affine):
    if affine:
        return 0.0, float(2**bits - 1)
    return -float(2 ** (bits - 1) - 1), float(2 ** (bits - 1) - 1)


def params(x, lo, hi, affine):
    """Scale and zero point per row of x [rows, cols]."""
    a = np.minimum(x.min(axis=1), 0.0)
    b = np.maximum(x.max(axis=1), 0.0)
    if affine:
        s = (b - a) / (hi - lo)
    else:
        s = np.maximum(np.abs(a), np.abs(b)) / hi
    s = s.astype(np.float32).astype(np.float64)
    bad = ~((s > 0) & np.isfinite(1.0 / s.astype(np.float32)))
    s[bad] = 1.0
    if affine:
        z = np.clip(np.round(lo - a / s), lo, hi)  # np.round: half to even
    else:
        z = np.zeros_like(s)
    return s, z


def gptq(W, H, bits, group=None, affine=True, act_order=False, percdamp=0.01, blocksize=128, static_groups=True):
    """Returns levels - lo (codes) [out, in], scales and zeros [out, groups]."""
    W = W.astype(np.float64).copy()
    out, n = W.shape
    lo, hi = grid(bits, affine)
    dead = np.diag(H) == 0
    W[:, dead] = 0.0
    perm = None
    if act_order:
        d = np.diag(H).copy()
        d[dead] = 1.0
        perm = np.argsort(-d, kind="stable")
    U, _ = prepare(H, percdamp, perm)
    G = group if group is not None else n
    ngroups = n // G
    S = np.ones((out, ngroups))
    Z = np.zeros((out, ngroups))
    dynamic = group is not None and not act_order and not static_groups
    if not dynamic:
        for g in range(ngroups):
            S[:, g], Z[:, g] = params(W[:, g * G:(g + 1) * G], lo, hi, affine)
    if perm is not None:
        W = W[:, perm]
    Q = np.zeros((out, n))
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        count = i2 - i1
        W1 = W[:, i1:i2].copy()
        Err1 = np.zeros((out, count))
        U1 = U[i1:i2, i1:i2]
        for i in range(count):
            c = i1 + i
            if dynamic:
                if c % G == 0:
                    inside = W1[:, i:min(i + G, count)]
                    beyond = W[:, i2:c + G] - Err1[:, :i] @ U[i1:i1 + i, i2:c + G]
                    S[:, c // G], Z[:, c // G] = params(np.hstack([inside, beyond]), lo, hi, affine)
                s, z = S[:, c // G], Z[:, c // G]
            else:
                j = perm[c] if perm is not None else c
                s, z = S[:, j // G], Z[:, j // G]
            w = W1[:, i]
            lev = np.clip(np.round(w / s) + z, lo, hi)
            Q[:, c] = lev - lo
            err = (w - s * (lev - z)) / U1[i, i]
            W1[:, i:] -= np.outer(err, U1[i, i:])
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    if perm is not None:
        back = np.zeros_like(Q)
        back[:, perm] = Q
        Q = back
    return Q.astype(np.int64), S, Z


def smallest(scores, k):
    """Indices of the k smallest (ties: earlier first)."""
    return np.argsort(scores, kind="stable")[:k]


def sparsegpt(W, H, pattern, percdamp=0.01, blocksize=128):
    """pattern: ("unstructured", s) | ("per_row", s) | ("nm", n, m). Returns (keep, W)."""
    W = W.astype(np.float64).copy()
    out, n = W.shape
    U, dead = prepare(H, percdamp)
    W[:, dead] = 0.0
    if pattern[0] == "nm":
        m = pattern[2]
        blocksize = max(blocksize // m, 1) * m
    pruned = np.zeros((out, n), dtype=bool)
    cum = lambda s, x: int(np.round(s * x))  # half to even
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        count = i2 - i1
        W1 = W[:, i1:i2].copy()
        Err1 = np.zeros((out, count))
        U1 = U[i1:i2, i1:i2]
        mask1 = np.zeros((out, count), dtype=bool)
        tmp = W1**2 / np.diag(U1).reshape(1, -1) ** 2
        if pattern[0] == "unstructured":
            k = cum(pattern[1], out * i2) - cum(pattern[1], out * i1)
            mask1.flat[smallest(tmp.ravel(), k)] = True
        elif pattern[0] == "per_row":
            k = cum(pattern[1], i2) - cum(pattern[1], i1)
            for r in range(out):
                mask1[r, smallest(tmp[r], k)] = True
        for i in range(count):
            if pattern[0] == "nm" and i % pattern[2] == 0:
                keep, m = pattern[1], pattern[2]
                t = W1[:, i:i + m] ** 2 / np.diag(U1)[i:i + m].reshape(1, -1) ** 2
                for r in range(out):
                    mask1[r, i + smallest(t[r], m - keep)] = True
            w = W1[:, i]
            q = w.copy()
            q[mask1[:, i]] = 0.0
            err = (w - q) / U1[i, i]
            W1[:, i:] -= np.outer(err, U1[i, i:])
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        pruned[:, i1:i2] = mask1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    W[pruned] = 0.0
    return ~pruned, W


def main():
    rng = np.random.default_rng(15)
    out, n, rows = 16, 64, 256
    w_int = np.round(rng.normal(0, 0.1, (out, n)) * 65536).astype(np.int64)
    x_int = rng.integers(-8, 9, (rows, n))
    x_int[:, 5] *= 4  # a loud channel
    x_int[:, 9] = 0  # a dead input
    x_int[:, 20] = x_int[:, 21] + x_int[:, 22]  # an exactly dependent one (dampening needed)
    W = w_int / 65536.0
    H = (x_int.T @ x_int).astype(np.float64)  # exact integers
    cases = []
    for bits, group, affine, act, static in [(4, None, True, False, True), (3, None, True, False, True),
                                             (4, 16, True, False, True), (3, 16, False, False, False),
                                             (2, 8, True, False, False), (4, 16, True, True, True),
                                             (3, None, False, True, True), (4, 32, True, False, False),
                                             (3, 8, True, False, True)]:
        Q, S, Z = gptq(W, H, bits, group, affine, act, blocksize=24, static_groups=static)
        cases.append({"method": "gptq", "bits": bits, "group": group, "affine": affine, "act_order": act,
                      "static_groups": static,
                      "block_size": 24, "codes": Q.ravel().tolist(), "scales": S.ravel().tolist(),
                      "zeros": Z.ravel().tolist()})
    for pattern in [("unstructured", 0.5), ("per_row", 0.5), ("per_row", 0.7), ("nm", 2, 4), ("nm", 1, 4)]:
        keep, Wp = sparsegpt(W, H, pattern, blocksize=32)
        cases.append({"method": "sparsegpt", "pattern": list(pattern), "block_size": 32,
                      "keep": keep.ravel().astype(int).tolist(), "weights": Wp.ravel().tolist()})
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
    with open(os.path.join(root, "calib_solvers.json"), "w") as f:
        json.dump({"out": out, "in": n, "rows": rows, "w_int": w_int.ravel().tolist(), "w_scale": 65536,
                   "x_int": x_int.ravel().tolist(), "percdamp": 0.01, "numpy": np.__version__,
                   "cases": cases}, f)
    print(f"wrote {len(cases)} cases")


if __name__ == "__main__":
    main()
