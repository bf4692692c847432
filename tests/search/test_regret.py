"""Regret: the AP a search leaves under a budget against the best any search found there."""
import pandas as pd
import pytest

from nas.search.regret import best_under, regret_table


def verified(*points) -> pd.DataFrame:
    """(latency_ms, AP) of evaluated subnets, as verified.csv records them."""
    return pd.DataFrame({"latency_ms": [p[0] for p in points], "AP": [p[1] for p in points], "evaluated": True})


def test_regret_is_the_reference_ap_less_the_best_a_seed_returned_under_its_budget():
    runs = {(6.0, 0): verified((2.0, 0.30), (5.5, 0.40), (6.4, 0.45)),  # 6.4 ms measured: over the budget
            (6.0, 1): verified((3.0, 0.36), (5.9, 0.43)),
            (6.0, 2): verified((1.0, 0.20)),
            (4.0, 0): verified((3.9, 0.41), (5.0, 0.44)),
            (4.0, 1): verified((3.0, 0.36))}
    table = regret_table(runs).set_index(["budget_ms", "seed"])
    assert table.loc[(6.0, 0), "reference_AP"] == 0.44  # found by a 4 ms search, measured at 5 ms
    assert table.loc[(6.0, 0), "regret"] == pytest.approx(0.04) and table.loc[(6.0, 1), "regret"] == pytest.approx(0.01)
    assert table.loc[(6.0, 2), "regret"] == pytest.approx(0.24)
    assert table.loc[(4.0, 1), "reference_AP"] == 0.41 and table.loc[(4.0, 1), "regret"] == pytest.approx(0.05)
    first_rounds = {key: v.iloc[:1] for key, v in runs.items()}  # judged against the whole searches
    assert regret_table(first_rounds, reference=runs).set_index(["budget_ms", "seed"]).loc[
        (6.0, 1), "regret"] == pytest.approx(0.44 - 0.36)
    assert best_under(verified((7.0, 0.5)), 6.0) == 0.0  # nothing within the budget
    assert best_under(verified((5.0, 0.5)).assign(evaluated=False), 6.0) == 0.0  # never evaluated
