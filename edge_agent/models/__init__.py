"""Model slots: engines (ONNX Runtime, OpenVINO), the on-disk package store, hot swap and rollback."""
