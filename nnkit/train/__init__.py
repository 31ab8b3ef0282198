"""Training and evaluation (issues 4 and 5): config, data, augmentation, the loop, checkpoints and metrics.

Only nnkit.train.config is pure Python; every other module imports torch inside its functions.
"""
