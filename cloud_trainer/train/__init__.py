"""Training of both model families (PyTorch, the ``cloud`` extra), export, INT8 quantization,
evaluation gate and packaging. Importing this package does not import torch; the modules that
train do.

PyTorch's OpenMP threads wait for work passively unless the user chose otherwise
(``OMP_WAIT_POLICY``; read when torch loads, so it is set here, before any module of ours imports
torch). libgomp's default spins: on a machine the trainer shares (several tenants' builds on one
cloud host, or the demo's agents beside it) a spinning thread takes a core that another process
needs. Measured on a 2-core AVX2 CPU, a small vision build: alone 25.8 s wall / 25.4 s CPU passive
against 27.0 / 29.7 spinning; beside two busy processes 47 / 27 against 59 / 45."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
