"""TV-L1 optical flow: batched pure-torch solver (CPU/CUDA), OpenCV backend, the AE's flow encoding, a cache.

Import stays light: no cv2.optflow, PyAV or Ray at import time (the GPU machine has none of them).
"""
from offline.flow.encoding import decode_flow, encode_flow
from offline.flow.estimator import FlowEstimator, params_from_config, resolve_backend, window_flow
from offline.flow.tvl1 import TVL1, TVL1Params, tvl1_flow

__all__ = [
    "FlowEstimator",
    "TVL1",
    "TVL1Params",
    "decode_flow",
    "encode_flow",
    "params_from_config",
    "resolve_backend",
    "tvl1_flow",
    "window_flow",
]
