"""``vlmserve bench``: the Qwen3-VL image Q&A workload, measured.

One module per concern: ``workload`` (the picture, the exact-length questions,
input parsing), ``runner`` (the measurement protocol over any ``Target``),
``inprocess`` / ``http`` (the two vlmserve targets), ``machine`` and
``gguf_facts`` (what was measured on what), ``roofline`` (memory bandwidth and
the decode limit), ``quant`` (the quantization table), ``suite`` (the phases of
one run), ``phase_bar`` (its progress on stderr), ``document`` (the JSON
document: schema and assembly), ``report`` (markdown tables and text). The
llama-cpp-python baseline's child process is ``baseline``; the code that drives
llama_cpp lives in ``vlmserve.engine.llamacpp.baseline``: only that package
imports llama_cpp.

The JSON document's schema is ``document.FIELDS`` (and the table in
BENCHMARKS.md); ``SCHEMA_VERSION`` changes whenever a field changes meaning.
"""

SCHEMA_VERSION = "vlmserve-bench/1"
