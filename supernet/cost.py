"""MACs and parameters of an arch config, counted from the config alone (no torch, no model).

MACs count what ptflops' aten backend counts on the static model: multiply-accumulates of
convolutions (transposed ones over their input pixels), linear layers and matrix products
(attention, keypoint classifiers), plus one add per output for biases. Batch norm, activations,
resampling and softmax are not MACs. The walk mirrors ``supernet.network.PoseNet`` op by op;
``tests/supernet/test_cost.py`` holds the two to each other with ptflops.

``features`` splits the work by kind (MACs of pointwise, depthwise, dense and transposed
convolutions and of matrix products; elements written; elementwise work; attention scores
normalised and pruned; op count): what a latency predictor regresses on, since a MAC of a
depthwise conv costs a CPU far more than one of a 1x1 conv. A convolution whose channels (a dense
or 1x1 one's input, a depthwise one's) do not fill whole blocks of ``VECTOR_BLOCK`` counts apart
(``macs_unblocked``, ``macs_depthwise_unblocked``): on an AVX-512 CPU onnxruntime ran dense MACs
about 1.7x slower so (its NCHWc layout blocks channels by 16), and splitting them off took the
latency model from 79 % to 99 % of ``cpu`` subnets within +/-10 % (cross-validated, 126 subnets
with basic blocks); in int8 the depthwise ones pay (77 % -> 93 %, fitted on that target). Another
device's blocks are priced anew by the adaptation.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from search_spaces.space import STEM_BLOCK, TOKEN_HEAD_DIM, keeps_stride, uses_tokens
from supernet.heads import head_of

FEATURES = ("macs_pointwise", "macs_depthwise", "macs_depthwise_unblocked", "macs_dense", "macs_unblocked",
            "macs_deconv", "macs_matmul", "activations", "elementwise", "attention", "pruning", "ops")
VECTOR_BLOCK = 16  # channels per block of a convolution's blocked layout

@dataclass
class Cost:
    macs: int = 0
    params: int = 0
    features: Counter = field(default_factory=Counter)

    def conv(self, cin: int, cout: int, kernel: int, pixels: int, depthwise: bool = False, bias: bool = False,
             bn: bool = True, transposed: bool = False) -> None:
        weights = cout * (1 if depthwise else cin) * kernel * kernel
        self.macs += weights * pixels + (cout * pixels if bias else 0)
        self.params += weights + (cout if bias else 0) + (2 * cout if bn else 0)
        kind = "deconv" if transposed else "depthwise" if depthwise else "pointwise" if kernel == 1 else "dense"
        if kind in ("pointwise", "dense") and cin % VECTOR_BLOCK:
            kind = "unblocked"
        elif kind == "depthwise" and cout % VECTOR_BLOCK:
            kind = "depthwise_unblocked"
        self.features[f"macs_{kind}"] += weights * pixels
        self.features["activations"] += cout * pixels * (4 if transposed else 1)
        self.features["ops"] += 1

    def linear(self, cin: int, cout: int, rows: int) -> None:
        self.macs += rows * (cin * cout + cout)
        self.params += cin * cout + cout
        self.features["macs_matmul"] += rows * cin * cout
        self.features["activations"] += rows * cout
        self.features["ops"] += 1

    def matmul(self, macs: int) -> None:
        self.macs += macs
        self.features["macs_matmul"] += macs

    def add(self, elements: int) -> None:
        """Elementwise work that is not a MAC: residual and fusion sums, resampling."""
        self.features["elementwise"] += elements
        self.features["ops"] += 1

    def attention_layer(self, e: int, groups: int, n: int) -> None:
        """A pre-norm transformer layer (``supernet.tokens.TokenLayer``) over ``groups`` sets of ``n``
        tokens of width ``e``, unpruned."""
        rows = groups * n
        self.params += 4 * e  # two layer norms
        for _ in range(4):  # q, k, v, projection
            self.linear(e, e, rows)
        self.matmul(2 * rows * n * e)  # scores and weighted sum
        self.features["attention"] += rows * n * e // TOKEN_HEAD_DIM  # scores normalised
        self.linear(e, 2 * e, rows)
        self.linear(2 * e, e, rows)

    def mbconv(self, cin: int, cout: int, block: dict, pixels: int) -> None:
        mid = cin * block["expand"]
        if block["expand"] > 1:
            self.conv(cin, mid, 1, pixels)
        self.conv(mid, mid, block["kernel"], pixels, depthwise=True)
        self.conv(mid, cout, 1, pixels)
        if cin == cout:
            self.add(cout * pixels)

    def block(self, block_type: str, cin: int, width: int, branch: dict, pixels: int) -> None:
        """One block of a branch (``supernet.layers``: MBConv, BasicBlock, Bottleneck)."""
        if block_type == "mbconv":
            return self.mbconv(cin, width, branch, pixels)
        if block_type == "basic":
            self.conv(width, width, 3, pixels)
            self.conv(width, width, 3, pixels)
        else:
            self.conv(cin, width // 4, 1, pixels)
            self.conv(width // 4, width // 4, 3, pixels)
            self.conv(width // 4, width, 1, pixels)
            if cin != width:
                self.conv(cin, width, 1, pixels)
        self.add(width * pixels)

    def fusion_up(self, cin: int, cskip: int, head: dict, pixels_in: int, scale: int = 2) -> None:
        cout, pixels = head["width"], scale * scale * pixels_in
        if scale == 2:
            self.conv(cin, cout, 4, pixels_in, transposed=True)  # counted over input pixels, as ptflops does
        else:
            self.conv(cin, cout, 1, pixels)
        self.conv(cskip, cout, 1, pixels)
        self.add(cout * pixels)
        self.conv(cout, cout, 5, pixels, depthwise=True)
        self.conv(cout, cout, 1, pixels)


def arch_cost(arch: dict, num_keypoints: int = 17) -> Cost:
    """MACs (for one image) and parameters of the static model of ``arch``."""
    c, k = Cost(), num_keypoints
    stem, widths, head = arch["stem"], arch["widths"], arch["head"]["width"]
    first = arch["stages"][0].get("block", "mbconv")
    higher = arch["head"].get("style") == "higherhrnet"
    side = arch["resolution"] // 2
    c.conv(3, stem, 3, side * side)
    if first == "mbconv":
        c.mbconv(stem, stem, STEM_BLOCK, side * side)
    sides = [side // 2 ** (b + 1) for b in range(len(widths))]  # stride 4, 8, ...
    last_scale = 1 if keeps_stride(arch["stages"][-1]) else 2
    if last_scale == 1:  # the last stage kept the stride of the one before
        sides[-1] = sides[-2]
    for s, stage in enumerate(arch["stages"]):
        block = stage.get("block", "mbconv")
        cin = stem if s == 0 else 4 * stem if s == 1 and first == "bottleneck" else widths[s - 1]
        if s == 1 and first == "bottleneck":  # HRNet's transition to the first branch's width
            c.conv(cin, widths[0], 3, sides[0] ** 2)
        if block == "mbconv":
            c.conv(cin, cin, 3, sides[s] ** 2, depthwise=True)
            c.conv(cin, widths[s], 1, sides[s] ** 2)
        else:
            c.conv(cin, cin if block == "bottleneck" else widths[s], 3, sides[s] ** 2)
        own = [4 * stem] if block == "bottleneck" else widths
        active = [b for b, branch in enumerate(stage["branches"]) if branch["depth"] > 0]
        for m in range(stage["modules"]):
            for b in active:
                branch = stage["branches"][b]
                for d in range(branch["depth"]):
                    c.block(block, stem if block == "bottleneck" and d == 0 else own[b], own[b], branch, sides[b] ** 2)
            into_first = higher and s == len(arch["stages"]) - 1 and m == stage["modules"] - 1
            for j in [j for j in active if j == 0 or not into_first] if len(active) > 1 else ():
                for i in active:
                    if i != j:
                        c.add(widths[j] * sides[j] ** 2)  # resampled and summed into branch j
                    if i > j:
                        c.conv(widths[i], widths[j], 1, sides[i] ** 2)
                    for t in range(j - i):  # i < j: stride-2 steps
                        out = widths[j] if t == j - i - 1 else widths[i]
                        if block == "mbconv":
                            c.conv(widths[i], widths[i], 3, sides[i + t + 1] ** 2, depthwise=True)
                            c.conv(widths[i], out, 1, sides[i + t + 1] ** 2)
                        else:
                            c.conv(widths[i], out, 3, sides[i + t + 1] ** 2)
    token = arch["token"]
    if uses_tokens(arch):
        e, n, low = token["width"], sides[-1] ** 2, widths[-1]
        keep = max(1, math.ceil(token["keep_ratio"] * n))  # as supernet.tokens keeps
        rows = k + n
        c.linear(low, e, n)
        c.params += k * e + 2 * e  # keypoint tokens, final norm
        for _ in range(token["depth"]):
            c.attention_layer(e, 1, rows)
            if keep < n:  # a top-k and a mask over every head's visual scores (cross-validated: 95.6 -> 96.8 %)
                c.features["pruning"] += rows * n * e // TOKEN_HEAD_DIM
        c.linear(e, low, n)
        c.linear(e, head, k)
    cin = widths[-1]
    for b in range(len(widths) - 2, -1, -1) if not higher else ():
        c.fusion_up(cin, widths[b], arch["head"], sides[b + 1] ** 2, last_scale if b == len(widths) - 2 else 2)
        cin = head
    features = widths[0] if higher else head  # stride-4 channels
    head_of(arch).cost(c, arch, k, features, sides, side)
    return c
