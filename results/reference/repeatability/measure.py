import json, os, sys, time, numpy as np
from nas.subnet.onnx import session, INPUT
def load(name):
    r = int(open(f"/tmp/rep/{name}.onnx.res").read())
    sess = session(open(f"/tmp/rep/{name}.onnx", "rb").read(), 2)
    x = np.random.default_rng(0).standard_normal((1, 3, r, r), dtype=np.float32)
    return lambda: sess.run(None, {INPUT: x})
def runs(f, n):
    t = []
    for _ in range(n):
        s = time.perf_counter(); f(); t.append(time.perf_counter() - s)
    return t
ref = load("ref")
out = {}
for i in range(16):
    f = load(str(i))
    runs(f, 10); raw = np.median(runs(f, 50)) * 1000          # today's method: warm-up 10, 50 runs
    subs, refs = [], []
    for _ in range(10):                                        # interleaved: 10 rounds of 5 + 5
        subs += runs(f, 5); refs += runs(ref, 5)
    out[i] = {"raw": raw, "inter": np.median(subs) * 1000, "ref": np.median(refs) * 1000,
              "min_of_rounds": min(np.median(subs[j:j + 5]) for j in range(0, 50, 5)) * 1000,
              "load": os.getloadavg()[0]}
json.dump(out, open(sys.argv[1], "w"))
