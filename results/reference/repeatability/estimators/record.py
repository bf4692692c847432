"""Record raw round timings of random cpu.yaml subnets (deployed models, one thread) interleaved
with the reference network, for offline comparison of estimators (estimators/compare.py).
Usage: python record.py OUT.json [subnets] [rounds]"""
import json
import os
import sys

from nas.latency.meter import export_for
from nas.latency.settings import RuntimeSettings
from nas.latency.stopwatch import ROUND, reference_model
from nas.latency.timing import run_times
from nas.subnet.onnx import runner
from search_spaces import SearchSpace

out, subnets, rounds = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 24, int(sys.argv[3]) if len(sys.argv) > 3 else 20
settings = RuntimeSettings()
space = SearchSpace.load("cpu")
reference = runner(reference_model(), 1, "all", "CPUExecutionProvider")
records = []
for seed in range(100, 100 + subnets):
    arch = space.canonical(space.random(seed))
    run = runner(export_for(arch, 17, settings), 1, "all", "CPUExecutionProvider")
    for _ in range(10):
        run()
        reference()
    own, ref = [], []
    for _ in range(rounds):
        own.append(run_times(run, ROUND))
        ref.append(run_times(reference, ROUND))
    records.append({"seed": seed, "own": own, "ref": ref, "load": os.getloadavg()[0]})
    print(seed, flush=True)
json.dump(records, open(out, "w"))
