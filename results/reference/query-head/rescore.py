"""Query head: would ranking people by the auxiliary heatmaps at their joints beat the person logit?"""
import sys, torch, torch.nn.functional as F
from nas.subnet.export import load_network
from nas.pose.dataset import CocoPoseDataset
from nas.pose.evaluate import evaluate_network
torch.set_num_threads(1)
net, arch, spec = load_network("runs/query-aux/checkpoint.pt")
net.eval()
query = net.query
orig_forward = query.forward
MODE = "logit"
def forward(features, seeds=None):
    (people,) = orig_forward(features, seeds)  # (B, Q, K+1, 3) at stride 4
    if MODE == "logit":
        return [people]
    heat = query.heatmaps(features)
    b, q, kk, _ = people.shape
    k = kk - 1
    h, w = heat.shape[-2:]
    joints = people[:, :, :-1, :2]
    grid = torch.stack([(joints[..., 0] + 0.5) / w * 2 - 1, (joints[..., 1] + 0.5) / h * 2 - 1], -1)
    grid = grid.permute(0, 2, 1, 3).reshape(b * k, q, 1, 2)
    vals = F.grid_sample(heat.reshape(b * k, 1, h, w), grid, align_corners=False).reshape(b, k, q).permute(0, 2, 1)
    vals = vals.clamp(min=0)
    person = people[:, :, -1, 2]
    jointp = people[:, :, :-1, 2]
    score = {"heat": vals.mean(-1), "heatxlogit": vals.mean(-1) * person, "joints": jointp.mean(-1),
             "heatxjoints": (vals * jointp).mean(-1), "sqrt": (vals.mean(-1) * person).sqrt()}[MODE]
    people = people.clone()
    people[:, :, -1, 2] = score
    return [people]
query.forward = forward
ds = CocoPoseDataset("runs/zoo-cpu-synth/data/val/annotations.json", spec=spec)
for MODE in sys.argv[1:]:
    metrics, _ = evaluate_network(net, ds, arch["resolution"])
    print(MODE, {k: round(v, 4) for k, v in metrics.items() if k in ("AP", "AP50", "AP75", "AR")}, flush=True)
