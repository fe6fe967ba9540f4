"""The turnscale collector: report ingest, fleet state, metrics and KEDA answers."""
