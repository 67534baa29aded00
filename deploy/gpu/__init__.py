"""GPU tools: `check` (the TensorRT engine built, served and timed against PyTorch) and `probe` (what a
GPU box with only torch can check). Run on a GPU machine; their CPU paths are tested here."""
