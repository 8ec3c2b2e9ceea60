"""Training: the loop read top to bottom (loop), the step it takes (step: autograd's, the
hand-derived one in hand_derived_step, or a CUDA graph in cuda_graph), the splits on the training
device (trainset), DDP through torchrun (distributed) and the posterior-collapse guard
(collapse_guard)."""
