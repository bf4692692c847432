"""PoseNAS: neural architecture search for multi-person 2D pose estimation (jobs layer).

``nas.load_subnet(DIR)`` rebuilds an exported subnet (weights, arch config) without the supernet.
"""


def __getattr__(name: str):
    if name == "load_subnet":  # imported on first use: `import nas` stays free of torch
        from nas.subnet.export import load_subnet

        return load_subnet
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
