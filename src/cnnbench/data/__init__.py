"""Data: fetch raw sources, prepare them into fast arrays, load them for training."""
