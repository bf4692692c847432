"""Dynamic ops in the OFA style: each holds its largest weights and slices the active part.

Input channels always come from the input tensor; output channels and kernel size are set by the
block that owns the op (``active_out``, ``active_kernel``). Channels are prefixes and kernels are
centre crops (a depthwise kernel's through OFA's kernel transformations), so a subnet's weights
are the matching slices of the supernet's (``slice_like``, ``DynamicConv2d.kernel_weight``), and
every op hands out its plain torch twin with ``to_static`` (mmrazor's one generic walk:
``make_static``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DynamicConv2d(nn.Conv2d):
    """``weight[:out, :in]`` with the kernel centre-cropped; depthwise when ``depthwise``.

    A depthwise kernel shrinks two pixels at a time, each smaller size through a learned k²×k²
    transformation of the larger one's centre, shared by the channels (OFA's kernel transformation
    matrices): the centre of a 7x7 kernel trained as such is a poor 3x3 kernel (inherited AP 0.41
    against 0.55 at kernel 7 on zoo:cpu-synth's multi-branch preset). They start as the identity,
    which is also what weights saved before them load with."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, depthwise: bool = False,
                 bias: bool = False):
        super().__init__(cin, cout, kernel, stride, kernel // 2, groups=cin if depthwise else 1, bias=bias)
        self.depthwise = depthwise
        self.active_out = cin if depthwise else cout
        self.active_kernel = kernel
        self.active_stride = stride
        self.smaller_kernels = tuple(range(kernel - 2, 2, -2)) if depthwise else ()
        for k in self.smaller_kernels:
            self.register_parameter(f"transform_{k}", nn.Parameter(torch.eye(k * k)))

    def kernel_weight(self, k: int, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``weight`` (default: all of it) at kernel size ``k``: the centre crop, transformed
        step by step where this op learns transformations."""
        w = self.weight if weight is None else weight
        while w.shape[-1] > k:
            n = w.shape[-1] - 2
            w = w[:, :, 1:-1, 1:-1]
            if self.smaller_kernels:
                w = F.linear(w.reshape(-1, n * n), getattr(self, f"transform_{n}")).view(*w.shape)
        return w

    def transforms(self) -> list[nn.Parameter]:
        """This op's kernel transformations (none unless depthwise with a kernel above 3)."""
        return [getattr(self, f"transform_{k}") for k in self.smaller_kernels]

    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
        for k in self.smaller_kernels:  # weights saved before kernel transformations: the identity
            state_dict.setdefault(f"{prefix}transform_{k}", torch.eye(k * k))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def active_weight(self, cin: int) -> torch.Tensor:
        """The active slice; untouched dimensions are not sliced (a full slice still costs a
        full-size gradient copy in backward)."""
        w = self.weight
        out = cin if self.depthwise else self.active_out
        if out < w.shape[0]:
            w = w[:out]
        if not self.depthwise and cin < w.shape[1]:
            w = w[:, :cin]
        return self.kernel_weight(self.active_kernel, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = x.shape[1]
        weight = self.active_weight(cin)
        bias = self.bias if self.bias is None or len(self.bias) == weight.shape[0] else self.bias[:weight.shape[0]]
        return F.conv2d(x, weight, bias, self.active_stride, self.active_kernel // 2, 1, cin if self.depthwise else 1)

    def to_static(self) -> nn.Conv2d:
        _check_full(self, self.active_kernel == self.kernel_size[0] and self.active_stride == self.stride[0] and
                    (self.depthwise or self.active_out == self.out_channels))
        return _loaded(nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                                 self.padding, groups=self.groups, bias=self.bias is not None), self)


class DynamicConvTranspose2d(nn.ConvTranspose2d):
    """A 2x learned upsampling (kernel 4, stride 2) with sliced input and output channels."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 4, 2, 1, bias=False)
        self.active_out = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.weight[:x.shape[1], :self.active_out], None, 2, 1)

    def to_static(self) -> nn.ConvTranspose2d:
        _check_full(self, self.active_out == self.out_channels)
        return _loaded(nn.ConvTranspose2d(self.in_channels, self.out_channels, 4, 2, 1, bias=False), self)


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """Batch norm over the first C channels, with the matching slice of the running statistics
    (updated in place, as OFA's DynamicBatchNorm2d does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        training = self.training or not self.track_running_stats
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            training, momentum, self.eps)

    def to_static(self) -> nn.BatchNorm2d:
        return _loaded(nn.BatchNorm2d(self.num_features, self.eps, self.momentum), self)


class DynamicLinear(nn.Linear):
    def __init__(self, cin: int, cout: int, bias: bool = True):
        super().__init__(cin, cout, bias)
        self.active_out = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active_out == self.out_features and x.shape[-1] == self.in_features:
            return super().forward(x)
        bias = self.bias[:self.active_out] if self.bias is not None else None
        return F.linear(x, self.weight[:self.active_out, :x.shape[-1]], bias)

    def to_static(self) -> nn.Linear:
        _check_full(self, self.active_out == self.out_features)
        return _loaded(nn.Linear(self.in_features, self.out_features, self.bias is not None), self)


class DynamicLayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        return F.layer_norm(x, (c,), self.weight[:c], self.bias[:c], self.eps)

    def to_static(self) -> nn.LayerNorm:
        return _loaded(nn.LayerNorm(self.normalized_shape, self.eps), self)


DYNAMIC = (DynamicConv2d, DynamicConvTranspose2d, DynamicBatchNorm2d, DynamicLinear, DynamicLayerNorm)


def _check_full(op: nn.Module, full: bool) -> None:
    if not full:
        raise ValueError(f"{type(op).__name__}: to_static needs the op at its full size; build the "
                         "network at the subnet's config first (extract does)")


def _loaded(plain: nn.Module, dynamic: nn.Module) -> nn.Module:
    """``plain`` with the dynamic op's weights (at full size a kernel transformation is unused)."""
    own = plain.state_dict()
    plain.load_state_dict({name: t for name, t in dynamic.state_dict().items() if name in own})
    return plain.train(dynamic.training)


def make_static(net: nn.Module) -> nn.Module:
    """``net`` with every dynamic op replaced, in place, by its plain torch twin; for a network
    nobody else holds, built at exactly the subnet's size (``extract`` does), where slicing is the
    identity. (A deep copy first cost most of an extraction: the blocks hold their config dicts.)"""
    for name, module in list(net.named_modules()):
        if isinstance(module, DYNAMIC):
            parent_name, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent_name) if parent_name else net, child, module.to_static())
    return net


def slice_like(big: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The part of a supernet tensor that a subnet tensor of ``shape`` inherits: channel prefixes,
    and for 4-D conv weights a centre crop of the kernel."""
    if big.shape == shape:
        return big
    index = []
    for axis, (n_big, n) in enumerate(zip(big.shape, shape)):
        lo = (n_big - n) // 2 if big.dim() == 4 and axis >= 2 else 0
        index.append(slice(lo, lo + n))
    return big[tuple(index)]
