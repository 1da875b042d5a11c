"""An OpenAI-compatible HTTP server in front of the `ensemble` (FastAPI + uvicorn, its own
process), talking to Triton over gRPC with tritonclient's asyncio client.

    triton-eagle openai --triton-url 127.0.0.1:8001 --port 9000

`schema` turns an OpenAI request into ensemble inputs (refusing what we cannot honour),
`ensemble` streams one request through Triton, `responses` shapes OpenAI's JSON and SSE
chunks, `app` holds the routes, `command` the CLI, `process` runs it beside tritonserver.
"""
