"""Training of both model families (PyTorch, the ``cloud`` extra), export, INT8 quantization,
evaluation gate and packaging. Importing this package does not import torch; the modules that
train do."""
