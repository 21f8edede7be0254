"""The HTTP layer: OpenAI-compatible API, ops endpoints and the Gradio page on one FastAPI app.

Build it with ``vlmserve.http.app.create_app(settings)``; nothing here holds state at
module level.
"""
