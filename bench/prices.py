"""AWS list prices used by the cost model: ONE table, US East (N. Virginia), USD.

Recorded 2026-11-28. This build environment has no internet access, so the values were NOT
re-read from the live pages on that date: they are the published us-east-1 list prices of the
pages named in `source`, as of the changes noted (the DynamoDB on-demand cut of 2024-11-01; Lambda
INIT-phase billing from 2025-08-01). Re-check them on those pages before quoting a figure; a
change here is the only edit a price change needs (docs/cost.md says how each is used).
"""

from __future__ import annotations

from dataclasses import dataclass

AS_OF = "2026-11-28"
REGION = "us-east-1"
HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class Price:
    usd: float
    unit: str
    source: str
    note: str = ""


PRICES: dict[str, Price] = {
    # --- per request ------------------------------------------------------------------------
    "apigw_http_request": Price(
        1.00 / 1e6,
        "HTTP API request (first 300 million a month; 512 KB metering)",
        "Amazon API Gateway pricing",
    ),
    "lambda_request": Price(0.20 / 1e6, "Lambda invocation", "AWS Lambda pricing"),
    "lambda_gb_s_arm64": Price(
        0.0000133334, "GB-second, arm64 (first 6 billion GB-s a month)", "AWS Lambda pricing"
    ),
    "lambda_gb_s_x86_64": Price(0.0000166667, "GB-second, x86_64", "AWS Lambda pricing"),
    "lambda_snapstart_cache_gb_s": Price(
        0.0000015046,
        "GB-second of a SnapStart snapshot cached (per published version, 3 hours minimum)",
        "AWS Lambda pricing (SnapStart, Python and .NET)",
    ),
    "lambda_snapstart_restore_gb": Price(
        0.0001397998,
        "GB restored from a SnapStart snapshot (each new execution environment)",
        "AWS Lambda pricing (SnapStart, Python and .NET)",
    ),
    "dynamodb_wru": Price(
        0.625 / 1e6,
        "on-demand write request unit (1 KB)",
        "Amazon DynamoDB pricing for on-demand capacity",
        "after the 2024-11-01 on-demand price cut",
    ),
    "dynamodb_rru": Price(
        0.125 / 1e6,
        "on-demand read request unit (4 KB strongly consistent)",
        "Amazon DynamoDB pricing for on-demand capacity",
        "after the 2024-11-01 on-demand price cut",
    ),
    "kms_request": Price(
        0.03 / 10_000,
        "symmetric KMS API request",
        "AWS Key Management Service pricing",
        "20,000 requests a month free",
    ),
    "cloudtrail_data_event": Price(
        0.10 / 100_000,
        "data event delivered",
        "AWS CloudTrail pricing",
        "management events: first copy free",
    ),
    "logs_ingest_gb": Price(
        0.50,
        "GB ingested, CloudWatch Logs Standard (also vended logs, first 10 TB)",
        "Amazon CloudWatch pricing",
    ),
    "logs_ingest_gb_infrequent": Price(
        0.25,
        "GB ingested, CloudWatch Logs Infrequent Access class",
        "Amazon CloudWatch pricing",
    ),
    "xray_trace": Price(
        5.00 / 1e6, "trace recorded (first 100,000 a month free)", "AWS X-Ray pricing"
    ),
    "secrets_api": Price(0.05 / 10_000, "Secrets Manager API call", "AWS Secrets Manager pricing"),
    "nat_gb": Price(0.045, "GB processed by a NAT gateway", "Amazon VPC pricing"),
    # --- per month / hour -------------------------------------------------------------------
    "nat_hour": Price(0.045, "NAT gateway-hour", "Amazon VPC pricing"),
    "public_ipv4_hour": Price(
        0.005,
        "public IPv4 address-hour (the NAT gateway's EIP)",
        "Amazon VPC pricing",
        "since 2024-02-01",
    ),
    "fargate_vcpu_hour_x86": Price(0.04048, "vCPU-hour, Linux/x86", "AWS Fargate pricing"),
    "fargate_gb_hour_x86": Price(0.004445, "GB-hour, Linux/x86", "AWS Fargate pricing"),
    "fargate_vcpu_hour_arm": Price(0.03238, "vCPU-hour, Linux/ARM", "AWS Fargate pricing"),
    "fargate_gb_hour_arm": Price(0.00356, "GB-hour, Linux/ARM", "AWS Fargate pricing"),
    "kms_key_month": Price(
        1.00,
        "customer managed key-month (rotations add $1 for the first two)",
        "AWS Key Management Service pricing",
    ),
    "secret_month": Price(0.40, "secret-month", "AWS Secrets Manager pricing"),
    "alarm_month": Price(
        0.10, "standard-resolution metric alarm-month", "Amazon CloudWatch pricing"
    ),
    "custom_metric_month": Price(
        0.30, "custom metric-month (first 10,000)", "Amazon CloudWatch pricing"
    ),
    # --- the comparison ----------------------------------------------------------------------
    "agentcore_identity_request": Price(
        10.00 / 1e6,
        "AgentCore Identity token or API-key request",
        "Amazon Bedrock AgentCore pricing (Identity)",
        "$10 per million as the task statement gives it ($0.010 per 1,000 requests); "
        "AgentCore lists Identity as free when called through AgentCore Runtime or Gateway, so "
        "the paid rate is the one for agents hosted elsewhere, as Agent Vault's are",
    ),
}


def price(name: str) -> float:
    return PRICES[name].usd


def table() -> list[dict[str, str | float]]:
    """The table as JSON-able rows (written into bench/latest.json)."""
    return [
        {"name": name, "usd": p.usd, "unit": p.unit, "source": p.source, "note": p.note}
        for name, p in PRICES.items()
    ]
