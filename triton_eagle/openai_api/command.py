"""Serve the OpenAI-compatible API in front of a tritonserver running our ensemble (its own process)."""
from __future__ import annotations

import argparse
import os

API_KEY_ENV = "TRITON_EAGLE_OPENAI_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--triton-url", default="127.0.0.1:8001",
                        help="gRPC host:port of a tritonserver with our ensemble (default 127.0.0.1:8001)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9000, help="HTTP port (default 9000)")
    parser.add_argument("--served-model-name", default="ensemble",
                        help="the `model` clients send and /v1/models lists (default ensemble)")
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                        help=f"require 'Authorization: Bearer KEY' on /v1/* (default: ${API_KEY_ENV}, else none)")
    parser.add_argument("--metrics-url", default=None,
                        help="Triton's metrics URL, where GET /metrics redirects (e.g. http://127.0.0.1:8002/metrics)")
    parser.add_argument("--access-log", action="store_true", help="log every request (off: it costs CPU under load)")


def run(args) -> int:
    import uvicorn

    from triton_eagle.openai_api.app import Settings, create_app

    app = create_app(Settings(triton_url=args.triton_url, served_model_name=args.served_model_name,
                              api_key=args.api_key, metrics_url=args.metrics_url))
    print(f"OpenAI-compatible API on http://{args.host}:{args.port}/v1 -> Triton gRPC {args.triton_url}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=args.access_log,
                timeout_graceful_shutdown=5)
    return 0
