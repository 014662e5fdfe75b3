"""Panorama data: image IO, viewport geometry, distortions and the datasets.

The lowest layer of the package besides ``envs.errors``, ``envs.storage`` and
``envs.progress``: nothing here imports features, the env, the assessor or the agents.

- :mod:`.imageio`: reading and checking ERP images.
- :mod:`.geometry`: the viewport grid, gnomonic projection, sphere sampling and coverage.
- :mod:`.distortions`: image-space distortions (the Synth360 generator and the augmented views).
- :mod:`.datasets`: loaders of CVIQD, OIQA, JUFE, CSV folders and Synth360, and reference splits.
"""
