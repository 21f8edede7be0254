"""vlmserve: a local, private vision-language model service (Qwen3-VL GGUF on llama.cpp)."""

__version__ = "0.1.0"
