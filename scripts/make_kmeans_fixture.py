"""Reference for slimnn's weight sharing: scikit-learn's KMeans on Laplace-distributed
weights, from Deep Compression's linear initialisation.

Writes tests/fixtures/kmeans_laplace.bin (50,000 little-endian f32 values, Laplace(0, 0.02),
numpy seed 7) and tests/fixtures/kmeans_laplace.json (for k = 4, 16 and 64: scikit-learn's
SSE and centroids, computed in float64 on the float32 values). The Rust tests check that
slimnn's optimal codebook is never worse and that its Lloyd run from the same start
matches scikit-learn's.

Requirements: numpy, scikit-learn.  Run: python3 scripts/make_kmeans_fixture.py
"""
import json
import os

import numpy as np
import sklearn
from sklearn.cluster import KMeans

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
x = np.random.default_rng(7).laplace(0.0, 0.02, 50_000).astype(np.float32)
x.astype("<f4").tofile(os.path.join(root, "kmeans_laplace.bin"))
x64 = x.astype(np.float64).reshape(-1, 1)
cases = {}
for k in (4, 16, 64):
    init = np.linspace(x64.min(), x64.max(), k).reshape(-1, 1)
    km = KMeans(n_clusters=k, init=init, n_init=1, max_iter=300, tol=0.0, algorithm="lloyd").fit(x64)
    centers = km.cluster_centers_.ravel()
    sse = float(np.sum((x64.ravel() - centers[km.labels_]) ** 2))
    cases[str(k)] = {"sse": sse, "centroids": sorted(float(c) for c in centers), "iterations": int(km.n_iter_)}
    print(f"k={k}: sse {sse:.9e} after {km.n_iter_} iterations")
with open(os.path.join(root, "kmeans_laplace.json"), "w") as f:
    json.dump({"values": 50_000, "distribution": "Laplace(0, 0.02), numpy default_rng(7), float32",
               "sklearn": sklearn.__version__, "numpy": np.__version__, "init": "linear (min..max)",
               "cases": cases}, f, indent=1)
