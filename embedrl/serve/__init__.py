"""`embedrl serve`: JSON over HTTP for an embedder and its indexes (README: "Serving").

    server   loading what to serve, running it (uvicorn), `BackgroundServer` for tests and benches
    app      the FastAPI routes, JSON errors, API key, request metrics
    service  the served embedder, indexes (reloaded when `index add` changes them) and reasoners
    batching dynamic batching of concurrent requests' model calls
    wire     reading request bodies and inputs under limits
    metrics  Prometheus metrics in a registry per app
    bench    `embedrl bench serve`

The client side is `embedrl.client` (and `embedrl.models.remote` / `remote_reasoner` for
training, indexing and evaluation against a server). Tests: tests/test_serve.py, tests/test_remote.py.
"""
