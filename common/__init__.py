"""Shared ground: config presets, pixel environments, the episode record and codec.

No Ray and no Redis here; torch only where it must.
"""
