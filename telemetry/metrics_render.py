"""Reading the metrics hashes back: the system-wide sums ``GET /metrics`` renders."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from telemetry.metrics import SPECS

__all__ = ["Gauge", "HistogramSums", "counter_sums", "histogram_sums", "metric_families"]

Labels = tuple[tuple[str, str], ...]


@dataclass
class HistogramSums:
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> count in that bucket only
    sum: float = 0.0
    count: float = 0.0


@dataclass(frozen=True)
class Gauge:
    """A value computed at scrape time (queue depths, live workers...)."""

    name: str
    help: str
    labels: tuple[str, ...]
    samples: tuple[tuple[tuple[str, ...], float], ...]


def _labels(raw: Any) -> Labels:
    return tuple((str(k), str(v)) for k, v in raw)


def counter_sums(raw: Mapping[str, str]) -> dict[tuple[str, Labels], float]:
    sums: dict[tuple[str, Labels], float] = {}
    for field_, value in raw.items():
        try:
            name, labels = json.loads(field_)
            sums[(name, _labels(labels))] = float(value)
        except (ValueError, TypeError):
            continue  # a field this version does not understand
    return sums


def histogram_sums(raw: Mapping[str, str]) -> dict[tuple[str, Labels], HistogramSums]:
    sums: dict[tuple[str, Labels], HistogramSums] = {}
    for field_, value in raw.items():
        try:
            name, labels, part = json.loads(field_)
            hist = sums.setdefault((name, _labels(labels)), HistogramSums())
            if part == "sum":
                hist.sum = float(value)
            elif part == "count":
                hist.count = float(value)
            else:
                hist.buckets[float(part)] = float(value)
        except (ValueError, TypeError):
            continue
    return sums


def metric_families(counters: Mapping[str, str], histograms: Mapping[str, str],
                    gauges: list[Gauge]) -> Iterator[Metric]:
    """Every declared metric (empty ones too, so dashboards and alerts find the names) plus the gauges."""
    counter_values = counter_sums(counters)
    histogram_values = histogram_sums(histograms)
    for spec in SPECS.values():
        if spec.kind == "counter":
            family = CounterMetricFamily(spec.name.removesuffix("_total"), spec.help, labels=spec.labels)
            for (name, labels), value in sorted(counter_values.items()):
                if name == spec.name:
                    family.add_metric([v for _, v in labels], value)
            yield family
        else:
            hfamily = HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
            for (name, labels), hist in sorted(histogram_values.items(), key=lambda item: item[0]):
                if name != spec.name:
                    continue
                cumulative, buckets = 0.0, []
                for bound in spec.buckets:
                    cumulative += hist.buckets.get(bound, 0.0)
                    buckets.append((_le(bound), cumulative))
                buckets.append(("+Inf", hist.count))
                hfamily.add_metric([v for _, v in labels], buckets, hist.sum)
            yield hfamily
    for gauge in gauges:
        gfamily = GaugeMetricFamily(gauge.name, gauge.help, labels=gauge.labels)
        for label_values, value in gauge.samples:
            gfamily.add_metric(list(label_values), value)
        yield gfamily


def _le(bound: float) -> str:
    return repr(float(bound))
