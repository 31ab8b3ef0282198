"""nnkit: exact CNN arithmetic (shapes, parameters, receptive fields, MACs) and training, from the command
line and as a library:

    import nnkit
    nnkit.analyze("3x32x32 conv(6,5) maxpool(2)")      # a chain, a name ("resnet50"), file.py:Class or a
    module nnkit.summary(model, input_size=(1, 3, 224, 224))  # torchinfo's one call
    nnkit.dwsep("32x112x112", out=64, kernel=3), nnkit.solve("same", kernel=4), nnkit.memory("resnet18",
    batch=32)

`import nnkit` stays torch-free and fast: the functions load nnkit.api on first use.
"""

from typing import Any

__version__ = "0.1.0"

_API = ("Analysis", "analyze", "dwsep", "memory", "solve", "summary")
__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        from nnkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'nnkit' has no attribute '{name}'")
