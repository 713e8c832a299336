"""Looking inside a network: activations, learned filters, receptive fields."""
