"""The HTTP API (FastAPI under uvicorn)."""
