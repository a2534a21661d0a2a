"""The HTTP gateway: routing, load balancing, retries, outlier ejection, admission control, auth, rate limits and traffic splitting. Runs standalone (`lichen gateway --config`) or under `lichen up`.
"""
