"""Admission limits, their config keys, the drain file and the fault-injection switch (no server)."""
from __future__ import annotations

import pytest

from python_backend.admission import BUSY_PREFIX, ENGINE_FAILED_PREFIX, Admission
from python_backend.config import ConfigError, parse_engine_config
from python_backend.reference.faults import FAULTS_ENV, FaultInjector
from python_backend.watchdog import read_drain_timeout


def test_the_queue_defaults_to_two_batches_and_a_zero_queue_is_allowed():
    assert parse_engine_config({"model": "m", "max_batch_size": 8}).queue_limit == 16
    assert parse_engine_config({"model": "m", "max_batch_size": 8, "max_queue_size": 0}).queue_limit == 0


@pytest.mark.parametrize("raw,key", [({"max_queue_size": -1}, "max_queue_size"),
                                     ({"watchdog_timeout_s": 0}, "watchdog_timeout_s")])
def test_bad_serving_limits_fail_at_load_naming_the_key(raw, key):
    with pytest.raises(ConfigError, match=key):
        parse_engine_config({"model": "m", **raw})


def test_admission_refuses_the_request_beyond_batch_plus_queue_as_busy():
    admission = Admission(max_batch_size=4, max_queue_size=2)
    assert admission.refusal(5) is None
    message = admission.refusal(6)
    assert message.startswith(BUSY_PREFIX) and "max_batch_size 4 + max_queue_size 2" in message
    assert admission.queue_depth(6) == 2 and admission.queue_depth(3) == 0


def test_a_drain_refuses_as_busy_and_a_failed_engine_says_so():
    admission = Admission(max_batch_size=4, max_queue_size=2)
    admission.draining = True
    assert admission.refusal(0).startswith(BUSY_PREFIX)
    admission.failure = "the engine thread died"
    assert admission.refusal(0).startswith(f"{ENGINE_FAILED_PREFIX}: the engine thread died")


def test_the_drain_file_holds_the_timeout(tmp_path):
    path = tmp_path / "drain"
    assert read_drain_timeout(path) is None
    path.write_text("12.5\n")
    assert read_drain_timeout(path) == 12.5
    path.write_text("garbage")
    assert read_drain_timeout(path) == 0.0


def test_fault_injection_is_off_unless_asked_and_refuses_a_bad_spec(monkeypatch):
    monkeypatch.delenv(FAULTS_ENV, raising=False)
    assert FaultInjector.from_environment() is None
    monkeypatch.setenv(FAULTS_ENV, "fail-request=7,stall-engine=9")
    assert FaultInjector.from_environment().seeds == {7: "fail-request", 9: "stall-engine"}
    monkeypatch.setenv(FAULTS_ENV, "explode=7")
    with pytest.raises(ValueError, match="KIND=SEED"):
        FaultInjector.from_environment()
