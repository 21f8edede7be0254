"""The only package that imports ``llama_cpp`` / ``mtmd``.

Everything above it (scheduler, caches, loop, HTTP, CLI) works with plain
Python values, so it can be read and tested without a model.
"""
