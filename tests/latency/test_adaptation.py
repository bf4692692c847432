"""The latency model's move to a new target, on recorded (here: constructed) measurements."""
import math

import numpy as np
import pytest

from nas.errors import PoseNASError
from nas.latency.adaptation import KINDS, adapt, choose_ridge, design_anchors, kind_terms
from nas.latency.predictor import REFERENCE, LatencyPredictor, case_of, postprocess_cases
from search_spaces import SearchSpace


@pytest.fixture(scope="module")
def reference():
    return LatencyPredictor.load(REFERENCE)


@pytest.fixture(scope="module")
def space():
    return SearchSpace.load("cpu")


def device_with(scales: dict[str, float], reference: LatencyPredictor):
    """A device whose prices differ from the reference's by ``scales`` per kind: its network latency."""
    weights = np.array([scales[kind] for kind in KINDS])
    return lambda arch: float(kind_terms(reference, arch) @ weights)


def test_the_design_covers_every_post_processing_case_deterministically_and_cheaply(reference, space):
    anchors = design_anchors(space, reference, 20)
    cases = postprocess_cases(space)
    assert {case_of(a) for a in anchors} == set(cases) and len(anchors) == 20
    assert [a["resolution"] for a in design_anchors(space, reference, 20)] == [a["resolution"] for a in anchors]
    assert design_anchors(space, reference, 3) == anchors[:3]  # greedy: a smaller design is its prefix
    pool_cost = max(sum(kind_terms(reference, a)) for a in anchors)
    assert pool_cost < reference.network(space.max()) / 2  # the largest subnets are never measured


def test_adaptation_learns_per_kind_prices_from_twenty_anchors(reference, space):
    """int8-like: dense arithmetic cheaper, depthwise dearer, launches dearer; a common factor
    misses held-out subnets by up to tens of percent, the per-kind fit does not."""
    scales = {"dense": 0.6, "unblocked": 0.7, "depthwise": 1.8, "depthwise unblocked": 2.5, "memory": 1.1,
              "attention": 1.0, "overhead": 1.5}
    measure = device_with(scales, reference)
    anchors = design_anchors(space, reference, 20)
    model = adapt(reference, anchors, [measure(a) for a in anchors], [1.0] * len(anchors), [], {"cpu": "x"}, {})
    held_out = [space.random(seed) for seed in range(1000, 1050)]
    errors = np.array([model.network(a) / measure(a) - 1 for a in held_out])
    assert np.max(np.abs(errors)) < 0.05
    learnt = model.settings["adaptation"]["scales"]
    assert learnt["dense"] == pytest.approx(0.6, abs=0.05) and learnt["depthwise"] == pytest.approx(1.8, abs=0.1)
    common = np.median([measure(a) / reference.network(a) for a in anchors])
    assert np.max(np.abs([common * reference.network(a) / measure(a) - 1 for a in held_out])) > 0.1


def test_a_device_that_is_one_factor_away_keeps_one_factor(reference, space):
    """Noise and few measurements: the leave-one-out choice pulls every kind to the common factor."""
    measure = device_with(dict.fromkeys(KINDS, 0.8), reference)
    anchors = design_anchors(space, reference, 10)
    noise = np.random.default_rng(0).normal(1, 0.03, len(anchors))
    terms, sizes = np.stack([kind_terms(reference, a) for a in anchors]), [a["resolution"] for a in anchors]
    ridge, scores = choose_ridge(terms, sizes, np.array([measure(a) for a in anchors]) * noise)
    assert ridge >= 0.1 and scores[ridge] == min(scores.values())
    assert choose_ridge(terms[:2], sizes[:2], np.ones(2)) == (math.inf, {})  # two measurements: nothing to choose by
    network = [measure(a) for a in anchors]
    network[0] = -0.01  # a tiny subnet's total less its post-processing, in the noise: no information
    model = adapt(reference, anchors, network, [1.0] * len(anchors), [], {}, {})
    assert model.settings["adaptation"]["scales"]["dense"] == pytest.approx(0.8, abs=0.02)
    assert adapt(reference, anchors[:1], [0.0], [1.0], [], {}, {}).coefficients == reference.coefficients


def test_a_fixed_cost_at_one_input_size_is_learnt_as_its_overhead(reference, space):
    """A device that pays 1.5 ms more at 160 px (a smaller input's layout or cache path, say)."""
    measure = device_with(dict.fromkeys(KINDS, 1.2), reference)
    extra = lambda arch: 1.5 if arch["resolution"] == 160 else 0.0  # noqa: E731
    anchors = design_anchors(space, reference, 20)
    model = adapt(reference, anchors, [measure(a) + extra(a) for a in anchors], [1.0] * 20, [], {}, {})
    assert model.overhead_ms["160"] == pytest.approx(1.5, abs=0.2) and abs(model.overhead_ms["256"]) < 0.2
    held_out = [space.random(seed) for seed in range(2000, 2050)]
    assert max(abs(model.network(a) / (measure(a) + extra(a)) - 1) for a in held_out) < 0.03


def test_post_processing_is_measured_per_case_and_scaled_where_no_anchor_ran_it(reference, space):
    cases = list(postprocess_cases(space))
    anchors = design_anchors(space, reference, 3)
    shipped = reference.postprocess_ms
    measured = [2 * shipped[case_of(a)] + 0.5 for a in anchors]
    model = adapt(reference, anchors, [10.0] * 3, measured, cases, {}, {})
    assert set(model.postprocess_ms) == set(cases)
    for arch, ms in zip(anchors, measured):
        assert model.postprocess_ms[case_of(arch)] == pytest.approx(ms)
    factor = np.median([m / shipped[case_of(a)] for a, m in zip(anchors, measured)])
    other = next(c for c in cases if c not in {case_of(a) for a in anchors})
    assert model.postprocess_ms[other] == pytest.approx(shipped[other] * factor)
    tiny = SearchSpace.load("tiny")  # its resolutions are none the shipped model knows
    with pytest.raises(PoseNASError, match="no anchor measured the post-processing of 64px"):
        adapt(reference, anchors, [10.0] * 3, measured, list(postprocess_cases(tiny)), {}, {})
    assert {case_of(a) for a in design_anchors(tiny, reference, 2)} == set(postprocess_cases(tiny))
