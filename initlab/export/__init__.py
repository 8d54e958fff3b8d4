"""Exporting run and sweep directories to the tools people already use: TensorBoard and MLflow.

Only the ``initlab export`` command (and the ``--tensorboard``/``--mlflow`` flags of ``run`` and
``sweep``) import this package; TensorBoard and MLflow are optional extras, imported inside the
functions that need them, so ``import initlab`` and ``initlab --help`` never load them.
"""
