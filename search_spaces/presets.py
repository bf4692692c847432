"""Published bottom-up pose models written as (ideal) arch configs.

A space snaps each value to its nearest allowed choice (``SearchSpace.preset``), so a preset is
"as close as this space allows", never an error. The figures are approximations of the papers'
models in this family's terms (MBConv blocks everywhere, HRNet-style fusion, fusion deconv head):

- HigherHRNet-W32 (Cheng et al., CVPR 2020): input 512, four branches of width 32/64/128/256,
  4 blocks per branch per module, 1/1/4/3 fusion modules, 3x3 kernels, stride-2 output.
- LitePose-XS/S/M/L (Wang et al., CVPR 2022): a single branch (every high-resolution branch at
  depth 0: gradual shrinking carried to the end), widths 16/32/48/80, 7x7 kernels, a fusion deconv
  head with stride-4 and stride-2 outputs; XS at 256 px, S and M at 448, L at 512, growing depth.
"""
from __future__ import annotations


def _config(resolution: int, widths: list[int], depths: list[list[int]], modules: list[int], kernel: int,
            expand: int, head: int, token: tuple[int, int, float] = (0, 0, 1.0)) -> dict:
    return {
        "resolution": resolution, "stem": 0, "widths": widths,
        "stages": [{"modules": m, "branches": [{"depth": d, "kernel": kernel, "expand": expand} for d in ds]}
                   for m, ds in zip(modules, depths)],
        "token": dict(zip(("depth", "width", "keep_ratio"), token)),
        "head": {"width": head, "multi_resolution": True},
    }


def _single_branch(depths: list[int]) -> list[list[int]]:
    return [[0] * s + [d] for s, d in enumerate(depths)]


PRESETS: dict[str, dict] = {
    "higherhrnet_w32": _config(512, [32, 64, 128, 256], [[4] * (s + 1) for s in range(4)], [1, 1, 4, 3],
                               kernel=3, expand=4, head=32),
    "litepose_xs": _config(256, [16, 32, 48, 80], _single_branch([2, 3, 4, 3]), [1, 1, 1, 1], 7, 4, head=24),
    "litepose_s": _config(448, [16, 32, 48, 80], _single_branch([4, 6, 8, 8]), [1, 1, 1, 1], 7, 6, head=24),
    "litepose_m": _config(448, [16, 32, 48, 80], _single_branch([6, 8, 10, 10]), [1, 1, 1, 1], 7, 6, head=32),
    "litepose_l": _config(512, [16, 32, 48, 80], _single_branch([6, 8, 10, 10]), [1, 1, 1, 1], 7, 6, head=32),
}


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
