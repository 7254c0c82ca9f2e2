"""Scrapes /metrics with the reference Prometheus parser (prometheus-client) and checks the
families the issue asks for are there and that work done shows up in the counters.
Also checks each stderr line of a --log-format json server is a JSON object."""
import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

base, stderr_path = sys.argv[1], sys.argv[2]
with urllib.request.urlopen(base + "/metrics") as response:
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4"), response.headers["Content-Type"]
    text = response.read().decode()
families = {f.name: f for f in text_string_to_metric_families(text)}
expected = {
    "ingestd_ingestions": "counter", "ingestd_ids": "counter", "ingestd_batches_released": "counter",
    "ingestd_batches_completed": "counter", "ingestd_queue_depth_batches": "gauge",
    "ingestd_batch_in_flight": "gauge", "ingestd_release_lateness_seconds": "histogram",
    "ingestd_http_requests": "counter", "ingestd_http_request_duration_seconds": "histogram",
    "ingestd_http_pool_nudges": "counter",
}
for name, kind in expected.items():
    assert name in families, f"{name} missing; have {sorted(families)}"
    assert families[name].type == kind, f"{name} is a {families[name].type}, not a {kind}"
value = lambda family, suffix: sum(s.value for s in families[family].samples if s.name == family + suffix)
assert value("ingestd_ingestions", "_total") >= 1, "no ingestion counted"
assert value("ingestd_batches_completed", "_total") >= 3, "no completion counted"
assert value("ingestd_release_lateness_seconds", "_count") >= 3, "no lateness observed"
lines = [line for line in open(stderr_path) if line.strip()]
records = [json.loads(line) for line in lines]
access = [r for r in records if r.get("msg") == "access"]
assert access and all({"ts", "method", "path", "route", "status", "duration_ms"} <= r.keys() for r in access)
print(f"metrics: {len(families)} families parsed; {len(records)} JSON log lines, {len(access)} access records")
