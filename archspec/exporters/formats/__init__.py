"""Deployment formats beyond ONNX, each written by its own converter and run in its own runtime.

``registry`` says what each format is (its extra, suffix, precisions, the inputs it can
express, whether its shapes stay dynamic) without importing torch or any converter; one
module per format (``torch_export``, ``openvino_ir``, ``executorch``, ``litert``, ``coreml``,
``tensorrt``, and ``onnx_file`` for the benchmark's runs of an ONNX file) writes and runs it;
``export`` proves a written file against PyTorch and writes it atomically; ``benchmark`` times them.
"""
