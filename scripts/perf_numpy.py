#!/usr/bin/env python3
"""NumPy baseline for slimnn's performance contract (shared PERF.md).

Prints one JSON object per line, in the same form as the Rust runner
(`cargo run --release --example perf -- --json`):

    {"op": "prune_global", "impl": "numpy", "size": "...", "median_s": 0.0123,
     "min_s": 0.0119, "repeats": 5, "quality": 0.9, "quality_metric": "sparsity"}

Inputs are generated in-process with a fixed seed (numpy's default_rng). For every op
the inputs and preallocated outputs are built untimed, the work runs once untimed as a
warm-up, then `--repeats` timed runs (time.perf_counter around the named work only);
`quality` is computed afterwards, untimed, from the last run's outputs. NumPy uses its
BLAS's threads for matmul (OpenBLAS: both cores here); element-wise work is
single-threaded, as NumPy is.

Ops (add more by writing a function and registering it in OPS):
  memcpy                 np.copyto of 4096x4096 f32 into a preallocated buffer;
                         quality = GB/s (bytes of src / median, 1 GB = 1e9 bytes)
  prune_global           global L1 magnitude pruning to 90% over 3 f32 tensors;
                         threshold t = k-th smallest |w| (k = round(0.9 n)) via
                         np.partition; mask = |w| > t, then ties at t are un-pruned in
                         tensor/row-major order so exactly k weights are pruned
                         (count-exact); pruned = w * mask; quality = sparsity
  prune_structured       keep the 256 of 512 conv filters with the largest L2 norm;
                         quality = fraction of filters zeroed
  quant_int8_perchannel  symmetric int8, scale per output row = max|row| / 127,
                         codes = clip(rint(w / scale), -127, 127); dequantize;
                         quality = ||w - w_hat||_F / ||w||_F
  quant_int4_group       asymmetric int4, groups of 128 along rows, scale = (max-min)/15,
                         zp = clip(round(-min/scale), 0, 15),
                         codes = clip(rint(w/scale) + zp, 0, 15), packed two per byte
                         (low nibble = even element); unpack and dequantize;
                         quality = relative Frobenius error
  dense_gemm             f32 W @ X, W 4096x4096, X 4096x1 and 4096x64 (two lines);
                         quality = max |f32 result - f64 product|
  svd_trunc              A 2048x2048 f32 = U diag(exp(-i/100)) V^T + N(0, 1e-3^2), U, V the
                         Q of QR of Gaussian matrices (built in f64, untimed, then cast).
                         Two lines, both on the f32 matrix (NumPy's full SVD is as fast in
                         f32 as in f64 here, sklearn's randomized SVD ~1.5x faster in f32):
                         impl "numpy": np.linalg.svd(A, full_matrices=False), then the
                         rank-128 factors U_r diag(s_r) and V_r^T (copies);
                         impl "sklearn": sklearn.utils.extmath.randomized_svd(A,
                         n_components=128, n_oversamples=10, n_iter=4, random_state=0)
                         (other arguments default: power_iteration_normalizer='auto', i.e.
                         LU for n_iter > 2; transpose='auto'; flip_sign=True;
                         svd_lapack_driver='gesdd'; n_iter's own default 'auto' would be 7
                         here), then the same factors;
                         quality = ||A - U_r S_r V_r^T||_F / ||A||_F (in f64). The optimal
                         rank-128 error (from the full SVD's discarded singular values) is
                         printed on stderr.
  tucker2                conv weight W [256, 256, 3, 3] f32 = G x_0 U0' x_1 U1' + N(0, 1e-4^2),
                         G N(0, 1), U0', U1' 256x256 orthonormal (QR) with column i scaled by
                         exp(-i/16) (built in f64, untimed); TensorLy's
                         partial_tucker(W, rank=[64, 64], modes=[0, 1], init='svd',
                         n_iter_max=20, tol=1e-6) (HOSVD start + HOOI, numpy backend, f32);
                         quality = relative Frobenius error of the reconstruction (in f64).
                         The iterations run are printed on stderr. impl "tensorly".
  lowrank_linear         factorized Linear 4096x4096 at rank 256: A 4096x256 and B 256x4096,
                         entries N(0, 0.02/16) (so W = A @ B has entries of std ~0.02), W
                         formed once in f32 (untimed), X 4096x64 N(0, 1), all f32. Two lines:
                         size "... dense": np.matmul(W, X), quality = max |result - f64
                         product of the same f32 W and X| ("max abs difference to f64");
                         size "... factorized": A @ (B @ X), quality = max |result - the
                         dense f32 result| ("max abs difference", i.e. rounding only).

Requirements: pip install numpy (kmeans_share and svd_trunc: scikit-learn; tucker2: tensorly)
Usage: python3 scripts/perf_numpy.py [--ops memcpy,dense_gemm] [--repeats 5] [--seed 0]
       [--inputs DIR]  (DIR from `cargo run --release --example perf -- --save-inputs DIR`)
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np

SEED = 0
INPUTS = None  # directory of <op>.npy inputs shared with the Rust perf example


def shared_input(op_name):
    """The op's input saved by `cargo run --release --example perf -- --save-inputs DIR`,
    or None when --inputs is not given."""
    if INPUTS is None:
        return None
    import os
    return np.load(os.path.join(INPUTS, op_name + ".npy"))


def rng_for(op_name, seed):
    """One generator per op so running a subset of ops gives the same inputs."""
    return np.random.default_rng([seed, sum(op_name.encode())])


def normal_f32(rng, shape, std):
    a = rng.standard_normal(shape, dtype=np.float32)
    a *= np.float32(std)
    return a


def bench(work, repeats):
    """One untimed warm-up, then `repeats` timed runs. Returns (median_s, min_s)."""
    work()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def record(op, size, median_s, min_s, repeats, quality, metric):
    return {"op": op, "impl": "numpy", "size": size, "median_s": median_s,
            "min_s": min_s, "repeats": repeats, "quality": float(quality),
            "quality_metric": metric}


def rel_frobenius(w, w_hat):
    w64 = w.astype(np.float64)
    return float(np.linalg.norm(w64 - w_hat.astype(np.float64)) / np.linalg.norm(w64))


# ---------------------------------------------------------------------------- ops

def op_memcpy(repeats, seed):
    rng = rng_for("memcpy", seed)
    src = normal_f32(rng, (4096, 4096), 1.0)
    dst = np.empty_like(src)
    dst.fill(0.0)  # fault the pages in, untimed

    def work():
        np.copyto(dst, src)

    med, mn = bench(work, repeats)
    assert np.array_equal(dst, src)
    return [record("memcpy", "4096x4096 f32", med, mn, repeats,
                   src.nbytes / med / 1e9, "GB/s")]


def op_prune_global(repeats, seed):
    rng = rng_for("prune_global", seed)
    shapes = [(4096, 4096), (4096, 1024), (1024, 4096)]
    ws = [normal_f32(rng, s, 0.02) for s in shapes]
    n = sum(w.size for w in ws)
    k = int(round(0.9 * n))  # number of weights to prune
    masks = [np.ones(s, dtype=bool) for s in shapes]
    outs = [np.zeros(s, dtype=np.float32) for s in shapes]

    def work():
        # |w| of all tensors, concatenated (flat, tensor order).
        all_abs = np.empty(n, dtype=np.float32)
        views, off = [], 0
        for w in ws:
            v = all_abs[off:off + w.size].reshape(w.shape)
            np.abs(w, out=v)
            views.append(v)
            off += w.size
        t = np.partition(all_abs, k - 1)[k - 1]  # k-th smallest |w|
        kept = 0
        for w, v, m, o in zip(ws, views, masks, outs):
            np.greater(v, t, out=m)
            np.multiply(w, m, out=o)
            kept += np.count_nonzero(m)
        # |w| > t prunes every tie at t; give back the surplus so exactly k are pruned.
        excess = (n - kept) - k
        for w, v, m, o in zip(ws, views, masks, outs):
            if excess <= 0:
                break
            idx = np.flatnonzero(v == t)[:excess]
            m.flat[idx] = True
            o.flat[idx] = w.flat[idx]
            excess -= idx.size

    med, mn = bench(work, repeats)
    pruned = sum(m.size - np.count_nonzero(m) for m in masks)
    assert pruned == k, (pruned, k)
    return [record("prune_global", "3 tensors 4096x4096+4096x1024+1024x4096",
                   med, mn, repeats, pruned / n, "sparsity")]


def op_prune_structured(repeats, seed):
    rng = rng_for("prune_structured", seed)
    shape = (512, 256, 3, 3)
    w = normal_f32(rng, shape, 0.05)
    w *= rng.uniform(0.2, 2.0, size=(512, 1, 1, 1)).astype(np.float32)
    keep_n = 256
    out = np.empty_like(w)
    filt_mask = np.zeros(512, dtype=bool)

    def work():
        flat = w.reshape(512, -1)
        sq = np.einsum("ij,ij->i", flat, flat)  # squared L2 norm per filter
        top = np.argpartition(sq, 512 - keep_n)[512 - keep_n:]
        filt_mask[:] = False
        filt_mask[top] = True
        np.multiply(w, filt_mask[:, None, None, None], out=out)

    med, mn = bench(work, repeats)
    zeroed = np.count_nonzero(~out.reshape(512, -1).any(axis=1))
    norms = np.linalg.norm(w.reshape(512, -1).astype(np.float64), axis=1)
    assert set(np.flatnonzero(filt_mask)) == set(np.argsort(norms)[-keep_n:])
    return [record("prune_structured", "512x256x3x3 keep 256 filters", med, mn, repeats,
                   zeroed / 512, "fraction of filters zeroed")]


def op_quant_int8_perchannel(repeats, seed):
    rng = rng_for("quant_int8_perchannel", seed)
    w = normal_f32(rng, (4096, 4096), 0.02)
    codes = np.empty(w.shape, dtype=np.int8)
    deq = np.empty_like(w)
    tmp = np.empty_like(w)
    scales = np.empty(4096, dtype=np.float32)

    def work():
        np.abs(w, out=tmp)
        np.max(tmp, axis=1, out=scales)
        np.divide(scales, np.float32(127.0), out=scales)
        scales[scales == 0] = 1.0  # all-zero row: any scale gives code 0
        np.divide(w, scales[:, None], out=tmp)
        np.rint(tmp, out=tmp)
        np.clip(tmp, -127, 127, out=tmp)
        codes[...] = tmp  # f32 -> int8 (values already integral and in range)
        np.multiply(codes, scales[:, None], out=deq)  # dequantize

    med, mn = bench(work, repeats)
    ref_scale = np.abs(w).max(axis=1, keepdims=True) / np.float32(127.0)
    ref_codes = np.clip(np.rint(w / ref_scale), -127, 127)
    assert np.array_equal(codes, ref_codes) and np.array_equal(deq, ref_codes * ref_scale)
    return [record("quant_int8_perchannel", "4096x4096", med, mn, repeats,
                   rel_frobenius(w, deq), "relative Frobenius error")]


def op_quant_int4_group(repeats, seed):
    rng = rng_for("quant_int4_group", seed)
    rows, cols, g = 4096, 4096, 128
    w = normal_f32(rng, (rows, cols), 0.02)
    packed = np.empty((rows, cols // 2), dtype=np.uint8)
    deq = np.empty_like(w)

    def work():
        wg = w.reshape(rows, cols // g, g)
        lo = wg.min(axis=2, keepdims=True)
        hi = wg.max(axis=2, keepdims=True)
        scale = (hi - lo) / np.float32(15.0)
        scale[scale == 0] = 1.0  # constant group: every code equals zp
        zp = np.clip(np.rint(-lo / scale), 0, 15)
        q = wg / scale
        np.rint(q, out=q)
        q += zp
        np.clip(q, 0, 15, out=q)
        c = q.astype(np.uint8).reshape(rows, cols // 2, 2)
        # Pack: element 2j in the low nibble, element 2j+1 in the high nibble.
        np.left_shift(c[:, :, 1], 4, out=packed)
        np.bitwise_or(packed, c[:, :, 0], out=packed)
        # Unpack and dequantize.
        u = np.empty((rows, cols // 2, 2), dtype=np.uint8)
        np.bitwise_and(packed, 0x0F, out=u[:, :, 0])
        np.right_shift(packed, 4, out=u[:, :, 1])
        d = deq.reshape(rows, cols // g, g)
        np.subtract(u.reshape(rows, cols // g, g), zp, out=d, dtype=np.float32,
                    casting="unsafe")
        d *= scale

    med, mn = bench(work, repeats)
    # Untimed check against a plain, unpacked restatement of the scheme.
    wg = w.reshape(rows, cols // g, g)
    lo, hi = wg.min(axis=2, keepdims=True), wg.max(axis=2, keepdims=True)
    scale = (hi - lo) / np.float32(15.0)
    zp = np.clip(np.rint(-lo / scale), 0, 15)
    ref_codes = np.clip(np.rint(wg / scale) + zp, 0, 15)
    assert np.array_equal(packed & 0x0F, ref_codes.reshape(rows, -1)[:, 0::2])
    assert np.array_equal(packed >> 4, ref_codes.reshape(rows, -1)[:, 1::2])
    assert np.array_equal(deq, ((ref_codes - zp) * scale).reshape(rows, cols))
    return [record("quant_int4_group", "4096x4096 group 128", med, mn, repeats,
                   rel_frobenius(w, deq), "relative Frobenius error")]


def op_dense_gemm(repeats, seed):
    rng = rng_for("dense_gemm", seed)
    W = normal_f32(rng, (4096, 4096), 0.02)
    W64 = W.astype(np.float64)
    results = []
    for batch in (1, 64):
        X = rng.standard_normal((4096, batch), dtype=np.float32)
        Y = np.empty((4096, batch), dtype=np.float32)

        def work():
            np.matmul(W, X, out=Y)

        med, mn = bench(work, repeats)
        ref = W64 @ X.astype(np.float64)
        err = float(np.max(np.abs(Y.astype(np.float64) - ref)))
        results.append(record("dense_gemm", f"4096x4096 @ batch {batch}", med, mn,
                              repeats, err, "max abs difference to f64"))
    return results


def op_lowrank_linear(repeats, seed):
    rng = rng_for("lowrank_linear", seed)
    n, r, batch = 4096, 256, 64
    std = float(np.sqrt(0.02 / np.sqrt(r)))  # W = A @ B then has entries of std 0.02
    A = normal_f32(rng, (n, r), std)
    B = normal_f32(rng, (r, n), std)
    W = A @ B  # the dense rank-256 reconstruction, f32, untimed
    X = rng.standard_normal((n, batch), dtype=np.float32)
    Y = np.empty((n, batch), dtype=np.float32)
    T = np.empty((r, batch), dtype=np.float32)
    Yf = np.empty((n, batch), dtype=np.float32)
    size = f"{n}x{n} rank {r} @ batch {batch}"

    def work_dense():
        np.matmul(W, X, out=Y)

    def work_factorized():
        np.matmul(B, X, out=T)
        np.matmul(A, T, out=Yf)

    med, mn = bench(work_dense, repeats)
    ref = W.astype(np.float64) @ X.astype(np.float64)
    results = [record("lowrank_linear", size + " dense", med, mn, repeats,
                      np.max(np.abs(Y.astype(np.float64) - ref)), "max abs difference to f64")]
    med, mn = bench(work_factorized, repeats)
    results.append(record("lowrank_linear", size + " factorized", med, mn, repeats,
                          np.max(np.abs(Yf.astype(np.float64) - Y.astype(np.float64))),
                          "max abs difference"))
    return results


def op_kmeans_share(repeats, seed):
    """16-entry weight sharing of 1,048,576 Laplace(0, 0.02) values with scikit-learn's
    KMeans from Deep Compression's linear initialisation (centroids evenly spaced between
    the smallest and largest value); quality = SSE. Needs `pip install scikit-learn`."""
    from sklearn.cluster import KMeans
    rng = rng_for("kmeans_share", seed)
    x = rng.laplace(0.0, 0.02, 1_048_576).astype(np.float32).reshape(-1, 1)
    init = np.linspace(x.min(), x.max(), 16, dtype=np.float32).reshape(-1, 1)
    out = {}

    def work():
        out["km"] = KMeans(n_clusters=16, init=init, n_init=1).fit(x)

    med, mn = bench(work, repeats)
    km = out["km"]
    centers = km.cluster_centers_.astype(np.float64).ravel()
    sse = float(np.sum((x.astype(np.float64).ravel() - centers[km.labels_]) ** 2))
    return [record("kmeans_share", "1048576 values k=16 sklearn KMeans linear init", med, mn,
                   repeats, sse, "SSE")]


def orthonormal(rng, n):
    """Q of the QR of an n x n Gaussian matrix (f64): a random orthonormal basis."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def op_svd_trunc(repeats, seed):
    """Rank-128 truncated factorization of a 2048x2048 f32 matrix: NumPy's full SVD then
    truncation, and scikit-learn's randomized_svd. Needs `pip install scikit-learn`."""
    from sklearn.utils.extmath import randomized_svd
    rng = rng_for("svd_trunc", seed)
    n, r = 2048, 128
    s_true = np.exp(-np.arange(n) / 100.0)
    a64 = (orthonormal(rng, n) * s_true) @ orthonormal(rng, n).T
    a64 += 1e-3 * rng.standard_normal((n, n))
    A = a64.astype(np.float32)
    if shared_input("svd_trunc") is not None:
        A = shared_input("svd_trunc")
    a64 = A.astype(np.float64)
    norm_a = np.linalg.norm(a64)
    out = {}

    def quality():
        left, right = out["left"].astype(np.float64), out["right"].astype(np.float64)
        return float(np.linalg.norm(a64 - left @ right) / norm_a)

    def work_full():
        u, s, vt = np.linalg.svd(A, full_matrices=False)
        out["left"] = u[:, :r] * s[:r]
        out["right"] = vt[:r].copy()
        out["s"] = s

    def work_randomized():
        u, s, vt = randomized_svd(A, n_components=r, n_oversamples=10, n_iter=4,
                                  random_state=0)
        out["left"] = u * s
        out["right"] = vt

    results = []
    med, mn = bench(work_full, repeats)
    assert out["left"].dtype == np.float32 and out["left"].shape == (n, r)
    s64 = out["s"].astype(np.float64)
    print(f"# svd_trunc: optimal rank-{r} relative error (f32 full SVD's discarded singular "
          f"values) {np.sqrt(np.sum(s64[r:] ** 2) / np.sum(s64 ** 2)):.6e}", file=sys.stderr)
    results.append(record("svd_trunc", f"{n}x{n} rank {r} full SVD", med, mn, repeats,
                          quality(), "relative Frobenius error"))
    med, mn = bench(work_randomized, repeats)
    assert out["left"].dtype == np.float32 and out["left"].shape == (n, r)
    rec = record("svd_trunc", f"{n}x{n} rank {r} randomized_svd", med, mn, repeats,
                 quality(), "relative Frobenius error")
    rec["impl"] = "sklearn"
    results.append(rec)
    return results


def op_tucker2(repeats, seed):
    """Tucker-2 of a [256, 256, 3, 3] conv weight on its two channel modes, ranks [64, 64],
    with TensorLy's partial_tucker (numpy backend). Needs `pip install tensorly`."""
    import tensorly as tl
    from tensorly.decomposition import partial_tucker
    tl.set_backend("numpy")
    rng = rng_for("tucker2", seed)
    shape, ranks = (256, 256, 3, 3), [64, 64]
    g = rng.standard_normal(shape)
    u0 = orthonormal(rng, 256) * np.exp(-np.arange(256) / 16.0)
    u1 = orthonormal(rng, 256) * np.exp(-np.arange(256) / 16.0)
    w64 = np.einsum("ai,bj,ijkl->abkl", u0, u1, g, optimize=True)
    w64 += 1e-4 * rng.standard_normal(shape)
    W = w64.astype(np.float32)
    if shared_input("tucker2") is not None:
        W = shared_input("tucker2")
    w64 = W.astype(np.float64)
    out = {}

    def work():
        out["res"] = partial_tucker(W, rank=ranks, modes=[0, 1], init="svd", n_iter_max=20,
                                    tol=1e-6)

    med, mn = bench(work, repeats)
    (core, (f0, f1)), rec_errors = out["res"]
    assert core.dtype == np.float32 and core.shape == (64, 64, 3, 3)
    w_hat = np.einsum("ai,bj,ijkl->abkl", f0.astype(np.float64), f1.astype(np.float64),
                      core.astype(np.float64), optimize=True)
    print(f"# tucker2: tensorly {tl.__version__}, {len(rec_errors)} iterations",
          file=sys.stderr)
    rec = record("tucker2", "256x256x3x3 ranks [64, 64]", med, mn, repeats,
                 rel_frobenius(w64, w_hat), "relative Frobenius error")
    rec["impl"] = "tensorly"
    return [rec]


def blas_info():
    """One line about NumPy's BLAS (name, version, threads where it can be asked)."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        desc = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # older NumPy
        desc = "unknown BLAS"
    try:
        import ctypes
        import glob
        import os
        libdir = os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs")
        for path in glob.glob(os.path.join(libdir, "*openblas*")):
            lib = ctypes.CDLL(path)
            for sym in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                        "openblas_get_num_threads"):
                if hasattr(lib, sym):
                    return f"{desc}, {getattr(lib, sym)()} threads"
    except Exception:
        pass
    return desc


OPS = {
    "memcpy": op_memcpy,
    "prune_global": op_prune_global,
    "prune_structured": op_prune_structured,
    "quant_int8_perchannel": op_quant_int8_perchannel,
    "quant_int4_group": op_quant_int4_group,
    "kmeans_share": op_kmeans_share,
    "svd_trunc": op_svd_trunc,
    "tucker2": op_tucker2,
    "dense_gemm": op_dense_gemm,
    "lowrank_linear": op_lowrank_linear,
}


def main():
    ap = argparse.ArgumentParser(description="NumPy baseline for slimnn's PERF.md ops")
    ap.add_argument("--ops", default=",".join(OPS),
                    help="comma-separated op names (default: all): " + ",".join(OPS))
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per op (default 5)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--inputs", default=None,
                    help="directory of <op>.npy inputs written by slimnn's perf example "
                         "(--save-inputs DIR): svd_trunc and tucker2 then run on the very "
                         "matrices slimnn ran on, so errors compare exactly")
    args = ap.parse_args()
    global INPUTS
    INPUTS = args.inputs

    names = [s.strip() for s in args.ops.split(",") if s.strip()]
    unknown = [s for s in names if s not in OPS]
    if unknown:
        ap.error(f"unknown op(s) {', '.join(unknown)}; known: {', '.join(OPS)}")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")

    print(f"# numpy {np.__version__}, {blas_info()}", file=sys.stderr)
    for name in names:
        for rec in OPS[name](args.repeats, args.seed):
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    sys.exit(main())
