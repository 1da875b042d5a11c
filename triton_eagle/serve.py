"""Serve the model repository with tritonserver until Ctrl-C (HTTP, gRPC and metrics on 127.0.0.1).

Starts the wheel's tritonserver with the project's environment (see
triton_eagle/tritonserver.py), prints a curl and a Python gRPC streaming example,
then waits for SIGINT/SIGTERM and stops the server: running requests get the drain timeout
to finish (nothing new is admitted), the rest end with a reason, then the exit timeout bounds the rest.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from triton_eagle.tritonserver import REPO_ROOT, TritonServer, TritonServerError

CURL_EXAMPLE = """\
curl -sN -X POST http://{host}:{http_port}/v2/models/ensemble/generate_stream \\
  -d '{{"messages": "[{{\\"role\\": \\"user\\", \\"content\\": \\"What is speculative decoding?\\"}}]", "max_tokens": 64, "stream": true}}'"""

GRPC_EXAMPLE = """\
import json
import queue
import numpy as np
import tritonclient.grpc as grpcclient

def tensor(name, value, datatype, dtype):
    t = grpcclient.InferInput(name, [1, 1], datatype)
    t.set_data_from_numpy(np.array([[value]], dtype=dtype))
    return t

responses = queue.Queue()
client = grpcclient.InferenceServerClient("{host}:{grpc_port}")
client.start_stream(callback=lambda result, error: responses.put(error or result))
client.async_stream_infer("ensemble", [
    tensor("messages", json.dumps([{{"role": "user", "content": "What is speculative decoding?"}}]), "BYTES", object),
    tensor("max_tokens", 64, "INT32", np.int32),
    tensor("stream", True, "BOOL", bool),
], enable_empty_final_response=True)
while True:
    item = responses.get()
    if isinstance(item, Exception):
        raise item
    text = item.as_numpy("text_output")
    if text is not None and text.size:
        print(text.reshape(-1)[0].decode(), end="", flush=True)
    if item.get_response().parameters["triton_final_response"].bool_param:
        break
client.stop_stream()
print()"""

OPENAI_EXAMPLE = """\
from openai import OpenAI  # pip install openai

client = OpenAI(base_url="http://{host}:{openai_port}/v1", api_key="unused")
stream = client.chat.completions.create(
    model="ensemble", messages=[{{"role": "user", "content": "What is speculative decoding?"}}],
    max_tokens=64, stream=True)
for chunk in stream:
    print(chunk.choices[0].delta.content or "", end="", flush=True)
print()"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repository", type=Path, default=REPO_ROOT / "model_repository",
                        help="folder tritonserver serves (default: the repository's model_repository/)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--drain-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="on SIGTERM/Ctrl-C: how long running requests may finish (new ones are refused "
                             "as busy); the rest then end with a final response that says why")
    parser.add_argument("--openai-port", type=int, default=9000,
                        help="the OpenAI-compatible API beside tritonserver (default 9000)")
    parser.add_argument("--no-openai", action="store_true", help="do not start the OpenAI-compatible API")
    parser.add_argument("--exit-timeout", type=int, default=5, metavar="SECONDS",
                        help="after the drain, how long the stop waits for the server (then it is killed)")
    parser.add_argument("--ready-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="how long to wait for every model to load")
    parser.add_argument("--log-file", type=Path, default=None,
                        help="server log (default build/triton-logs/tritonserver-<http-port>.log)")
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument("--model", action="append", default=None, metavar="NAME",
                        help="load only this model (repeatable; an ensemble brings its steps)")
    parser.add_argument("--demo", action="store_true",
                        help="once ready, stream one answer through the ensemble and print its stats")


def _demo(grpc_url: str) -> None:
    """Show the path working end to end: one streamed answer with its speculative stats."""
    from triton_eagle.generate import add_arguments as generate_arguments, run as generate

    parser = argparse.ArgumentParser()
    generate_arguments(parser)
    question = "What is the capital of France?"
    print(f"# demo: triton-eagle generate --url {grpc_url} {question!r}")
    generate(parser.parse_args(["--url", grpc_url, "--max-tokens", "48", question]))
    print(flush=True)


def _start_openai(args: argparse.Namespace, server: TritonServer):
    """The OpenAI server in its own process, in front of this tritonserver; None if it failed."""
    from triton_eagle.openai_api.process import OpenAIServer, OpenAIServerError

    openai_server = OpenAIServer(server.grpc_url, args.openai_port, host=args.host, metrics_url=server.metrics_url)
    try:
        return openai_server.start()
    except OpenAIServerError as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    server = TritonServer(
        args.model_repository, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        metrics_port=args.metrics_port, exit_timeout_s=args.exit_timeout,
        drain_timeout_s=args.drain_timeout, log_path=args.log_file,
        log_verbose=args.log_verbose, models=args.model)
    stop_requested = threading.Event()
    ready = threading.Event()

    def request_stop(signum, _frame):
        if not ready.is_set():  # still loading: interrupt the readiness wait; start() stops the server
            raise KeyboardInterrupt
        stop_requested.set()   # a second Ctrl-C changes nothing: the stop is bounded already

    # installed before start, so a Ctrl-C during model loading still stops the server
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    openai_server = None
    try:
        print(f"starting tritonserver on {args.host} (log: {server.log_path}) ...", flush=True)
        try:
            server.start(ready_timeout_s=args.ready_timeout)
        except TritonServerError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted while loading; server stopped", file=sys.stderr)
            return 130
        if not args.no_openai:
            openai_server = _start_openai(args, server)
            if openai_server is None:
                return 1
        ready.set()
        ports = {"host": args.host, "http_port": args.http_port, "grpc_port": args.grpc_port,
                 "openai_port": args.openai_port}
        print(f"ready: HTTP {server.http_url}, gRPC {server.grpc_url}, metrics {server.metrics_url}\n")
        print("# stream over HTTP (server-sent events):")
        print(CURL_EXAMPLE.format(**ports) + "\n")
        print("# stream over gRPC with tritonclient:")
        print(GRPC_EXAMPLE.format(**ports) + "\n")
        if openai_server is not None:
            print(f"# the OpenAI-compatible API ({openai_server.base_url}) with the openai client:")
            print(OPENAI_EXAMPLE.format(**ports) + "\n")
        if args.demo:
            _demo(server.grpc_url)
        print("Ctrl-C stops the server.", flush=True)
        while not stop_requested.wait(timeout=1.0):
            if not server.running():
                code = server.process.returncode
                print(f"error: tritonserver exited on its own (code {code}); log {server.log_path}:\n"
                      f"{server.log_tail()}", file=sys.stderr)
                server.stop()
                return 1
        print(f"stopping: draining (running requests get {args.drain_timeout:g} s, new ones are refused), "
              f"then at most {args.exit_timeout} s more ...", flush=True)
        return 0
    finally:
        server.stop()   # drains first: OpenAI streams in flight finish through the API process
        if openai_server is not None:
            openai_server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
