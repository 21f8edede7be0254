"""Offline batch work: describe a folder of images, or watch a drop folder.

``inputs`` (which files; read and decode one), ``task`` (the question and sampling),
``schema`` (JSON schema -> bounded grammar -> validated answer), ``results`` (the
results file: safe appends, resume reader), ``done`` (what a results file already
covers), ``runner`` (N requests in flight on one engine), ``watch`` (polling a folder
for finished files), ``progress`` and ``signals`` (the terminal side).
"""
