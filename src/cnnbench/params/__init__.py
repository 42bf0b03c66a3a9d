"""params.yaml: its blocks as typed, validated dataclasses, and the limits and metrics they may name."""
