"""The NumPy MLP engine: activations, initializers, layers, the model, losses, optimizers, clipping
and data-dependent initialization. It imports only itself and :mod:`initlab.errors`."""
