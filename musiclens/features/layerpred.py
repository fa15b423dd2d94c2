"""Layer prediction: can an MLP tell which layer an SAE feature comes from by its decoder vector?

The MusicGen SAE paper reports 50.3 % (Large) and 40.5 % (Small) accuracy,
against 1/L chance, as evidence that layers specialise. We reproduce the
test: unit-normalised decoder rows of SAEs at several layers (same d_in),
classes balanced by subsampling so chance is exactly 1 / n_layers, a
stratified train/test split, and scikit-learn's MLPClassifier.
"""

from __future__ import annotations

import numpy as np

from ..errors import MusiclensError


def layer_prediction(decoders: list[tuple[int, np.ndarray]], hidden: int = 256, test_size: float = 0.25,
                     seed: int = 0, max_per_layer: int | None = 4000, max_iter: int = 200) -> dict:
    """decoders: (layer, W_dec [n_features, d]) pairs (several SAEs per layer are pooled)."""
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    by_layer: dict[int, list[np.ndarray]] = {}
    for layer, w in decoders:
        by_layer.setdefault(int(layer), []).append(np.asarray(w, dtype=np.float32))
    if len(by_layer) < 2:
        raise MusiclensError("layer prediction needs SAEs at two or more layers")
    dims = {w.shape[1] for ws in by_layer.values() for w in ws}
    if len(dims) != 1:
        raise MusiclensError(f"layer prediction needs one width d_in, got {sorted(dims)}")
    rng = np.random.default_rng(seed)
    per = min(sum(len(w) for w in ws) for ws in by_layer.values())
    if max_per_layer:
        per = min(per, max_per_layer)
    X, y = [], []
    for layer, ws in sorted(by_layer.items()):
        w = np.concatenate(ws)
        w = w[rng.choice(len(w), size=per, replace=False)]
        X.append(w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-8))
        y += [layer] * per
    X, y = np.concatenate(X), np.asarray(y)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
    clf = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=max_iter, early_stopping=len(ytr) > 2000,
                        random_state=seed)
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(Xtr, ytr)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    acc = float((clf.predict(Xte) == yte).mean())
    return {"layers": sorted(by_layer), "features_per_layer": int(per), "train": int(len(ytr)),
            "test": int(len(yte)), "accuracy": acc, "chance": 1.0 / len(by_layer), "hidden": hidden,
            "iterations": int(clf.n_iter_), "converged": converged}
