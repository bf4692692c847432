"""A latency model moved to another device from a few chosen measurements.

Devices do not differ by one factor: int8 makes dense convolutions cheaper and depthwise ones
dearer, a second thread speeds the arithmetic and not the operator launches, a smaller cache
makes memory traffic dearer at large inputs. The adaptation scales the shipped model's prices per
operator kind (``KINDS``), fitted for relative error on K measured subnets and pulled toward one
common factor by a ridge whose strength the same measurements choose (leave-one-out): with few
measurements the common factor, with enough a price per kind.

The K subnets are designed, not drawn: from a seeded pool, each the one that most widens the
spread of operator mixes measured so far (greedy D-optimal over the shares of the predicted time
each kind takes), one per post-processing case (resolution, output stride, head) while cases
remain, so every measurement also gives its case's post-processing term; the cases no anchor
measured take the shipped terms scaled by how the measured ones moved.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import nnls

from nas.errors import PoseNASError
from nas.latency.predictor import (
    NAMES,
    REFERENCE,
    LatencyPredictor,
    case_of,
    feature_vector,
    postprocess_cases,
    tail_ratio,
    with_case,
)

KINDS = {"dense": ("macs_pointwise", "macs_dense", "macs_deconv", "macs_matmul"),
         "unblocked": ("macs_unblocked",),
         "depthwise": ("macs_depthwise",),
         "depthwise unblocked": ("macs_depthwise_unblocked",),
         "memory": ("activations", "elementwise", "stride2_head"),
         "attention": ("attention", "pruning"),
         "overhead": ("intercept", "ops")}
assert sorted(n for names in KINDS.values() for n in names) == sorted(NAMES)
RIDGES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, math.inf)  # inf: one common factor
ANCHORS = 20  # measurements a target's adaptation takes by default
POOL = 400  # random subnets the anchors are chosen from
CHEAP = 75  # percentile of the pool's predicted latency an anchor may reach: the measurements stay short
DESIGN_SEED = 4717


def kind_terms(reference: LatencyPredictor, arch: dict) -> np.ndarray:
    """The reference's network latency of ``arch`` split by operator kind (ms, in ``KINDS`` order)."""
    priced = feature_vector(arch, reference.num_keypoints) * np.asarray(reference.coefficients)
    return np.array([sum(priced[NAMES.index(n)] for n in names) for names in KINDS.values()])


def common_factor(terms: np.ndarray, measured: np.ndarray) -> float:
    return float(np.median(measured / terms.sum(axis=1)))


@dataclass
class DeviceFit:
    """How a target differs from the reference: a scale per operator kind and a fixed overhead per
    input size (ms, either sign)."""
    scales: np.ndarray
    overhead_ms: dict[int, float]

    def predict(self, terms: np.ndarray, resolutions: list[int]) -> np.ndarray:
        return terms @ self.scales + np.array([self.overhead_ms.get(r, 0.0) for r in resolutions])


def fit_device(terms: np.ndarray, resolutions: list[int], measured: np.ndarray, ridge: float) -> DeviceFit:
    """Scales per kind and overheads per input size minimising the squared relative error, plus
    ``ridge`` times the squared distances of the scales from the common factor and of the
    overheads (relative to a typical measurement) from zero; non-negative least squares, an
    overhead as the difference of two non-negative parts."""
    factor = common_factor(terms, measured)
    if math.isinf(ridge):
        return DeviceFit(np.full(terms.shape[1], factor), {})
    sizes = sorted(set(resolutions))
    at = np.array([[r == size for size in sizes] for r in resolutions], dtype=float) / measured[:, None]
    kinds, typical = terms.shape[1], float(np.median(measured))
    pull = math.sqrt(ridge) * np.eye(kinds + 2 * len(sizes))
    pull[kinds:, kinds:] /= typical
    rows = np.vstack([np.hstack([terms / measured[:, None], at, -at]), pull])
    target = np.concatenate([np.ones(len(measured)), np.full(kinds, math.sqrt(ridge) * factor),
                             np.zeros(2 * len(sizes))])
    solution = nnls(rows, target)[0]
    plus, minus = solution[kinds:kinds + len(sizes)], solution[kinds + len(sizes):]
    return DeviceFit(solution[:kinds], {size: float(p - m) for size, p, m in zip(sizes, plus, minus)})


def left_out_errors(terms: np.ndarray, resolutions: list[int], measured: np.ndarray, ridge: float) -> np.ndarray:
    """Each measurement's relative error predicted by the fit on the others."""
    errors = []
    for i in range(len(measured)):
        keep = np.arange(len(measured)) != i
        fit = fit_device(terms[keep], [r for j, r in enumerate(resolutions) if j != i], measured[keep], ridge)
        errors.append(fit.predict(terms[i:i + 1], [resolutions[i]])[0] / measured[i] - 1)
    return np.asarray(errors)


def choose_ridge(terms: np.ndarray, resolutions: list[int], measured: np.ndarray) -> tuple[float, dict[float, float]]:
    """The ridge whose leave-one-out predictions err least (mean absolute relative error); two
    measurements or fewer leave nothing to choose by: the common factor."""
    if len(measured) < 3:
        return math.inf, {}
    scores = {ridge: float(np.mean(np.abs(left_out_errors(terms, resolutions, measured, ridge)))) for ridge in RIDGES}
    return min(scores, key=lambda r: (scores[r], -r)), scores  # ties: the stronger pull


def adapt(reference: LatencyPredictor, archs: list[dict], network_ms: list[float], postprocess_ms: list[float],
          cases: list[str], device: dict, settings: dict, tail: float = 1.0) -> LatencyPredictor:
    """``reference`` moved to the device and settings where ``archs`` measured ``network_ms`` and
    ``postprocess_ms`` (each anchor's own post-processing case); ``cases``: every post-processing
    case the adapted model is to know; ``tail``: the target's p90 over median latency."""
    measured = np.asarray(network_ms, dtype=float)
    usable = measured > 0  # the network is the total less the post-processing: a tiny one's may come out <= 0
    if usable.any():
        terms = np.stack([kind_terms(reference, a) for a, u in zip(archs, usable) if u])
        resolutions = [a["resolution"] for a, u in zip(archs, usable) if u]
        ridge, scores = choose_ridge(terms, resolutions, measured[usable])
        fit = fit_device(terms, resolutions, measured[usable], ridge)
    else:  # nothing tells the network's prices apart: the shipped ones
        ridge, scores, fit = math.inf, {}, DeviceFit(np.ones(len(KINDS)), {})
    per_name = {n: s for s, names in zip(fit.scales, KINDS.values()) for n in names}
    coefficients = [c * per_name[n] for c, n in zip(reference.coefficients, NAMES)]
    post = adapted_postprocessing(reference, archs, postprocess_ms, cases)
    record = {"adapted_from": reference.device, "anchors": len(archs), "ridge": ridge,
              "scales": {kind: round(float(s), 4) for kind, s in zip(KINDS, fit.scales)},
              "left_out_mean_abs_error": scores.get(ridge)}
    overhead = {str(size): round(ms, 4) for size, ms in fit.overhead_ms.items()}
    return LatencyPredictor(coefficients, device, {**settings, "adaptation": record}, reference.num_keypoints, post,
                            tail, overhead)


def adapted_postprocessing(reference: LatencyPredictor, archs: list[dict], measured: list[float],
                           cases: list[str]) -> dict[str, float]:
    """The post-processing term of every case: measured where anchors ran it (their median), the
    others the shipped term scaled by the median ratio of measured to shipped terms."""
    by_case: dict[str, list[float]] = {}
    for arch, ms in zip(archs, measured):
        by_case.setdefault(case_of(arch), []).append(float(ms))
    own = {key: float(np.median(values)) for key, values in by_case.items() if key is not None}
    ratios = [own[k] / reference.postprocess_ms[k] for k in own if reference.postprocess_ms.get(k, 0) > 0]
    factor = float(np.median(ratios)) if ratios else 1.0
    unknown = [k for k in cases if k not in own and k not in reference.postprocess_ms]
    if unknown:
        raise PoseNASError(f"latency adaptation: no anchor measured the post-processing of {unknown[0]}, and the "
                           f"shipped model has none; measure at least {len(unknown) + len(own)} anchors")
    return {k: own[k] if k in own else reference.postprocess_ms[k] * factor for k in cases}


def design_anchors(space, reference: LatencyPredictor, count: int = ANCHORS, seed: int = DESIGN_SEED,
                   total: bool = True) -> list[dict]:
    """``count`` subnets to measure on a new target (for a ``total`` latency, at least one per
    post-processing case the shipped model lacks). Post-processing cases first (those the shipped model lacks before the
    others), each time the subnet of a seeded pool (its cheaper three quarters) that most widens the
    spread of operator mixes (the log-determinant of the relative-error design)."""
    rng = random.Random(seed)
    cases = postprocess_cases(space)
    keys = list(cases)
    pool = [with_case(space, space.random(rng), cases[keys[i % len(keys)]]) for i in range(POOL)]
    pool_cases = [case_of(a) for a in pool]
    terms = np.stack([kind_terms(reference, a) for a in pool])
    cheap = np.flatnonzero(terms.sum(axis=1) <= np.percentile(terms.sum(axis=1), CHEAP))
    rows = terms / terms.sum(axis=1, keepdims=True)  # the shares: what tells the kinds' prices apart
    lacking = {k for k in keys if k not in reference.postprocess_ms} if total else set()
    chosen, gram = [], 1e-6 * np.eye(rows.shape[1])
    while len(chosen) < max(count, len(lacking)):
        covered = {pool_cases[i] for i in chosen}
        free = [i for i in cheap if i not in chosen]
        tiers = ([i for i in free if pool_cases[i] in lacking - covered],
                 [i for i in free if pool_cases[i] not in covered], free)
        candidates = next((tier for tier in tiers if tier), None)
        if candidates is None:
            break
        best = max(candidates, key=lambda i: np.linalg.slogdet(gram + np.outer(rows[i], rows[i]))[1])
        chosen.append(best)
        gram += np.outer(rows[best], rows[best])
    return [pool[i] for i in chosen]


def described(model: LatencyPredictor) -> str:
    """How an adapted model came about, in a line: its anchors, their time, its prices per kind."""
    how = model.settings["adaptation"]
    return (f"from {how['anchors']} subnets measured in {how['seconds']:.0f} s: "
            + ", ".join(f"{kind} x{scale:.2f}" for kind, scale in how["scales"].items()))


def adapted_reference(meter, space, anchors: int = ANCHORS, progress: bool = True) -> LatencyPredictor:
    """The shipped latency model moved to ``meter``'s device and target by measuring ``anchors``
    designed subnets of ``space`` there (seconds, where building a predictor takes minutes)."""
    from tqdm import tqdm

    reference = LatencyPredictor.load(REFERENCE)
    total = meter.settings.latency_of == "total"
    archs = design_anchors(space, reference, anchors, total=total)
    start = time.monotonic()
    figures = [meter.measure(a, reference.num_keypoints) for a in tqdm(archs, desc="latency anchors",
                                                                        disable=not progress)]
    adapted = adapt(reference, archs, [f["network_ms"] for f in figures],
                    [f.get("postprocess_ms", 0.0) for f in figures],
                    list(postprocess_cases(space)) if total else [],
                    meter.backend.fingerprint, asdict(meter.settings), tail_ratio(figures))
    adapted.settings["adaptation"]["seconds"] = round(time.monotonic() - start, 1)
    return adapted
