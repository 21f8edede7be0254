"""``vlmserve bench``: the Qwen3-VL image Q&A workload, measured.

One module per concern: ``workload`` (the picture, the exact-length questions,
input parsing), ``runner`` (the measurement protocol over any ``Target``),
``inprocess`` / ``http`` (the two vlmserve targets), ``machine`` and
``gguf_facts`` (what was measured on what), ``roofline`` (memory bandwidth and
the decode limit), ``quant`` (the quantization table), ``report`` (JSON
document and markdown tables). The llama-cpp-python baseline lives in
``vlmserve.engine.llamacpp.baseline``: only that package imports llama_cpp.

The JSON document's schema is described in ``report.SCHEMA_DOC`` and in
BENCHMARKS.md; ``SCHEMA_VERSION`` changes whenever a field changes meaning.
"""

SCHEMA_VERSION = "vlmserve-bench/1"
