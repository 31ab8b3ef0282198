"""nnkit: exact CNN arithmetic (shapes, parameters, receptive fields, MACs) and training, from the command line."""

__version__ = "0.1.0"
