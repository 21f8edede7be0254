"""Model management: GGUF inspection and validation, memory fit, local registry, download.

Nothing in this package imports llama.cpp: it exists so that a bad file, a model
that does not fit, or a missing download is reported as one clear line *before*
llama.cpp is asked to load anything.
"""
