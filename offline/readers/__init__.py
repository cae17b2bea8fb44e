"""Dataset readers behind `offline.datasets`: layouts, label files, decoding and window maths, one job per module."""
