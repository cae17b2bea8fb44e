"""Offline side of the video anomaly detector: data, flow, pseudo-anomalies, models, training, evaluation."""
