"""Data sets: the registry of kinds (:mod:`initlab.data.datasets`), MNIST's files and their download."""
