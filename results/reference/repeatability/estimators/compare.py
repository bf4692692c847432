"""Compare latency estimators on two recordings of the same subnets made by fresh processes
minutes apart (record.py): the share re-measured within +/-10 % (and 5 %) for each.
Usage: python compare.py FIRST.json SECOND.json [rounds]"""
import json
import sys

import numpy as np

first, second = (json.load(open(p)) for p in sys.argv[1:3])
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else None
# one calibration shared by both processes (as the product stores it): the quietest reference round
calibrated = min(np.median(r) for rec in first + second for r in rec["ref"])


def estimators(rec):
    own, ref = np.array(rec["own"][:rounds]), np.array(rec["ref"][:rounds])
    slowdown = np.median(ref, axis=1) / calibrated
    scaled_rounds = np.median(own, axis=1) / slowdown
    return {
        "alone: median of runs": np.median(own),
        "alone: min of round medians": np.min(np.median(own, axis=1)),
        "alone: min run": own.min(),
        "reference: median of scaled round medians (today)": np.median(scaled_rounds),
        "reference: min of scaled round medians": scaled_rounds.min(),
        "reference: lower quartile of scaled rounds": np.percentile(scaled_rounds, 25),
        "reference: median own / median ref": np.median(own) / np.median(ref) * calibrated,
        "reference: min own / min ref": own.min() / ref.min() * calibrated,
        "reference: min of round minima ratio": np.min(own.min(axis=1) / ref.min(axis=1)) * calibrated,
        "reference: median of round minima ratio": np.median(own.min(axis=1) / ref.min(axis=1)) * calibrated,
        "reference: median of round median ratios": np.median(np.median(own, axis=1) / np.median(ref, axis=1)) * calibrated,
    }


a = [estimators(r) for r in first]
b = [estimators(r) for r in second]
print(f"{len(a)} subnets, rounds {rounds or len(first[0]['own'])}; load {np.mean([r['load'] for r in first]):.2f} "
      f"then {np.mean([r['load'] for r in second]):.2f}")
for name in a[0]:
    change = np.array([y[name] / x[name] - 1 for x, y in zip(a, b)])
    print(f"{np.mean(np.abs(change) <= 0.10):6.1%} {np.mean(np.abs(change) <= 0.05):6.1%}  "
          f"bias {np.median(change):+6.1%}  {name}")
