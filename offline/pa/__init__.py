"""Pseudo-anomaly generators (Rai et al. 2023 and the LNTRA / noise baselines); see README "Pseudo-anomalies".

Pure math: masks, temporal, baselines. Adapters: inpaint (the sole diffusers import), intruders (image files),
precompute (`vad make-pas`), gallery (`vad pa-gallery`), convert_ldm (`vad convert-ldm`).
"""
