"""Deep Compression for SqueezeFPGA: prune, share weights (k-means), Huffman-code, `.sqz` files.

``python -m fpga.compress --variant v1.0 --bits 6 -o model.sqz``; see ``__main__`` for the
``inspect``, ``table`` and ``import-deepcompression`` commands.
"""

from fpga.compress.core import compress_network, prune_weights
from fpga.compress.fileformat import FormatError, read_model, write_model


def load_network(path):
    """A ``.sqz`` model as a QuantizedNetwork (conv weights = codebook[indices])."""
    return read_model(path)[0]


def load_for_device(path):
    """(QuantizedNetwork, {layer: (codebook, indices)}) for the compiler."""
    network, shared, _ = read_model(path)
    return network, shared


__all__ = [
    "FormatError",
    "compress_network",
    "prune_weights",
    "read_model",
    "write_model",
    "load_network",
    "load_for_device",
]
