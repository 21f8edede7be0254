"""Model files: GGUF inspection, the local registry, downloads, and the demo-model writer."""
