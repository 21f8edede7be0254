"""The engine: one thread owns the llama.cpp context; everything else sends it messages."""
