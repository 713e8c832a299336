"""The convolution lab's arithmetic: multiply-and-sum, named kernels, pooling, costs, lecture examples."""
