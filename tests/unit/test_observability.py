"""The handlers' decorator: each log line names its invocation and nothing Lambda records
already; metrics are flushed when an invocation added some, and only then."""

from __future__ import annotations

import io
import json
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools.metrics import MetricUnit

from tests.support.apigw import LambdaContext, build_event
from vault.observability import lambda_handler, logger, metrics

DROPPED = (
    "function_name",
    "function_arn",
    "function_memory_size",
    "cold_start",
    "location",
    "xray_trace_id",
)


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The logger's lines; an X-Ray trace header set as Lambda's active tracing sets it."""
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")
    stream = io.StringIO()
    handler = logger.registered_handler
    previous = handler.setStream(stream)  # type: ignore[attr-defined]
    try:
        yield stream
    finally:
        handler.setStream(previous)  # type: ignore[attr-defined]
        metrics.clear_metrics()


def _records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@lambda_handler
def _logs(event: dict[str, Any], context: Any) -> str:
    logger.info("audit token.issue allowed", extra={"audit": {"action": "token.issue"}})
    return "done"


def test_a_line_names_its_invocation_and_nothing_lambda_records(lines: io.StringIO) -> None:
    event = build_event("GET", "/v1/sessions/x")
    context = LambdaContext()
    assert _logs(event, context) == "done"
    (record,) = _records(lines)
    assert record["function_request_id"] == context.aws_request_id
    assert record["correlation_id"] == event["requestContext"]["requestId"]
    assert record["audit"] == {"action": "token.issue"}
    assert {"level", "message", "timestamp", "service"} <= set(record)
    assert record["timestamp"].endswith("+0000")  # UTC


def test_timestamps_are_utc_whatever_the_machines_zone(lines: io.StringIO) -> None:
    zone = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        _logs(build_event("GET", "/v1/sessions/x"), LambdaContext())
    finally:
        if zone is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = zone
        time.tzset()
    (record,) = _records(lines)
    assert record["timestamp"].endswith("+0000"), record["timestamp"]
    assert not set(DROPPED) & set(record), record


def test_each_invocation_logs_its_own_ids(lines: io.StringIO) -> None:
    first, second = LambdaContext(), LambdaContext()
    _logs(build_event("GET", "/v1/sessions/x"), first)
    _logs({"detail-type": "ECS Task State Change"}, second)  # no API Gateway request
    earlier, later = _records(lines)
    assert earlier["function_request_id"] == first.aws_request_id
    assert later["function_request_id"] == second.aws_request_id
    assert "correlation_id" not in later  # never the previous request's


@lambda_handler
def _counts(event: dict[str, Any], context: Any) -> None:
    metrics.add_metric(name="token.issue.denied", unit=MetricUnit.Count, value=1)
    if event.get("fail"):
        raise RuntimeError("failed after counting")


@lambda_handler
def _counts_nothing(event: dict[str, Any], context: Any) -> None:
    return None


def test_metrics_are_flushed_when_added(
    lines: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    _counts({}, LambdaContext())
    with pytest.raises(RuntimeError):
        _counts({"fail": True}, LambdaContext())
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(emitted) == 2
    for line in emitted:
        assert line["token.issue.denied"] == [1.0]
        assert line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "AgentVault"
    assert not metrics.metric_set


def test_no_metric_line_and_no_warning_when_none_was_added(
    lines: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Powertools warns on an empty flush
        _counts_nothing({}, LambdaContext())
    assert capsys.readouterr().out == ""
