"""Query head: snap each predicted joint to the strongest auxiliary-heatmap pixel within R stride-4 pixels."""
import sys, torch, torch.nn.functional as F
from nas.subnet.export import load_network
from nas.pose.dataset import CocoPoseDataset
from nas.pose.evaluate import evaluate_network
torch.set_num_threads(1)
net, arch, spec = load_network("runs/query-aux/checkpoint.pt")
net.eval()
query = net.query
orig_forward = query.forward
R = 0
def forward(features, seeds=None):
    (people,) = orig_forward(features, seeds)
    if R == 0:
        return [people]
    heat = query.heatmaps(features)  # (B, K, H, W)
    b, q, kk, _ = people.shape
    k, (h, w) = kk - 1, heat.shape[-2:]
    size = 2 * R + 1
    patches = F.unfold(F.pad(heat, (R, R, R, R), value=-1e9).reshape(b * k, 1, h + 2 * R, w + 2 * R), size)
    patches = patches.reshape(b, k, size * size, h, w)  # window around every pixel
    jx = people[:, :, :-1, 0].round().clamp(0, w - 1).long()  # (B, Q, K)
    jy = people[:, :, :-1, 1].round().clamp(0, h - 1).long()
    out = people.clone()
    for bi in range(b):
        for j in range(k):
            win = patches[bi, j][:, jy[bi, :, j], jx[bi, :, j]]  # (size*size, Q)
            best, arg = win.max(0)
            dy, dx = arg // size - R, arg % size - R
            ok = best > 0.05
            out[bi, ok, j, 0] = (jx[bi, :, j] + dx)[ok].float()
            out[bi, ok, j, 1] = (jy[bi, :, j] + dy)[ok].float()
    return [out]
query.forward = forward
ds = CocoPoseDataset("runs/zoo-cpu-synth/data/val/annotations.json", spec=spec)
for R in map(int, sys.argv[1:]):
    metrics, _ = evaluate_network(net, ds, arch["resolution"])
    print("R", R, {k: round(v, 4) for k, v in metrics.items() if k in ("AP", "AP50", "AP75", "AR")}, flush=True)
