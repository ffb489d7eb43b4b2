"""kit: TensorFlow SavedModels to NVIDIA Jetson fleets.

This file is copied into the L4T images with kit/runtime, so it must stay
importable on Python 3.6 (no annotations future import, no 3.7+ syntax).
"""

__version__ = "0.1.0"
