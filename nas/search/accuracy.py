"""An accuracy predictor: a subnet's inherited AP from its arch config, fitted on evaluated subnets.

OFA searches a new budget in seconds because an MLP on the one-hot arch encoding stands in for
evaluating subnets. Here several candidate models (an MLP as OFA's, gradient-boosted trees, a
ridge regression) are fitted on the same encoding plus log-MACs, the best by cross-validated
Kendall's tau is kept (rank is what a search needs), and it is judged on held-out subnets. The
fitted model is stored as plain arrays in JSON and predicted with numpy: nothing is pickled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau, spearmanr

from nas.errors import PoseNASError
from nas.io import read_json, sha256, write_json
from nas.subnet import zoo
from search_spaces import SearchSpace, arch_hash
from supernet.cost import arch_cost

FORMAT = "posenas-accuracy-predictor/1"


def encode(space: SearchSpace, arch: dict, num_keypoints: int) -> np.ndarray:
    """One-hot per dimension of the canonical config (OFA's encoding), then log10 of its MACs."""
    arch = space.canonical(arch)
    values = space.values(arch)
    onehot = [float(v == c) for v, dim in zip(values, space.dimensions) for c in dim.choices]
    return np.array(onehot + [math.log10(arch_cost(arch, num_keypoints).macs)])


# One layer under strong weight decay: fitted on hundreds of subnets (OFA's on 16,000), two layers of
# 64 at light decay overfit (cross-validated tau 0.19 on the zoo's 415 subnets; this 0.76).
MLP = {"hidden_layer_sizes": (128,), "alpha": 3.0, "learning_rate_init": 3e-3, "max_iter": 3000}


# Depth 4: on zoo:cpu-synth's 360 spread and 160 near-front subnets, 5-fold Kendall's tau 0.854 (0.541 in
# the top third), MAE 0.010; 150 trees of depth 3: 0.835 (0.499), 0.012.
TREES = {"n_estimators": 400, "max_depth": 4, "learning_rate": 0.03, "subsample": 0.8}


# -- models as plain data: fit with scikit-learn, predict with numpy ---------------------------------
def _fit_ridge(x: np.ndarray, y: np.ndarray, seed: int) -> dict:
    from sklearn.linear_model import RidgeCV

    m = RidgeCV(alphas=np.logspace(-3, 2, 12)).fit(x, y)
    return {"kind": "ridge", "coef": m.coef_.tolist(), "intercept": float(m.intercept_)}


def _fit_mlp(x: np.ndarray, y: np.ndarray, seed: int) -> dict:
    from sklearn.neural_network import MLPRegressor

    mean, std = x.mean(0), x.std(0)
    std = np.where(std > 1e-6, std, 1.0)  # a choice constant in the samples: another value must not blow up
    m = MLPRegressor(**MLP, random_state=seed).fit((x - mean) / std, y)
    return {"kind": "mlp", "mean": mean.tolist(), "std": std.tolist(), "weights": [w.tolist() for w in m.coefs_],
            "biases": [b.tolist() for b in m.intercepts_]}


def _fit_trees(x: np.ndarray, y: np.ndarray, seed: int) -> dict:
    from sklearn.ensemble import GradientBoostingRegressor

    m = GradientBoostingRegressor(**TREES, random_state=seed).fit(x, y)
    trees = [{"feature": t.tree_.feature.tolist(), "threshold": t.tree_.threshold.tolist(),
              "left": t.tree_.children_left.tolist(), "right": t.tree_.children_right.tolist(),
              "value": t.tree_.value[:, 0, 0].tolist()} for t in m.estimators_[:, 0]]
    return {"kind": "trees", "init": float(m.init_.constant_[0][0]), "rate": m.learning_rate, "trees": trees}


FITTERS = {"mlp": _fit_mlp, "trees": _fit_trees, "ridge": _fit_ridge}


def predict_model(model: dict, x: np.ndarray) -> np.ndarray:
    """Predictions of a plain-data model for the rows of ``x``."""
    x = np.atleast_2d(x)
    if model["kind"] == "ridge":
        return x @ np.asarray(model["coef"]) + model["intercept"]
    if model["kind"] == "mlp":
        h = (x - np.asarray(model["mean"])) / np.asarray(model["std"])
        layers = list(zip(model["weights"], model["biases"]))
        for i, (w, b) in enumerate(layers):
            h = h @ np.asarray(w) + np.asarray(b)
            if i < len(layers) - 1:
                h = np.maximum(h, 0)
        return h[:, 0]
    if model["kind"] == "trees":
        out = np.full(len(x), model["init"])
        rows = np.arange(len(x))
        for t in model["trees"]:
            feature, threshold = np.asarray(t["feature"]), np.asarray(t["threshold"])
            left, right, value = np.asarray(t["left"]), np.asarray(t["right"]), np.asarray(t["value"])
            node = np.zeros(len(x), dtype=int)
            while True:
                inner = left[node] >= 0
                if not inner.any():
                    break
                go_left = x[rows, np.maximum(feature[node], 0)] <= threshold[node]
                node = np.where(inner, np.where(go_left, left[node], right[node]), node)
            out += model["rate"] * value[node]
        return out
    raise PoseNASError(f"unknown accuracy model kind {model['kind']!r}")


def scores(predicted: np.ndarray, measured: np.ndarray) -> dict:
    """Kendall's tau and Spearman's rho (None where either side is constant: no ranking), overall and
    among the top third by measured AP (where a search looks), RMSE and mean absolute error."""
    predicted, measured = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    top = measured >= np.quantile(measured, 2 / 3) if len(measured) else measured.astype(bool)

    def tau(a: np.ndarray, b: np.ndarray) -> float | None:
        return float(kendalltau(a, b).statistic) if len(a) > 1 and np.ptp(a) > 0 and np.ptp(b) > 0 else None

    ranked = tau(predicted, measured) is not None
    return {"kendall_tau": tau(predicted, measured), "top_third_kendall_tau": tau(predicted[top], measured[top]),
            "spearman": float(spearmanr(predicted, measured).statistic) if ranked else None,
            "rmse": float(np.sqrt(np.mean((predicted - measured) ** 2))),
            "mae": float(np.mean(np.abs(predicted - measured)))}


def ranking(figures: dict) -> float:
    """How well a model ranks, overall and among the top third alike: a search needs both."""
    return ((figures["kendall_tau"] or -1.0) + (figures["top_third_kendall_tau"] or -1.0)) / 2


def choose_model(x: np.ndarray, y: np.ndarray, seed: int = 0, folds: int = 5) -> tuple[str, dict]:
    """The candidate with the best cross-validated ``ranking`` (then RMSE), and every candidate's
    cross-validated scores."""
    from sklearn.model_selection import KFold

    cv = {}
    for name, fit in FITTERS.items():
        predicted = np.zeros(len(y))
        for train, test in KFold(min(folds, len(y)), shuffle=True, random_state=seed).split(x):
            predicted[test] = predict_model(fit(x[train], y[train], seed), x[test])
        cv[name] = scores(predicted, y)
    best = max(cv, key=lambda n: (round(ranking(cv[n]), 3), -cv[n]["rmse"]))
    return best, cv


def evaluation_key(supernet, dataset, eval_images: int | None, flip_test: bool) -> dict:
    """What makes two inherited APs comparable: the same weights (``supernet.identity``), scored
    the same way on the same images of the same data (its annotations' digest: the same synthetic
    set made on another machine, or the same COCO file elsewhere, is the same data; all 200 images
    are the same images whether asked as 200 or as all)."""
    images = len(dataset.image_ids) if eval_images is None else min(eval_images, len(dataset.image_ids))
    return {"supernet": supernet.identity, "val_data": sha256(dataset.ann_file), "eval_images": images,
            "calibration": supernet.calibration_key, "flip_test": flip_test}


@dataclass
class AccuracyPredictor:
    space: SearchSpace
    num_keypoints: int
    model: dict
    info: dict  # the supernet and data it was fitted for, and its report
    samples: list[tuple[dict, float]]  # what it was fitted on: (arch config, inherited AP); refit needs them

    @classmethod
    def fit(cls, space: SearchSpace, num_keypoints: int, archs: list[dict], aps: list[float], kind: str,
            info: dict, seed: int = 0) -> "AccuracyPredictor":
        x = np.stack([encode(space, a, num_keypoints) for a in archs])
        return cls(space, num_keypoints, FITTERS[kind](x, np.asarray(aps, dtype=float), seed), info,
                   [(space.canonical(a), float(ap)) for a, ap in zip(archs, aps)])

    def refit(self, archs: list[dict], aps: list[float], seed: int = 0) -> "AccuracyPredictor":
        """The same kind of model fitted on its samples and these evaluations (which replace samples
        of the same subnet): searches feed back what they verified, where they look."""
        rows = {arch_hash(a): (a, ap) for a, ap in self.samples}
        rows.update({arch_hash(a): (self.space.canonical(a), float(ap)) for a, ap in zip(archs, aps)})
        archs, aps = zip(*rows.values())
        return AccuracyPredictor.fit(self.space, self.num_keypoints, list(archs), list(aps), self.model["kind"],
                                     {**self.info, "refitted_with": len(rows) - len(self.samples)}, seed)

    def predict(self, archs: list[dict]) -> np.ndarray:
        return predict_model(self.model, np.stack([encode(self.space, a, self.num_keypoints) for a in archs]))

    def save(self, path) -> None:
        write_json(path, {"format": FORMAT, "space": self.space.spec, "num_keypoints": self.num_keypoints,
                          "model": self.model, **self.info,
                          "samples": [{"values": self.space.values(a), "AP": ap} for a, ap in self.samples]}, indent=1)

    @classmethod
    def load(cls, path) -> "AccuracyPredictor":
        """A predictor.json, or ``zoo:NAME``: the one that ships with a zoo entry."""
        if zoo.is_entry(path):
            path = zoo.locate(path) / zoo.PREDICTOR
        d = read_json(path, "accuracy predictor")
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise PoseNASError(f"{path}: not an accuracy predictor of posenas predictor build "
                               f"(format {FORMAT!r})")
        try:
            space = SearchSpace(d["space"], f"{path} (space)")
            samples = [(space.from_values(row["values"], f"{path} (samples[{i}])"), float(row["AP"]))
                       for i, row in enumerate(d.get("samples", []))]  # none: built before they were kept
            return cls(space, int(d["num_keypoints"]), d["model"],
                       {k: v for k, v in d.items() if k not in ("format", "space", "num_keypoints", "model", "samples")},
                       samples)
        except (KeyError, TypeError, ValueError) as e:
            raise PoseNASError(f"{path}: a damaged accuracy predictor ({type(e).__name__}: {e})") from None
