import torch; torch.set_num_threads(1)
from search_spaces import SearchSpace
from supernet.network import new_static
from nas.subnet.onnx import to_onnx
s = SearchSpace.load("cpu")
archs = [s.canonical(s.random(100 + i)) for i in range(16)]
ref = s.canonical(s.preset("litepose_xs"))
for i, a in enumerate(archs + [ref]):
    name = f"/tmp/rep/{'ref' if i == 16 else i}.onnx"
    open(name, "wb").write(to_onnx(new_static(a, 17), a["resolution"], decode=False))
    open(name + ".res", "w").write(str(a["resolution"]))
print("ok")
