-- wrk script: POST /ingest with 5 ids, as a client would.
wrk.method = "POST"
wrk.path = "/ingest"
wrk.body = '{"ids": [1, 2, 3, 4, 5], "priority": "MEDIUM"}'
wrk.headers["Content-Type"] = "application/json"
