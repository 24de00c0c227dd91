"""A small residual CNN on scikit-learn's handwritten digits: the end-to-end fine-tuning example."""
