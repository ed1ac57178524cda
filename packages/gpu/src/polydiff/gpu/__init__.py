"""polydiff-gpu: device, precision, compile, CUDA graphs, timing, memory, seeding, distributed."""
