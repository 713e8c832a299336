"""Networks themselves: the zoo, built-in and custom models, walking layers, hooks, what work costs."""
