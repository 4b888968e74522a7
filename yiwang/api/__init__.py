"""The HTTP API (FastAPI under uvicorn): ``create_app(settings)`` in :mod:`yiwang.api.app`, served by `yiwang serve`.

Edge and access: middleware (request id, body limit, metrics, 500 shape), fastlane (the plain feed read),
errors (the one error shape), keys and auth (hashed API keys with scopes), audit, metrics, openapi.
Resources: one router per module in :mod:`yiwang.api.routes`.
"""
