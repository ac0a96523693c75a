"""psylens.compare: a base model against its tuned variant — weights, activations, emotions, steering, features."""
