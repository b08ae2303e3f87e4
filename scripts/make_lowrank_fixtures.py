"""Reference for slimnn's low-rank family: NumPy's SVD and TensorLy's Tucker-2 and CP on
small, fixed matrices and conv weights.

Writes, in tests/fixtures/:

  lowrank_svd.bin / lowrank_svd.json
      Two f64 matrices, row-major little-endian, one after the other (numpy
      default_rng(11), drawn in this order):
        "decaying"  96x64: U diag(s) V^T + 1e-4 N(0, 1), s_i = exp(-i/8) (i = 0..63),
                    U (96x64) and V (64x64) orthonormal, the Q of QR of Gaussian matrices;
        "random"    50x80: plain N(0, 1) entries (a Marchenko-Pastur-like spectrum).
      The JSON gives, per matrix, its shape and offset (in f64 values) in the .bin,
      NumPy's singular values (np.linalg.svd(A, compute_uv=False), descending; also as
      f64 bit patterns in hex), its Frobenius norm and, for ranks 1, 4, 16 and 32, the
      error of the best rank-r approximation (Eckart-Young: sqrt of the sum of the
      discarded sigma^2), absolute and relative to ||A||_F.

  lowrank_conv.bin / lowrank_conv.json
      A conv weight W [32, 24, 3, 3], f64 row-major little-endian (numpy default_rng(12)):
      W = G x_0 U0 x_1 U1 + 1e-3 N(0, 1), G [32, 24, 3, 3] N(0, 1), U0 (32x32) and
      U1 (24x24) orthonormal (QR of Gaussian matrices) with column i scaled by exp(-i/4),
      so both channel modes have a decaying spectrum. The JSON gives, for Tucker-2 ranks
      (8, 8), (12, 6), (16, 16):
        - TensorLy's partial_tucker on modes [0, 1] (HOOI from the HOSVD start,
          init='svd', n_iter_max=100, tol=1e-8): relative error ||W - W_hat||_F / ||W||_F
          (recomputed here from the returned core and factors, in f64), iterations run,
          and TensorLy's own last error estimate;
        - the plain truncated HOSVD (no iteration; NumPy) relative error, an upper bound
          HOOI should not exceed;
        - the lower bound max(e0, e1), e_k = the relative error of truncating mode k alone
          (no Tucker-2 of those ranks can do better);
      the singular values of the mode-0 and mode-1 unfoldings; and TensorLy's parafac
      (CP-ALS, init='svd', n_iter_max=200, tol=1e-10, random_state=0) relative error and
      iterations for ranks 16 and 32, a weaker reference.

All JSON floats are written with Python's repr (shortest round-trip, i.e. full f64
precision). The script is deterministic for a given NumPy/LAPACK and TensorLy.

The JSON also gives each matrix's EVBMF rank, noise variance, threshold and free energy
(Nakajima et al. 2013): "reference", as the reference Python port of the authors' code
computes them (Brent's bounded search, which can stop in a local minimum), and
"global", at the global minimum of the same free energy (dense grid, then Brent).

Requirements: numpy, scipy, tensorly (>= 0.8; also handles the older partial_tucker API).
Run: python3 scripts/make_lowrank_fixtures.py
"""
import inspect
import json
import os
import warnings

import numpy as np
from scipy.optimize import minimize_scalar
import tensorly as tl
from tensorly.cp_tensor import cp_to_tensor
from tensorly.decomposition import parafac, partial_tucker

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
tl.set_backend("numpy")
RANKS = (1, 4, 16, 32)


def orthonormal(rng, n, k):
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))  # unique Q (positive diagonal of R)


def bits(xs):
    return [format(int(b), "016x") for b in np.asarray(xs, dtype="<f8").view("<u8")]


def mode_dot(t, m, mode):
    """t x_mode m: contract axis `mode` of t with the columns of m (m is [new, old])."""
    return np.moveaxis(np.tensordot(m, t, axes=(1, mode)), 0, mode)


def unfold(t, mode):
    return np.moveaxis(t, mode, 0).reshape(t.shape[mode], -1)


def rel(w, w_hat):
    return float(np.linalg.norm(w - w_hat) / np.linalg.norm(w))


def tail(s, r):
    """Best rank-r error from descending singular values s."""
    return float(np.sqrt(np.sum(s[r:] ** 2)))


def evbmf(y):
    """EVBMF's noise variance and rank, following the reference Python port of Nakajima's
    code (github.com/CasvandenBogaard/VBMF, EVBMF with sigma2 and H unknown)."""
    if y.shape[0] > y.shape[1]:
        y = y.T
    big_l, big_m = y.shape
    alpha = big_l / big_m
    tauubar = 2.5129 * np.sqrt(alpha)
    s = np.linalg.svd(y, compute_uv=False)
    xubar = (1 + tauubar) * (1 + alpha / tauubar)
    eh_ub = int(np.min([np.ceil(big_l / (1 + alpha)) - 1, big_l])) - 1
    upper = np.sum(s ** 2) / (big_l * big_m)
    lower = np.max([s[eh_ub + 1] ** 2 / (big_m * xubar), np.mean(s[eh_ub + 1:] ** 2) / big_m])

    def tau(x):
        return 0.5 * (x - (1 + alpha) + np.sqrt((x - (1 + alpha)) ** 2 - 4 * alpha))

    def objective(sigma2):
        x = s ** 2 / (big_m * sigma2)
        z1, z2 = x[x > xubar], x[x <= xubar]
        t = tau(z1)
        return (np.sum(z2 - np.log(z2)) + np.sum(z1 - t) + np.sum(np.log((t + 1) / z1))
                + alpha * np.sum(np.log(t / alpha + 1)))

    def result(sigma2):
        threshold = np.sqrt(big_m * sigma2 * xubar)
        return {"rank": int(np.sum(s > threshold)), "sigma2": float(sigma2),
                "threshold": float(threshold), "free_energy": float(objective(sigma2))}

    # The objective is only piecewise smooth (a kink where each x crosses xubar) and can
    # have several local minima; Brent's bounded search, as the reference runs it, may
    # stop in one. The global minimum: a dense log grid, then Brent in the best cell.
    reference = minimize_scalar(objective, bounds=[lower, upper], method="Bounded").x
    grid = np.geomspace(lower, upper, 20001)
    k = int(np.argmin([objective(g) for g in grid]))
    cell = [grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]]
    best = minimize_scalar(objective, bounds=cell, method="Bounded").x
    return {"reference": result(reference), "global": result(best)}


def run_partial_tucker(t, ranks):
    """TensorLy's partial_tucker on modes [0, 1]; returns core, factors, rec_errors (None
    for TensorLy < 0.8, whose partial_tucker(tensor, modes, rank=...) returned (core, factors))."""
    params = inspect.signature(partial_tucker).parameters
    if list(params)[1] == "modes":  # TensorLy < 0.8
        core, factors = partial_tucker(t, [0, 1], rank=list(ranks), init="svd",
                                       n_iter_max=100, tol=1e-8)
        return core, factors, None
    (core, factors), rec_errors = partial_tucker(t, rank=list(ranks), modes=[0, 1], init="svd",
                                                 n_iter_max=100, tol=1e-8)
    return core, factors, rec_errors


# ------------------------------------------------------------------------ lowrank_svd
rng = np.random.default_rng(11)
s_true = np.exp(-np.arange(64) / 8.0)
a1 = orthonormal(rng, 96, 64) @ np.diag(s_true) @ orthonormal(rng, 64, 64).T
a1 += 1e-4 * rng.standard_normal((96, 64))
a2 = rng.standard_normal((50, 80))
a3 = orthonormal(rng, 200, 6) @ np.diag([4.0, 3.0, 2.5, 2.0, 1.5, 1.2]) @ orthonormal(rng, 120, 6).T
a3 += 0.02 * rng.standard_normal((200, 120))
matrices, blobs, offset = [], [], 0
for name, a, formula in (
        ("decaying", a1, "U diag(exp(-i/8)) V^T + 1e-4 N(0,1), U 96x64, V 64x64 orthonormal (QR)"),
        ("random", a2, "N(0,1) entries"),
        ("signal_plus_noise", a3,
         "U diag(4, 3, 2.5, 2, 1.5, 1.2) V^T + 0.02 N(0,1), U 200x6, V 120x6 orthonormal (QR)")):
    s = np.linalg.svd(a, compute_uv=False)
    fro = float(np.linalg.norm(a))
    errs = {str(r): tail(s, r) for r in RANKS}
    matrices.append({"name": name, "shape": list(a.shape), "offset": offset, "formula": formula,
                     "frobenius_norm": fro, "singular_values": [float(x) for x in s],
                     "singular_values_f64_bits": bits(s), "best_rank_error": errs,
                     "best_rank_relative_error": {r: e / fro for r, e in errs.items()},
                     "evbmf": evbmf(a)})
    blobs.append(np.ascontiguousarray(a, dtype="<f8").ravel())
    offset += a.size
    print(f"svd {name} {a.shape[0]}x{a.shape[1]}: sigma_max {s[0]:.6g}, sigma_min {s[-1]:.6g}, "
          + ", ".join(f"r={r} err {e:.6e}" for r, e in errs.items()))
np.concatenate(blobs).tofile(os.path.join(root, "lowrank_svd.bin"))
with open(os.path.join(root, "lowrank_svd.json"), "w") as f:
    json.dump({"dtype": "f64 little-endian, row-major, matrices one after the other",
               "seed": "numpy default_rng(11), drawn in order: decaying (U, V, noise), random, "
                       "signal_plus_noise (U, V, noise)",
               "evbmf_by": "EVBMF (Nakajima et al. 2013) as in CasvandenBogaard/VBMF's EVBMF(): "
                           "noise variance by scipy minimize_scalar(method='Bounded') (reference) "
                           "or at the global minimum over a 20001-point log grid refined "
                           "by Brent (global); rank = singular values above the threshold",
               "numpy": np.__version__, "ranks": list(RANKS),
               "singular_values_by": "np.linalg.svd(A, compute_uv=False)",
               "best_rank_error_by": "sqrt(sum of sigma_i^2 for i >= r)",
               "matrices": matrices}, f, indent=1)

# ----------------------------------------------------------------------- lowrank_conv
rng = np.random.default_rng(12)
shape = (32, 24, 3, 3)
g = rng.standard_normal(shape)
u0 = orthonormal(rng, 32, 32) * np.exp(-np.arange(32) / 4.0)
u1 = orthonormal(rng, 24, 24) * np.exp(-np.arange(24) / 4.0)
w = mode_dot(mode_dot(g, u0, 0), u1, 1) + 1e-3 * rng.standard_normal(shape)
np.ascontiguousarray(w, dtype="<f8").tofile(os.path.join(root, "lowrank_conv.bin"))
norm_w = float(np.linalg.norm(w))
mode_u, mode_s = [], []
for k in (0, 1):
    u, s, _ = np.linalg.svd(unfold(w, k), full_matrices=False)
    mode_u.append(u)
    mode_s.append(s)

tucker = []
for r0, r1 in ((8, 8), (12, 6), (16, 16)):
    core, factors, rec_errors = run_partial_tucker(w, (r0, r1))
    assert core.shape == (r0, r1, 3, 3) and factors[0].shape == (32, r0) and factors[1].shape == (24, r1)
    w_hat = mode_dot(mode_dot(core, factors[0], 0), factors[1], 1)
    # Truncated HOSVD: leading left singular vectors of each unfolding, core by projection.
    p0, p1 = mode_u[0][:, :r0], mode_u[1][:, :r1]
    hosvd = mode_dot(mode_dot(mode_dot(mode_dot(w, p0.T, 0), p1.T, 1), p0, 0), p1, 1)
    lower = max(tail(mode_s[0], r0), tail(mode_s[1], r1)) / norm_w
    case = {"ranks": [r0, r1], "relative_error": rel(w, w_hat),
            "iterations": None if rec_errors is None else len(rec_errors),
            "tensorly_last_rec_error": None if rec_errors is None else float(rec_errors[-1]),
            "hosvd_relative_error": rel(w, hosvd), "lower_bound_relative_error": lower}
    tucker.append(case)
    print(f"tucker2 ranks ({r0}, {r1}): HOOI {case['relative_error']:.9e} after "
          f"{case['iterations']} iterations; HOSVD {case['hosvd_relative_error']:.9e}; "
          f"lower bound {lower:.9e}")

cp = []
# CP ranks exceed the 3x3 spatial modes (and 24 for rank 32): TensorLy's SVD start warns
# that it takes only min(shape) singular vectors and fills the other columns randomly
# (from random_state), which is expected here.
warnings.filterwarnings("ignore", message="Trying to compute SVD with n_eigenvecs")
for rank in (16, 32):
    calls = []
    cpt = parafac(w, rank, init="svd", n_iter_max=200, tol=1e-10, random_state=0,
                  callback=lambda cp_tensor, err: calls.append(float(err)))
    # The callback runs once on the initialisation, then once per ALS iteration.
    case = {"rank": rank, "relative_error": rel(w, cp_to_tensor(cpt)),
            "iterations": len(calls) - 1}
    cp.append(case)
    print(f"cp rank {rank}: relative error {case['relative_error']:.9e} after "
          f"{case['iterations']} iterations")

with open(os.path.join(root, "lowrank_conv.json"), "w") as f:
    json.dump({"shape": list(shape), "dtype": "f64 little-endian, row-major",
               "seed": "numpy default_rng(12): G, U0, U1, noise in that order",
               "formula": "W = G x_0 (U0 diag(exp(-i/4))) x_1 (U1 diag(exp(-i/4))) + 1e-3 N(0,1); "
                          "G [32,24,3,3] N(0,1); U0 32x32, U1 24x24 orthonormal (QR)",
               "numpy": np.__version__, "tensorly": tl.__version__, "frobenius_norm": norm_w,
               "mode_singular_values": {"0": [float(x) for x in mode_s[0]],
                                        "1": [float(x) for x in mode_s[1]]},
               "tucker2_call": "tensorly.decomposition.partial_tucker(W, rank=[r0, r1], modes=[0, 1], "
                               "init='svd', n_iter_max=100, tol=1e-8)",
               "tucker2": tucker,
               "cp_call": "tensorly.decomposition.parafac(W, rank, init='svd', n_iter_max=200, "
                          "tol=1e-10, random_state=0)",
               "cp": cp}, f, indent=1)
for name in ("lowrank_svd.bin", "lowrank_svd.json", "lowrank_conv.bin", "lowrank_conv.json"):
    print(f"{name}: {os.path.getsize(os.path.join(root, name))} bytes")
