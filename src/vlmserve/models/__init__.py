"""Model files: GGUF inspection and validation, memory fit, local registry, download,
and the demo-model writer.

Nothing here imports llama.cpp at module level (only ``demo --quant`` does, lazily): a bad
file, a model that does not fit, or a missing download is reported as one clear line
*before* llama.cpp is asked to load anything.
"""
