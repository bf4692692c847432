"""Published bottom-up pose models written as (ideal) arch configs.

A space snaps each value to its nearest allowed choice (``SearchSpace.preset``), so a preset is
"as close as this space allows", never an error. ``PRESETS`` are the published models as their
authors' code builds them (read from it, measured with ptflops: ``PUBLISHED``); the ``default``
space holds them (``posenas arch presets --space default`` prints each beside its model):

- HigherHRNet-W32 (Cheng et al., CVPR 2020): input 512, a two-convolution stem of width 64, a
  first stage of 4 bottlenecks at width 256, then basic blocks on four branches of width
  32/64/128/256, 4 blocks per branch per module, 1/1/4/3 fusion modules, dense transitions and
  exchanges, the last module fusing into the first branch, its heatmaps and tags at stride 4 and
  a deconvolution with four basic blocks to its stride-2 heatmaps.
- LitePose-XS/S/M/L (Wang et al., CVPR 2022): a single branch (every high-resolution branch at
  depth 0: gradual shrinking carried to the end) of 6/8/10/10 MBConv blocks (expand 6, kernel 7),
  the last stage at stride 16, a fusion deconv head with stride-4 and stride-2 outputs; the sizes
  grow by width and input (XS 16/32/48/80 at 256 px up to L 24/64/96/160 at 512).

A space file names its table: ``presets: published`` (``default``) or ``compact`` (the models
scaled down, far smaller than the published ones: ``cpu`` and ``tiny``, and every space file that
names none, as every space meant before the published table existed, stored ones included).
"""
from __future__ import annotations


def _config(resolution: int, stem: int, widths: list[int], depths: list[list[int]], modules: list[int],
            blocks: list[str], kernel: int, expand: int, head: int, keep_stride: bool = False,
            style: str = "litepose") -> dict:
    return {
        "resolution": resolution, "stem": stem, "widths": widths,
        "stages": [{"modules": m, "block": block, "keep_stride": keep_stride and s == len(depths) - 1,
                    "branches": [{"depth": d, "kernel": kernel, "expand": expand} for d in ds]}
                   for s, (m, ds, block) in enumerate(zip(modules, depths, blocks))],
        "token": {"depth": 0, "width": 0, "keep_ratio": 1.0},
        "head": {"width": head, "multi_resolution": True, "style": style},
    }


def _single_branch(depths: list[int]) -> list[list[int]]:
    return [[0] * s + [d] for s, d in enumerate(depths)]


def _hrnet(stem: int, blocks: list[str], style: str) -> dict:
    """HigherHRNet-W32's branches, modules and blocks per branch."""
    return _config(512, stem, [32, 64, 128, 256], [[4] * (s + 1) for s in range(4)], [1, 1, 4, 3], blocks,
                   kernel=3, expand=4, head=32, style=style)


def _litepose(resolution: int, stem: int, widths: list[int], head: int, depths: tuple[int, ...] = (6, 8, 10, 10),
              expand: int = 6, keep_stride: bool = True) -> dict:
    """A single MBConv branch of 7x7 kernels: LitePose's (by default) or a smaller one."""
    return _config(resolution, stem, widths, _single_branch(list(depths)), [1] * 4, ["mbconv"] * 4, 7, expand, head,
                   keep_stride=keep_stride)


PRESETS: dict[str, dict] = {
    "higherhrnet_w32": _hrnet(64, ["bottleneck", "basic", "basic", "basic"], "higherhrnet"),
    "litepose_xs": _litepose(256, 16, [16, 32, 48, 80], head=24),
    "litepose_s": _litepose(448, 16, [16, 32, 48, 120], head=32),
    "litepose_m": _litepose(448, 16, [24, 48, 72, 120], head=32),
    "litepose_l": _litepose(512, 24, [24, 64, 96, 160], head=32),
}

# The same models scaled to two CPU cores: widths 16/32/48/80, fewer blocks; HigherHRNet's dense
# blocks where a space offers them (a space of MBConv only snaps them to MBConv).
_SMALL = {"stem": 0, "widths": [16, 32, 48, 80], "keep_stride": False}
COMPACT: dict[str, dict] = {
    "higherhrnet_w32": _hrnet(0, ["bottleneck", "basic", "basic", "basic"], "litepose"),
    "litepose_xs": _litepose(256, **_SMALL, head=24, depths=(2, 3, 4, 3), expand=4),
    "litepose_s": _litepose(448, **_SMALL, head=24, depths=(4, 6, 8, 8)),
    "litepose_m": _litepose(448, **_SMALL, head=32),
    "litepose_l": _litepose(512, **_SMALL, head=32),
}
PRESET_TABLES = {"published": PRESETS, "compact": COMPACT}


# The published models themselves, measured with ptflops (aten backend) on the authors' own code at
# their published input, 17 keypoints: (model, input px, GMACs, M params). A preset is the nearest
# config a space holds; ``posenas arch presets`` prints how far that is from these.
PUBLISHED: dict[str, tuple[str, int, float, float]] = {
    "higherhrnet_w32": ("HigherHRNet-W32", 512, 46.2, 28.6),
    "litepose_xs": ("LitePose-XS", 256, 0.886, 1.68),
    "litepose_s": ("LitePose-S", 448, 3.62, 2.73),
    "litepose_m": ("LitePose-M", 448, 5.28, 3.53),
    "litepose_l": ("LitePose-L", 512, 9.98, 5.74),
}
