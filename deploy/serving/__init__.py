"""Running the served processes: tritonserver (`bge-triton`), the whole stack (`bge-serve`), and the one
process helper (`process`) that they, the benchmark, the GPU tools and the tests share."""
