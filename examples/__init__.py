"""minigrad's example scripts (run them from a source checkout with ``python -m examples.<name>``).

* ``bn_mnist``: Ioffe & Szegedy (2015), Figure 1: what Batch Normalization does;
* ``cnn``: a small CNN with and without BN, then BN folded away for inference.
"""
