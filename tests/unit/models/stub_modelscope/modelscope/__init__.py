"""Test stand-in for the modelscope package (see ../README.md)."""
