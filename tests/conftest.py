"""Test-session settings shared by every test module."""

import torch

# The networks under test are tiny: one intra-op thread is fastest, keeps the suite quick on a
# 2-core CI machine (no oversubscription when other processes run), and makes CPU results
# bit-reproducible across machines with different core counts.
torch.set_num_threads(1)
