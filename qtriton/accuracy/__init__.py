"""Making and measuring accuracy: calibration (SmoothQuant, static scales), the fidelity
metrics, sensitivity and per-layer plans, and `qtriton eval`."""
