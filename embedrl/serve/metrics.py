"""Prometheus metrics of one server, in a registry of its own (two apps in one process never collide).

    embedrl_requests_total{route,method,status}        requests answered
    embedrl_request_duration_seconds{route}            latency per route (histogram)
    embedrl_batch_size{stage}                          jobs per model call: embed, reason:<reasoner>, chat (histogram)
    embedrl_batch_duration_seconds{stage}              time of each model call (histogram)
    embedrl_queue_depth{stage}                         jobs waiting for a model call (gauge)
    embedrl_index_items{index}                         vectors in each served index (gauge)

Routes are labelled by their template (`/v1/items/{index}/{item_id}`), never by the raw path,
so a client cannot grow the label set.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("embedrl_requests", "HTTP requests answered", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("embedrl_request_duration_seconds", "Request latency", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("embedrl_batch_size", "Jobs per model call", ["stage"], buckets=BATCH_BUCKETS,
                                    registry=self.registry)
        self.batch_seconds = Histogram("embedrl_batch_duration_seconds", "Time of each model call", ["stage"],
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("embedrl_queue_depth", "Jobs waiting for a model call", ["stage"],
                                 registry=self.registry)
        self.index_items = Gauge("embedrl_index_items", "Vectors in each served index", ["index"],
                                 registry=self.registry)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
