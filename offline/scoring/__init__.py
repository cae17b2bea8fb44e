"""Scoring: per-frame evidence, normalisers, the FrameScorer, the Detector and the model bundle it loads."""
