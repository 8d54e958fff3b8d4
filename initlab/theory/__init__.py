"""Mean-field theory and the Jacobian: predictions for a config and the measurements they sit beside."""
