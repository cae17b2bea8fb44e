"""Streaming side: RTSP ingest, batched scoring, alerts and the Ray Serve control plane."""
