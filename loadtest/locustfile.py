"""Locust users for the `ensemble`: gRPC streaming, HTTP generate_stream, and streamed chat
completions through the OpenAI-compatible server.

    locust -f loadtest/locustfile.py --headless -u 8 -r 8 -t 60s GrpcStreamUser \\
        --host http://127.0.0.1:8000 --grpc-port 8001 --workload mt-bench --out results/

(`triton-eagle loadtest run` builds this command.) `--host` is the HTTP base URL; gRPC goes
to the same host name on `--grpc-port`. Each user runs a closed loop: one streamed request
at a time, the next as soon as it ends. Every request is timed from its own stream and
kept as a raw sample (samples.jsonl; each worker also writes workers/HOST-PID.jsonl and
sends its samples to the master); the report is written when the run stops.
"""
from __future__ import annotations

# Before any gRPC channel exists, or Locust deadlocks: no requests, -t and SIGTERM ignored.
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import atexit  # noqa: E402
import itertools  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Iterator  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
from locust import User, events, task  # noqa: E402
from locust.exception import StopUser  # noqa: E402
from locust.contrib.fasthttp import FastHttpUser  # noqa: E402
from locust.runners import STATE_CLEANUP, STATE_STOPPED, MasterRunner, WorkerRunner  # noqa: E402

from loadtest.metrics import request_metrics  # noqa: E402
from loadtest.report import SAMPLES_FILE, write_report  # noqa: E402
from loadtest.samples import (CUT_AT_END, ERROR_MID_STREAM, FAILED, OK, SERVER_ERROR, TIMEOUT,  # noqa: E402
                              RequestSample, SampleLog, process_name)
from loadtest.streams import MODEL, grpc_stream, http_stream, openai_stream  # noqa: E402
from loadtest.workloads import Workload, load_workload  # noqa: E402

DEFAULT_HOST = "http://127.0.0.1:8000"
SAMPLE_MESSAGE = "triton_eagle_sample"
STOP_MESSAGE = "triton_eagle_stop"     # master -> worker: stop users, then answer
DONE_MESSAGE = "triton_eagle_done"     # worker -> master: every sample is sent
PROCESS = process_name()


class StreamFailure(Exception):
    """What Locust's statistics show for a failed request: the reason, then the error."""


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    group = parser.add_argument_group("triton-eagle")
    group.add_argument("--workload", default="mt-bench",
                       help="mt-bench, synthetic, or a JSONL file of prompts (default mt-bench)")
    group.add_argument("--max-tokens", type=int, default=128,
                       help="max_tokens of mt-bench / JSONL requests without their own (default 128)")
    group.add_argument("--input-tokens", type=int, default=128, help="synthetic: words (≈ tokens) in")
    group.add_argument("--output-tokens", type=int, default=128,
                       help="synthetic: tokens out (min_tokens = max_tokens)")
    group.add_argument("--grpc-port", type=int, default=8001, help="gRPC port on --host's host name")
    group.add_argument("--openai-port", type=int, default=9000,
                       help="the OpenAI-compatible server's port on --host's host name")
    group.add_argument("--request-timeout", type=float, default=300.0,
                       help="seconds until a request without its final response counts as a timeout")
    group.add_argument("--failure-backoff", type=float, default=0.5,
                       help="seconds a user waits after a failed request (a down server is not hammered)")
    group.add_argument("--requests", type=int, default=0,
                       help="stop after this many requests in all, the workload's prompts in order "
                            "(local runs; 0 = until --run-time)")
    group.add_argument("--out", default="loadtest-results", help="folder for samples and the report")


# -- where samples go ---------------------------------------------------------------------
# Local run: users write DIR/samples.jsonl. Distributed: each worker writes its own file and
# sends every sample to the master, which writes DIR/samples.jsonl. Locust's headless master
# fires test_stop before its workers have stopped their users, so the master asks each worker
# to stop and say when its last sample is sent, and only then writes the report.

_log: SampleLog | None = None
_workloads: dict[tuple, Workload] = {}
_user_numbers = itertools.count()
_requests_started = itertools.count()
_shared_prompts: dict[tuple, Iterator] = {}
_requests_running = 0
_quitting = False
_workers_done: set[str] = set()
WORKER_STOP_GRACE_S = 30.0


def _options(environment):
    return environment.parsed_options


@events.init.add_listener
def _on_init(environment, **_kwargs) -> None:
    if isinstance(environment.runner, MasterRunner):
        environment.runner.register_message(SAMPLE_MESSAGE, _on_worker_sample)
        environment.runner.register_message(DONE_MESSAGE, _on_worker_done)
    elif isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message(STOP_MESSAGE, _on_stop_request, concurrent=True)


def _on_worker_sample(environment, msg, **_kwargs) -> None:
    if _log is not None:
        _log.write(RequestSample.from_dict(msg.data))


def _on_worker_done(environment, msg, **_kwargs) -> None:
    _workers_done.add(msg.node_id)


def _on_stop_request(environment, msg, **_kwargs) -> None:
    """Worker: stop the users (a stream cut now is sent as a sample), then tell the master."""
    runner = environment.runner
    if runner.state not in (STATE_STOPPED, STATE_CLEANUP):
        runner.stop()
    while runner.state == STATE_CLEANUP:   # a stop begun elsewhere is still running
        gevent.sleep(0.05)
    runner.send_message(DONE_MESSAGE, None)


def _collect_from_workers(runner: MasterRunner) -> None:
    workers = {client.id for client in runner.clients.all}
    _workers_done.clear()
    for worker in workers:
        runner.send_message(STOP_MESSAGE, None, client_id=worker)
    deadline = time.monotonic() + runner.environment.stop_timeout + WORKER_STOP_GRACE_S
    while not workers <= _workers_done and time.monotonic() < deadline:
        gevent.sleep(0.1)
    if not workers <= _workers_done:
        print(f"triton-eagle loadtest: workers {sorted(workers - _workers_done)} did not finish; "
              "their last samples may be missing", flush=True)


@events.test_start.add_listener
def _open_log(environment, **_kwargs) -> None:
    global _log
    out = Path(_options(environment).out)
    if isinstance(environment.runner, WorkerRunner):
        path = out / "workers" / f"{PROCESS.replace(':', '-')}.jsonl"
    else:
        path = out / SAMPLES_FILE
    _log = SampleLog(path, extra=lambda sample: request_metrics(sample).as_dict())


@events.test_stop.add_listener
def _close_log_and_report(environment, **_kwargs) -> None:
    global _log
    if _log is None:
        return
    if isinstance(environment.runner, MasterRunner):
        _collect_from_workers(environment.runner)
    _log.close()
    _log = None
    if not isinstance(environment.runner, WorkerRunner):
        out = Path(_options(environment).out)
        report = write_report(out, run_config(environment))
        print(f"triton-eagle loadtest: {report['output_tokens_per_s']['overall']:.2f} output tok/s, "
              f"{report['requests']['completed']} completed, {report['failures']['count']} failed "
              f"{report['failures']['by_reason']}; report in {out / 'report.json'}", flush=True)


@events.quit.add_listener
def _exit_without_finalizers(exit_code: int, **_kwargs) -> None:
    """grpc objects finalized at interpreter exit under gevent can deadlock (seen: a worker
    stuck for good in Py_FinalizeEx on a grpc mutex, ignoring SIGTERM). Locust has written
    its stats, CSV and HTML by now, and atexit runs before that finalization, so leave there."""
    def leave() -> None:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)

    atexit.register(leave)


def run_config(environment) -> dict:
    options = _options(environment)
    return {
        "users": options.num_users, "spawn_rate": options.spawn_rate,
        "run_time": f"{options.run_time}s" if options.run_time else None,
        "host": environment.host or DEFAULT_HOST, "grpc_port": options.grpc_port,
        "openai_port": options.openai_port,
        "workload": options.workload, "max_tokens": options.max_tokens,
        "input_tokens": options.input_tokens, "output_tokens": options.output_tokens,
        "request_timeout_s": options.request_timeout, "requests": options.requests,
        "user_classes": sorted(c.__name__ for c in environment.user_classes),
        "workers": options.expect_workers if isinstance(environment.runner, MasterRunner) else 0,
    }


def _record(environment, sample: RequestSample) -> None:
    metrics = request_metrics(sample)
    request_type = {"grpc": "gRPC", "http": "HTTP", "openai": "OpenAI"}[sample.protocol]
    # Locust's own statistics (and --csv/--html) get the stream's E2E and TTFT, not time-to-headers
    if sample.outcome == OK:
        environment.events.request.fire(request_type=request_type, name="generate_stream",
                                        response_time=(metrics.e2e_s or 0.0) * 1000,
                                        response_length=metrics.output_tokens, exception=None, context={})
        if metrics.ttft_s is not None:
            environment.events.request.fire(request_type=request_type, name="TTFT",
                                            response_time=metrics.ttft_s * 1000, response_length=0,
                                            exception=None, context={})
    elif sample.outcome == FAILED:
        environment.events.request.fire(request_type=request_type, name="generate_stream",
                                        response_time=(sample.end_s or 0.0) * 1000,
                                        response_length=sample.received_tokens,
                                        exception=StreamFailure(f"{sample.failure_reason}: {sample.error}"),
                                        context={})
    if _log is not None:
        _log.write(sample)
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.send_message(SAMPLE_MESSAGE, sample.to_dict())


# -- the users ----------------------------------------------------------------------------

class StreamingUser(User):
    """The loop both protocols share: next prompt, one timed stream, record it."""

    abstract = True
    protocol = ""
    _failed_last = False

    def wait_time(self) -> float:
        return _options(self.environment).failure_backoff if self._failed_last else 0.0

    def on_start(self) -> None:
        options = _options(self.environment)
        key = (options.workload, options.input_tokens, options.output_tokens)
        if key not in _workloads:
            _workloads[key] = load_workload(*key)
        # users and workers start at different prompts, so they do not ask in lockstep
        worker_index = getattr(self.environment.runner, "worker_index", 0) or 0
        self._prompts = _workloads[key].cycle(offset=next(_user_numbers) + 11 * worker_index)
        if options.requests:   # a counted run sends the file's prompts in order, once each (aiperf's sequential)
            self._prompts = _shared_prompts.setdefault(key, _workloads[key].cycle())

    def stream(self, fields: dict, sample: RequestSample, started: float) -> None:
        raise NotImplementedError

    def _stop_at_request_limit(self) -> None:
        """--requests N: the user that finds the limit reached stops; the last one ends the run."""
        global _quitting
        if _requests_running == 0 and not _quitting:
            _quitting = True
            gevent.spawn(self.environment.runner.quit)   # not from this greenlet: quit kills the users
        raise StopUser

    @task
    def generate(self) -> None:
        global _requests_running
        options = _options(self.environment)
        if options.requests and next(_requests_started) >= options.requests:
            self._stop_at_request_limit()
        _requests_running += 1
        try:
            self._generate(options)
        finally:
            _requests_running -= 1

    def _generate(self, options) -> None:
        prompt = next(self._prompts)
        sample = RequestSample(self.protocol, prompt.category, prompt.prompt_id, time.time(), process=PROCESS)
        started = time.perf_counter()
        timer = gevent.Timeout(options.request_timeout)
        timer.start()
        try:
            self.stream(prompt.fields(options.max_tokens), sample, started)
        except gevent.Timeout as raised:
            if raised is not timer:
                raise
            sample.fail(TIMEOUT, f"no final response within {options.request_timeout:g} s",
                        time.perf_counter() - started)
        except gevent.GreenletExit:
            # the run stopped with this stream open: its tokens were served, it did not fail
            sample.outcome, sample.end_s = CUT_AT_END, None
            _record(self.environment, sample)
            raise
        except Exception as err:   # anything else the client raised is this request's failure, not the run's
            sample.fail(ERROR_MID_STREAM if sample.chunk_s else SERVER_ERROR, f"{type(err).__name__}: {err}",
                        time.perf_counter() - started)
        finally:
            timer.cancel()
        self._failed_last = sample.outcome == FAILED
        _record(self.environment, sample)


def _host_name(environment) -> str:
    return urlsplit(environment.host or DEFAULT_HOST).hostname or "127.0.0.1"


class GrpcStreamUser(StreamingUser):
    """tritonclient.grpc, one client (one channel) per user, a new stream per request."""

    protocol = "grpc"
    host = DEFAULT_HOST

    def on_start(self) -> None:
        super().on_start()
        import tritonclient.grpc as grpcclient

        self.triton = grpcclient.InferenceServerClient(
            f"{_host_name(self.environment)}:{_options(self.environment).grpc_port}")

    def on_stop(self) -> None:
        self.triton.close()

    def stream(self, fields: dict, sample: RequestSample, started: float) -> None:
        grpc_stream(self.triton, fields, sample, started)


class _ServerSentEventsUser(StreamingUser, FastHttpUser):
    """A streaming user over HTTP server-sent events, on its session's own geventhttpclient
    client (request() would report time-to-headers and read in 1 KiB blocks)."""

    abstract = True
    host = DEFAULT_HOST

    def __init__(self, environment):
        # the request timeout governs; a socket read timeout must not fire first
        self.network_timeout = environment.parsed_options.request_timeout + 10
        super().__init__(environment)

    def _open(self, url_text: str) -> None:
        from geventhttpclient.url import URL

        url = URL(url_text)
        self._http = self.client.client.clientpool.get_client(url)
        self._uri = getattr(url, "quoted_uri", url.request_uri)


class HttpStreamUser(_ServerSentEventsUser):
    """HTTP generate_stream (server-sent events) through FastHttpUser's connection pool."""

    protocol = "http"

    def on_start(self) -> None:
        super().on_start()
        self._open(f"{self.host.rstrip('/')}/v2/models/{MODEL}/generate_stream")

    def stream(self, fields: dict, sample: RequestSample, started: float) -> None:
        http_stream(self._http, self._uri, fields, sample, started)


class OpenAIStreamUser(_ServerSentEventsUser):
    """Streamed /v1/chat/completions through the OpenAI-compatible server (its own port)."""

    protocol = "openai"

    def on_start(self) -> None:
        super().on_start()
        base = f"http://{_host_name(self.environment)}:{_options(self.environment).openai_port}/v1"
        self._open(f"{base}/chat/completions")
        self._model = self._served_model(base)

    def _served_model(self, base: str) -> str:
        """The `model` to name: what the server lists (a client that lists models first, as many do)."""
        response = self.client.get(f"{base}/models", name="/v1/models")
        try:
            return response.json()["data"][0]["id"]
        except Exception:   # server down or not ours: the requests fail and say why
            return "ensemble"

    def stream(self, fields: dict, sample: RequestSample, started: float) -> None:
        from triton_eagle.openai_api.schema import chat_body

        openai_stream(self._http, self._uri, chat_body(fields, self._model), sample, started)
