"""Features of panoramas: backbones, encoding of projected viewports, and the feature cache.

Sits on :mod:`rl_scaniqa.envs.data` and below the env itself.

- :mod:`.backbones`: NSS statistics, DINOv2 through ``transformers``, and their fusion.
- :mod:`.cache`: encoding of a panorama's viewports and the safetensors feature cache.
- :mod:`.provision`: the default data behind ``gym.make`` and resolving data arguments to a cache.
- :mod:`.random_cache`: a cache of seeded random numbers for tests and benchmarks.
"""
