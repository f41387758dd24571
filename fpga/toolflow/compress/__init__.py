"""Deep Compression for SqueezeFPGA: prune, share weights (k-means), then write a `.sqz` file.

``python -m fpga.compress --variant v1.0 --bits 6 -o model.sqz``; see ``__main__`` for the
``inspect``, ``table`` and ``import-deepcompression`` commands. The file format and Huffman
coding are spec (``fpga.spec.sqz``, ``fpga.spec.huffman``): reading a model needs no torch.
"""

from fpga.toolflow.compress.core import compress_network, prune_weights

__all__ = ["compress_network", "prune_weights"]
