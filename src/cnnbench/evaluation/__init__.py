"""The evaluate stage and what reads its outputs: scoring, test predictions, latency, deployment,
statistics, the gate."""
