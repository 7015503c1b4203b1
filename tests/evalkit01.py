"""What evalkit 0.1 wrote, as hand constants: files in these layouts must still be read."""

RESULTS_HEADER = [  # results.csv of evalkit 0.1, in its order
    "model", "method", "scale", "alpha", "trained_len", "task", "length", "depth", "sample",
    "ppl", "nll", "tokens", "correct", "answer", "passkey", "seconds", "peak_mem_mb",
    "device", "dtype", "seed", "status", "evalkit_version", "created_at",
    "data", "doc", "stride", "prefix_mode", "source", "error", "transformers_version", "torch_version",
]
POSITIONS_HEADER = ["model", "method", "scale", "alpha", "trained_len", "length", "sample", "doc", "data",
                    "stride", "seed", "position_start", "position_end", "nll"]  # positions.csv of evalkit 0.1
